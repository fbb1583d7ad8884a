"""The dashboard's Payments page (``/app/payments``): statement upload, the unmatched queue,
customers' credit and the recent imports.

Views only, as in ``api.web``: viewers read, specialists act, and every form calls the same
domain function as the JSON route it stands for (``api.routes.payments``): the upload
``reconcile.import_statement`` (``POST /v1/bank-statements``, with its size limit), a queue
line's apply ``reconcile.apply_and_deliver`` (``.../apply``, the body checked with the API's
``ApplyLine``) and dismiss ``reconcile.dismiss_line`` (``.../dismiss``, ``DismissLine``), and
the credit form ``apply_credit`` (``POST /v1/customers/{id}/credit/apply``, ``UseCredit``).
A refused form comes back with the reason next to it (``role="alert"``) and a 4xx status;
nothing is stored then.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session
from starlette.datastructures import FormData, UploadFile

from api.deps import SessionDep, SettingsDep
from api.errors import ApiError, DomainError, status_of
from api.limits import max_body
from api.routes.payments import MAX_STATEMENT_BYTES, MULTIPART_ROOM
from api.web import (
    CsrfChecked,
    FormError,
    PageError,
    WebSpecialist,
    WebViewer,
    form_minor,
    form_text,
    is_fragment,
    render,
    temporal_client,
    validated_body,
)
from arflow import idempotency
from arflow.invoices import service as services
from arflow.messages.render import money
from arflow.payments import reconcile
from arflow.payments.service import apply_credit, credit_holders
from arflow.payments.statements.values import currency_exponent
from arflow.reports import dashboard
from models import Invoice, ReceivedLine
from models.bank import UNMATCHED, ApplyLine, DismissLine, UseCredit
from models.types import MAX_ID
from workflows.types import CLOSED_STATUSES

router = APIRouter(prefix="/app/payments", include_in_schema=False)
QUEUE_SIZE = 20
IMPORTS_SHOWN = 10
#: The outcomes of an import's lines, in the order the report shows them.
COUNTS = ("lines", "matched", "unmatched", "duplicate", "ignored", "rejected")


# -- the page -------------------------------------------------------------------------------


def _queue(session: Session, page: int) -> dict[str, Any]:
    """One page of the unmatched queue, each line with the invoices it may go to."""
    total = reconcile.count_lines(session, UNMATCHED)
    pages = max(1, -(-total // QUEUE_SIZE))
    page = min(max(page, 1), pages)
    lines = reconcile.lines_of(session, UNMATCHED, QUEUE_SIZE, (page - 1) * QUEUE_SIZE)
    choices = {line.id: reconcile.invoices_to_choose(session, line) for line in lines}
    customer_ids = {line.customer_id for line in lines if line.customer_id is not None}
    customer_ids |= {i.customer_id for found in choices.values() for i in found}
    return {
        "lines": lines,
        "choices": choices,
        "prefill": {line.id: _prefill(line, choices[line.id]) for line in lines},
        "names": dashboard.customer_names(session, customer_ids),
        "total": total,
        "page": page,
        "pages": pages,
        "page_url": lambda n: "/app/payments?" + urlencode({"page": n}),
    }


def _prefill(line: ReceivedLine, invoices: list[Invoice]) -> dict[int, str]:
    """The apply form's amounts to start from: the receipt over the matcher's candidates,
    oldest first, each up to its open balance (the specialist changes what is wrong)."""
    if line.amount_minor <= 0:
        return {}
    left, amounts = line.amount_minor, {}
    for invoice in invoices:
        if invoice.id in line.candidates and left > 0 and invoice.balance_minor > 0:
            take = min(left, invoice.balance_minor)
            amounts[invoice.id] = str(Decimal(take).scaleb(-currency_exponent(line.currency)))
            left -= take
    return {i: a for i, a in amounts.items() if i is not None}


def _credits(session: Session) -> dict[str, Any]:
    """Customers with credit, each with their open invoices in that currency."""
    holders = credit_holders(session)
    ids = {customer_id for customer_id, _, _ in holders}
    invoices: dict[tuple[int, str], list[Invoice]] = {}
    for customer_id, currency, _ in holders:
        rows = _open_invoices(session, customer_id)
        invoices[(customer_id, currency)] = [r for r in rows if r.currency == currency]
    return {
        "holders": holders,
        "credit_invoices": invoices,
        "credit_names": dashboard.customer_names(session, ids),
    }


def _open_invoices(session: Session, customer_id: int) -> list[Invoice]:
    """A customer's invoices that can still take a payment (of their first 200)."""
    rows, _ = services.list_invoices(session, None, customer_id, None, limit=200, offset=0)
    return [r for r in rows if r.status not in CLOSED_STATUSES]


def _page_context(session: Session, page: int) -> dict[str, Any]:
    return (
        _queue(session, page)
        | _credits(session)
        | {
            "imports": reconcile.list_imports(session, IMPORTS_SHOWN, 0),
            "mappings": reconcile.list_mappings(session),
            "customers": dashboard.customers(session),
            "counts": COUNTS,
            "key": uuid.uuid4().hex,
        }
    )


