"""One-click unsubscribe from reminder emails (the link in every email and its
``List-Unsubscribe`` header). The token names the customer and is signed, so nobody can
unsubscribe someone else; GET only shows a button (mail scanners fetch links), POST acts."""

from __future__ import annotations

import base64
import hashlib
import hmac
from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.contacts import block
from api.deps import SessionDep, SettingsDep
from api.errors import ApiError
from arflow.config import Settings
from models import Customer

router = APIRouter(tags=["customers"], include_in_schema=False)


def _mac(settings: Settings, customer_id: int) -> str:
    key = hashlib.sha256(b"unsubscribe:" + settings.webhook_secret.encode()).digest()
    return hmac.new(key, str(customer_id).encode(), hashlib.sha256).hexdigest()[:24]


def unsubscribe_token(settings: Settings, customer_id: int) -> str:
    raw = f"{customer_id}.{_mac(settings, customer_id)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unsubscribe_url(settings: Settings, customer_id: int) -> str:
    return f"{settings.public_url.rstrip('/')}/u/{unsubscribe_token(settings, customer_id)}"


def _customer_of(settings: Settings, token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        ident, _, mac = raw.partition(".")
        customer_id = int(ident)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(404, "not_found", "unknown unsubscribe link") from None
    if not hmac.compare_digest(mac, _mac(settings, customer_id)):
        raise ApiError(404, "not_found", "unknown unsubscribe link")
    return customer_id


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">{content}</body></html>"""


@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    customer = session.get(Customer, _customer_of(settings, token))
    if customer is None:
        raise ApiError(404, "not_found", "unknown unsubscribe link")
    form = (
        f"<p>Stop payment reminders by email to {escape(customer.email or '')}?</p>"
        f'<form method="post" action="/u/{escape(token)}"><button>Unsubscribe</button></form>'
        "<p>Reminders of open invoices may still reach you by letter.</p>"
    )
    return HTMLResponse(PAGE.format(content=form))


@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """Also the target of ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``."""
    customer = session.get(Customer, _customer_of(settings, token))
    if customer is None or customer.id is None:
        raise ApiError(404, "not_found", "unknown unsubscribe link")
    block(session, customer.id, "email", "unsubscribed", "link", address=customer.email)
    session.commit()
    return HTMLResponse(PAGE.format(content="<p>Done: no more reminder emails.</p>"))
