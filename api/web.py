"""The web dashboard at ``/app``: server-rendered Jinja2 pages and htmx fragments.

Views only. Each one checks the session's role (the API's roles: viewer sees, specialist
acts, admin also sees workflow history), calls the services and reports the JSON API's routes
call, and renders a template. Rules live in those functions, not here: the ones that depend
on who acts (cancel after a reminder, a credit above the approval threshold, a raised credit
limit) take the session's ``Principal``, as the API's routes pass theirs.

Sign-in: the API key typed into the login form is checked against ``ARFLOW_API_KEYS``; the
session cookie (Starlette's signed ``SessionMiddleware`` cookie, ``ARFLOW_SESSION_SECRET``)
keeps an HMAC of the key, never the key, so removing a key from the settings ends its
sessions and changing its role changes theirs. Every POST must carry the session's CSRF
token (``X-CSRF-Token`` header, which htmx sends from ``hx-headers`` on ``<body>``, or a
``csrf_token`` form field).

A session ends after ``ARFLOW_SESSION_IDLE_SECONDS`` unused (the cookie's signed timestamp,
renewed on every answer) and ``ARFLOW_SESSION_ABSOLUTE_SECONDS`` after sign-in, however busy.
Logging out records the session's id as revoked (``models.web_session``), so a copy of the
cookie replayed afterwards is refused. Failed sign-ins count towards the per-address limit
shared with the API's bearer keys (``api.security.FailureLimiter``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlmodel import Session as SqlSession
from starlette.datastructures import FormData
from starlette.middleware.sessions import SessionMiddleware
from temporalio.client import Client

from api import charts
from api.bounds import LARGEST
from api.deps import Principal, SessionDep, SettingsDep, TodayDep, key_role
from api.errors import ApiError, DomainError, status_of
from api.pages import attachment_response
from api.security import client_address, limiter_of
from arflow import web_sessions
from arflow.agency import service as agency
from arflow.charges.service import charges_of, waive_charge
from arflow.config import Role, Settings, same_secret
from arflow.customers.collectors import list_collectors
from arflow.invoices import actions, amendments, approvals, calls, jobs
from arflow.invoices import service as services
from arflow.invoices import worklist as task_work
from arflow.messages.render import money
from arflow.payments.statements.values import parse_decimal, to_minor_units
from arflow.portal import requests as portal_requests
from arflow.reports import aging as aging_report
from arflow.reports import dashboard, history
from arflow.reports import kpis as kpi_report
from arflow.reports.common import ReportFilter
from models import Customer, Invoice, Task
from models.charge import WaiveBody
from models.collection import (
    TASK_OUTCOMES,
    AssignBody,
    CallOutcome,
    DisputeCreate,
    DisputeResolve,
    NoteBody,
    OptionalReason,
    PauseBody,
    PlanCreate,
    PromiseCreate,
    ReasonBody,
    TaskUpdate,
)
from models.invoice import INVOICE_STATUSES, CreditNoteCreate, InvoiceAmend
from models.job import SendNowRequest
from models.types import utcnow
from workflows.types import CLOSED_STATUSES

log = logging.getLogger("arflow.web")
HERE = Path(__file__).parent
SESSION_COOKIE = "arflow_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
PAGE_SIZE = 25
HOLDS = ("paused", "promise", "plan")
AGING_LABELS = ("current", "1-30", "31-60", "61-90", "> 90")
ACTION_TITLES = {
    "dispute": "Open a dispute",
    "plan": "Agree a payment plan",
    "promise": "Record a promise to pay",
    "pause": "Pause reminders",
    "resume": "Resume reminders",
    "note": "Add a note",
    "send-now": "Send the next reminder now",
    "credit-note": "Issue a credit note",
    "due-date": "Correct the due date",
    "resolve-dispute": "Resolve the dispute",
    "cancel-plan": "Cancel the payment plan",
    "assign": "Assign a collector",
    "waive-charge": "Waive a charge",
    "recall": "Recall from the agency",
    "call-outcome": "Record a call",
    "write-off": "Write off",
}
#: The actions shown only when the invoice's state calls for them (``_available``).
STATE_ACTIONS = frozenset(
    {"resolve-dispute", "cancel-plan", "waive-charge", "recall", "call-outcome", "write-off"}
)
DONE = {
    "dispute": "Dispute opened.",
    "plan": "Payment plan agreed.",
    "promise": "Promise recorded.",
    "pause": "Reminders paused.",
    "resume": "Reminders resumed.",
    "note": "Note added.",
    "send-now": "Reminder sent.",
    "credit-note": "Credit note applied.",
    "due-date": "Due date changed.",
    "resolve-dispute": "Dispute resolved.",
    "cancel-plan": "Payment plan cancelled.",
    "assign": "Collector assigned.",
    "waive-charge": "Charge waived.",
    "recall": "Recalled from the agency.",
    "call-outcome": "Call recorded.",
    "write-off": "Written off.",
}


def when(value: datetime | None, seconds: bool = False) -> str:
    """An instant in UTC, to the minute (or second)."""
    if value is None:
        return ""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def details(data: Mapping[str, Any] | None, currency: str | None = None) -> str:
    """An event's or task's data as ``key: value`` pairs (empty values left out); amounts in
    minor units shown as money when the currency is known."""
    if not data:
        return ""
    shown = []
    for name, value in data.items():
        if value in (None, ""):
            continue
        if currency and name.endswith("_minor") and isinstance(value, int):
            name, value = name.removesuffix("_minor"), money(value, currency)
        shown.append(f"{name.replace('_', ' ')}: {value}")
    return " · ".join(shown)


templates = Jinja2Templates(directory=HERE / "templates")


def local(value: datetime | None, zone: str) -> str:
    """An instant in the customer's zone, to the minute, with the zone's abbreviation."""
    if value is None:
        return ""
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


templates.env.filters |= {"money": money, "when": when, "details": details, "local": local}
router = APIRouter(prefix="/app", include_in_schema=False)


# -- wiring ------------------------------------------------------------------------------------


def install(app: FastAPI, settings: Settings) -> None:
    """Serve the dashboard from ``app``: session cookie, static files, pages, error pages."""
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.session_secret,
        session_cookie=SESSION_COOKIE,
        max_age=settings.session_idle_seconds,
        path="/app",
        same_site="lax",
        https_only=settings.public_url.startswith("https://"),
    )
    app.mount("/app/static", StaticFiles(directory=HERE / "static"), name="app-static")
    app.include_router(router)
    app.add_exception_handler(LoginRequired, _to_login)  # type: ignore[arg-type]
    app.add_exception_handler(PageError, _error_page)  # type: ignore[arg-type]


class LoginRequired(Exception):
    """No valid session: the browser goes to the login page (and back afterwards)."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class PageError(Exception):
    """A refusal shown as a page, or inline in the form that caused it (htmx)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_fragment(request: Request) -> bool:
    """An htmx request that wants a fragment (not a history restore, which needs a page)."""
    return (
        request.headers.get("HX-Request") == "true"
        and request.headers.get("HX-History-Restore-Request") != "true"
    )


async def _to_login(request: Request, exc: LoginRequired) -> Response:
    target = "/app/login?" + urlencode({"next": exc.next_url})
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _error_page(request: Request, exc: PageError) -> Response:
    name = "fragments/error.html" if is_fragment(request) else "error.html"
    return render(request, name, status=exc.status, message=exc.message, code=exc.status)


# -- session, roles and CSRF ----------------------------------------------------------------------


def _key_mac(settings: Settings, key: str) -> str:
    return hmac.new(settings.session_secret.encode(), key.encode(), hashlib.sha256).hexdigest()


def signed_in(request: Request) -> Principal | None:
    """The principal of the session's API key, as the API would see that key; None if none,
    or when the session is past its absolute lifetime or was logged out."""
    if hasattr(request.state, "principal"):
        found: Principal | None = request.state.principal
        return found
    request.state.principal = None
    mac, sid, started = (request.session.get(k) for k in ("key", "sid", "iat"))
    if not (isinstance(mac, str) and isinstance(sid, str) and isinstance(started, int)):
        return None
    settings: Settings = request.app.state.settings
    if time.time() >= started + settings.session_absolute_seconds:
        return None
    keys: dict[str, Role] = request.app.state.api_keys
    for key, role in keys.items():
        if same_secret(_key_mac(settings, key), mac):
            with SqlSession(request.app.state.engine) as db:
                if web_sessions.is_revoked(db, sid):
                    return None
            who = Principal(role=role, key_id=hashlib.sha256(key.encode()).hexdigest()[:8])
            request.state.principal = who
            return who
    return None


def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def web_user(role: Role) -> Callable[[Request], Principal]:
    def dependency(request: Request) -> Principal:
        who = signed_in(request)
        if who is None:
            query = f"?{request.url.query}" if request.url.query else ""
            raise LoginRequired(request.url.path + query)
        if who.role.rank < role.rank:
            raise PageError(403, f"this action needs the {role.value} role")
        return who

    return dependency


async def check_csrf(request: Request) -> None:
    expected = request.session.get("csrf")
    sent: Any = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = (await request.form()).get(CSRF_FIELD)
    if not (
        isinstance(expected, str)
        and isinstance(sent, str)
        and hmac.compare_digest(expected.encode(), sent.encode())
    ):
        raise PageError(403, "the form's security token is missing or out of date; reload the page")


WebViewer = Annotated[Principal, Depends(web_user(Role.viewer))]
WebSpecialist = Annotated[Principal, Depends(web_user(Role.specialist))]
WebAdmin = Annotated[Principal, Depends(web_user(Role.admin))]
CsrfChecked = Annotated[None, Depends(check_csrf)]


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    who = signed_in(request)
    base = {
        "who": who,
        "csrf": csrf_token(request),
        "can_act": who is not None and who.role.rank >= Role.specialist.rank,
        "is_admin": who is not None and who.role is Role.admin,
        "path": request.url.path,
    }
    return templates.TemplateResponse(request, name, base | context, status_code=status)


def temporal_client(request: Request) -> Client:
    client: Client | None = request.app.state.temporal
    if client is None:
        raise ApiError(503, "workflow_unavailable", "Temporal is not connected; retry")
    return client


# -- login -------------------------------------------------------------------------------------


def _safe_next(value: object) -> str:
    text = value if isinstance(value, str) else ""
    if text.startswith("/app") and not text.startswith("//") and "\\" not in text:
        return text
    return "/app"


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/app") -> Response:
    if signed_in(request) is not None:
        return RedirectResponse(_safe_next(next), status_code=303)
    return render(request, "login.html", next=_safe_next(next))


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, settings: SettingsDep, _: CsrfChecked) -> Response:
    form = await request.form()
    key = form_text(form, "api_key")
    target = _safe_next(form.get("next"))
    limiter, address = limiter_of(request), client_address(request)
    wait = limiter.retry_after(address)
    if wait is not None:
        page = render(
            request,
            "error.html",
            status=429,
            code=429,
            message=f"Too many failed sign-ins from this address; try again in {wait} s.",
        )
        page.headers["Retry-After"] = str(wait)
        return page
    keys: dict[str, Role] = request.app.state.api_keys
    if not key or key_role(keys, key) is None:
        limiter.failed(address)
        return render(request, "login.html", status=401, next=target, error="unknown API key")
    request.session.clear()  # a fresh session (and CSRF token) for the signed-in user
    request.session["key"] = _key_mac(settings, key)
    request.session["sid"] = secrets.token_urlsafe(24)
    request.session["iat"] = int(time.time())
    request.state.__dict__.pop("principal", None)
    csrf_token(request)
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(
    request: Request, session: SessionDep, settings: SettingsDep, _: CsrfChecked
) -> Response:
    sid, started = request.session.get("sid"), request.session.get("iat")
    if isinstance(sid, str):
        started = started if isinstance(started, int) else int(time.time())
        ends = datetime.fromtimestamp(started + settings.session_absolute_seconds, UTC)
        web_sessions.revoke(session, sid, ends)
    request.session.clear()
    return RedirectResponse("/app/login", status_code=303)


# -- overview -----------------------------------------------------------------------------------


def aging_charts(aging: aging_report.AgingReport) -> list[tuple[Any, charts.BarChart]]:
    """One bar chart per currency of the aging report's totals (its buckets, as money)."""
    drawn = []
    for row in aging.totals:
        values = [getattr(row, f"{bucket}_minor") for bucket in aging_report.BUCKETS]
        texts = [money(v, row.currency) for v in values]
        drawn.append((row, charts.bar_chart(AGING_LABELS, values, texts)))
    return drawn


