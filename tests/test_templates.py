"""Reminder templates per step and locale: every template renders in every language with the
amounts and dates Babel formats for it, the pay link and reference; locale fallback; SMS length;
HTML escaping; and the preview endpoint on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateNotFound, UndefinedError
from pydantic import ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from arflow.charges.service import find_charge, post_charge, waive_charge
from arflow.config import Settings
from arflow.messages.context import message_context
from arflow.messages.render import (
    SMS_MAX_CHARS,
    TEMPLATE_DIR,
    Rendered,
    available_locales,
    format_percent,
    formatting_locale,
    local_date,
    money,
    render,
    render_message,
    resolve_locale,
    template_names,
)
from models import Customer, Invoice, InvoiceCharge
from models.policy import TEMPLATES
from models.reference import payment_reference
from tests.conftest import Harness, harness
from workflows.charges import ChargeLine
from workflows.types import InstallmentState

LOCALES = ("en", "de", "fr")
PLAN_TEMPLATES = ("plan_before", "plan_late")  # chosen by the workflow, not by policy steps
ALL_TEMPLATES = (*TEMPLATES, *PLAN_TEMPLATES)
PAY_URL = "https://pay.example.com/pay/RF73AR42"
NBSP, NNBSP = "\u00a0", "\u202f"

# Exact Babel output (babel pinned in pyproject) for the values of ``context()`` below.
EXPECTED: dict[str, dict[str, str]] = {
    "en": {
        "amount": "€1,200.00",
        "balance": "€1,000.00",
        "due_date": "January 15, 2026",
        "escalation_date": "March 1, 2026",
        "installment_amount": "€400.00",
        "installment_open": "€300.00",
        "installment_due": "February 15, 2026",
    },
    "de": {
        "amount": f"1.200,00{NBSP}€",
        "balance": f"1.000,00{NBSP}€",
        "due_date": "15. Januar 2026",
        "escalation_date": "1. März 2026",
        "installment_amount": f"400,00{NBSP}€",
        "installment_open": f"300,00{NBSP}€",
        "installment_due": "15. Februar 2026",
    },
    "fr": {
        "amount": f"1{NNBSP}200,00{NBSP}€",
        "balance": f"1{NNBSP}000,00{NBSP}€",
        "due_date": "15 janvier 2026",
        "escalation_date": "1er mars 2026",
        "installment_amount": f"400,00{NBSP}€",
        "installment_open": f"300,00{NBSP}€",
        "installment_due": "15 février 2026",
    },
}
# What each template must state: its amounts and dates.
STATES = {
    "reminder_before_due": ("amount", "due_date"),
    "reminder_overdue": ("balance", "amount", "due_date"),
    "reminder": ("balance", "due_date"),
    "final_notice": ("balance", "due_date", "escalation_date"),
    "pre_legal": ("balance", "due_date", "escalation_date"),
    "plan_before": ("installment_amount", "installment_due", "balance"),
    "plan_late": ("installment_open", "installment_due"),
}
SMS_AMOUNT = {
    "reminder_before_due": "balance",
    "reminder_overdue": "balance",
    "reminder": "balance",
    "final_notice": "balance",
    "pre_legal": "balance",
    "plan_before": "installment_amount",
    "plan_late": "installment_open",
}
GREETING = {"en": "Dear ", "de": "Guten Tag ", "fr": "Bonjour "}


def customer(locale: str = "en", name: str = "Acme GmbH") -> Customer:
    return Customer(
        id=7,
        external_id="C-7",
        name=name,
        email="ap@acme.example.com",
        phone="+4930123456",
        timezone="Europe/Berlin",
        locale=locale,
    )


def invoice(number: str = "2026-0042", **fields: Any) -> Invoice:
    return Invoice(
        id=42,
        external_id="E-42",
        number=number,
        currency="EUR",
        issued_on=date(2026, 1, 5),
        due_date=date(2026, 1, 15),
        due_at=datetime(2026, 1, 15, 22, 59, 59, tzinfo=UTC),
        customer_id=7,
        policy_id=1,
        amount_minor=120_000,
        balance_minor=100_000,
        request_hash="x",
        **fields,
    )


def context(
    cust: Customer,
    inv: Invoice | None = None,
    *,
    balance_minor: int = 100_000,
    pay_url: str = PAY_URL,
    note: str | None = None,
    default_locale: str = "en",
    charges: list[InvoiceCharge] | None = None,
) -> dict[str, Any]:
    return message_context(
        inv or invoice(),
        cust,
        step_key="late_7",
        step_at=datetime(2026, 1, 22, 8, 0, tzinfo=UTC),
        balance_minor=balance_minor,
        pay_url=lambda _id, _number, _external: pay_url,
        escalate_at=datetime(2026, 3, 1, 8, 0, tzinfo=UTC),
        note=note,
        installment=InstallmentState(
            n=2,
            due_date="2026-02-15",
            due_at=datetime(2026, 2, 15, 22, 59, 59, tzinfo=UTC),
            amount_minor=40_000,
            paid_minor=10_000,
        ),
        charges=charges or [],
        default_locale=default_locale,
    )


def rendered(template: str, locale: str, **kw: Any) -> Rendered:
    return render_message(template, locale, context(customer(locale), **kw))


# -- every template in every locale ----------------------------------------------------------


def test_every_locale_has_exactly_the_policy_and_plan_templates() -> None:
    assert set(LOCALES) <= set(available_locales())
    for locale in available_locales():
        # and the confirmations to customers (arflow.messages.confirmations)
        assert set(template_names(locale)) == {*ALL_TEMPLATES, "confirmation"}, locale
        for name in ("_note", "_pay", "_pay_html"):
            assert (TEMPLATE_DIR / locale / f"{name}.j2").is_file()


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_template_renders_amounts_dates_and_how_to_pay(template: str, locale: str) -> None:
    msg = rendered(template, locale)
    assert msg.locale_used == locale
    assert msg.subject and "\n" not in msg.subject and "2026-0042" in msg.subject
    assert msg.text.startswith(f"{GREETING[locale]}Acme GmbH,")
    for key in STATES[template]:
        value = EXPECTED[locale][key]
        assert value in msg.text, (key, msg.text)
        assert value in msg.html, (key, msg.html)
    reference = payment_reference(42)
    for body in (msg.text, msg.html):
        assert PAY_URL in body and reference in body and "2026-0042" in body
    assert f'<html lang="{locale}">' in msg.html and msg.html.rstrip().endswith("</html>")
    assert f'href="{PAY_URL}"' in msg.html
    # SMS: one line, the pay link, the amount (no-break spaces become plain ones: GSM-7).
    assert len(msg.sms) <= SMS_MAX_CHARS and "\n" not in msg.sms
    assert PAY_URL in msg.sms and "STOP" in msg.sms
    assert EXPECTED[locale][SMS_AMOUNT[template]].replace(NBSP, " ").replace(NNBSP, " ") in msg.sms
    assert NBSP not in msg.sms and NNBSP not in msg.sms
    for out in (msg.subject, msg.text, msg.html, msg.sms):
        assert "{{" not in out and "{%" not in out


def test_english_wording_kept_for_existing_sentences() -> None:
    before = rendered("reminder_before_due", "en", balance_minor=120_000).text
    assert "This is a friendly reminder that invoice 2026-0042 over €1,200.00 is due on" in before
    assert "The open balance is" not in before  # only when a part was paid
    assert f"Pay online: {PAY_URL}\nBank transfer reference: RF73AR42" in before
    overdue = rendered("reminder_overdue", "en").text
    assert "€1,000.00 of €1,200.00 is still open" in overdue
    assert rendered("final_notice", "en").subject == "Final notice: invoice 2026-0042"


def test_discount_sentence_in_every_locale() -> None:
    inv = invoice(
        discount_bp=250,
        discount_minor=3_000,
        discount_until=datetime(2026, 1, 25, 22, 59, 59, tzinfo=UTC),
    )
    expected = {
        "en": "Pay €970.00 by January 25, 2026 and keep the early-payment discount of 2.5% "
        "(€30.00).",
        "de": f"Bei Zahlung bis zum 25. Januar 2026 können Sie 2,5{NBSP}% Skonto "
        f"(30,00{NBSP}€) abziehen und zahlen nur 970,00{NBSP}€.",
        "fr": f"En réglant 970,00{NBSP}€ au plus tard le 25 janvier 2026, vous bénéficiez de "
        f"l'escompte pour paiement anticipé de 2,5{NBSP}% (30,00{NBSP}€).",
    }
    for locale, sentence in expected.items():
        text = render_message("reminder_before_due", locale, context(customer(locale), inv)).text
        assert sentence in text, text


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(
    "note", ["dispute_rejected", "plan_broken", "promise_broken", "payment_reversed"]
)
def test_notes_are_said_in_every_locale(note: str, locale: str) -> None:
    plain = rendered("reminder_overdue", locale)
    noted = rendered("reminder_overdue", locale, note=note)
    assert len(noted.text) > len(plain.text) + 40
    assert noted.html.count("<p>") == plain.html.count("<p>") + 1


def test_english_notes_keep_their_words() -> None:
    assert "refunded or charged back" in rendered("reminder", "en", note="payment_reversed").text
    assert "lapsed" in rendered("reminder", "en", note="plan_broken").text
    assert "rejected" in rendered("reminder", "en", note="dispute_rejected").text
    assert "promised" in rendered("reminder", "en", note="promise_broken").text


def test_a_note_without_words_adds_no_empty_paragraph() -> None:
    plain = rendered("reminder", "de")
    resumed = rendered("reminder", "de", note="pause_ended")
    assert (resumed.text, resumed.html) == (plain.text, plain.html)
    assert "<p></p>" not in resumed.html


def test_final_notice_without_escalation_date_leaves_the_sentence_out() -> None:
    ctx = context(customer("fr")) | {"escalation_date": ""}
    msg = render_message("final_notice", "fr", ctx)
    assert "recouvrement" not in msg.text and "le ," not in msg.text


NEXT_STAGE_WORDS = {
    "en": {
        "agency": "hand the claim to a collection agency",
        "legal": "take legal action to recover the claim",
        "notice": "take further steps to recover the claim",
    },
    "de": {
        "agency": "an ein Inkassounternehmen",
        "legal": "leiten wir gerichtliche Schritte ein",
        "notice": "weitere Schritte zur Beitreibung",
    },
    "fr": {
        "agency": "société de recouvrement",
        "legal": "procédure judiciaire",
        "notice": "d'autres démarches",
    },
}


@pytest.mark.parametrize("locale", ["en", "de", "fr"])
def test_final_notice_announces_what_the_ladder_does_next(locale: str) -> None:
    """A final notice threatens only what comes next: the agency, legal action, or (another
    notice follows) further steps; text, HTML and SMS alike."""
    words = NEXT_STAGE_WORDS[locale]
    for stage, said in words.items():
        ctx = context(customer(locale)) | {"next_stage": stage}
        msg = render_message("final_notice", locale, ctx)
        assert said in msg.text and said in msg.html, (locale, stage, msg.text)
        others = [w for k, w in words.items() if k != stage]
        assert not any(w in msg.text or w in msg.sms for w in others), (locale, stage)
    sms = render_message(
        "final_notice", locale, context(customer(locale)) | {"next_stage": "legal"}
    )
    assert words["agency"] not in sms.sms


def test_pre_legal_warns_of_legal_action_in_every_locale() -> None:
    words = {
        "en": ("Pre-legal notice: invoice 2026-0042", "legal proceedings", "collection agency"),
        "de": ("Vorgerichtliche Mahnung: Rechnung 2026-0042", "gerichtliche Schritte", "Inkasso"),
        "fr": ("Mise en demeure : facture 2026-0042", "procédure judiciaire", "recouvrement"),
    }
    for locale, (subject, legal, agency) in words.items():
        msg = rendered("pre_legal", locale)
        assert msg.subject == subject
        for body in (msg.text, msg.html):
            assert legal in body and agency in body
            assert EXPECTED[locale]["escalation_date"] in body  # the deadline
        # Without a known deadline the warning stays, without a date.
        ctx = context(customer(locale)) | {"escalation_date": ""}
        undated = render_message("pre_legal", locale, ctx)
        assert legal in undated.text and EXPECTED[locale]["escalation_date"] not in undated.text
    assert "Unless we receive €1,000.00 by March 1, 2026" in rendered("pre_legal", "en").text


# -- late charges ----------------------------------------------------------------------------


def charge(kind: str, amount_minor: int, **fields: Any) -> InvoiceCharge:
    return InvoiceCharge(
        invoice_id=42,
        kind=kind,
        amount_minor=amount_minor,
        currency="EUR",
        dedupe_key=f"{kind}:{amount_minor}",
        created_by="workflow",
        **fields,
    )


def fee_interest_and_waived_fee() -> list[InvoiceCharge]:
    return [
        charge("fee", 1_500, stage="late_7"),
        charge(
            "interest",
            1_234,
            period_from=date(2026, 1, 15),  # days from the day after
            period_to=date(2026, 2, 14),
            basis={"rate_pct": "12.5", "days": 30},
        ),
        charge(
            "fee",
            9_900,
            stage="late_14",
            waived_at=datetime(2026, 2, 20, tzinfo=UTC),
            waived_by="specialist:x",
            waive_reason="goodwill",
        ),
    ]


CHARGED = {  # balance 1,000.00 + 15.00 + 12.34 (the 99.00 fee is waived)
    "en": {
        "fee": "- Late fee: €15.00",
        "interest": "- Interest at 12.5% a year from January 16, 2026 to February 14, 2026: €12.34",
        "total": "Total due on this invoice: €1,027.34",
        "sms": "€1,027.34 (incl. late charges)",
    },
    "de": {
        "fee": f"- Mahngebühr: 15,00{NBSP}€",
        "interest": f"- Verzugszinsen (12,5{NBSP}% p. a.) vom 16. Januar 2026 bis 14. Februar "
        f"2026: 12,34{NBSP}€",
        "total": f"Insgesamt zu zahlen: 1.027,34{NBSP}€",
        "sms": "1.027,34 € (inkl. Verzugskosten)",
    },
}


@pytest.mark.parametrize("locale", ["en", "de"])
def test_a_reminder_lists_the_charges_not_waived_and_the_total_due(locale: str) -> None:
    ctx = context(customer(locale), charges=fee_interest_and_waived_fee())
    assert (ctx["charges_minor"], ctx["total_due_minor"]) == (2_734, 102_734)
    assert [c["kind"] for c in ctx["charges"]] == ["fee", "interest"]
    msg = render_message("reminder_overdue", locale, ctx)
    words = CHARGED[locale]
    expected_text = f"{words['fee']}\n{words['interest']}\n{words['total']}\n\n"
    assert expected_text in msg.text, msg.text
    assert "99,00" not in msg.text and "99.00" not in msg.text  # the waived fee
    assert EXPECTED[locale]["balance"] in msg.text  # the open balance is still stated
    for line in ("fee", "interest", "total"):
        label, amount = words[line][2 if line != "total" else 0 :].rsplit(": ", 1)
        assert label in msg.html and amount in msg.html, (line, msg.html)
    assert "99,00" not in msg.html and "99.00" not in msg.html
    assert words["sms"] in msg.sms and len(msg.sms) <= SMS_MAX_CHARS
    assert EXPECTED[locale]["balance"].replace(NBSP, " ") not in msg.sms  # the total only


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_every_template_states_the_charges_and_the_total_due(template: str, locale: str) -> None:
    plain = rendered(template, locale)
    ctx = context(customer(locale), charges=fee_interest_and_waived_fee())
    msg = render_message(template, locale, ctx)
    total = ctx["total_due"]
    assert total in msg.text and total in msg.html
    assert msg.text.count("\n- ") == plain.text.count("\n- ") + 2  # two charge lines
    assert len(msg.sms) <= SMS_MAX_CHARS
    if template not in PLAN_TEMPLATES:  # a plan's SMS states the instalment due now
        assert total.replace(NBSP, " ").replace(NNBSP, " ") in msg.sms
    # The letter is the plain text: its paragraphs (split on blank lines) keep the list whole.
    assert any(total in paragraph and "\n- " in paragraph for paragraph in msg.text.split("\n\n"))


@pytest.mark.parametrize("locale", LOCALES)
def test_no_charges_or_only_waived_ones_say_nothing_of_charges(locale: str) -> None:
    waived = [c for c in fee_interest_and_waived_fee() if c.waived_at is not None]
    for template in ALL_TEMPLATES:
        plain = rendered(template, locale)
        only_waived = render_message(template, locale, context(customer(locale), charges=waived))
        assert only_waived == plain
        for word in ("Late charges", "Verzugskosten", "frais de retard", "Total due", "Total dû"):
            assert word not in plain.text and word not in plain.html and word not in plain.sms


def test_a_message_without_charges_is_unchanged() -> None:
    """The exact text of a reminder without charges, as it was before charges existed."""
    assert rendered("reminder", "en").text == (
        "Dear Acme GmbH,\n\n"
        "€1,000.00 of invoice 2026-0042 (due January 15, 2026) is open.\n"
        "Please pay the open balance at your earliest convenience.\n\n"
        "If you have already paid, please ignore this message.\n\n"
        f"Pay online: {PAY_URL}\n"
        "Bank transfer reference: RF73AR42\n\n"
        "Kind regards"
    )
    assert rendered("final_notice", "de").sms == (
        "Letzte Mahnung: Rechnung 2026-0042 (fällig am 15. Januar 2026) ist mit 1.000,00 € "
        "unbezahlt. Ohne Zahlung bis zum 1. März 2026 übergeben wir die Forderung an ein "
        f"Inkassounternehmen. Online bezahlen: {PAY_URL} Keine SMS mehr? Antworten Sie STOP."
    )


def test_a_charge_in_another_currency_is_refused() -> None:
    usd = charge("fee", 100)
    usd.currency = "USD"
    with pytest.raises(ValueError, match="charge in USD on an invoice in EUR"):
        context(customer(), charges=[usd])


# -- fallback ------------------------------------------------------------------------------


def test_locale_fallback() -> None:
    assert resolve_locale("de-AT") == "de"
    assert resolve_locale("de_at") == "de"
    assert resolve_locale("fr_CH") == "fr"
    assert resolve_locale("en_US") == "en"
    assert resolve_locale("pt") == "en"
    assert resolve_locale("pt-BR", default_locale="fr") == "fr"
    assert resolve_locale("pt", default_locale="es") == "en"  # a default without templates
    assert resolve_locale(None) == "en"


def test_austrian_customer_gets_german_text_with_austrian_formats() -> None:
    msg = render_message("reminder_overdue", "de-AT", context(customer("de-AT")))
    assert msg.locale_used == "de"
    assert msg.text.startswith("Guten Tag Acme GmbH,")
    assert f"von €{NBSP}1.200,00 sind noch €{NBSP}1.000,00 offen" in msg.text
    assert "15. Jänner 2026" in msg.text


def test_unsupported_locale_gets_english_with_english_formats() -> None:
    ctx = context(customer("pt"))
    assert ctx["locale"] == "en"
    msg = render_message("reminder_overdue", "pt", ctx)
    assert msg.locale_used == "en"
    assert "€1,000.00 of €1,200.00 is still open" in msg.text
    assert "January 15, 2026" in msg.text


def test_configured_default_locale_decides_language_and_formats() -> None:
    ctx = context(customer("pt"), default_locale="de")
    assert ctx["locale"] == "de"
    msg = render_message("reminder", ctx["locale"], ctx, default_locale="de")
    assert msg.locale_used == "de"
    assert f"1.000,00{NBSP}€" in msg.text
    # the old two-value API picks the language from the context's resolved locale
    subject, text = render("reminder", ctx)
    assert (subject, text) == (msg.subject, msg.text)


def test_formatting_locale() -> None:
    assert formatting_locale("de-AT") == "de-AT"
    assert formatting_locale("en_us") == "en-US"
    assert formatting_locale("de-XX") == "de"  # Babel has no such locale: the language's
    assert formatting_locale("pt") == "en"
    assert formatting_locale("pt", "fr-CH") == "fr-CH"


def test_default_locale_setting() -> None:
    assert Settings(environment="test").default_locale == "en"
    assert Settings(environment="test", default_locale="de-AT").default_locale == "de-AT"
    with pytest.raises(ValidationError):
        Settings(environment="test", default_locale="english")


# -- formats -------------------------------------------------------------------------------


def test_babel_formats() -> None:
    assert money(120_000, "EUR", "fr") == f"1{NNBSP}200,00{NBSP}€"
    assert money(120_000, "JPY", "de") == f"120.000{NBSP}¥"
    assert format_percent(250, "en") == "2.5%"
    assert format_percent(200, "de") == f"2{NBSP}%"
    assert local_date(date(2026, 3, 1), "UTC", "fr") == "1er mars 2026"
    assert local_date(date(2026, 3, 11), "UTC", "fr") == "11 mars 2026"
    # the customer's local day of an instant
    assert local_date(datetime(2026, 1, 15, 23, 30, tzinfo=UTC), "Europe/Berlin", "de") == (
        "16. Januar 2026"
    )


# -- SMS and HTML --------------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
def test_sms_fits_with_the_longest_number_amount_and_a_long_pay_link(locale: str) -> None:
    long_url = "https://payments.collections.example-company.com/pay/RF73AR42?l=" + "x" * 20
    inv = invoice(number="N" * 64)
    for template in ALL_TEMPLATES:
        ctx = context(customer(locale), inv, balance_minor=10**13, pay_url=long_url)
        sms = render_message(template, locale, ctx).sms
        assert len(sms) <= SMS_MAX_CHARS, (template, len(sms), sms)
        assert long_url in sms and "N" * 64 in sms


def test_sms_states_the_escalation_date_when_it_fits() -> None:
    sms = rendered("final_notice", "de").sms
    assert "bis zum 1. März 2026" in sms and "15. Januar 2026" in sms


@pytest.mark.parametrize("locale", LOCALES)
def test_html_escapes_what_the_customer_typed(locale: str) -> None:
    name = '<script>alert("x")</script> & Co'
    for template in ALL_TEMPLATES:
        msg = render_message(template, locale, context(customer(locale, name=name)))
        assert "<script>" not in msg.html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co" in msg.html
        assert "&amp;lt;" not in msg.html and "&amp;amp;" not in msg.html  # escaped once
        assert f"{GREETING[locale]}{name}," in msg.text  # plain text stays as typed
    number = invoice(number="<b>1</b>")
    msg = render_message("final_notice", locale, context(customer(locale), number))
    assert "<title>" in msg.html and "&lt;b&gt;1&lt;/b&gt;" in msg.html
    assert "<b>1</b>" not in msg.html


def test_strict_undefined_and_template_names() -> None:
    ctx = context(customer("de"))
    del ctx["balance"]
    with pytest.raises(UndefinedError):
        render_message("reminder", "de", ctx)
    for bad in ("../en/reminder", "_note", "nope", "Reminder"):
        with pytest.raises(TemplateNotFound):
            render_message(bad, "en", context(customer()))


def test_rendered_is_frozen() -> None:
    msg = rendered("reminder", "en")
    with pytest.raises(AttributeError):
        msg.subject = "x"  # type: ignore[misc]


# -- the preview endpoint ------------------------------------------------------------------


@pytest.fixture
async def h(dev_env: WorkflowEnvironment, engine: Engine, tmp_path: Path) -> AsyncIterator[Harness]:
    # The dev server, not the shared time-skipping one: these invoices' workflows never get a
    # worker, and terminating such workflows can leave the time-skipping clock stuck.
    async with harness(dev_env, engine, tmp_path, with_worker=False) as h:
        yield h


async def preview_case(h: Harness, **customer: Any) -> dict[str, Any]:
    cust = await h.customer(timezone="Europe/Berlin", **customer)
    return await h.invoice(cust["id"], issued_on="2026-01-05", due_date="2026-01-15")


async def test_preview_renders_the_step_for_the_customer(h: Harness) -> None:
    inv = await preview_case(h, locale="de-AT", address="Ring 1\n1010 Wien")
    resp = await h.get(f"/v1/invoices/{inv['id']}/preview", step="final_notice")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) >= {"step", "channel", "locale_used", "subject", "text", "html", "sms"}
    assert (body["step"], body["channel"], body["locale_used"]) == ("final_notice", "email", "de")
    assert body["subject"] == f"Letzte Mahnung: Rechnung {inv['number']}"
    assert body["recipient"] == "ap@acme.example.com"
    assert body["template"] == "final_notice"
    assert body["scheduled_for"].startswith("2026-02-14T08:00:00")  # P30D, at 09:00 in Berlin
    text = body["text"]
    assert f"in Höhe von €{NBSP}1.200,00 unbezahlt" in text
    assert "fällig am 15. Jänner 2026" in text
    assert "bis zum 1. März 2026" in text  # escalation: P45D after the due instant
    assert f"Online bezahlen: {inv['pay_url']}" in text and inv["payment_reference"] in text
    assert inv["pay_url"] in body["html"] and inv["pay_url"] in body["sms"]
    assert len(body["sms"]) <= SMS_MAX_CHARS

    sms = await h.get(f"/v1/invoices/{inv['id']}/preview", step="before_due", channel="sms")
    assert sms.status_code == 200, sms.text
    assert (sms.json()["channel"], sms.json()["recipient"]) == ("sms", "+4930123456")
    assert sms.json()["subject"].startswith(f"Rechnung {inv['number']}")
    letter = await h.get(f"/v1/invoices/{inv['id']}/preview", step="late_7", channel="letter")
    assert letter.json()["recipient"] == "Acme GmbH\nRing 1\n1010 Wien"
    call = await h.get(f"/v1/invoices/{inv['id']}/preview", step="late_7", channel="call")
    assert call.json()["recipient"] == "+4930123456"
    assert h.outbox(inv["id"]) == []  # a preview sends nothing


async def test_preview_falls_back_to_english_and_follows_the_balance(h: Harness) -> None:
    inv = await preview_case(h, locale="pt")
    resp = await h.get(f"/v1/invoices/{inv['id']}/preview", step="late_7")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["locale_used"] == "en"
    assert "€1,200.00 of €1,200.00 is still open" in body["text"]
    assert "January 15, 2026" in body["text"]


async def test_preview_errors(h: Harness) -> None:
    inv = await preview_case(h, locale="fr")
    url = f"/v1/invoices/{inv['id']}/preview"
    unknown = await h.get(url, step="late_99")
    assert unknown.status_code == 422, unknown.text
    error = unknown.json()["error"]
    assert error["details"]["steps"] == [
        "before_due",
        "first_late_day",
        "late_7",
        "late_14",
        "final_notice",
    ]
    assert "before_due" in error["message"]
    missing = await h.get("/v1/invoices/999999/preview", step="late_7")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert (await h.get(url, step="late_7", channel="fax")).status_code == 422
    assert (await h.get(url)).status_code == 422  # step is required
    assert (await h.http.get(url, params={"step": "late_7"})).status_code == 401
    ok = await h.get(url, step="late_7", role="viewer")
    assert ok.status_code == 200 and ok.json()["locale_used"] == "fr"
    assert ok.json()["subject"] == f"Rappel de paiement : facture {inv['number']} échue"


async def test_preview_of_a_ladder_notice_with_charges(h: Harness) -> None:
    """A pre-legal notice of the policy's ladder, previewed by its stage key: at its earliest
    instant, naming the next stage's day as the deadline, with the charges not waived."""
    policy = await h.policy(
        send_at="09:00",
        escalate_after="P45D",
        steps=[{"key": "late_7", "offset": "P7D", "template": "reminder_overdue"}],
        ladder=[
            {"key": "final", "kind": "notice", "channels": ["email"]},
            {
                "key": "warning",
                "kind": "notice",
                "wait": "P14D",
                "channels": ["letter", "email"],
                "template": "pre_legal",
            },
            {"key": "court", "kind": "legal", "wait": "P14D"},
        ],
    )
    cust = await h.customer(timezone="Europe/Berlin", locale="de", address="Ring 1\n1010 Wien")
    inv = await h.invoice(
        cust["id"], policy_id=policy["id"], issued_on="2026-01-05", due_date="2026-01-15"
    )
    with Session(h.engine) as s:
        for line in (
            ChargeLine("fee", 1_500, "EUR", "fee:final", stage="final"),
            ChargeLine("interest", 1_234, "EUR", "interest:2026-02-14",
                       period_from=date(2026, 1, 15), period_to=date(2026, 2, 14),
                       basis={"rate_pct": "12.5"}),
            ChargeLine("fee", 9_900, "EUR", "fee:late_7", stage="late_7"),
        ):  # fmt: skip
            post_charge(s, inv["id"], line)
        waived = find_charge(s, inv["id"], "fee:late_7")
        assert waived is not None and waived.id is not None
        waive_charge(s, inv["id"], waived.id, "goodwill", "specialist:test")

    resp = await h.get(f"/v1/invoices/{inv['id']}/preview", step="warning")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["template"], body["channel"]) == ("pre_legal", "letter")
    assert body["recipient"] == "Acme GmbH\nRing 1\n1010 Wien"
    # escalation 1 March 09:00 Berlin, the notice 14 days later, the legal stage 14 after that
    assert body["scheduled_for"].startswith("2026-03-15T08:00:00")
    assert body["subject"] == f"Vorgerichtliche Mahnung: Rechnung {inv['number']}"
    text = body["text"]
    assert f"Sollte der Betrag von 1.227,34{NBSP}€ nicht bis zum 29. März 2026" in text
    assert f"- Mahngebühr: 15,00{NBSP}€\n" in text and f"12,34{NBSP}€\n" in text
    assert f"Insgesamt zu zahlen: 1.227,34{NBSP}€" in text
    assert "99,00" not in text and "99,00" not in body["html"]  # the waived fee
    assert "1.227,34 € (inkl. Verzugskosten)" in body["sms"]

    final = (await h.get(f"/v1/invoices/{inv['id']}/preview", step="final")).json()
    assert final["template"] == "final_notice" and "bis zum 15. März 2026" in final["text"]
    legal = await h.get(f"/v1/invoices/{inv['id']}/preview", step="court")
    assert legal.status_code == 422  # the legal stage sends no message
    assert legal.json()["error"]["details"]["steps"] == ["late_7", "final", "warning"]
