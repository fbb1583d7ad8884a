"""Temporal's remote codec protocol: the Web UI and ``temporal`` CLI show decrypted payloads.

``POST /codec/decode`` and ``POST /codec/encode`` take and return ``{"payloads": [{"metadata":
{name: base64}, "data": base64}]}`` (the JSON form of Temporal's ``Payloads``), with the
namespace in ``X-Namespace``. Admins only (a decoded payload is what the encryption hides):
an admin API key as bearer token (the CLI's ``--codec-auth``), or, for the Web UI, which
cannot send a fixed header, an admin's dashboard session cookie: the UI with
``TEMPORAL_CODEC_INCLUDE_CREDENTIALS`` calls ``/app/codec``, where that cookie (path
``/app``) is sent. The UI calls from its own origin (``temporal_ui_url``), hence the CORS
rules of ``install``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, Field, field_validator
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payload

from api.deps import BearerCreds, Principal, SettingsDep, require
from api.errors import ApiError
from api.web import signed_in
from arflow.codec import codec
from arflow.config import Role

router = APIRouter(prefix="/codec", tags=["ops"])


def _b64(value: str) -> str:
    try:
        base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    return value


class CodecPayload(BaseModel):
    """One payload: metadata values and data in base64, as Temporal's JSON form has them."""

    metadata: dict[str, str] = Field(default_factory=dict, max_length=64)
    data: str = Field(default="", max_length=16_000_000)

    @field_validator("metadata")
    @classmethod
    def _metadata_b64(cls, value: dict[str, str]) -> dict[str, str]:
        return {k: _b64(v) for k, v in value.items()}

    @field_validator("data")
    @classmethod
    def _data_b64(cls, value: str) -> str:
        return _b64(value)

    def to_proto(self) -> Payload:
        return Payload(
            metadata={k: base64.b64decode(v) for k, v in self.metadata.items()},
            data=base64.b64decode(self.data),
        )

    @classmethod
    def of(cls, payload: Payload) -> CodecPayload:
        return cls(
            metadata={k: base64.b64encode(v).decode() for k, v in payload.metadata.items()},
            data=base64.b64encode(payload.data).decode(),
        )


class CodecPayloads(BaseModel):
    payloads: list[CodecPayload] = Field(max_length=10_000)


def codec_admin(request: Request, creds: BearerCreds) -> Principal:
    """An admin's bearer key or, without an Authorization header, an admin's session."""
    who = signed_in(request) if creds is None else None
    if who is None:
        return require(Role.admin)(request, creds)
    if who.role is not Role.admin:
        raise HTTPException(403, "decoding payloads needs the admin role")
    return who


CodecAdmin = Annotated[Principal, Depends(codec_admin)]
Namespace = Annotated[
    str | None,
    Header(alias="X-Namespace", max_length=1000, description="the Temporal namespace"),
]


def _check_namespace(settings: SettingsDep, namespace: str | None) -> None:
    if namespace is not None and namespace != settings.temporal_namespace:
        raise ApiError(
            400,
            "wrong_namespace",
            f"this codec serves namespace {settings.temporal_namespace!r}, not {namespace!r}",
        )


@router.post("/decode", response_model=CodecPayloads)
async def decode(
    body: CodecPayloads, settings: SettingsDep, _: CodecAdmin, namespace: Namespace = None
) -> CodecPayloads:
    """Decrypt payloads (unencrypted ones come back unchanged); a payload under a key id
    that ``ARFLOW_CODEC_KEYS`` lacks is a 422 naming it."""
    _check_namespace(settings, namespace)
    payloads = [p.to_proto() for p in body.payloads]
    found = codec(settings)
    out = await found.decode(payloads) if found else payloads
    return CodecPayloads(payloads=[CodecPayload.of(p) for p in out])


@router.post("/encode", response_model=CodecPayloads)
async def encode(
    body: CodecPayloads, settings: SettingsDep, _: CodecAdmin, namespace: Namespace = None
) -> CodecPayloads:
    """Encrypt payloads with the current key (unchanged when no key is set), e.g. the input
    of a signal sent from the Web UI."""
    _check_namespace(settings, namespace)
    payloads = [p.to_proto() for p in body.payloads]
    found = codec(settings)
    out = await found.encode(payloads) if found else payloads
    return CodecPayloads(payloads=[CodecPayload.of(p) for p in out])


class _CodecCors:
    """CORS for the Web UI's origin on ``/codec/`` only: the rest of the API stays
    same-origin."""

    def __init__(self, app: ASGIApp, origin: str) -> None:
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=[origin],
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=True,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(("/codec/", "/app/codec/")):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def install(app: FastAPI, ui_url: str) -> None:
    """The endpoints at ``/codec``, again at ``/app/codec`` (where the dashboard's session
    cookie, path ``/app``, reaches them), and CORS for the Web UI at ``ui_url``."""
    app.include_router(router)
    app.include_router(router, prefix="/app", include_in_schema=False)
    parts = urlsplit(ui_url)
    app.add_middleware(_CodecCors, origin=f"{parts.scheme}://{parts.netloc}")
