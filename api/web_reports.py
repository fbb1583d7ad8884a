"""The dashboard's Reports page (``/app/reports``, viewers): aging, KPIs and the cash forecast
as tables and inline SVG charts, with a CSV download per report.

The filters are the JSON report routes' (``api.routes.reports``: ``customer_id``, ``segment``,
``collector``, ``currency``, ``as_of``, ``from``, ``to``, ``weeks``), checked with the same
bounds and turned into the same ``ReportFilter``; the reports are the same domain functions
(``arflow.reports``). The CSV links are served here, under ``/app``, because the JSON routes'
``format=csv`` answers bearer keys only and a browser holds a session cookie instead: the text
is the same ``aging_csv``/``kpis_csv``/``forecast_csv`` of the same report. A bad filter value
is a 422 page with the message next to its field, never a 500.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlmodel import Session

from api import charts
from api.deps import SessionDep, TodayDep
from api.routes.reports import csv_response, csv_stream
from api.web import AGING_LABELS, PageError, WebViewer, aging_charts, is_fragment, render
from arflow.messages.render import money
from arflow.payments.statements.values import currency_exponent
from arflow.reports import aging as aging_report
from arflow.reports import dashboard
from arflow.reports import forecast as forecast_report
from arflow.reports import kpis as kpi_report
from arflow.reports.common import MAX_DATE, MIN_DATE, ReportFilter
from models.types import MAX_ID, CurrencyCode

router = APIRouter(prefix="/app/reports", include_in_schema=False)
FIELDS = ("customer_id", "segment", "collector", "currency", "as_of", "from", "to", "weeks")
RECEIVABLES = ("opening", "credit sales", "closing", "closing, not yet due")

InRange = Annotated[date, Field(ge=MIN_DATE, le=MAX_DATE)]


class ReportQuery(BaseModel):
    """The report routes' query parameters, with their bounds (an empty field is unset)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    customer_id: int | None = Field(default=None, gt=0, le=MAX_ID)
    segment: str | None = Field(default=None, min_length=1, max_length=50)
    collector: str | None = Field(default=None, min_length=1, max_length=100)
    currency: CurrencyCode | None = None
    as_of: InRange | None = None
    from_: InRange | None = Field(default=None, alias="from")
    to: InRange | None = None
    weeks: int = Field(default=12, ge=1, le=52)

    @model_validator(mode="after")
    def _from_not_after_to(self) -> ReportQuery:
        if self.from_ is not None and self.to is not None and self.from_ > self.to:
            raise ValueError(f"from ({self.from_}) must not be after to ({self.to})")
        return self

    def report_filter(self) -> ReportFilter:
        return ReportFilter(
            customer_id=self.customer_id,
            segment=self.segment,
            collector=self.collector,
            currency=self.currency,
        )


@dataclass
class Parsed:
    """The query as typed (to show it again), and either the checked query or the errors."""

    typed: dict[str, str]
    query: ReportQuery | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def link(self, path: str) -> str:
        given = {k: v for k, v in self.typed.items() if v}
        return path + ("?" + urlencode(given) if given else "")


def parse_query(request: Request) -> Parsed:
    typed = {k: request.query_params.get(k, "").strip()[:200] for k in FIELDS}
    data = {k: v for k, v in typed.items() if v}
    try:
        return Parsed(typed, query=ReportQuery.model_validate(data))
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for e in exc.errors():
            name = str(e["loc"][0]) if e["loc"] else "from"
            name = "from" if name == "from_" else name
            message = str(e["msg"]).removeprefix("Value error, ")
            errors.setdefault(name, message)
        return Parsed(typed, errors=errors)


def _major(amount_minor: int, currency: str) -> Decimal:
    """Whole major units, for a chart's axis (the tables show the exact amounts)."""
    return Decimal(amount_minor).scaleb(-currency_exponent(currency)).to_integral_value()


