"""Demo data for a laptop run: a seconds-scale policy, customers around the world, invoices."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from arflow.payments.signatures import sign
from arflow.payments.statements.sample import Entry, camt053

DEMO_POLICY = {
    "name": "demo-ladder",
    "send_at": None,
    "contact_window": None,  # the demo runs at any hour of the laptop's day
    "max_messages_per_day": 0,
    "escalate_after": "PT35S",
    "steps": [
        {"key": "before_due", "offset": "-PT10S", "template": "reminder_before_due"},
        {"key": "first_late", "offset": "PT5S", "template": "reminder_overdue"},
        {"key": "late_again", "offset": "PT20S", "template": "reminder_overdue"},
    ],
    # After the last reminder: a final notice by letter and email, the agency 15 s later.
    "ladder": [
        {"key": "final_notice", "kind": "notice", "channels": ["letter", "email"]},
        {"key": "agency", "kind": "agency", "wait": "PT15S"},
    ],
    # EU statutory interest and compensation, and a fee with the final notice.
    "charges": {
        "preset": "eu_b2b",
        "ecb_reference_rate_pct": "2.15",
        "stage_fees_minor": {"final_notice": 500},
    },
}

DEMO_CUSTOMERS = [
    {
        "external_id": "DEMO-ACME",
        "name": "Acme GmbH",
        "email": "ap@acme.example.com",
        "phone": "+4930123456",
        "timezone": "Europe/Berlin",
        "locale": "de",
        "address": "Industriestr. 5\n10115 Berlin",
    },
    {
        "external_id": "DEMO-GLOBEX",
        "name": "Globex Inc.",
        "email": "billing@globex.example.com",
        "phone": "+12125550123",
        "iban": "GB33BUKB20201555555555",
        "timezone": "America/New_York",
        "locale": "en",
    },
    {
        "external_id": "DEMO-TONGA",
        "name": "Nuku'alofa Traders",
        "email": "pay@tonga.example.com",
        "timezone": "Pacific/Tongatapu",
        "locale": "en",
    },
]


def load(base_url: str, admin_key: str, webhook_secret: str) -> list[dict[str, Any]]:
    """Create the demo policy and customers (once) and a fresh batch of invoices (every run)."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        policy = _demo_policy(http)
        customers = _demo_customers(http)
        batch = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        now = datetime.now(UTC)
        invoices = _new_invoices(http, policy, customers, batch, now)
        _pay_by_webhook(http, invoices, now, webhook_secret)
        _import_bank_statement(http, invoices, batch, now)
        return invoices


def _demo_policy(http: httpx.Client) -> dict[str, Any]:
    policies = http.get("/v1/policies").json()
    policy = next((p for p in policies if p["name"] == DEMO_POLICY["name"]), None)
    if policy is None:
        policy = _ok(http.post("/v1/policies", json=DEMO_POLICY))
    return policy


def _demo_customers(http: httpx.Client) -> list[dict[str, Any]]:
    customers = []
    existing = {c["external_id"]: c for c in http.get("/v1/customers").json()}
    for body in DEMO_CUSTOMERS:
        found = existing.get(str(body["external_id"]))
        customers.append(found or _ok(http.post("/v1/customers", json=body)))
    return customers


def _new_invoices(
    http: httpx.Client,
    policy: dict[str, Any],
    customers: list[dict[str, Any]],
    batch: str,
    now: datetime,
) -> list[dict[str, Any]]:
    """Four invoices falling due 15 to 30 seconds from ``now``."""
    invoices = []
    for i, (customer, amount, currency) in enumerate(
        [
            (customers[0], 125_000, "EUR"),
            (customers[1], 48_050, "USD"),
            (customers[2], 9_900, "USD"),
            (customers[0], 30_000, "EUR"),
        ]
    ):
        due_at = now + timedelta(seconds=15 + 5 * i)
        invoices.append(
            _ok(
                http.post(
                    "/v1/invoices",
                    json={
                        "external_id": f"DEMO-{batch}-{i + 1}",
                        "number": f"D{batch[-6:]}-{i + 1}",
                        "customer_id": customer["id"],
                        "amount_minor": amount,
                        "currency": currency,
                        "issued_on": now.date().isoformat(),
                        "due_date": due_at.date().isoformat(),
                        "due_at": due_at.isoformat(),
                        "policy_id": policy["id"],
                        # Tonga's invoice offers 2% off when paid within 10 days.
                        **({"discount_percent": "2.00", "discount_days": 10} if i == 2 else {}),
                    },
                )
            )
        )
    return invoices


def _pay_by_webhook(
    http: httpx.Client, invoices: list[dict[str, Any]], now: datetime, webhook_secret: str
) -> None:
    """The last invoice is paid at once by a signed webhook, the first partly."""
    for inv, amount in ((invoices[-1], invoices[-1]["amount_minor"]), (invoices[0], 25_000)):
        raw = json.dumps(
            {
                "event_id": f"demo-{uuid.uuid4().hex}",
                "invoice_id": inv["id"],
                "amount_minor": amount,
                "currency": inv["currency"],
                "paid_at": now.isoformat(),
                "method": "bank_transfer",
            }
        ).encode()
        _ok(
            http.post(
                "/v1/webhooks/payments",
                content=raw,
                headers={
                    "Arflow-Signature": sign(webhook_secret, raw),
                    "Content-Type": "application/json",
                },
            )
        )


def _import_bank_statement(
    http: httpx.Client, invoices: list[dict[str, Any]], batch: str, now: datetime
) -> None:
    """A bank statement: Globex pays its invoice by transfer (matched by the invoice number in
    the remittance text), and a stranger's transfer waits in the unmatched queue."""
    statement = camt053(
        [
            Entry(
                48_050,
                f"Globex payment for invoice {invoices[1]['number']}",
                iban="GB33BUKB20201555555555",
                currency="USD",
                tx_id=f"DEMO-{batch}-T1",
                booked=now.date(),
            ),
            Entry(
                7_700,
                "thank you",
                name="Unknown Payer Ltd",
                tx_id=f"DEMO-{batch}-T2",
                booked=now.date(),
            ),
        ],
        statement_id=f"DEMO-{batch}",
    )
    _ok(
        http.post(
            "/v1/bank-statements",
            files={"file": (f"demo-{batch}.xml", statement, "application/xml")},
        )
    )


def _ok(resp: httpx.Response) -> dict[str, Any]:
    if resp.status_code >= 400:
        raise RuntimeError(
            f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text}"
        )
    data: dict[str, Any] = resp.json()
    return data