@router.get("", response_class=HTMLResponse)
def payments_page(
    request: Request, session: SessionDep, _: WebViewer, page: str | None = None
) -> Response:
    number = int(page) if page and page.isdigit() and len(page) < 10 else 1
    context = _page_context(session, number)
    if is_fragment(request) and request.headers.get("HX-Target") == "unmatched":
        return render(request, "fragments/unmatched_queue.html", **context)
    return render(request, "payments.html", **context)


# -- statement upload --------------------------------------------------------------------------


@router.post("/statements", response_class=HTMLResponse)
@max_body(MAX_STATEMENT_BYTES + MULTIPART_ROOM)
async def upload_statement(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """The upload form: ``reconcile.import_statement`` as ``POST /v1/bank-statements`` calls
    it; the import's report under the form, the queue, credits and imports swapped in too."""
    form = await request.form()
    file = form.get("file")
    mapping = form_text(form, "mapping") or None
    if not isinstance(file, UploadFile) or not file.filename:
        return _upload_again(request, session, 422, "choose a statement file", mapping)
    content = await file.read(MAX_STATEMENT_BYTES + 1)
    if len(content) > MAX_STATEMENT_BYTES:
        message = f"the statement is larger than {MAX_STATEMENT_BYTES} bytes"
        return _upload_again(request, session, 413, message, mapping)
    if not content:
        return _upload_again(request, session, 422, f"{file.filename} is empty", mapping)
    try:
        result, deliveries = await reconcile.import_statement(
            session,
            temporal_client(request),
            settings,
            file.filename,
            content,
            mapping=mapping,
            source="web",
            actor=who.actor,
        )
    except (ApiError, DomainError) as exc:
        session.rollback()
        return _upload_again(request, session, status_of(exc), exc.message, mapping)
    lines = [
        line | {"received": session.get(ReceivedLine, line["id"]) if line.get("id") else None}
        for line in result.lines
    ]
    invoice_ids = [i for line in result.lines for i in line.get("invoices", [])]
    return render(
        request,
        "fragments/statement_done.html",
        status=201,
        result=result,
        report_lines=lines,
        deliveries=deliveries,
        invoices=dashboard.invoices_by_id(session, invoice_ids),
        chosen_mapping=mapping,
        oob=True,
        **_page_context(session, 1),
    )


def _upload_again(
    request: Request, session: Session, status: int, message: str, mapping: str | None
) -> Response:
    return render(
        request,
        "fragments/statement_form.html",
        status=status,
        mappings=reconcile.list_mappings(session),
        chosen_mapping=mapping,
        error=message,
    )


# -- the unmatched queue -----------------------------------------------------------------------


def _line_id(line_id: int) -> int:
    if not 0 < line_id <= MAX_ID:
        raise PageError(404, f"unmatched payment {line_id} not found")
    return line_id


def _allocations(session: Session, form: FormData, currency: str) -> list[dict[str, Any]]:
    """The apply form's amounts: one per listed invoice (empty ones left out), and the
    invoice typed in the last row (its number or id)."""
    out: list[dict[str, Any]] = []
    for value in form.getlist("invoice_id"):
        if not (isinstance(value, str) and value.isdigit() and 0 < int(value) <= MAX_ID):
            raise FormError("invoice_id: not an invoice of this form")
        amount = form_minor(form, f"amount_{value}", currency)
        if amount is not None:
            out.append({"invoice_id": int(value), "amount_minor": amount})
    other = form_text(form, "other_invoice")
    other_amount = form_minor(form, "other_amount", currency)
    if other or other_amount is not None:
        if not other or other_amount is None:
            raise FormError("other invoice: give both the invoice and the amount")
        invoice = reconcile.invoice_named(session, other)
        out.append({"invoice_id": invoice.id, "amount_minor": other_amount})
    return out


def _apply_body(session: Session, form: FormData, line: ReceivedLine) -> ApplyLine:
    credit = form_text(form, "credit_customer_id")
    if credit and not credit.isdigit():
        raise FormError("credit_customer_id: choose a customer")
    body: ApplyLine = validated_body(
        ApplyLine,
        {
            "allocations": _allocations(session, form, line.currency),
            "credit_customer_id": int(credit) if credit else None,
            "note": form_text(form, "note") or None,
        },
    )
    if not body.allocations and body.credit_customer_id is None:
        raise FormError("give an amount for an invoice, a customer for the credit, or both")
    return body


@router.post("/lines/{line_id}/apply", response_class=HTMLResponse)
async def apply_line(
    request: Request,
    line_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """One queue line's apply form: ``reconcile.apply_and_deliver`` as
    ``POST /v1/unmatched-payments/{id}/apply`` calls it; the payments go to the invoices'
    workflows. The line's row comes back resolved (or with the refusal)."""
    form = await request.form()
    try:
        line = reconcile.queued_line(session, _line_id(line_id))
        body = _apply_body(session, form, line)
        done, deliveries = await reconcile.apply_and_deliver(
            session,
            temporal_client(request),
            settings,
            line_id,
            [(a.invoice_id, a.amount_minor) for a in body.allocations],
            body.credit_customer_id,
            body.note,
            who.actor,
        )
    except FormError as exc:
        return _line_again(request, session, line_id, form, 422, str(exc))
    except (ApiError, DomainError) as exc:
        session.rollback()
        return _line_again(request, session, line_id, form, status_of(exc), exc.message)
    invoices = dashboard.invoices_by_id(session, [d.invoice_id for d in deliveries])
    return _resolved(request, session, done, invoices=invoices, deliveries=deliveries)


@router.post("/lines/{line_id}/dismiss", response_class=HTMLResponse)
async def dismiss_line(
    request: Request, line_id: int, session: SessionDep, who: WebSpecialist, _: CsrfChecked
) -> Response:
    """``reconcile.dismiss_line`` as ``POST /v1/unmatched-payments/{id}/dismiss`` calls it."""
    form = await request.form()
    try:
        body: DismissLine = validated_body(DismissLine, {"note": form_text(form, "note")})
        done = reconcile.dismiss_line(session, _line_id(line_id), body.note, who.actor)
    except FormError as exc:
        return _line_again(request, session, line_id, form, 422, str(exc))
    except (ApiError, DomainError) as exc:
        session.rollback()
        return _line_again(request, session, line_id, form, status_of(exc), exc.message)
    return _resolved(request, session, done)


def _resolved(
    request: Request, session: Session, line: ReceivedLine | None, **extra: Any
) -> Response:
    response = render(
        request,
        "fragments/line_resolved.html",
        line=line,
        names=dashboard.customer_names(
            session, [line.customer_id] if line and line.customer_id else []
        ),
        **extra,
    )
    response.headers["HX-Trigger"] = "paymentsChanged"  # the credit list reloads
    return response


def _line_again(
    request: Request, session: Session, line_id: int, form: FormData, status: int, message: str
) -> Response:
    """The line's row again with the refusal and what was typed (the line as it is now: a
    line someone else resolved meanwhile says so)."""
    line = session.get(ReceivedLine, line_id) if 0 < line_id <= MAX_ID else None
    if line is None:
        raise PageError(status if status == 404 else 404, message)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if line.status != UNMATCHED:
        response = _resolved(request, session, line, error=message)
        response.status_code = status
        return response
    choices = {line.id: reconcile.invoices_to_choose(session, line)}
    ids = {line.customer_id} | {i.customer_id for i in choices[line.id]}
    return render(
        request,
        "fragments/unmatched_line.html",
        status=status,
        line=line,
        choices=choices,
        prefill={},
        names=dashboard.customer_names(session, {i for i in ids if i is not None}),
        customers=dashboard.customers(session),
        values=values,
        error=message,
        which=form_text(form, "form"),
    )


# -- customer credit -----------------------------------------------------------------------------


@router.get("/credit", response_class=HTMLResponse)
def credit_section(request: Request, session: SessionDep, _: WebViewer) -> Response:
    return render(request, "fragments/credit_list.html", key=uuid.uuid4().hex, **_credits(session))


@router.post("/credit/{customer_id}/apply", response_class=HTMLResponse)
async def use_credit(
    request: Request,
    customer_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """``apply_credit`` as ``POST /v1/customers/{id}/credit/apply`` calls it (the form's
    hidden key is the Idempotency-Key: a double click uses the credit once)."""
    form = await request.form()
    currency = form_text(form, "currency")
    try:
        if not 0 < customer_id <= MAX_ID:
            raise PageError(404, f"customer {customer_id} not found")
        invoice_id = form_text(form, "invoice_id")
        body: UseCredit = validated_body(
            UseCredit,
            {
                "invoice_id": int(invoice_id) if invoice_id.isdigit() else None,
                "amount_minor": form_minor(form, "amount", currency),
            },
        )
        key = form_text(form, "idempotency_key")[:100] or uuid.uuid4().hex
        payment, outcome = await apply_credit(
            session,
            temporal_client(request),
            settings,
            customer_id,
            body.invoice_id,
            body.amount_minor,
            who.actor,
            idempotency.scoped_key(who.key_id, key),
        )
    except FormError as exc:
        return _credit_again(request, session, customer_id, currency, form, 422, str(exc))
    except (ApiError, DomainError) as exc:
        session.rollback()
        status = status_of(exc)
        return _credit_again(request, session, customer_id, currency, form, status, exc.message)
    invoice_after = session.get(Invoice, payment.invoice_id)
    ok = f"{money(payment.amount_minor, payment.currency)} of credit paid to invoice " + (
        invoice_after.number if invoice_after else str(payment.invoice_id)
    )
    response = render(
        request,
        "fragments/credit_list.html",
        ok=ok,
        outcome=outcome,
        key=uuid.uuid4().hex,
        **_credits(session),
    )
    return response


def _credit_again(
    request: Request,
    session: Session,
    customer_id: int,
    currency: str,
    form: FormData,
    status: int,
    message: str,
) -> Response:
    return render(
        request,
        "fragments/credit_list.html",
        status=status,
        key=uuid.uuid4().hex,
        error=message,
        error_for=(customer_id, currency),
        values={k: v for k, v in form.items() if isinstance(v, str)},
        **_credits(session),
    )


__all__ = ["router"]
