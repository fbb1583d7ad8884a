"""The customer portal at ``/portal/<token>``: a customer's invoices, their PDFs and statement,
payment by card (Stripe Checkout) or bank transfer (IBAN, reference, EPC QR code), and what
a customer may ask for (dispute, payment plan, promise to pay).

Views only: the link is checked by ``arflow.portal.links``, every invoice is looked up by the
customer the link opens (``arflow.portal.view``), and the requests go through the same
domain functions and Temporal updates as a specialist's (``arflow.portal.requests``) with the
actor ``customer``. No session or cookie: the token in the address is the only credential, so
it is also what a cross-site form could not know (no CSRF token needed). Pages are in the
customer's language (``?lang=`` switches), rate-limited per address (429 with
``Retry-After``), and never show a stack trace: a refused link gets a page that says why and
offers a fresh link by email to the address on file."""

from __future__ import annotations

import asyncio
import io
import logging
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, cast, get_args
from urllib.parse import urlencode

import segno
import segno.helpers
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlmodel import Session
from temporalio.client import Client

from api.deps import OptionalTemporalDep, SessionDep, SettingsDep
from api.errors import DomainError, status_of
from api.limits import max_body
from api.ratelimit import retry_after
from api.security import CONTENT_SECURITY_POLICY
from arflow import gateway
from arflow.config import MAX_ATTACHMENT_BYTES, Settings
from arflow.errors import Unavailable, unprocessable
from arflow.messages.documents import Seller, invoice_copy_pdf, statement_pdf
from arflow.messages.render import local_date, money
from arflow.portal import fresh_links, requests, stripe_pay, view
from arflow.portal.i18n import LANGUAGE_NAMES, LANGUAGES, language, t
from arflow.portal.links import LinkRefused, PortalAccess, open_link
from models import Customer, Invoice
from models.reference import payment_reference

log = logging.getLogger("arflow.portal")

