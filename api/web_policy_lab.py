"""The dashboard's Policy lab (``/app/policy-lab``, admins): try a draft policy on past
invoices before it runs on anyone.

Start from a stored policy (its steps and contact rules fill the form), edit the steps (key,
offset, channel, template; add and remove rows: a round trip each, no script), the contact
window, weekends and holidays, the caps; choose the invoices issued between two dates
(optionally one segment) and run. The draft is the base policy with the form's changes,
checked by the API's own model (``DunningPolicyCreate``) and simulated by the same engine as
``POST /v1/policies/simulate``: a window of at most ``INLINE_MAX`` invoices is simulated at
once and shown below the form; a larger one runs as a simulation job
(``arflow.policies.simulation_jobs``) whose progress refreshes every second until its totals
are shown. Totals per channel and a chart per ISO week of the draft next to what the invoices'
own policies really sent; the per-invoice CSV (the API's columns) for both. A refused value is
the page again with the message, never a 500.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import TypeAdapter
from sqlmodel import Session, col, select
from starlette.datastructures import FormData

from api import charts
from api.deps import SessionDep, SettingsDep, TodayDep
from api.errors import ApiError, DomainError, status_of
from api.web import (
    CsrfChecked,
    FormError,
    PageError,
    WebAdmin,
    form_text,
    is_fragment,
    render,
    temporal_client,
    validated_body,
)
from arflow.messages.render import money
from arflow.policies import simulation as engine
from arflow.policies import simulation_jobs
from models import DunningPolicy, Segment
from models.policy import TEMPLATES, DunningPolicyCreate, DunningPolicyPublic
from models.simulation import SimulationRequest
from models.types import utcnow
from workflows.types import PolicySpec

router = APIRouter(prefix="/app/policy-lab", include_in_schema=False)
Admin = WebAdmin

#: A window of at most this many invoices is simulated in the request; more run as a job.
INLINE_MAX = 2_000
MAX_STEPS = 50
CHANNELS = ("email", "sms", "call", "letter")
_TOTALS: TypeAdapter[engine.SimulationTotals] = TypeAdapter(engine.SimulationTotals)


@dataclass
class LabForm:
    """The form as typed (shown again as it was) and the messages next to it."""

    base: str = ""
    steps: list[dict[str, str]] = field(default_factory=list)
    rules: dict[str, str] = field(default_factory=dict)
    skip_weekends: bool = False
    skip_holidays: bool = False
    issued_from: str = ""
    issued_to: str = ""
    segment: str = ""
    error: str = ""


RULES = (
    "send_at",
    "escalate_after",
    "contact_window",
    "max_messages_per_day",
    "max_calls_per_week",
)


def _policies(session: Session) -> list[DunningPolicy]:
    return list(session.exec(select(DunningPolicy).order_by(col(DunningPolicy.id))).all())


def _segments(session: Session) -> list[str]:
    return list(session.exec(select(Segment.name).order_by(col(Segment.name))).all())


def _base(session: Session, ident: str) -> DunningPolicy:
    """The base policy the form names (the first stored one when none is named)."""
    if ident.isdigit() and len(ident) < 10:
        found = session.get(DunningPolicy, int(ident))
        if found is not None:
            return found
    if ident:
        raise FormError(f"base policy: no policy {ident[:20]!r}")
    stored = _policies(session)
    if not stored:
        raise PageError(404, "no policy is stored yet: create one first")
    return stored[0]


def _from_policy(policy: DunningPolicy, today: date) -> LabForm:
    return LabForm(
        base=str(policy.id),
        steps=[
            {k: str(s.get(k) or "") for k in ("key", "offset", "channel", "template")}
            for s in policy.steps
        ],
        rules={
            "send_at": policy.send_at or "",
            "escalate_after": policy.escalate_after,
            "contact_window": policy.contact_window or "",
            "max_messages_per_day": str(policy.max_messages_per_day),
            "max_calls_per_week": str(policy.max_calls_per_week),
        },
        skip_weekends=policy.skip_weekends,
        skip_holidays=policy.skip_holidays,
        issued_from=(today - timedelta(days=120)).isoformat(),
        issued_to=today.isoformat(),
    )


def _typed(form: FormData) -> LabForm:
    """The form as sent: every step row (however many), bounded in length."""
    columns = {
        k: [str(v)[:60] for v in form.getlist(k)] for k in ("key", "offset", "channel", "template")
    }
    rows = max((len(v) for v in columns.values()), default=0)
    steps = [
        {k: (columns[k][i].strip() if i < len(columns[k]) else "") for k in columns}
        for i in range(min(rows, MAX_STEPS + 1))
    ]
    return LabForm(
        base=form_text(form, "base")[:20],
        steps=steps,
        rules={k: form_text(form, k)[:40] for k in RULES},
        skip_weekends=form.get("skip_weekends") == "on",
        skip_holidays=form.get("skip_holidays") == "on",
        issued_from=form_text(form, "issued_from")[:10],
        issued_to=form_text(form, "issued_to")[:10],
        segment=form_text(form, "segment")[:50],
    )


def _int(typed: str, name: str) -> int:
    if not typed.isdigit() or len(typed) > 4:
        raise FormError(f"{name.replace('_', ' ')}: a whole number from 0 (0: no cap)")
    return int(typed)


def _date(typed: str, name: str) -> date:
    try:
        return date.fromisoformat(typed)
    except ValueError:
        raise FormError(f"{name.replace('_', ' ')}: a date (YYYY-MM-DD)") from None


def draft_request(session: Session, lab: LabForm) -> SimulationRequest:
    """The API's simulation request for the form: the base policy with the form's steps and
    rules, checked by the API's models (``FormError`` with their message when refused)."""
    base = _base(session, lab.base)
    steps = [s for s in lab.steps if any(s.values())]
    if not steps:
        raise FormError("steps: the draft needs at least one step")
    if len(steps) > MAX_STEPS:
        raise FormError(f"steps: at most {MAX_STEPS}")
    public = DunningPolicyPublic.model_validate(base, from_attributes=True).model_dump(mode="json")
    stored = {k: v for k, v in public.items() if k in DunningPolicyCreate.model_fields}
    rules = lab.rules
    draft = stored | {
        "name": f"draft of {base.name}"[:100],
        "steps": [s | {"fallback": []} for s in steps],
        "send_at": rules.get("send_at") or None,
        "escalate_after": rules.get("escalate_after") or "",
        "contact_window": rules.get("contact_window") or None,
        "skip_weekends": lab.skip_weekends,
        "skip_holidays": lab.skip_holidays,
        "max_messages_per_day": _int(rules.get("max_messages_per_day", ""), "max_messages_per_day"),
        "max_calls_per_week": _int(rules.get("max_calls_per_week", ""), "max_calls_per_week"),
    }
    # Keep each stored step's fallback channels when its key and channel are unchanged.
    fallbacks = {(s["key"], s.get("channel")): s.get("fallback") or [] for s in base.steps}
    for step in draft["steps"]:
        step["fallback"] = fallbacks.get((step["key"], step["channel"]), [])
    policy = validated_body(DunningPolicyCreate, draft)
    issued_from = _date(lab.issued_from, "issued_from")
    issued_to = _date(lab.issued_to, "issued_to")
    body = {
        "policy": policy.model_dump(mode="json"),
        "issued_from": issued_from.isoformat(),
        "issued_to": issued_to.isoformat(),
        "segment": lab.segment or None,
        "per_invoice": False,
    }
    request: SimulationRequest = validated_body(SimulationRequest, body)
    return request


