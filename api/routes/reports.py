"""Reports for viewers: aging, KPIs and the cash forecast, as JSON or CSV (``format=csv``)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from sqlmodel import Session

from api.deps import SessionDep, TodayDep, Viewer
from api.errors import unprocessable
from arflow.reports import aging as aging_report
from arflow.reports import forecast as forecast_report
from arflow.reports import kpis as kpi_report
from arflow.reports.aging import AgingReport, CustomerOrder
from arflow.reports.common import MAX_DATE, MIN_DATE, ReportFilter
from arflow.reports.forecast import ForecastReport
from arflow.reports.kpis import KpiReport
from models.types import MAX_ID, CurrencyCode

router = APIRouter(prefix="/v1/reports", tags=["reports"])

FORMATS = """

**Formats.** JSON by default; `?format=csv` answers `text/csv` (RFC 4180, a header row, UTF-8;
the `Accept` header is not consulted). Money is always an integer of minor units next to its
ISO 4217 currency, summed per currency only. Ratios, averages and rates are decimals rounded
half-up to one place and serialised as JSON **strings** (`"117.8"`), `null` when their
denominator is zero; in CSV they are plain numbers. Days are UTC calendar days.
Cancelled invoices are void and count nowhere."""


Format = Literal["json", "csv"]
FormatQuery = Annotated[
    Format, Query(alias="format", description="json (default) or csv (text/csv)")
]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


def report_filter(
    customer_id: Annotated[int | None, Query(gt=0)] = None,
    segment: Annotated[str | None, Query(min_length=1, max_length=50)] = None,
    collector: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    currency: Annotated[
        CurrencyCode | None, Query(description="ISO 4217 code; an unknown one is a 422")
    ] = None,
) -> ReportFilter:
    return ReportFilter(
        customer_id=customer_id, segment=segment, collector=collector, currency=currency
    )


FilterDep = Annotated[ReportFilter, Depends(report_filter)]


def _check_range(name: str, value: date) -> None:
    if not MIN_DATE <= value <= MAX_DATE:
        raise unprocessable(
            f"{name}: must be between {MIN_DATE} and {MAX_DATE}",
            [{"field": f"query.{name}", "message": "out of range"}],
        )


def csv_stream(chunks: Iterator[str], name: str) -> StreamingResponse:
    """A CSV download written as it is read (a report with a row per customer)."""
    return StreamingResponse(
        chunks,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


def csv_response(text: str, name: str) -> Response:
    """A CSV download (the dashboard's report links answer the same)."""
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}.csv"'},
    )


@router.get(
    "/aging",
    response_model=AgingReport,
    responses=CSV_RESPONSE,
    description="Open receivables (status open, disputed or escalated, balance > 0) by the "
    "end of `as_of` (default today, UTC), in buckets of days past `due_date`: current (not "
    "yet due), 1-30, 31-60, 61-90, over 90; per currency, segment and collector (every "
    "row), and per customer: one page of `limit` rows from `offset` in `order` (the most "
    "overdue first by default); `by_customer_page.total` says how many there are in all, "
    "and `format=csv` gives every row.\n\nFor `as_of` today or later the current "
    "balances are used (a later `as_of` only moves the bucket boundaries). For a past "
    "`as_of` the balances are "
    "reconstructed: invoices issued by then and not closed by then, amount minus the "
    "signed payments (`paid_at`) and upheld dispute credits by then (`balances` in the "
    "answer says which)." + FORMATS,
)
def aging(
    request: Request,
    session: SessionDep,
    _: Viewer,
    today: TodayDep,
    f: FilterDep,
    fmt: FormatQuery = "json",
    as_of: Annotated[date | None, Query(description="default: today (UTC)")] = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=aging_report.MAX_CUSTOMER_ROWS,
            description="per-customer rows in `by_customer` (JSON; the CSV has every row)",
        ),
    ] = aging_report.DEFAULT_CUSTOMER_ROWS,
    offset: Annotated[int, Query(ge=0, le=MAX_ID, description="per-customer rows skipped")] = 0,
    order: Annotated[
        CustomerOrder,
        Query(
            description="of the per-customer rows: "
            + "; ".join(f"`{k}`: {v}" for k, v in aging_report.CUSTOMER_ORDERS.items())
        ),
    ] = "overdue",
) -> AgingReport | Response:
    day = as_of or today
    _check_range("as_of", day)
    if fmt == "csv":
        sessions = partial(Session, request.app.state.engine, expire_on_commit=False)
        return csv_stream(aging_report.aging_csv(sessions, day, today, f, order), f"aging-{day}")
    return aging_report.aging(session, day, today, f, limit, offset, order)