router = APIRouter(prefix="/portal", include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

DISPUTE_REASONS: tuple[str, ...] = get_args(requests.ReasonCode)
PLAN_EVERY = {"month": 0, "two_weeks": 14, "week": 7}


class PortalPage(Exception):
    """Answer with this page now (a refused link, a rate limit)."""

    def __init__(self, response: Response) -> None:
        self.response = response


# -- rendering ---------------------------------------------------------------------------


def _csp(settings: Settings) -> str:
    """The usual policy; forms may also lead to Stripe's checkout when card payment is on
    (the browser checks the redirect after a form post against form-action)."""
    if not settings.stripe_enabled:
        return CONTENT_SECURITY_POLICY
    origin = settings.stripe_checkout_origin.rstrip("/")
    return CONTENT_SECURITY_POLICY.replace("form-action 'self'", f"form-action 'self' {origin}")


def render(
    request: Request,
    name: str,
    lang: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    response = templates.TemplateResponse(
        request,
        f"portal/{name}",
        {
            "lang": lang,
            "t": lambda key, **fields: t(lang, key, **fields),
            "languages": [(code, LANGUAGE_NAMES[code]) for code in LANGUAGES],
            "company": settings.company_name or "arflow",
            **context,
        },
        status_code=status,
    )
    response.headers["Content-Security-Policy"] = _csp(settings)
    response.headers["Cache-Control"] = "no-store"
    return response


def _limited(request: Request, lang: str, limit: str, scope: str) -> None:
    wait = retry_after(request, limit, scope)
    if wait is not None:
        page = render(request, "message.html", lang, 429, title=t(lang, "too_many", seconds=wait))
        page.headers["Retry-After"] = str(wait)
        raise PortalPage(page)


def _refused(request: Request, refusal: LinkRefused, token: str, lang: str) -> HTMLResponse:
    return render(
        request,
        "link_problem.html",
        lang,
        404 if refusal.reason == "unknown" else 410,
        reason=refusal.reason,
        token=token if refusal.customer_id is not None else None,
    )


def _access(request: Request, token: str, session: SessionDep, settings: SettingsDep) -> Access:
    chosen = request.query_params.get("lang")
    _limited(request, language(chosen, None), settings.portal_rate_limit, "portal")
    try:
        link = open_link(session, settings, token)
    except LinkRefused as refusal:
        # a genuine link (expired, revoked) is answered in its customer's language
        known = session.get(Customer, refusal.customer_id) if refusal.customer_id else None
        lang = language(chosen, known.locale if known else None)
        raise PortalPage(_refused(request, refusal, token, lang)) from None
    return Access(link, language(chosen, link.customer.locale), chosen in LANGUAGES)


class Access:
    def __init__(self, link: PortalAccess, lang: str, chosen: bool) -> None:
        self.link = link
        self.customer: Customer = link.customer
        self.customer_id = link.customer_id
        self.lang = lang
        self.chosen = chosen  # the switcher's choice: kept in the links of the pages

    def url(self, path: str = "", **query: str) -> str:
        if self.chosen:
            query = {"lang": self.lang, **query}
        suffix = f"?{urlencode(query)}" if query else ""
        return f"/portal/{self.link.token}{path}{suffix}"

    def money(self, amount_minor: int, currency: str) -> str:
        return money(amount_minor, currency, self.lang)

    def date(self, value: date) -> str:
        return local_date(value, self.customer.timezone, self.lang)


AccessDep = Annotated[Access, Depends(_access)]


def _invoice(session: Session, access: Access, invoice_id: str) -> Invoice:
    """The customer's invoice named in the address (digits only); anything else is the same
    not-found as another customer's invoice."""
    if not invoice_id.isdigit() or len(invoice_id) > 18:
        raise PortalPage(_not_found_page(access))
    try:
        return view.invoice_of(session, access.customer_id, int(invoice_id))
    except DomainError:
        raise PortalPage(_not_found_page(access)) from None


def _not_found_page(access: Access) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Not found</title>"
        "<link rel='stylesheet' href='/app/static/portal.css'></head><body><main>"
        f"<h1>Not found</h1><p><a href='{access.url()}'>{t(access.lang, 'back')}</a></p>"
        "</main></body></html>",
        status_code=404,
    )


def install(app: Any) -> None:
    """Register the portal and the handler that answers its ``PortalPage`` exceptions."""

    @app.exception_handler(PortalPage)
    async def _page(_: Request, exc: PortalPage) -> Response:
        return exc.response

    app.include_router(router)


# -- a refused link: a fresh one by email -----------------------------------------------------


async def _send_fresh_link(
    session: Session,
    settings: Settings,
    client: Client | None,
    customer: Customer,
    reason: str,
) -> None:
    """Record the request and start its send; a send that cannot start is recorded too."""
    row = fresh_links.request_link(session, customer, reason)
    if row.status != "queued":
        log.info("fresh portal link not sent", extra={"request": row.id, "status": row.status})
        return
    assert row.id is not None
    try:
        if client is None:
            raise Unavailable("Temporal is not connected")
        await gateway.start_portal_link(client, settings, row.id)
    except DomainError as exc:
        fresh_links.not_started(session, row, exc.message)
        log.warning("fresh portal link: the send did not start: %s", exc.message)


@router.get("/fresh-link", response_class=HTMLResponse)
def fresh_link_form(request: Request, lang: str | None = None) -> HTMLResponse:
    return render(request, "fresh_link.html", language(lang, None), sent=False)


@router.post("/fresh-link", response_class=HTMLResponse)
async def fresh_link_by_address(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    email: Annotated[str, Form(max_length=320)] = "",
    lang: str | None = None,
) -> HTMLResponse:
    """The same answer whether or not the address is on file (no oracle)."""
    lang = language(lang, None)
    _limited(request, lang, settings.portal_fresh_link_limit, "fresh-link")
    customer = fresh_links.customer_by_email(session, email) if "@" in email else None
    if customer is not None:
        await _send_fresh_link(session, settings, client, customer, "unknown")
    return render(request, "fresh_link.html", lang, sent=True)


@router.post("/{token}/fresh-link", response_class=HTMLResponse)
async def fresh_link_for_token(
    request: Request,
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    lang: str | None = None,
) -> HTMLResponse:
    """An expired or revoked (but genuine) link: a fresh one to the customer's address."""
    lang = language(lang, None)
    _limited(request, lang, settings.portal_fresh_link_limit, "fresh-link")
    try:
        open_link(session, settings, token)
        refusal: LinkRefused | None = None
    except LinkRefused as exc:
        refusal = exc
    if refusal is not None and refusal.customer_id is not None:
        customer = session.get(Customer, refusal.customer_id)
        if customer is not None:
            await _send_fresh_link(session, settings, client, customer, refusal.reason)
    return render(request, "fresh_link.html", lang, sent=True)


# -- the pages --------------------------------------------------------------------------------


@router.get("/{token}", response_class=HTMLResponse)
def home(
    request: Request, access: AccessDep, session: SessionDep, settings: SettingsDep
) -> HTMLResponse:
    today = view.today_of(access.customer.timezone)
    open_rows = view.open_invoices(session, access.customer_id, today)
    done = request.query_params.get("done")
    return render(
        request,
        "home.html",
        access.lang,
        a=access,
        customer=access.customer,
        open_rows=open_rows,
        paid=view.recently_paid(session, access.customer_id, today),
        card=settings.stripe_enabled,
        payable=[row for row in open_rows if row.payable],
        done=done if done in ("paid", "cancelled") else None,
        expires=access.date(access.link.expires_at.date()),
    )


def _invoice_page(
    request: Request,
    access: Access,
    session: Session,
    settings: Settings,
    invoice: Invoice,
    *,
    error: str | None = None,
    status: int = 200,
    done: str | None = None,
) -> HTMLResponse:
    today = view.today_of(access.customer.timezone)
    row = view.describe(session, invoice, today)
    bounds = requests.portal_bounds(session, invoice)
    qr = _epc_qr(settings, invoice, row.total_due_minor) is not None
    return render(
        request,
        "invoice.html",
        access.lang,
        status,
        a=access,
        customer=access.customer,
        row=row,
        invoice=invoice,
        card=settings.stripe_enabled,
        iban=_grouped(settings.company_iban) if settings.company_iban else None,
        reference=_grouped(payment_reference(invoice.id or 0)),
        qr=qr,
        reasons=DISPUTE_REASONS,
        bounds=bounds,
        today=today.isoformat(),
        promise_last=bounds.promise_by.isoformat(),
        max_size=f"{settings.portal_attachment_max_bytes // (1024 * 1024)} MB",
        error=error,
        done=done,
    )


@router.get("/{token}/invoices/{invoice_id}", response_class=HTMLResponse)
def invoice_page(
    request: Request,
    access: AccessDep,
    invoice_id: str,
    session: SessionDep,
    settings: SettingsDep,
) -> HTMLResponse:
    invoice = _invoice(session, access, invoice_id)
    done = request.query_params.get("done")
    known = ("dispute", "plan", "proposal", "promise")
    return _invoice_page(
        request, access, session, settings, invoice, done=done if done in known else None
    )


@router.get("/{token}/invoices/{invoice_id}/pdf")
def invoice_pdf(
    access: AccessDep, invoice_id: str, session: SessionDep, settings: SettingsDep
) -> Response:
    invoice = _invoice(session, access, invoice_id)
    pdf = invoice_copy_pdf(
        invoice,
        access.customer,
        Seller.from_settings(settings),
        settings.pay_url(invoice.id or 0, invoice.number, invoice.external_id),
        balance_minor=invoice.balance_minor,
    )
    return _pdf(pdf, f"invoice-{invoice.number}.pdf")


@router.get("/{token}/statement.pdf")
def statement(access: AccessDep, session: SessionDep, settings: SettingsDep) -> Response:
    today = view.today_of(access.customer.timezone)
    invoices = [row.invoice for row in view.open_invoices(session, access.customer_id, today)]
    pdf = statement_pdf(Seller.from_settings(settings), access.customer, invoices, today)
    return _pdf(pdf, f"statement-{today.isoformat()}.pdf")


def _pdf(content: bytes, filename: str) -> Response:
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in filename)
    return Response(
        content,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{safe}"',
            "Cache-Control": "no-store",
        },
    )


