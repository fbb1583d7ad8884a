"""One-click unsubscribe from reminder emails (the link is made and checked by
``arflow.customers.unsubscribe``). GET only shows a button (mail scanners fetch links), POST
acts."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.deps import SessionDep, SettingsDep
from arflow.customers import unsubscribe as unsubscribe_links

router = APIRouter(tags=["customers"], include_in_schema=False)


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">{content}</body></html>"""


@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    customer = unsubscribe_links.customer_of(session, settings, token)
    form = (
        f"<p>Stop payment reminders by email to {escape(customer.email or '')}?</p>"
        f'<form method="post" action="/u/{escape(token)}"><button>Unsubscribe</button></form>'
        "<p>Reminders of open invoices may still reach you by letter.</p>"
    )
    return HTMLResponse(PAGE.format(content=form))


@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    """Also the target of ``List-Unsubscribe-Post: List-Unsubscribe=One-Click``."""
    unsubscribe_links.unsubscribe(session, settings, token)
    return HTMLResponse(PAGE.format(content="<p>Done: no more reminder emails.</p>"))
