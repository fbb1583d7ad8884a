"""The dashboard's Customers pages: the list at ``/app/customers`` and one customer's page.

Views only, as in ``api.web`` (whose session, CSRF, role and rendering helpers they use): each
calls the domain functions the JSON API's routes call and renders a template.

- the list: ``arflow.customers.listing.list_customers`` (search, segment, risk band, hold,
  collector; paged), its table swapped by htmx with the URL pushed;
- the page: the customer, ``profile_view`` and ``behaviour_view`` (``GET /v1/customers/{id}/
  profile`` and ``behaviour``), credit balances, contact blocks, open invoices and the
  customer's timeline, newest first, masked for viewers by ``changes.shown_to``;
- a specialist's forms: the details (``corrections.update_customer``, the PATCH), the account
  pause and resume (``jobs.start_account_job``), the assigned collector (``update_profile``,
  the profile PUT, then its segment's policy switch as that route does) and removing a
  contact block (``provider_events.lift_block``, the DELETE).

Times are shown in the customer's zone with UTC beside them; amounts in their currency.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlmodel import Session as SqlSession
from starlette.datastructures import FormData

from api.deps import Principal, SessionDep, SettingsDep
from api.errors import ApiError, DomainError, status_of
from api.routes.profiles import follow_segment
from api.web import (
    PAGE_SIZE,
    CsrfChecked,
    PageError,
    WebSpecialist,
    WebViewer,
    details,
    form_text,
    is_fragment,
    opt_int,
    opt_text,
    render,
    templates,
    temporal_client,
)
from arflow.config import Settings
from arflow.customers import contacts, contacts_roles, listing, profiles
from arflow.customers.changes import shown_to
from arflow.customers.collectors import list_collectors
from arflow.customers.events import customer_events
from arflow.invoices import jobs
from arflow.invoices import service as services
from arflow.invoices.corrections import update_customer
from arflow.messages.provider_events import lift_block
from arflow.payments.service import credit_balances
from arflow.portal import links as portal_links
from models import Customer
from models.collection import OptionalReason, PauseBody
from models.customer import UPDATABLE_FIELDS, CustomerUpdate
from models.profile import ProfileUpdate
from models.types import utcnow

router = APIRouter(prefix="/app", include_in_schema=False)
TIMELINE_SIZE = 200
#: The largest page number asked for that still makes an offset the databases take.
MAX_PAGE = 10_000_000
FIELD_LABELS = {
    "name": "Name",
    "email": "Email",
    "phone": "Phone",
    "address": "Postal address",
    "timezone": "Time zone",
    "locale": "Locale",
    "country": "Country",
    "iban": "IBAN",
}
ACCOUNT_TITLES = {"pause": "Pause the account", "resume": "Resume the account"}


def zoned(value: datetime | None, zone: str) -> str:
    """An instant in ``zone``, to the minute, with the zone's abbreviation."""
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def event_details(data: dict[str, Any] | None) -> str:
    """A customer event's data: each change as ``field: old → new`` (a masked value shows as
    the mask), then the other values as ``details`` shows them (a mapping's entries each on
    their own: ``channel email: unblocked (bounced)``)."""
    if not data:
        return ""
    shown = []
    changes = data.get("changes")
    if isinstance(changes, dict):
        for name, change in changes.items():
            if isinstance(change, dict):
                old, new = change.get("from"), change.get("to")
                shown.append(
                    f"{name}: {'—' if old is None else old} → {'—' if new is None else new}"
                )
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == "changes":
            continue
        if isinstance(value, dict):  # e.g. channels: {"email": "unblocked (bounced)"}
            flat |= {f"{key.removesuffix('s')} {k}": v for k, v in value.items()}
        else:
            flat[key] = value
    rest = details(flat)
    return " · ".join([*shown, rest] if rest else shown)


templates.env.filters |= {"zoned": zoned, "event_details": event_details}


# -- the list ------------------------------------------------------------------------------------