def _grouped(value: str) -> str:
    compact = value.replace(" ", "")
    return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def _epc_qr(settings: Settings, invoice: Invoice, amount_minor: int) -> segno.QRCode | None:
    """The EPC (GiroCode) QR code of a SEPA credit transfer: euros only, with our name and
    IBAN and the invoice's structured reference."""
    if invoice.currency != "EUR" or not settings.company_iban or not settings.company_name:
        return None
    if amount_minor <= 0 or amount_minor > 99_999_999_999:
        return None
    try:
        return segno.helpers.make_epc_qr(
            name=settings.company_name[:70],
            iban=settings.company_iban.replace(" ", ""),
            amount=Decimal(amount_minor) / 100,
            reference=payment_reference(invoice.id or 0),
        )
    except ValueError:  # a setting the EPC format refuses: no code, the details are shown
        log.warning("no EPC QR code for invoice %s", invoice.id, exc_info=True)
        return None


@router.get("/{token}/invoices/{invoice_id}/qr.svg")
def invoice_qr(
    access: AccessDep, invoice_id: str, session: SessionDep, settings: SettingsDep
) -> Response:
    invoice = _invoice(session, access, invoice_id)
    row = view.describe(session, invoice, view.today_of(access.customer.timezone))
    qr = _epc_qr(settings, invoice, row.total_due_minor)
    if qr is None:
        return Response(status_code=404)
    out = io.BytesIO()
    qr.save(out, kind="svg", scale=5, border=2, title="EPC QR")
    return Response(
        out.getvalue(), media_type="image/svg+xml", headers={"Cache-Control": "no-store"}
    )