# -- the totals as the page shows them ---------------------------------------------------------


@dataclass
class TotalsView:
    channels: list[tuple[str, int, int]]  # channel, draft, really sent
    weeks: list[tuple[str, int, int]]
    chart: charts.LineChart
    facts: list[tuple[str, str]]
    invoices: int


def totals_view(totals: dict[str, Any]) -> TotalsView:
    """The engine's totals (``SimulationTotals`` as JSON) as rows, a chart per ISO week of
    the draft next to what was really sent, and a few facts."""
    draft = totals.get("sends_by_channel") or {}
    real = totals.get("real_sends_by_channel") or {}
    channels = [(c, int(draft.get(c, 0)), int(real.get(c, 0))) for c in _ordered(draft, real)]
    draft_weeks = _per_week(totals.get("sends_by_week") or {})
    real_weeks = _per_week(totals.get("real_sends_by_week") or {})
    names = sorted(set(draft_weeks) | set(real_weeks))
    weeks = [(w, draft_weeks.get(w, 0), real_weeks.get(w, 0)) for w in names]
    every = max(1, -(-len(names) // 16))  # at most 16 week labels under the axis
    chart = charts.line_chart(
        [w.split("-")[-1] if i % every == 0 else "" for i, w in enumerate(names)],
        {
            "draft": [Decimal(d) for _, d, _ in weeks],
            "really sent": [Decimal(r) for _, _, r in weeks],
        },
        width=1000,
    )
    facts = [
        ("messages (draft)", str(totals.get("sends", 0))),
        ("messages really sent", str(totals.get("real_sends", 0))),
        ("moved by contact rules", _pairs(totals.get("moved_by") or {}, money_of=False)),
        ("escalated (draft)", str(totals.get("escalations", 0))),
        ("escalated before the payment", str(totals.get("escalations_before_payment", 0))),
        ("fees", _pairs(totals.get("fees_minor") or {})),
        ("interest", _pairs(totals.get("interest_minor") or {})),
        ("compensation", _pairs(totals.get("compensation_minor") or {})),
        ("paid", str(totals.get("paid", 0))),
    ]
    return TotalsView(channels, weeks, chart, facts, int(totals.get("invoices", 0)))


def _pairs(values: dict[str, Any], money_of: bool = True) -> str:
    """``{currency: minor}`` as money (or ``{reason: n}`` as counts); "none" when empty."""
    if not values:
        return "none"
    if money_of:
        return ", ".join(money(int(v), k) for k, v in sorted(values.items()))
    return ", ".join(f"{k} {v}" for k, v in sorted(values.items()))


def _ordered(*maps: dict[str, Any]) -> list[str]:
    seen = {k for m in maps for k in m}
    return [c for c in CHANNELS if c in seen] + sorted(seen - set(CHANNELS))


def _per_week(per_week: dict[str, Any]) -> dict[str, int]:
    """``{week: {channel: n}}`` (or ``{week: n}``) as sends per week, all channels."""
    out: dict[str, int] = {}
    for week, value in per_week.items():
        out[week] = sum(int(v) for v in value.values()) if isinstance(value, dict) else int(value)
    return out


# -- pages -------------------------------------------------------------------------------------


def _page(
    request: Request,
    session: Session,
    lab: LabForm,
    status: int = 200,
    **context: Any,
) -> Response:
    return render(
        request,
        "policy_lab.html",
        status=status,
        lab=lab,
        policies=_policies(session),
        segments=_segments(session),
        channels=CHANNELS,
        templates_=TEMPLATES,
        inline_max=INLINE_MAX,
        **context,
    )


@router.get("", response_class=HTMLResponse)
def lab_page(
    request: Request,
    session: SessionDep,
    today: TodayDep,
    _: Admin,
    base: str = "",
) -> Response:
    """The form, filled from the base policy (the first stored one by default)."""
    try:
        lab = _from_policy(_base(session, base.strip()[:20]), today)
    except FormError as exc:
        lab = _from_policy(_base(session, ""), today)
        return _page(request, session, lab, status=422, **{"error": str(exc)})
    return _page(request, session, lab)


def _inline(
    session: Session, lab: LabForm
) -> tuple[SimulationRequest, PolicySpec, list[int], dict[str, Any] | None]:
    """The request, its policy and invoices; the totals too when the window is small enough
    to simulate in the request (None: run it as a job)."""
    body = draft_request(session, lab)
    spec, ids = simulation_jobs.selection(session, body)
    if len(ids) > INLINE_MAX:
        return body, spec, ids, None
    results = engine.simulate(session, spec, ids, utcnow())
    return body, spec, ids, _TOTALS.dump_python(engine.totals(results), mode="json")


def _inline_rows(session: Session, lab: LabForm) -> list[list[str]]:
    """The per-invoice CSV rows of the form's draft (a window small enough only)."""
    body = draft_request(session, lab)
    spec, ids = simulation_jobs.selection(session, body)
    if len(ids) > INLINE_MAX:
        raise FormError(
            f"the window selects {len(ids)} invoices: run it (as a job), then download the "
            "job's CSV"
        )
    return engine.csv_rows(engine.simulate(session, spec, ids, utcnow()))


@router.post("", response_class=HTMLResponse)
async def lab_run(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    who: Admin,
    _: CsrfChecked,
) -> Response:
    """Add or remove a step row, or run the draft (inline, or as a job for a large window)."""
    form = await request.form()
    lab = _typed(form)
    op = form_text(form, "op")
    if op == "add":
        lab.steps.append({"key": "", "offset": "", "channel": "email", "template": "reminder"})
        return _page(request, session, lab)
    if op.startswith("remove-") and op[7:].isdigit():
        index = int(op[7:])
        lab.steps = [s for i, s in enumerate(lab.steps) if i != index]
        return _page(request, session, lab)
    try:
        # The draft checked, the window chosen and a small one simulated off the event loop.
        body, spec, ids, totals = await asyncio.to_thread(_inline, session, lab)
        if totals is not None:
            return _page(request, session, lab, result=totals_view(totals), ran=len(ids))
        job = await simulation_jobs.store_and_start(
            session, temporal_client(request), settings, body, spec, ids, who.actor
        )
    except FormError as exc:
        return _page(request, session, lab, status=422, error=str(exc))
    except (ApiError, DomainError) as exc:
        return _page(request, session, lab, status=status_of(exc), error=exc.message)
    assert job.id is not None
    return _page(request, session, lab, status=202, **_job_context(session, job.id))


@router.post("/result.csv")
async def lab_csv(request: Request, session: SessionDep, _: Admin, __: CsrfChecked) -> Response:
    """The per-invoice CSV of the draft for an inline-sized window (the form posted again)."""
    lab = _typed(await request.form())
    try:
        rows = await asyncio.to_thread(_inline_rows, session, lab)
    except FormError as exc:
        return _page(request, session, lab, status=422, error=str(exc))
    except (ApiError, DomainError) as exc:
        return _page(request, session, lab, status=status_of(exc), error=exc.message)
    return Response(
        simulation_jobs.lines(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="simulation.csv"'},
    )


def _job_context(session: Session, job_id: int) -> dict[str, Any]:
    shown = simulation_jobs.public(session, job_id)
    return {
        "job": shown,
        "result": totals_view(shown.totals) if shown.totals is not None else None,
        "csv_url": f"/app/policy-lab/jobs/{job_id}/result.csv",
    }


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def lab_job(
    request: Request, job_id: int, session: SessionDep, today: TodayDep, _: Admin
) -> Response:
    """A simulation job's progress (htmx polls it every second), then its totals."""
    try:
        context = _job_context(session, job_id)
    except (ApiError, DomainError) as exc:
        raise PageError(status_of(exc), exc.message) from exc
    if is_fragment(request):
        return render(request, "fragments/policy_lab_job.html", **context)
    return render(request, "policy_lab_job.html", **context)


@router.get("/jobs/{job_id}/result.csv")
def lab_job_csv(request: Request, job_id: int, session: SessionDep, _: Admin) -> Response:
    """The job's per-invoice CSV (the API's ``result.csv``, for a browser's session)."""
    try:
        simulation_jobs.csv_ready(session, job_id)
    except (ApiError, DomainError) as exc:
        raise PageError(status_of(exc), exc.message) from exc
    sessions = partial(Session, request.app.state.engine, expire_on_commit=False)
    return StreamingResponse(
        simulation_jobs.csv_text(sessions, job_id),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="simulation-{job_id}.csv"'},
    )


__all__ = ["draft_request", "router", "totals_view"]