@router.get("", response_class=HTMLResponse)
def overview(request: Request, session: SessionDep, today: TodayDep, _: WebViewer) -> Response:
    everything = ReportFilter()
    kpis = kpi_report.kpis(session, today - timedelta(days=29), today, today, everything)
    aging = aging_report.aging(session, today, today, everything)
    trend = dashboard.dso_trend(session, today, months=6)
    currencies = sorted({c for month in trend for c in month.dso_days})
    dso_chart = charts.line_chart(
        [m.month.strftime("%b %Y") for m in trend],
        {c: [m.dso_days.get(c) for m in trend] for c in currencies},
        unit=" d",
    )
    return render(
        request,
        "overview.html",
        kpis=kpis,
        aging=aging,
        aging_charts=aging_charts(aging),
        dso_chart=dso_chart,
        trend=trend,
        open_disputes=dashboard.open_disputes(session),
        today=today,
    )


# -- invoices table and bulk send ----------------------------------------------------------------


def opt_int(value: str | None) -> int | None:
    """A positive whole number within what the databases store (an id, a page); else None."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        return None
    return number if 0 < (number := int(text)) <= LARGEST else None


def opt_text(value: str | None, allowed: tuple[str, ...] | None = None) -> str | None:
    """A filter's text (at most 100 characters), if it is one of ``allowed``; else None."""
    text = (value or "").strip()[:100]
    if not text or (allowed is not None and text not in allowed):
        return None
    return text