def _reports(session: Session, today: date, q: ReportQuery) -> dict[str, Any]:
    f = q.report_filter()
    aging = aging_report.aging(session, q.as_of or today, today, f)
    end = q.to or today
    start = q.from_ or end - timedelta(days=29)
    if start > end:
        raise PageError(422, f"from ({start}) must not be after to ({end})")
    kpis = kpi_report.kpis(session, start, end, today, f)
    kpi_charts = []
    for c in kpis.currencies:
        values = [
            c.opening_receivables_minor,
            c.credit_sales_minor,
            c.closing_receivables_minor,
            c.closing_current_receivables_minor,
        ]
        if not any(values):
            continue  # a currency named by the filter, with nothing in it
        texts = [money(v, c.currency) for v in values]
        kpi_charts.append((c, charts.bar_chart(RECEIVABLES, values, texts, colours=charts.PALETTE)))
    forecast = forecast_report.forecast(session, q.weeks, today, f)
    forecast_charts = []
    for currency in sorted({r.currency for r in forecast.rows}):
        rows = [r for r in forecast.rows if r.currency == currency]
        if not any(r.expected_minor or r.scheduled_minor for r in rows):
            continue
        chart = charts.line_chart(
            [r.week.split("-")[-1] for r in rows],
            {
                "expected": [_major(r.expected_minor, currency) for r in rows],
                "scheduled": [_major(r.scheduled_minor, currency) for r in rows],
            },
            width=640,
        )
        forecast_charts.append((currency, chart))
    names = dashboard.customer_names(
        session, [c.customer_id for c in forecast.customers] + ([q.customer_id or 0])
    )
    return {
        "aging": aging,
        "aging_charts": aging_charts(aging),
        "aging_labels": AGING_LABELS,
        "buckets": aging_report.BUCKETS,
        "kpis": kpis,
        "kpi_charts": kpi_charts,
        "forecast": forecast,
        "forecast_charts": forecast_charts,
        "customer_names": names,
    }


@router.get("", response_class=HTMLResponse)
def reports_page(request: Request, session: SessionDep, today: TodayDep, _: WebViewer) -> Response:
    """The three reports under one filter form (htmx swaps the reports and pushes the URL)."""
    parsed = parse_query(request)
    context: dict[str, Any] = {
        "typed": parsed.typed,
        "errors": parsed.errors,
        "customers": dashboard.customers(session),
        "csv": {n: parsed.link(f"/app/reports/{n}.csv") for n in ("aging", "kpis", "forecast")},
        "today": today,
    }
    status = 200
    if parsed.query is None:
        status = 422
    else:
        context |= _reports(session, today, parsed.query)
    name = "fragments/reports_body.html" if is_fragment(request) else "reports.html"
    return render(request, name, status=status, **context)


@router.get("/{name}.csv")
def report_csv(
    request: Request, name: str, session: SessionDep, today: TodayDep, _: WebViewer
) -> Response:
    """One report as the JSON route's ``format=csv`` answers it (same text, same file name)."""
    parsed = parse_query(request)
    if parsed.query is None:
        raise PageError(422, "; ".join(f"{k}: {v}" for k, v in parsed.errors.items()))
    q, f = parsed.query, parsed.query.report_filter()
    if name == "aging":
        day = q.as_of or today
        sessions = partial(Session, request.app.state.engine, expire_on_commit=False)
        return csv_stream(aging_report.aging_csv(sessions, day, today, f), f"aging-{day}")
    if name == "kpis":
        end = q.to or today
        start = q.from_ or end - timedelta(days=29)
        if start > end:
            raise PageError(422, f"from ({start}) must not be after to ({end})")
        report = kpi_report.kpis(session, start, end, today, f)
        return csv_response(kpi_report.kpis_csv(report), f"kpis-{start}-{end}")
    if name == "forecast":
        report_f = forecast_report.forecast(session, q.weeks, today, f)
        return csv_response(forecast_report.forecast_csv(report_f), f"forecast-{today}")
    raise PageError(404, f"no report {name!r}: aging, kpis or forecast")


__all__ = ["router"]
