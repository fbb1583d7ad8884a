"""The legal stage: the ``open_legal`` activity called directly (case, claim summary PDF, task,
timeline, status; once per invoice) and the legal API, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import httpx
import pytest
from pypdf import PdfReader
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from temporalio.exceptions import ApplicationError

from activities.legal import LegalActivities
from api.app import create_app
from arflow.charges.service import find_charge, post_charge, waive_charge
from arflow.config import Settings
from arflow.db import session_factory
from arflow.legal.cases import claim_summary_name
from arflow.messages.documents import Seller
from arflow.messages.render import local_date
from arflow.policies import service as policies
from models import (
    AgencyPlacement,
    Customer,
    Invoice,
    InvoiceEvent,
    LegalCase,
    OutboxMessage,
    Payment,
    Task,
)
from tests.conftest import API_KEYS, WEBHOOK_SECRET, Harness
from workflows.charges import ChargeLine
from workflows.types import LegalInput

SELLER = Seller("Nordlicht Handel GmbH", "Hafenstraße 5\n20457 Hamburg", "DE89370400440532013000")


def pdf_text(data: bytes) -> str:
    """The PDF's text with runs of whitespace as one space (justified lines are stretched)."""
    pages = PdfReader(io.BytesIO(data)).pages
    return " ".join(" ".join(page.extract_text() for page in pages).split())


def settings_for(engine: Engine, tmp_path: Path) -> Settings:
    return Settings(
        environment="test",
        database_url=str(engine.url),
        api_keys=",".join(f"{k}:{r}" for r, k in API_KEYS.items()),
        webhook_secret=WEBHOOK_SECRET,
        data_dir=str(tmp_path / "data"),
    )


def an_invoice_with_history(engine: Engine, number: str = "2026/0042", placed: bool = True) -> int:
    """1,200.00 invoiced, 200.00 paid, 1,000.00 open; a fee, interest and a waived fee; two
    reminders that went out and one that was blocked; placed with an agency."""
    with Session(engine) as s:
        policy_id = policies.ensure_default_policy(s).id
        customer = Customer(
            external_id=f"C-{number}",
            name="Jürgen Ébert & Söhne",
            address="Hauptstraße 1\n10115 Berlin",
            email="ap@ebert.example.com",
            timezone="Europe/Berlin",
            locale="en",
        )
        s.add(customer)
        s.flush()
        assert customer.id is not None and policy_id is not None
        invoice = Invoice(external_id=f"E-{number}", number=number, currency="EUR",
                          issued_on=date(2026, 1, 5), due_date=date(2026, 1, 15),
                          due_at=datetime(2026, 1, 15, 22, 59, 59, tzinfo=UTC),
                          customer_id=customer.id, policy_id=policy_id, amount_minor=120_000,
                          balance_minor=100_000, request_hash="x" * 64)  # fmt: skip
        s.add(invoice)
        s.flush()
        assert invoice.id is not None
        s.add(Payment(event_id=f"pay-{number}", invoice_id=invoice.id, amount_minor=20_000,
                      currency="EUR", paid_at=datetime(2026, 1, 20, 10, tzinfo=UTC),
                      method="bank_transfer", status="applied"))  # fmt: skip
        for key, channel, status, at in (
            ("late_7", "email", "sent", datetime(2026, 1, 22, 8, tzinfo=UTC)),
            ("final", "letter", "printed", datetime(2026, 2, 14, 8, tzinfo=UTC)),
            ("x", "email", "blocked", datetime(2026, 2, 15, 8, tzinfo=UTC)),
        ):
            s.add(OutboxMessage(invoice_id=invoice.id, step_key=key, channel=channel,
                                subject=f"Subject of {key}", body="...", status=status,
                                created_at=at, sent_at=at))  # fmt: skip
        if placed:
            s.add(AgencyPlacement(invoice_id=invoice.id, agency="Inkasso Nord",
                                  amount_minor=100_000, currency="EUR", reference="IN-7781",
                                  placed_at=datetime(2026, 3, 2, 9, tzinfo=UTC)))  # fmt: skip
        s.commit()
        invoice_id = invoice.id
    with Session(engine) as s:
        for line in (
            ChargeLine("fee", 1_500, "EUR", "fee:final", stage="final"),
            ChargeLine("interest", 1_234, "EUR", "interest:2026-02-14",
                       period_from=date(2026, 1, 15), period_to=date(2026, 2, 14),
                       basis={"rate_pct": "12.5"}),
            ChargeLine("fee", 9_900, "EUR", "fee:late_7", stage="late_7"),
        ):  # fmt: skip
            post_charge(s, invoice_id, line)
        waived = find_charge(s, invoice_id, "fee:late_7")
        assert waived is not None and waived.id is not None
        waive_charge(s, invoice_id, waived.id, "goodwill", "specialist:test")
    return invoice_id


