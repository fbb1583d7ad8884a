"""One-click unsubscribe from reminder emails (the link is made and checked by
``arflow.customers.unsubscribe``). GET only shows a button (mail scanners fetch links), POST
acts."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.deps import SessionDep, SettingsDep
from api.pages import public_page, unknown_link
from arflow.customers import unsubscribe as unsubscribe_links
from arflow.errors import NotFound

router = APIRouter(tags=["customers"], include_in_schema=False)


@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    try:
        customer = unsubscribe_links.customer_of(session, settings, token)
    except NotFound as exc:
        return unknown_link(exc.message)
    form = (
        f"<p>Stop payment reminders by email to {escape(customer.email or '')}?</p>"
        f'<form method="post" action="/u/{escape(token)}"><button>Unsubscribe</button></form>'
        "<p>Reminders of open invoices may still reach you by letter.</p>"
    )
    return public_page("Unsubscribe", form)


@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """Also the target of ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``."""
    try:
        unsubscribe_links.unsubscribe(session, settings, token)
    except NotFound as exc:
        return unknown_link(exc.message)
    return public_page("Unsubscribe", "<p>Done: no more reminder emails.</p>")
