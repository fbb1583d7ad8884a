"""The dashboard's Reports page (/app/reports): the JSON report routes' filters, tables and
charts, CSV downloads with the JSON routes' CSV text, and refused filter values as 422 pages
(no Temporal needed: the reports read the database)."""

from __future__ import annotations

import csv
import html
import io
import re

from api.web import AGING_LABELS
from tests.conftest import API_KEYS
from tests.test_web import Web, web

__all__ = ["web"]  # the fixture, shared with tests/test_web.py


async def test_reports_render_for_a_viewer_with_tables_and_charts(web: Web) -> None:
    assert (await web.http.get("/app/reports")).status_code == 303  # a login first
    await web.login("viewer")
    page = await web.http.get("/app/reports")
    assert page.status_code == 200, page.text
    for section in ("report-aging", "report-kpis", "report-forecast"):
        assert f'id="{section}"' in page.text
    # The seeded EUR invoice (1,200.00, 10 days overdue) in the aging chart and table.
    assert 'aria-label="aging EUR' in page.text
    assert "1-30: €1,200.00" in page.text
    assert "Per customer (1), segment and collector" in page.text  # every customer: no "of N"
    assert page.text.count("<svg") == 3  # aging EUR, receivables EUR, forecast EUR
    assert 'href="/app/reports/aging.csv"' in page.text
    assert all(html.escape(label) in page.text for label in AGING_LABELS)
    assert 'href="/app/payments"' in page.text and 'href="/app/reports" class="active"' in page.text


async def test_filters_narrow_the_reports_and_the_csv_links_carry_them(web: Web) -> None:
    await web.login("viewer")
    usd = await web.http.get("/app/reports", params={"currency": "USD", "weeks": "4"})
    assert usd.status_code == 200
    assert "No open receivables for these filters." in usd.text
    assert "<svg" not in usd.text, re.findall(r"aria-label=\"[^\"]*\"", usd.text)
    assert 'href="/app/reports/aging.csv?currency=USD&amp;weeks=4"' in usd.text
    # htmx: the filter form swaps the block with the form and the reports, not the page.
    part = await web.http.get(
        "/app/reports",
        params={"currency": "EUR", "weeks": "4", "as_of": "2020-01-01"},
        headers={"HX-Request": "true"},
    )
    assert part.status_code == 200
    assert part.text.lstrip().startswith('<div id="reports">') and "<html" not in part.text
    assert 'value="EUR"' in part.text and "by the end of 2020-01-01" in part.text
    assert part.text.count("<tr><td>W") == 0
    assert part.text.count("EUR</td>") >= 4  # four forecast weeks in EUR


async def test_csv_downloads_are_the_json_routes_csv(web: Web) -> None:
    await web.login("viewer")
    bearer = {"Authorization": f"Bearer {API_KEYS['viewer']}"}
    for name, query in (
        ("aging", {"currency": "EUR"}),
        ("kpis", {"from": "2026-01-01", "to": "2026-01-31"}),
        ("forecast", {"weeks": "3"}),
    ):
        resp = await web.http.get(f"/app/reports/{name}.csv", params=query)
        assert resp.status_code == 200, (name, resp.text)
        assert resp.headers["content-type"] == "text/csv; charset=utf-8"
        assert resp.headers["content-disposition"].startswith("attachment; filename=")
        api = await web.http.get(
            f"/v1/reports/{name}", params=query | {"format": "csv"}, headers=bearer
        )
        assert resp.text == api.text, name
        rows = list(csv.reader(io.StringIO(resp.text)))
        assert len(rows) > 1, name
    aging = list(csv.DictReader(io.StringIO((await web.http.get("/app/reports/aging.csv")).text)))
    assert [(r["dimension"], r["currency"], r["days_1_30_minor"]) for r in aging][0] == (
        "total",
        "EUR",
        "120000",
    )


async def test_bad_filter_values_are_a_422_page_next_to_the_field(web: Web) -> None:
    await web.login("viewer")
    for query, field in (
        ({"currency": "EURO"}, "currency"),
        ({"weeks": "99"}, "weeks"),
        ({"weeks": "x"}, "weeks"),
        ({"as_of": "2026-13-01"}, "as_of"),
        ({"customer_id": "abc"}, "customer_id"),
        ({"customer_id": str(2**70)}, "customer_id"),
        ({"from": "2026-02-01", "to": "2026-01-01"}, "from"),
        ({"as_of": "0001-01-01"}, "as_of"),
    ):
        page = await web.http.get("/app/reports", params=query)
        assert page.status_code == 422, (query, page.text)
        assert "text/html" in page.headers["content-type"]
        assert 'role="alert"' in page.text and f"{field}:" in page.text, query
        assert 'id="report-aging"' not in page.text
        download = await web.http.get("/app/reports/kpis.csv", params=query)
        assert download.status_code == 422, query
        assert "text/html" in download.headers["content-type"]
    # A far future day the report cannot reach: still no 500 (from defaults to 29 days before).
    late = await web.http.get("/app/reports", params={"to": "9999-12-30"})
    assert late.status_code in (200, 422)
    unknown = await web.http.get("/app/reports/nothing.csv")
    assert unknown.status_code == 404