# -- paying by card ---------------------------------------------------------------------------


@router.post("/{token}/checkout")
async def checkout(
    request: Request, access: AccessDep, session: SessionDep, settings: SettingsDep
) -> Response:
    form = await request.form()
    ids = [str(v) for v in form.getlist("invoice")]
    back = str(form.get("back") or "")
    invoice_ids = [int(v) for v in ids if v.isdigit() and len(v) <= 18]
    if not settings.stripe_enabled or not invoice_ids or len(ids) > 100:
        return RedirectResponse(access.url(), status_code=303)
    base = settings.public_url.rstrip("/")
    try:
        url = await asyncio.to_thread(  # the SDK's call to Stripe blocks
            stripe_pay.create_checkout,
            session,
            settings,
            access.customer_id,
            invoice_ids,
            success_url=base + access.url("", done="paid"),
            cancel_url=base + access.url("", done="cancelled"),
        )
    except DomainError as exc:
        if back.isdigit() and len(back) <= 18:
            invoice = _invoice(session, access, back)
            return _invoice_page(
                request,
                access,
                session,
                settings,
                invoice,
                error=exc.message,
                status=status_of(exc),
            )
        return render(
            request,
            "message.html",
            access.lang,
            status_of(exc),
            title=t(access.lang, "error"),
            text=exc.message,
            back=access.url(),
        )
    return RedirectResponse(url, status_code=303)


# -- what the customer asks for ---------------------------------------------------------------


async def _ask(
    request: Request,
    access: Access,
    session: Session,
    settings: Settings,
    client: Client | None,
    invoice: Invoice,
    action: Any,
) -> Response:
    """Run ``action()``; on success back to the invoice page (post/redirect/get), else the
    page again with the reason."""
    try:
        if client is None:
            raise Unavailable("payments and requests are not available right now; try later")
        done = await action()
    except DomainError as exc:
        session.rollback()
        return _invoice_page(
            request,
            access,
            session,
            settings,
            invoice,
            error=exc.message,
            status=status_of(exc),
        )
    return RedirectResponse(access.url(f"/invoices/{invoice.id}", done=done), status_code=303)


def _amount(text: str, field: str) -> int | None:
    """A decimal amount typed by a customer ("120,50" or "120.50") in minor units."""
    text = text.strip().replace(" ", "")
    if not text:
        return None
    if text.count(",") == 1 and "." not in text:
        text = text.replace(",", ".")
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise unprocessable(f"{field}: not an amount: {text[:20]!r}") from None
    if not value.is_finite() or value <= 0 or value > Decimal(10) ** 13:
        raise unprocessable(f"{field}: enter an amount above zero")
    if value != value.quantize(Decimal("0.01")):
        raise unprocessable(f"{field}: at most two decimals")
    return int(value * 100)