@router.get("/invoices", response_class=HTMLResponse)
def invoice_list(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _: WebViewer,
    status: str | None = None,
    customer_id: str | None = None,
    overdue: str | None = None,
    collector: str | None = None,
    hold: str | None = None,
    page: str | None = None,
) -> Response:
    chosen_status = opt_text(status, INVOICE_STATUSES)
    chosen_customer = opt_int(customer_id)
    chosen_overdue = opt_text(overdue, ("yes", "no"))
    chosen_collector = opt_text(collector)
    chosen_hold = opt_text(hold, HOLDS)
    number = opt_int(page) or 1
    rows, total = services.list_invoices(
        session,
        status=chosen_status,
        customer_id=chosen_customer,
        overdue=None if chosen_overdue is None else chosen_overdue == "yes",
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
        collector=chosen_collector,
        hold=chosen_hold,
    )
    filters: dict[str, str | int | None] = {
        "status": chosen_status,
        "customer_id": chosen_customer,
        "overdue": chosen_overdue,
        "collector": chosen_collector,
        "hold": chosen_hold,
    }
    query = {k: v for k, v in filters.items() if v is not None}
    context: dict[str, Any] = {
        "invoices": [services.public(r, settings) for r in rows],
        "names": dashboard.customer_names(session, (r.customer_id for r in rows)),
        "total": total,
        "page": number,
        "pages": max(1, -(-total // PAGE_SIZE)),
        "filters": filters,
        "query": query,
        "page_url": lambda n: "/app/invoices?" + urlencode(query | {"page": n}),
    }
    if is_fragment(request):
        return render(request, "fragments/invoice_table.html", **context)
    return render(
        request,
        "invoices.html",
        customers=dashboard.customers(session),
        statuses=INVOICE_STATUSES,
        holds=HOLDS,
        **context,
    )


@router.post("/jobs", response_class=HTMLResponse)
async def send_now_job(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    form = await request.form()
    ids = [int(v) for v in form.getlist("invoice_id") if isinstance(v, str) and v.isdigit()]
    if not ids:
        return render(request, "fragments/error.html", status=422, message="select invoices first")
    try:
        body = SendNowRequest(invoice_ids=ids)
        job = await jobs.start_job(session, temporal_client(request), settings, body, who.actor)
        shown = jobs.public(session, job)
    except (ApiError, DomainError) as exc:
        return render(request, "fragments/error.html", status=status_of(exc), message=exc.message)
    return render(request, "fragments/job.html", status=202, job=shown)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_progress(request: Request, job_id: int, session: SessionDep, _: WebViewer) -> Response:
    try:
        job = jobs.get_job(session, job_id)
    except (ApiError, DomainError) as exc:
        raise PageError(status_of(exc), exc.message) from exc
    if job.kind == jobs.SIMULATION:  # its own page, in the policy lab
        return RedirectResponse(f"/app/policy-lab/jobs/{job_id}", status_code=303)
    name = "fragments/job.html" if is_fragment(request) else "job.html"
    return render(request, name, job=job)


# -- one invoice ---------------------------------------------------------------------------------


def _invoice_context(session: SessionDep, settings: Settings, invoice_id: int) -> dict[str, Any]:
    try:
        invoice = services.get_invoice(session, invoice_id)
    except (ApiError, DomainError) as exc:
        raise PageError(status_of(exc), exc.message) from exc
    disputes = actions.list_disputes(session, invoice_id)
    charges = charges_of(session, invoice_id)
    state = {
        "open_dispute": next((d.id for d in disputes if d.status == "open"), None),
        "waivable": [c for c in charges.charges if c.waived_at is None],
        "call_tasks": task_work.list_tasks(
            session, kind="call", status="open", invoice_id=invoice_id
        )[0],
    }
    owner = session.get(Customer, invoice.customer_id)
    return {
        "invoice": services.public(invoice, settings),
        "customer": owner.name if owner else f"customer {invoice.customer_id}",
        "zone": owner.timezone if owner else "UTC",
        "events": list(reversed(services.timeline(session, invoice_id))),
        "messages": actions.messages(session, invoice_id),
        "disputes": disputes,
        "approvals": approvals.list_approvals(session, "pending", invoice_id),
        "attachments": portal_requests.list_attachments(session, invoice_id),
        "proposals": portal_requests.list_proposals(session, invoice_id),
        "charges": charges,
        "actions": {a: t for a, t in ACTION_TITLES.items() if _available(a, invoice, state)},
        **state,
    }


def _available(action: str, invoice: Invoice, state: dict[str, Any]) -> bool:
    """Whether the invoice page offers ``action`` now (the domain refuses the rest anyway: a
    form posted from a stale page gets the refusal in the form). Write-off is shown to admins
    only (the template checks the role)."""
    if action not in STATE_ACTIONS:
        return True
    closed = invoice.status in CLOSED_STATUSES
    return {
        "resolve-dispute": state["open_dispute"] is not None,
        "cancel-plan": invoice.hold == "plan",
        "waive-charge": bool(state["waivable"]),
        "recall": invoice.status == "escalated",
        "call-outcome": bool(state["call_tasks"]),
        "write-off": not closed,
    }[action]


@router.get("/invoices/{invoice_id}", response_class=HTMLResponse)
def invoice_page(
    request: Request, invoice_id: int, session: SessionDep, settings: SettingsDep, _: WebViewer
) -> Response:
    context = _invoice_context(session, settings, invoice_id)
    keys = {action: uuid.uuid4().hex for action in ACTION_TITLES}
    return render(request, "invoice.html", keys=keys, **context)


@router.get("/invoices/{invoice_id}/history", response_class=HTMLResponse)
async def invoice_history(
    request: Request, invoice_id: int, session: SessionDep, settings: SettingsDep, _: WebAdmin
) -> Response:
    try:
        services.get_invoice(session, invoice_id)
        found = await history.invoice_history(temporal_client(request), settings, invoice_id)
    except (ApiError, DomainError) as exc:
        return render(request, "fragments/error.html", status=status_of(exc), message=exc.message)
    return render(request, "fragments/history.html", history=found)


class FormError(ValueError):
    """A form value the API's request model cannot take (answered as a 422)."""


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def form_minor(form: FormData, name: str, currency: str) -> int | None:
    text = form_text(form, name)
    if not text:
        return None
    try:
        return to_minor_units(parse_decimal(text), currency)
    except ValueError as exc:
        raise FormError(f"{name}: {exc}") from None


def validated_body(model: type[Any], data: Mapping[str, Any]) -> Any:
    """The API's request model for ``data``; its validation errors as one message."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise FormError(
            "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'form'}: "
                f"{str(e['msg']).removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        ) from None


def _installments(form: FormData, currency: str) -> list[dict[str, Any]]:
    """Lines of ``YYYY-MM-DD amount`` (the amount in the invoice's currency)."""
    out = []
    for n, line in enumerate(form_text(form, "installments").splitlines(), start=1):
        parts = line.replace(",", " ").replace(";", " ").split()
        if not parts:
            continue
        if len(parts) != 2:
            raise FormError(f"instalment line {n}: write a date and an amount")
        try:
            due = date.fromisoformat(parts[0])
            amount = to_minor_units(parse_decimal(parts[1]), currency)
        except ValueError as exc:
            raise FormError(f"instalment line {n}: {exc}") from None
        out.append({"due_date": due, "amount_minor": amount})
    return out


def _form_body(action: str, form: FormData, currency: str) -> Any:
    """The JSON API's request body for ``action``, validated from the form (None for
    send-now, which takes none)."""
    if action == "dispute":
        return validated_body(
            DisputeCreate,
            {
                "reason": form_text(form, "reason"),
                "amount_minor": form_minor(form, "amount", currency),
            },
        )
    if action == "plan":
        return validated_body(
            PlanCreate,
            {"installments": _installments(form, currency), "note": form_text(form, "note")},
        )
    if action == "promise":
        return validated_body(
            PromiseCreate,
            {
                "promised_date": form_text(form, "promised_date") or None,
                "amount_minor": form_minor(form, "amount", currency),
                "note": form_text(form, "note"),
            },
        )
    if action == "pause":
        return validated_body(
            PauseBody,
            {"until": form_text(form, "until") or None, "reason": form_text(form, "reason")},
        )
    if action == "resume":
        return validated_body(OptionalReason, {"reason": form_text(form, "reason")})
    if action == "note":
        return validated_body(NoteBody, {"text": form_text(form, "text")})
    if action == "send-now":
        return None
    if action == "credit-note":
        return validated_body(
            CreditNoteCreate,
            {
                "amount_minor": form_minor(form, "amount", currency),
                "reason": form_text(form, "reason"),
                "external_id": form_text(form, "external_id"),
            },
        )
    if action == "due-date":
        return validated_body(
            InvoiceAmend,
            {"due_date": form_text(form, "due_date") or None, "reason": form_text(form, "reason")},
        )
    return _state_form_body(action, form, currency)


@dataclass(frozen=True)
class _OnRow:
    """A form's body for one row of the invoice's (a dispute, a charge, a call task)."""

    row_id: int
    body: DisputeResolve | WaiveBody | CallOutcome


@dataclass(frozen=True)
class _ByActor:
    """cancel-plan, write-off and recall: an update that takes only a reason."""

    action: str
    reason: str


def _row_id(form: FormData, name: str) -> int:
    value = opt_int(form_text(form, name) or None)
    if value is None:
        raise FormError(f"{name}: choose one")
    return value


def _state_form_body(action: str, form: FormData, currency: str) -> Any:
    """The bodies of the actions shown by the invoice's state, and assign."""
    if action == "resolve-dispute":
        resolve = {
            "outcome": form_text(form, "outcome") or None,
            "credit_minor": form_minor(form, "credit", currency) or 0,
            "note": form_text(form, "note"),
        }
        return _OnRow(_row_id(form, "dispute_id"), validated_body(DisputeResolve, resolve))
    if action == "waive-charge":
        waive = validated_body(WaiveBody, {"reason": form_text(form, "reason")})
        return _OnRow(_row_id(form, "charge_id"), waive)
    if action == "call-outcome":
        call = {"outcome": form_text(form, "outcome") or None, "note": form_text(form, "note")}
        return _OnRow(_row_id(form, "task_id"), validated_body(CallOutcome, call))
    if action == "assign":
        return validated_body(AssignBody, {"collector": form_text(form, "collector")})
    if action in ("cancel-plan", "write-off", "recall"):
        reason = form_text(form, "reason")
        if action != "cancel-plan":
            reason = validated_body(ReasonBody, {"reason": reason}).reason
        return _ByActor(action, reason)
    raise PageError(404, f"unknown action {action!r}")


async def _perform(
    request: Request,
    session: SessionDep,
    settings: Settings,
    invoice_id: int,
    body: Any,
    who: Principal,
    key: str | None,
) -> str | None:
    """The same service call as the JSON API's route for ``body`` (a note, an assignment and
    a waiver are written directly; the others go to the invoice's workflow). A message when
    the outcome is not the action's usual one."""
    actor = who.actor
    if isinstance(body, NoteBody):
        actions.add_note(session, invoice_id, body.text, actor, key)
        return None
    if isinstance(body, AssignBody):
        actions.assign(session, invoice_id, body.collector, actor)
        return None
    if isinstance(body, _OnRow | _ByActor):
        return await _perform_on_state(request, session, settings, invoice_id, body, who, key)
    on = (session, temporal_client(request), settings, invoice_id)
    if isinstance(body, DisputeCreate):
        await actions.open_dispute(*on, body, actor, key)
    elif isinstance(body, PlanCreate):
        await actions.agree_plan(*on, body, actor, key)
    elif isinstance(body, PromiseCreate):
        await actions.promise(*on, body, actor, key)
    elif isinstance(body, PauseBody):
        await actions.pause(*on, body, actor, key)
    elif isinstance(body, OptionalReason):
        await actions.by_actor(*on, "resume", body.reason, actor, key)
    elif isinstance(body, CreditNoteCreate):
        await amendments.issue_credit_note(*on, body, actor)
    elif isinstance(body, InvoiceAmend):
        await amendments.amend_invoice(*on, body, actor)
    else:
        await actions.send_now(*on, actor, key)
    return None


async def _perform_on_state(
    request: Request,
    session: SessionDep,
    settings: Settings,
    invoice_id: int,
    body: _OnRow | _ByActor,
    who: Principal,
    key: str | None,
) -> str | None:
    on = (session, temporal_client(request), settings, invoice_id)
    if isinstance(body, _ByActor):
        if body.action == "write-off" and not who.is_admin:
            raise PageError(403, "writing off an invoice needs the admin role")
        if body.action == "recall":
            await agency.recall(*on, body.reason, who.actor, key)
        elif body.action == "write-off":
            await actions.by_actor(*on, "write_off", body.reason, who.actor, key)
        else:
            await actions.by_actor(*on, "cancel_plan", body.reason, who.actor, key)
        return None
    if isinstance(body.body, DisputeResolve):
        outcome = await actions.resolve_dispute(*on, body.row_id, body.body, who, key)
        if not isinstance(outcome, Invoice):
            return "The credit waits for an admin or a second specialist to approve it."
    elif isinstance(body.body, WaiveBody):
        waive_charge(session, invoice_id, body.row_id, body.body.reason, who.actor)
    else:
        task = session.get(Task, body.row_id)
        if task is None or task.invoice_id != invoice_id:
            raise PageError(404, f"call task {body.row_id} is not this invoice's")
        await calls.record_outcome(
            session, temporal_client(request), settings, body.row_id, body.body, who.actor
        )
    return None


@router.get("/invoices/{invoice_id}/attachments/{attachment_id}")
def attachment_download(
    invoice_id: int,
    attachment_id: int,
    session: SessionDep,
    settings: SettingsDep,
    _: WebViewer,
) -> Response:
    """A file a customer sent with a dispute, as a download (never shown inline)."""
    try:
        row, content = portal_requests.read_attachment(session, settings, invoice_id, attachment_id)
    except DomainError as exc:
        raise PageError(status_of(exc), exc.message) from exc
    return attachment_response(row, content)


@router.post("/invoices/{invoice_id}/plan-proposals/{proposal_id}/{decision}")
async def decide_proposal(
    request: Request,
    invoice_id: int,
    proposal_id: int,
    decision: str,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """Accept or decline a plan the customer proposed (the JSON API's service calls); back to
    the invoice's page."""
    client = temporal_client(request)
    try:
        if decision == "accept":
            await portal_requests.accept_proposal(
                session, client, settings, invoice_id, proposal_id, who.actor
            )
        elif decision == "decline":
            reason = form_text(await request.form(), "reason")
            await portal_requests.decline_proposal(
                session, client, settings, invoice_id, proposal_id, reason, who.actor
            )
        else:
            raise PageError(404, f"unknown decision {decision!r}")
    except DomainError as exc:
        raise PageError(status_of(exc), exc.message) from exc
    return RedirectResponse(f"/app/invoices/{invoice_id}", status_code=303)


@router.post("/invoices/{invoice_id}/{action}", response_class=HTMLResponse)
async def act(
    request: Request,
    invoice_id: int,
    action: str,
    session: SessionDep,
    settings: SettingsDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """One action form: the same service call as the JSON API; the form comes back with
    the outcome, and on success the header, timeline and messages are swapped in as well."""
    if action not in ACTION_TITLES:
        raise PageError(404, f"unknown action {action!r}")
    form = await request.form()
    key = form_text(form, "idempotency_key")[:100] or None
    try:
        invoice = services.get_invoice(session, invoice_id)
        body = _form_body(action, form, invoice.currency)
        message = await _perform(request, session, settings, invoice_id, body, who, key)
    except FormError as exc:
        return _form_again(request, session, settings, action, invoice_id, form, 422, str(exc))
    except (ApiError, DomainError) as exc:
        status = status_of(exc)
        return _form_again(
            request, session, settings, action, invoice_id, form, status, exc.message
        )
    context = _invoice_context(session, settings, invoice_id)
    done = render(
        request,
        "fragments/action_done.html",
        action=action,
        title=ACTION_TITLES[action],
        invoice_id=invoice_id,
        key=uuid.uuid4().hex,
        values={},
        ok=message or DONE[action],
        **context,
    )
    done.headers["HX-Trigger"] = "invoiceChanged"  # the admin's history section reloads
    return done


def _form_again(
    request: Request,
    session: SessionDep,
    settings: Settings,
    action: str,
    invoice_id: int,
    form: FormData,
    status: int,
    message: str,
) -> Response:
    """The form again with what was typed and the error (and the invoice's rows the form
    chooses from: its open dispute, charges, call tasks)."""
    values = {k: v for k, v in form.items() if isinstance(v, str) and k != CSRF_FIELD}
    context = _invoice_context(session, settings, invoice_id)
    rows = {k: context[k] for k in ("invoice", "zone", "open_dispute", "waivable", "call_tasks")}
    return render(
        request,
        "fragments/action_form.html",
        status=status,
        action=action,
        title=ACTION_TITLES[action],
        invoice_id=invoice_id,
        key=uuid.uuid4().hex,
        values=values,
        error=message,
        **rows,
    )


# -- worklist ------------------------------------------------------------------------------------


WORKLIST_SIZE = 200
TASK_DONE = {"close": "Task closed.", "assign": "Assignee saved.", "snooze": "Task snoozed."}


@router.get("/worklist", response_class=HTMLResponse)
def worklist(
    request: Request,
    session: SessionDep,
    _: WebViewer,
    assignee: str | None = Query(None, max_length=100),
    sort: task_work.TaskSort = "priority",
) -> Response:
    """Open tasks (not the snoozed ones), highest expected recovery first (or soonest due),
    of one collector (``assignee``; ``none``: nobody's) or all, with a form per row to close,
    assign or snooze one; disputes past their deadline; broken promises."""
    owner = assignee.strip() if assignee and assignee.strip() else None
    try:
        tasks, total = task_work.list_tasks(
            session, status="open", assignee=owner, limit=WORKLIST_SIZE, sort=sort
        )
    except DomainError as exc:  # too many to order by priority: soonest due, and say why
        tasks, total = task_work.list_tasks(
            session, status="open", assignee=owner, limit=WORKLIST_SIZE
        )
        sort_note: str | None = exc.message
    else:
        sort_note = None
    overdue = dashboard.disputes_past_sla(session, utcnow())
    broken = dashboard.broken_promises(session)
    invoice_ids = [d.invoice_id for d in overdue] + [p.invoice_id for p in broken]
    invoices = dashboard.invoices_by_id(session, invoice_ids)
    return render(
        request,
        "worklist.html",
        tasks=tasks,
        total=total,
        sort=sort,
        sort_note=sort_note,
        assignee=owner or "",
        outcomes=TASK_OUTCOMES,
        collectors=[c for c in list_collectors(session) if c.active],
        overdue=overdue,
        broken=broken,
        invoices=invoices,
        names=dashboard.customer_names(session, (i.customer_id for i in invoices.values())),
        now=utcnow(),
    )


def _task_form(action: str, form: FormData) -> TaskUpdate:
    """The JSON API's PATCH body for one of the worklist row's forms (an empty assignee
    unassigns, an empty snooze wakes the task; a snooze without a zone is UTC)."""
    if action == "close":
        note = form_text(form, "note")
        data: dict[str, Any] = {"status": "done", "outcome": form_text(form, "outcome") or None}
        data |= {"note": note} if note else {}
    elif action == "assign":
        data = {"assignee": form_text(form, "assignee") or None}
    elif action == "snooze":
        data = {"snoozed_until": form_text(form, "snoozed_until") or None}
    else:
        raise PageError(404, f"unknown task action {action!r}")
    body: TaskUpdate = validated_body(TaskUpdate, data)
    return body


@router.post("/tasks/{task_id}/{action}", response_class=HTMLResponse)
async def work_task(
    request: Request,
    task_id: int,
    action: str,
    session: SessionDep,
    who: WebSpecialist,
    _: CsrfChecked,
) -> Response:
    """One row's form: the same domain call as ``PATCH /v1/tasks/{id}``; the row comes back
    with the outcome (or the refusal)."""
    form = await request.form()
    try:
        body = _task_form(action, form)
        item = task_work.update_task(session, task_id, body, who.actor)
    except FormError as exc:
        return _task_row(request, session, task_id, 422, error=str(exc))
    except (ApiError, DomainError) as exc:
        return _task_row(request, session, task_id, status_of(exc), error=exc.message)
    return render(
        request,
        "fragments/task_row.html",
        t=item,
        outcomes=TASK_OUTCOMES,
        ok=TASK_DONE[action],
    )


def _task_row(
    request: Request, session: SqlSession, task_id: int, status: int, error: str
) -> Response:
    try:
        item = task_work.task_item(session, task_id)
    except (ApiError, DomainError) as exc:
        return render(request, "fragments/error.html", status=status_of(exc), message=exc.message)
    return render(
        request,
        "fragments/task_row.html",
        status=status,
        t=item,
        outcomes=TASK_OUTCOMES,
        error=error,
    )


__all__ = [
    "AGING_LABELS",
    "CsrfChecked",
    "FormError",
    "PageError",
    "WebSpecialist",
    "WebViewer",
    "aging_charts",
    "form_minor",
    "form_text",
    "install",
    "is_fragment",
    "render",
    "router",
    "signed_in",
    "temporal_client",
    "validated_body",
]