def open_legal(
    engine: Engine, folder: Path, invoice_id: int, skipped: list[str] | None = None
) -> None:
    """The activity as the worker runs it (a retry is just another call)."""
    acts = LegalActivities(session_factory(engine), folder, SELLER)
    acts.open_legal(
        LegalInput(
            invoice_id=invoice_id,
            balance_minor=100_000,
            currency="EUR",
            stage="court",
            skipped=skipped or [],
        )
    )


# -- the activity ---------------------------------------------------------------------------


def test_open_legal_records_the_case_documents_task_and_timeline(
    engine: Engine, tmp_path: Path
) -> None:
    invoice_id = an_invoice_with_history(engine)
    folder = tmp_path / "legal"
    open_legal(engine, folder, invoice_id, skipped=["late_14"])

    with Session(engine) as s:
        case = s.exec(select(LegalCase).where(LegalCase.invoice_id == invoice_id)).one()
        assert (case.stage, case.status, case.amount_minor, case.currency) == (
            "court",
            "open",
            100_000,
            "EUR",
        )
        assert case.opened_by == "workflow"
        [doc] = case.documents
        assert (doc["name"], doc["kind"], doc["added_by"]) == (
            "claim-summary-2026-0042.pdf",  # the "/" of the number is not a folder
            "generated",
            "workflow",
        )
        datetime.fromisoformat(doc["added_at"])
        path = Path(doc["reference"])
        assert path.is_absolute() and path.parent == (folder / f"invoice-{invoice_id}").resolve()

        task = s.exec(select(Task).where(Task.invoice_id == invoice_id)).one()
        assert (task.kind, task.status) == ("legal_review", "open")
        assert task.data["documents"] == [doc["name"]] and task.data["legal_case_id"] == case.id

        invoice = s.get(Invoice, invoice_id)
        assert invoice is not None
        assert (invoice.status, invoice.escalation_stage, invoice.next_action) == (
            "escalated",
            "court",
            None,
        )
        events = s.exec(
            select(InvoiceEvent)
            .where(InvoiceEvent.invoice_id == invoice_id)
            .order_by(col(InvoiceEvent.id))
        ).all()
        legal = [e for e in events if e.kind == "legal_stage"]
        assert len(legal) == 1
        assert legal[0].data == {
            "legal_case_id": case.id,
            "stage": "court",
            "amount_minor": 100_000,
            "currency": "EUR",
            "documents": ["claim-summary-2026-0042.pdf"],
        }
        skipped = [e.data for e in events if e.kind == "reminder_skipped"]
        assert skipped == [{"step": "late_14", "reason": "the legal stage was already due"}]

    data = path.read_bytes()
    assert data.startswith(b"%PDF-")
    text = pdf_text(data)
    assert "Claim summary: invoice 2026/0042" in text
    assert "Nordlicht Handel GmbH" in text and "Jürgen Ébert & Söhne" in text
    assert "January 5, 2026" in text and "January 15, 2026" in text  # issued, due
    assert "January 20, 2026 Payment bank_transfer €200.00" in text
    assert "Late fee €15.00" in text
    assert "Interest (12.5% p.a.) January 16, 2026 to February 14, 2026 €12.34" in text
    assert "€99.00" not in text  # the waived fee
    assert "Balance due €1,000.00" in text and "Total claimed €1,027.34" in text
    assert "Subject of late_7" in text and "Subject of final" in text
    assert "Subject of x" not in text  # blocked: never went out
    assert "February 14, 2026 final letter printed Subject of final" in text
    assert "Inkasso Nord" in text and "IN-7781" in text


def test_open_legal_twice_records_once(engine: Engine, tmp_path: Path) -> None:
    invoice_id = an_invoice_with_history(engine, placed=False)
    folder = tmp_path / "legal"
    open_legal(engine, folder, invoice_id)
    open_legal(engine, folder, invoice_id)  # a retry after the first attempt committed
    with Session(engine) as s:
        assert len(s.exec(select(LegalCase)).all()) == 1
        assert len(s.exec(select(Task).where(Task.kind == "legal_review")).all()) == 1
        kinds = s.exec(select(InvoiceEvent.kind).where(InvoiceEvent.invoice_id == invoice_id))
        assert list(kinds).count("legal_stage") == 1
    [pdf] = (folder / f"invoice-{invoice_id}").iterdir()  # no temporary file left behind
    text = pdf_text(pdf.read_bytes())
    assert "2026/0042" in text and "Not placed with a collection agency." in text