@router.get(
    "/kpis",
    response_model=KpiReport,
    responses=CSV_RESPONSE,
    description="Collection KPIs for the period `from`..`to` (both days included; default: "
    "the 30 days ending today).\n\n"
    "- Receivables as in the aging report: opening = by the end of `from` - 1 day, "
    "closing = by the end of `to`; credit sales = amounts of invoices issued in the period.\n"
    "- DSO = closing receivables / credit sales x days in the period.\n"
    "- CEI = (opening + credit sales - closing) / (opening + credit sales - closing current) "
    "x 100, where closing current = closing receivables not yet due on `to`.\n"
    "- Payment timing over invoices now paid whose last payment falls in the period: "
    "mean of (last payment date - issued_on) and of (last payment date - due_date).\n"
    "- Promise-kept rate = kept / (kept + broken) over promises resolved in the period.\n"
    "- Disputes opened and resolved in the period; median days from opened to resolved.\n"
    "- Payment plans active and invoices with agencies at the end of `to`, with their "
    "balances; placements made in the period.\n"
    "- Reminders (outbox rows created in the period) per channel and status; sent = not "
    "queued/sending; delivery and failure rates over sent." + FORMATS,
)
def kpis(
    session: SessionDep,
    _: Viewer,
    today: TodayDep,
    f: FilterDep,
    fmt: FormatQuery = "json",
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: Annotated[date | None, Query()] = None,
) -> KpiReport | Response:
    end = to or today
    start = from_ or end - timedelta(days=29)
    _check_range("to", end)
    _check_range("from", start)
    if start > end:
        raise unprocessable(
            f"from ({start}) must not be after to ({end})",
            [{"field": "query.from", "message": "must not be after to"}],
        )
    report = kpi_report.kpis(session, start, end, today, f)
    if fmt == "csv":
        return csv_response(kpi_report.kpis_csv(report), f"kpis-{start}-{end}")
    return report


@router.get(
    "/forecast",
    response_model=ForecastReport,
    responses=CSV_RESPONSE,
    description="Expected receipts per ISO week, `weeks` weeks (1-52) from the week of "
    "today, per currency, from current open balances.\n\n"
    "- Money due: an open invoice's balance at its due date; an active payment plan "
    "replaces it with each unpaid instalment (amount - paid) at the instalment's due "
    "date; an open promise moves the promised amount to the promised date (the rest stays "
    "at the due date). No invoice counts for more than its balance.\n"
    "- Discount by the customer's history (`customers` in the answer): the date moves "
    "later by `shift_days` = the mean days late (never negative) of the customer's paid "
    "invoices, and the amount is multiplied by `collection_rate_pct` = paid / (paid + "
    "written off) invoices (100 without history), rounded half-up to a minor unit. A date "
    "before today counts this week.\n"
    "- `scheduled_minor`: the same money undiscounted at its contractual date; "
    "`beyond_horizon`: what falls after the last week." + FORMATS,
)
def forecast(
    session: SessionDep,
    _: Viewer,
    today: TodayDep,
    f: FilterDep,
    fmt: FormatQuery = "json",
    weeks: Annotated[int, Query(ge=1, le=52)] = 12,
) -> ForecastReport | Response:
    report = forecast_report.forecast(session, weeks, today, f)
    if fmt == "csv":
        return csv_response(forecast_report.forecast_csv(report), f"forecast-{today}")
    return report
