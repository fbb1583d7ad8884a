"""The built-in payment page behind the default pay link: what is open and how to pay it by
bank transfer (our IBAN and the invoice's ISO 11649 reference). A card or wallet checkout is a
provider's hosted page: point ``ARFLOW_PAY_LINK_TEMPLATE`` at it. The link carries a signature
(``t``), since references are sequential: without it the page shows nothing."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse

from api.deps import SessionDep, SettingsDep
from api.pages import public_page, unknown_link
from arflow.messages.render import local_date, money
from models import Customer, Invoice
from models.reference import invoice_id_of

router = APIRouter(tags=["customers"], include_in_schema=False)


@router.get("/pay/{reference}", response_class=HTMLResponse)
def pay_page(
    reference: str, session: SessionDep, settings: SettingsDep, t: str = Query(default="")
) -> HTMLResponse:
    invoice_id = invoice_id_of(reference)
    if invoice_id is None or not settings.link_token_valid("pay", reference, t):
        return unknown_link("unknown payment link")
    invoice = session.get(Invoice, invoice_id)
    customer = session.get(Customer, invoice.customer_id) if invoice else None
    if invoice is None or customer is None:
        return unknown_link("unknown payment link")
    loc = customer.locale
    title = f"Invoice {escape(invoice.number)}"
    if invoice.balance_minor <= 0 or invoice.status in ("paid", "credited", "cancelled"):
        content = f"<h1>{title}</h1><p>Nothing is open on this invoice. Thank you.</p>"
    else:
        grouped = " ".join(reference[i : i + 4] for i in range(0, len(reference), 4))
        iban = escape(settings.company_iban or "(ask us for our bank details)")
        content = (
            f"<h1>{title}</h1>"
            f"<p>Open: <strong>{escape(money(invoice.balance_minor, invoice.currency, loc))}"
            f"</strong>, due {escape(local_date(invoice.due_date, customer.timezone, loc))}.</p>"
            "<h2>Pay by bank transfer</h2>"
            f"<p>To: {escape(settings.company_name or 'us')}<br>IBAN: <strong>{iban}</strong>"
            f"<br>Reference: <strong>{escape(grouped)}</strong></p>"
            "<p>With this reference your payment is matched to the invoice automatically.</p>"
        )
    return public_page(f"Invoice {invoice.number}", content, lang=loc)