def _date(text: str, field: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise unprocessable(f"{field}: not a date (YYYY-MM-DD): {text[:20]!r}") from None


@router.post("/{token}/invoices/{invoice_id}/dispute")
@max_body(3 * MAX_ATTACHMENT_BYTES + 64 * 1024)  # three documents and the form's fields
async def dispute(
    request: Request,
    access: AccessDep,
    invoice_id: str,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    reason: Annotated[str, Form(max_length=40)] = "",
    text: Annotated[str, Form(max_length=2000)] = "",
    amount: Annotated[str, Form(max_length=40)] = "",
    files: Annotated[list[UploadFile] | None, File()] = None,
) -> Response:
    invoice = _invoice(session, access, invoice_id)

    async def act() -> str:
        if reason not in DISPUTE_REASONS:
            raise unprocessable("choose what is wrong with the invoice")
        attached = [f for f in files or [] if f.filename]
        if len(attached) > 3:
            raise unprocessable("at most 3 documents")
        limit = settings.portal_attachment_max_bytes
        documents = []
        for upload in attached:
            content = await upload.read(limit + 1)
            documents.append((upload.filename or "document", content))
        assert client is not None
        await requests.customer_dispute(
            session,
            client,
            settings,
            access.customer_id,
            invoice.id or 0,
            cast(requests.ReasonCode, reason),
            text,
            _amount(amount, "amount"),
            documents,
        )
        return "dispute"

    return await _ask(request, access, session, settings, client, invoice, act)


def _instalments(total_minor: int, count: int, first: date, every: str) -> list[tuple[date, int]]:
    """``count`` equal instalments (the cents left over on the last), the first on ``first``,
    then every month (same day, or the month's last), two weeks or week."""
    share, rest = divmod(total_minor, count)
    days = PLAN_EVERY[every]
    out: list[tuple[date, int]] = []
    for n in range(count):
        if days:
            day = first + timedelta(days=days * n)
        else:
            month = first.month - 1 + n
            year, month = first.year + month // 12, month % 12 + 1
            day = _clamped(year, month, first.day)
        out.append((day, share + (rest if n == count - 1 else 0)))
    return out


def _clamped(year: int, month: int, day: int) -> date:
    while True:
        try:
            return date(year, month, day)
        except ValueError:
            day -= 1


@router.post("/{token}/invoices/{invoice_id}/plan")
async def plan(
    request: Request,
    access: AccessDep,
    invoice_id: str,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    count: Annotated[str, Form(max_length=3)] = "",
    first: Annotated[str, Form(max_length=20)] = "",
    every: Annotated[str, Form(max_length=20)] = "month",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    invoice = _invoice(session, access, invoice_id)

    async def act() -> str:
        if not count.isdigit() or not 1 <= int(count) <= 60:
            raise unprocessable("number of instalments: from 1 to 60")
        if every not in PLAN_EVERY:
            raise unprocessable("choose how often to pay")
        parts = _instalments(invoice.balance_minor, int(count), _date(first, "first"), every)
        if any(amount <= 0 for _, amount in parts):
            raise unprocessable("more instalments than the open amount allows")
        assert client is not None
        outcome = await requests.propose_plan(
            session, client, settings, access.customer_id, invoice.id or 0, parts, note
        )
        return "plan" if outcome.status == "accepted" else "proposal"

    return await _ask(request, access, session, settings, client, invoice, act)


@router.post("/{token}/invoices/{invoice_id}/promise")
async def promise(
    request: Request,
    access: AccessDep,
    invoice_id: str,
    session: SessionDep,
    settings: SettingsDep,
    client: OptionalTemporalDep,
    promised: Annotated[str, Form(max_length=20)] = "",
    amount: Annotated[str, Form(max_length=40)] = "",
    note: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    invoice = _invoice(session, access, invoice_id)

    async def act() -> str:
        minor = _amount(amount, "amount") or invoice.balance_minor
        assert client is not None
        await requests.customer_promise(
            session,
            client,
            settings,
            access.customer_id,
            invoice.id or 0,
            _date(promised, "date"),
            minor,
            note,
        )
        return "promise"

    return await _ask(request, access, session, settings, client, invoice, act)


__all__ = ["install", "router"]