def test_open_legal_for_an_unknown_invoice_fails_for_good(engine: Engine, tmp_path: Path) -> None:
    with pytest.raises(ApplicationError) as info:
        open_legal(engine, tmp_path / "legal", 999_999)
    assert info.value.non_retryable


def test_claim_summary_names() -> None:
    assert claim_summary_name("2026-0042") == "claim-summary-2026-0042.pdf"
    assert claim_summary_name("A/B 7") == "claim-summary-A-B-7.pdf"
    assert claim_summary_name("../..") == "claim-summary-invoice.pdf"


def test_the_legal_folder_setting() -> None:
    assert Settings(environment="test", data_dir="/srv/arflow/").legal_folder == "/srv/arflow/legal"
    assert Settings(environment="test", legal_dir="/mnt/legal").legal_folder == "/mnt/legal"


# -- the API --------------------------------------------------------------------------------


@pytest.fixture
async def http(engine: Engine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(engine, tmp_path), engine=engine, temporal=None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://arflow.test") as client:
        yield client


def role(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[name]}"}


COURT_FILING = {
    "name": "Mahnbescheid",
    "kind": "court_filing",
    "reference": "https://dms.example.com/docs/4711",
    "note": "filed with the Amtsgericht Wedding",
}


async def test_legal_api(engine: Engine, tmp_path: Path, http: httpx.AsyncClient) -> None:
    invoice_id = an_invoice_with_history(engine)
    base = f"/v1/invoices/{invoice_id}/legal"

    none_yet = await http.get(base, headers=role("viewer"))
    assert none_yet.status_code == 404, none_yet.text
    assert none_yet.json()["error"]["code"] == "not_found"
    early = await http.post(f"{base}/documents", json=COURT_FILING, headers=role("specialist"))
    assert early.status_code == 409, early.text
    assert "no legal case" in early.json()["error"]["message"]

    open_legal(engine, Path(settings_for(engine, tmp_path).legal_folder), invoice_id)
    got = await http.get(base, headers=role("viewer"))
    assert got.status_code == 200, got.text
    case = got.json()
    assert (case["invoice_id"], case["stage"], case["status"]) == (invoice_id, "court", "open")
    assert (case["amount_minor"], case["currency"]) == (100_000, "EUR")
    [summary] = case["documents"]
    assert (summary["n"], summary["kind"], summary["name"]) == (
        1,
        "generated",
        "claim-summary-2026-0042.pdf",
    )
    assert summary["download_url"] == f"{base}/documents/1"

    pdf = await http.get(f"{base}/documents/1", headers=role("viewer"))
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert "claim-summary-2026-0042.pdf" in pdf.headers["content-disposition"]
    assert pdf.content.startswith(b"%PDF-") and "2026/0042" in pdf_text(pdf.content)

    # Adding a document: a specialist's job, validated, appended with a timeline event.
    as_viewer = await http.post(f"{base}/documents", json=COURT_FILING, headers=role("viewer"))
    assert as_viewer.status_code == 403
    for bad in (
        COURT_FILING | {"kind": "generated"},
        COURT_FILING | {"kind": "Court Filing"},
        COURT_FILING | {"name": "  "},
        COURT_FILING | {"reference": ""},
        COURT_FILING | {"extra": 1},
        {"name": "x", "kind": "judgment"},
    ):
        resp = await http.post(f"{base}/documents", json=bad, headers=role("specialist"))
        assert resp.status_code == 422, (bad, resp.text)
        assert resp.json()["error"]["code"] == "invalid"
    added = await http.post(f"{base}/documents", json=COURT_FILING, headers=role("specialist"))
    assert added.status_code == 201, added.text
    judgment = {"name": "Urteil", "kind": "judgment", "reference": "DMS-99"}
    added = await http.post(f"{base}/documents", json=judgment, headers=role("specialist"))
    assert added.status_code == 201, added.text
    docs = added.json()["documents"]
    assert [(d["n"], d["kind"], d["name"]) for d in docs] == [
        (1, "generated", "claim-summary-2026-0042.pdf"),
        (2, "court_filing", "Mahnbescheid"),
        (3, "judgment", "Urteil"),
    ]
    assert docs[1]["reference"] == "https://dms.example.com/docs/4711"
    assert docs[1]["note"] == "filed with the Amtsgericht Wedding" and docs[2]["note"] is None
    assert docs[1]["added_by"].startswith("specialist:") and docs[1]["download_url"] is None
    assert (await http.get(base, headers=role("viewer"))).json()["documents"] == docs

    with Session(engine) as s:
        events = s.exec(
            select(InvoiceEvent).where(
                InvoiceEvent.invoice_id == invoice_id, InvoiceEvent.kind == "legal_document_added"
            )
        ).all()
    assert [(e.data["n"], e.data["name"], e.data["kind"]) for e in events] == [
        (2, "Mahnbescheid", "court_filing"),
        (3, "Urteil", "judgment"),
    ]
    assert events[0].actor.startswith("specialist:")

    # Only generated documents are files here; numbers outside the case are 404s.
    reference = await http.get(f"{base}/documents/2", headers=role("viewer"))
    assert reference.status_code == 404
    assert "reference kept elsewhere" in reference.json()["error"]["message"]
    for n in (0, 4, -1):
        assert (await http.get(f"{base}/documents/{n}", headers=role("viewer"))).status_code == 404
    not_a_number = await http.get(f"{base}/documents/one", headers=role("viewer"))
    assert not_a_number.status_code == 422
    assert (await http.get(f"{base}/documents/1")).status_code == 401

    # A generated file that went missing is a 404, not a 500.
    Path(summary["reference"]).unlink()
    gone = await http.get(f"{base}/documents/1", headers=role("viewer"))
    assert gone.status_code == 404 and "not available" in gone.json()["error"]["message"]


async def test_legal_api_unknown_invoice(http: httpx.AsyncClient) -> None:
    for resp in (
        await http.get("/v1/invoices/999999/legal", headers=role("viewer")),
        await http.get("/v1/invoices/999999/legal/documents/1", headers=role("viewer")),
        await http.post(
            "/v1/invoices/999999/legal/documents", json=COURT_FILING, headers=role("specialist")
        ),
    ):
        assert resp.status_code == 404, resp.text
        assert resp.json()["error"]["message"] == "invoice 999999 not found"


# -- through the workflow -------------------------------------------------------------------


async def test_the_ladder_sends_the_pre_legal_notice_then_opens_the_legal_case(
    h: Harness,
) -> None:
    """The worker from ``build_worker`` runs ``open_legal``: a pre-legal notice (email and
    letter) naming its fee, the total and the legal stage's day, then the legal case."""
    policy = await h.policy(
        send_at="09:00",
        escalate_after="P20D",
        steps=[{"key": "late_7", "offset": "P7D", "template": "reminder_overdue"}],
        ladder=[
            {"key": "warning", "kind": "notice", "channels": ["email", "letter"],
             "template": "pre_legal"},
            {"key": "court", "kind": "legal", "wait": "P10D"},
        ],
        charges={"stage_fees_minor": {"warning": 2_500}},
    )  # fmt: skip
    cust = await h.customer(address="Hauptstr. 1\n10115 Berlin")
    now = await h.env.get_current_time()
    due = now.date() + timedelta(days=10)
    inv = await h.invoice(
        cust["id"],
        policy_id=policy["id"],
        issued_on=now.date().isoformat(),
        due_date=due.isoformat(),
        amount_minor=100_000,
    )

    def day(n: int) -> datetime:
        """10:00 UTC on the ``n``-th day after the due date (the ladder acts at 09:00)."""
        return datetime.combine(due + timedelta(days=n), time(10), UTC)

    await h.env.sleep(day(20) - await h.env.get_current_time())
    notices = [m for m in h.outbox(inv["id"]) if m.step_key == "warning"]
    assert [(m.channel, m.status) for m in notices] == [("email", "sent"), ("letter", "printed")]
    email = notices[0]
    assert email.subject == f"Pre-legal notice: invoice {inv['number']}"
    deadline = local_date(due + timedelta(days=30), "UTC", "en")  # the legal stage's day
    assert f"Unless we receive €1,025.00 by {deadline}" in email.body
    assert "- Late fee: €25.00\nTotal due on this invoice: €1,025.00" in email.body
    assert (await h.get(f"/v1/invoices/{inv['id']}/legal")).status_code == 404

    await h.env.sleep(day(30) - await h.env.get_current_time())
    resp = await h.get(f"/v1/invoices/{inv['id']}/legal")
    assert resp.status_code == 200, resp.text
    case = resp.json()
    assert (case["stage"], case["amount_minor"]) == ("court", 100_000)
    pdf = await h.get(case["documents"][0]["download_url"])
    assert pdf.status_code == 200 and inv["number"] in pdf_text(pdf.content)
    assert "Pre-legal notice" in pdf_text(pdf.content)  # the notice sent is listed
    invoice = (await h.get(f"/v1/invoices/{inv['id']}")).json()
    assert invoice["status"] == "escalated"
    kinds = [e.kind for e in h.events(inv["id"])]
    assert kinds.count("legal_stage") == 1
