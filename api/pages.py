"""The customer-facing HTML pages outside the dashboard (pay link, unsubscribe): one page
shell with its stylesheet in a static file, so the Content-Security-Policy needs no inline
style (api/security.py)."""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse, Response

from models.portal_request import DisputeAttachment

PAGE = """<!doctype html><html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>
<link rel="stylesheet" href="/app/static/public.css"></head>
<body>{content}</body></html>"""


def public_page(title: str, content: str, status: int = 200, lang: str = "en") -> HTMLResponse:
    """``content`` is HTML (escape what it quotes); ``title`` is plain text."""
    return HTMLResponse(
        PAGE.format(lang=escape(lang[:2]), title=escape(title), content=content),
        status_code=status,
    )


def unknown_link(message: str) -> HTMLResponse:
    """A refused link (forged, mistyped, from a retired key or an older format): a 404 page."""
    return public_page(
        "Unknown link",
        f"<h1>Unknown link</h1><p>{escape(message)}. Please use the newest message we sent "
        "you, or contact us.</p>",
        status=404,
    )


def attachment_response(row: DisputeAttachment, content: bytes) -> Response:
    """A customer's file as a download, never shown inline (also the dashboard's)."""
    return Response(
        content,
        media_type=row.content_type,
        headers={
            "Content-Disposition": f'attachment; filename="{row.filename}"',
            "X-Content-Type-Options": "nosniff",
        },
    )