@router.get("/customers", response_class=HTMLResponse)
def customer_list(
    request: Request,
    session: SessionDep,
    _: WebViewer,
    q: str | None = None,
    segment: str | None = None,
    risk: str | None = None,
    hold: str | None = None,
    collector: str | None = None,
    page: str | None = None,
) -> Response:
    segments = listing.segment_names(session)
    filters: dict[str, str | None] = {
        "q": opt_text(q),
        "segment": opt_text(segment, tuple(segments)),
        "risk": opt_text(risk, listing.RISK_BANDS),
        "hold": opt_text(hold, listing.HOLDS),
        "collector": opt_text(collector),
    }
    number = min(opt_int(page) or 1, MAX_PAGE)
    found = listing.list_customers(
        session,
        search=filters["q"],
        segment=filters["segment"],
        risk_band=filters["risk"],  # type: ignore[arg-type]  # one of RISK_BANDS, or None
        hold=filters["hold"],  # type: ignore[arg-type]  # one of HOLDS, or None
        collector=filters["collector"],
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
    )
    query = {k: v for k, v in filters.items() if v is not None}
    context: dict[str, Any] = {
        "rows": found.rows,
        "total": found.total,
        "scanned_all": found.scanned_all,
        "scan_limit": listing.RISK_SCAN_LIMIT,
        "page": number,
        "pages": max(1, -(-found.total // PAGE_SIZE)),
        "filters": filters,
        "page_url": lambda n: "/app/customers?" + urlencode(query | {"page": n}),
    }
    if is_fragment(request):
        return render(request, "fragments/customer_table.html", **context)
    return render(
        request,
        "customers.html",
        segments=segments,
        bands=listing.RISK_BANDS,
        holds=listing.HOLDS,
        collectors=[c for c in list_collectors(session) if c.active],
        **context,
    )


# -- one customer ----------------------------------------------------------------------------------


def _customer_or_404(session: SqlSession, customer_id: int) -> Customer:
    """The customer, or the 404 page (a fragment for htmx) for an unknown id."""
    try:
        return profiles.get_customer(session, customer_id)
    except DomainError as exc:
        raise PageError(status_of(exc), exc.message) from exc


def _context(
    session: SqlSession, settings: Settings, customer_id: int, who: Principal
) -> dict[str, Any]:
    """Everything the customer's page shows (404 as a page for an unknown customer)."""
    customer = _customer_or_404(session, customer_id)
    now = utcnow()
    events = customer_events(session, customer_id, limit=TIMELINE_SIZE, newest_first=True)
    return {
        "customer": customer,
        "local_now": now.astimezone(ZoneInfo(customer.timezone)),
        "now": now,
        "profile": profiles.profile_view(session, customer_id, now),
        "figures": profiles.behaviour_view(session, customer_id, now),
        "credit": credit_balances(session, customer_id),
        "blocks": contacts.list_blocks(session, customer_id),
        "contacts": contacts_roles.list_contacts(session, customer_id),
        "invoices": [
            services.public(i, settings) for i in listing.open_invoices(session, customer_id)
        ],
        "events": [shown_to(e, who) for e in events],
        "timeline_size": TIMELINE_SIZE,
    }


def _details(customer: Customer) -> dict[str, str]:
    """The edit form's values: the customer's details as they are."""
    return {
        name: "" if (v := getattr(customer, name)) is None else str(v) for name in UPDATABLE_FIELDS
    }


def _forms(customer: Customer, session: SqlSession) -> dict[str, Any]:
    """The action forms' starting state."""
    return {
        "values": _details(customer),
        "errors": {},
        "collectors": [c for c in list_collectors(session) if c.active],
        "keys": {name: uuid.uuid4().hex for name in ACCOUNT_TITLES},
        "field_labels": FIELD_LABELS,
        "account_titles": ACCOUNT_TITLES,
    }


@router.get("/customers/{customer_id}", response_class=HTMLResponse)
def customer_page(
    request: Request,
    customer_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: WebViewer,
) -> Response:
    context = _context(session, settings, customer_id, who)
    return render(request, "customer.html", **context, **_forms(context["customer"], session))


def _field_errors(exc: ValidationError) -> dict[str, str]:
    """A request model's errors by form field (``""``: the form as a whole)."""
    errors: dict[str, str] = {}
    for e in exc.errors():
        field = str(e["loc"][0]) if e["loc"] else ""
        message = str(e["msg"]).removeprefix("Value error, ")
        errors[field] = f"{errors[field]}; {message}" if field in errors else message
    return errors


def _domain_field_errors(exc: ApiError | DomainError) -> dict[str, str]:
    """A domain refusal next to the fields it names (``details``), else on the form."""
    named = [
        str(d["field"])
        for d in (exc.details if isinstance(exc.details, list) else [])
        if isinstance(d, dict) and "field" in d
    ]
    return dict.fromkeys(named or [""], exc.message)


def _submitted(form: FormData, names: tuple[str, ...]) -> dict[str, str]:
    return {name: form_text(form, name) for name in names}


@router.post("/customers/{customer_id}/edit", response_class=HTMLResponse)
async def edit_customer(
    request: Request,
    customer_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """The details form: the same domain call as ``PATCH /v1/customers/{id}``, with every
    field of the form given (an emptied optional field clears it; only the fields that differ
    change). The form comes back with the errors by field (nothing stored), or with what
    changed and the workflows' summary, and the page's header, details and timeline."""
    _customer_or_404(session, customer_id)
    form = await request.form()
    values = _submitted(form, UPDATABLE_FIELDS)
    data = {name: value or None for name, value in values.items()}
    for required in ("name", "timezone", "locale"):  # not nullable: empty is a bad value
        data[required] = values[required]
    try:
        body = CustomerUpdate.model_validate(data)
        done = await update_customer(
            session, request.app.state.temporal, settings, customer_id, body, who
        )
    except ValidationError as exc:
        return _edit_again(request, customer_id, values, 422, _field_errors(exc))
    except (ApiError, DomainError) as exc:
        return _edit_again(request, customer_id, values, status_of(exc), _domain_field_errors(exc))
    context = _context(session, settings, customer_id, who)
    return render(
        request,
        "fragments/customer_edit_done.html",
        **context,
        **_forms(context["customer"], session),
        changes=done.changes,
        channels=done.channels,
        workflows=done.workflows,
        ok="Details saved." if done.changes else "Nothing changed.",
    )


def _edit_again(
    request: Request, customer_id: int, values: dict[str, str], status: int, errors: dict[str, str]
) -> Response:
    return render(
        request,
        "fragments/customer_edit.html",
        status=status,
        customer_id=customer_id,
        values=values,
        errors=errors,
        field_labels=FIELD_LABELS,
    )


async def _account_job(
    request: Request,
    session: SqlSession,
    settings: Settings,
    customer_id: int,
    action: str,
    who: Principal,
) -> Response:
    """Pause or resume the whole account: the job of ``POST /v1/customers/{id}/pause|resume``
    (``jobs.start_account_job``); the form comes back with the job, which follows itself."""
    _customer_or_404(session, customer_id)
    form = await request.form()
    values = _submitted(form, ("reason", "until"))
    body: PauseBody | OptionalReason
    try:
        if action == "pause":
            body = PauseBody.model_validate(
                {"reason": values["reason"], "until": values["until"] or None}
            )
        else:
            body = OptionalReason.model_validate({"reason": values["reason"]})
        job = await jobs.start_account_job(
            session, temporal_client(request), settings, customer_id, body, who.actor
        )
        shown = jobs.public(session, job)
    except ValidationError as exc:
        return _account_form(request, customer_id, action, 422, values, _field_errors(exc))
    except (ApiError, DomainError) as exc:
        errors = {"": exc.message}
        return _account_form(request, customer_id, action, status_of(exc), values, errors)
    return _account_form(request, customer_id, action, 202, job=shown)


def _account_form(
    request: Request,
    customer_id: int,
    action: str,
    status: int,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    job: Any = None,
) -> Response:
    return render(
        request,
        "fragments/customer_account.html",
        status=status,
        customer_id=customer_id,
        action=action,
        title=ACCOUNT_TITLES[action],
        values=values or {},
        errors=errors or {},
        job=job,
    )


@router.post("/customers/{customer_id}/pause", response_class=HTMLResponse)
async def pause_account(
    request: Request,
    customer_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    return await _account_job(request, session, settings, customer_id, "pause", who)


@router.post("/customers/{customer_id}/resume", response_class=HTMLResponse)
async def resume_account(
    request: Request,
    customer_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    return await _account_job(request, session, settings, customer_id, "resume", who)


@router.post("/customers/{customer_id}/collector", response_class=HTMLResponse)
async def assign_collector(
    request: Request,
    customer_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """The collector assigned to the customer: the same domain call as ``PUT /v1/customers/
    {id}/profile`` with ``assigned_collector`` (empty: nobody), then, as that route does, the
    open invoices follow the policy of a segment the customer moved to."""
    _customer_or_404(session, customer_id)
    form = await request.form()
    value = form_text(form, "assigned_collector")
    try:
        body = ProfileUpdate.model_validate({"assigned_collector": value or None})
        result = profiles.update_profile(session, customer_id, body, who)
        await follow_segment(result, session, settings, request.app.state.temporal, who.actor)
    except ValidationError as exc:
        return _collector_form(request, session, customer_id, 422, value, _field_errors(exc))
    except (ApiError, DomainError) as exc:
        errors = _domain_field_errors(exc)
        return _collector_form(request, session, customer_id, status_of(exc), value, errors)
    context = _context(session, settings, customer_id, who)
    return render(
        request,
        "fragments/customer_collector_done.html",
        **context,
        **_forms(context["customer"], session),
        ok="Collector saved." if result.changed_fields else "Nothing changed.",
    )


def _collector_form(
    request: Request,
    session: SqlSession,
    customer_id: int,
    status: int,
    value: str,
    errors: dict[str, str],
) -> Response:
    return render(
        request,
        "fragments/customer_collector.html",
        status=status,
        customer_id=customer_id,
        assigned=value,
        collectors=[c for c in list_collectors(session) if c.active],
        errors=errors,
    )


@router.post(
    "/customers/{customer_id}/contact-blocks/{channel}/remove", response_class=HTMLResponse
)
def remove_block(
    request: Request,
    customer_id: int,
    channel: str,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """Use a channel again: the domain call of ``DELETE /v1/customers/{id}/contact-blocks/
    {channel}``; the blocks come back with the outcome."""
    context = _context(session, settings, customer_id, who)  # 404 page for an unknown one
    if lift_block(session, customer_id, channel[:20], who.actor):
        session.commit()
        status, message = 200, {"ok": f"The {channel} block is removed."}
    else:
        status, message = 404, {"error": f"no {channel[:20]} block for this customer"}
    return render(
        request,
        "fragments/contact_blocks.html",
        status=status,
        customer=context["customer"],
        blocks=contacts.list_blocks(session, customer_id),
        **message,
    )


def _portal_form(
    request: Request, customer: Customer, status: int = 200, **context: Any
) -> Response:
    return render(
        request,
        "fragments/customer_portal.html",
        status=status,
        customer_id=customer.id,
        portal_revoked_from=customer.portal_links_from,
        **context,
    )


@router.post("/customers/{customer_id}/portal-link", response_class=HTMLResponse)
def make_portal_link(
    request: Request,
    customer_id: int,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """A portal link to send by hand (recorded as ``portal_link_made``)."""
    customer = _customer_or_404(session, customer_id)
    url, expires_at = portal_links.make_link(session, settings, customer_id, who.actor)
    return _portal_form(
        request, customer, portal_link=url, portal_until=zoned(expires_at, customer.timezone)
    )


@router.post("/customers/{customer_id}/portal-revoke", response_class=HTMLResponse)
async def revoke_portal_links(
    request: Request,
    customer_id: int,
    session: SessionDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """End every portal link of the customer made until now (recorded)."""
    customer = _customer_or_404(session, customer_id)
    reason = form_text(await request.form(), "reason")[:500]
    if not reason:
        return _portal_form(request, customer, 422, portal_error="Say why the links are revoked.")
    customer = portal_links.revoke(session, customer_id, who.actor, reason)
    return _portal_form(
        request, customer, portal_ok="Revoked: the customer's next message has a new link."
    )
