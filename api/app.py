"""The FastAPI application: ``create_app()`` for uvicorn, tests inject engine and client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.client import Client

from api import errors, portal, web, web_customers, web_payments, web_policy_lab, web_reports
from api.bounds import bounded_integers
from api.deps import too_many_attempts
from api.limits import BodyLimit
from api.metrics import RequestObservability
from api.ratelimit import RateLimits
from api.routes import (
    actions,
    agency,
    approvals,
    calls,
    charges,
    codec,
    collectors,
    contacts,
    customers,
    experiments,
    history,
    invoices,
    jobs,
    legal,
    pay,
    payments,
    policies,
    portal_links,
    portal_requests,
    preview,
    profiles,
    providers,
    reports,
    simulation,
    simulations,
    stripe_webhook,
    tasks,
    unsubscribe,
    webhooks,
)
from api.security import FailureLimiter, SecurityHeaders, client_address
from arflow import observability
from arflow.codec import data_converter
from arflow.config import Settings, get_settings, same_secret
from arflow.db import make_engine
from arflow.policies import service as policy_service

log = logging.getLogger("arflow.api")


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    temporal: Client | None = None,
) -> FastAPI:
    settings = settings or get_settings()
    engine = engine or make_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        observability.configure_logging(settings.effective_log_format)
        with Session(engine) as session:
            policy_service.ensure_default_policy(session)
        if app.state.temporal is None:
            app.state.temporal = await Client.connect(
                settings.temporal_address or "127.0.0.1:7233",
                namespace=settings.temporal_namespace,
                data_converter=data_converter(settings),
            )
        yield

    docs = settings.serves_api_docs
    app = FastAPI(
        title="arflow",
        version="0.1.0",
        description="Accounts-receivable collections: one durable workflow per invoice.",
        lifespan=lifespan,
        dependencies=[Depends(bounded_integers)],
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.temporal = temporal
    app.state.api_keys = settings.parsed_api_keys()
    app.state.auth_failures = FailureLimiter(settings.auth_failures_per_minute)
    app.state.rate_limits = RateLimits()
    errors.install(app)
    app.add_middleware(BodyLimit)  # 413 before any route reads an oversized body
    app.add_middleware(RequestObservability, workflow_id=settings.workflow_id)
    for module in (
        customers,
        policies,
        simulation,
        invoices,
        preview,
        actions,
        calls,
        jobs,
        payments,
        webhooks,
        stripe_webhook,
        providers,
        reports,
        history,
        unsubscribe,
        profiles,
        charges,
        pay,
        agency,
        legal,
        approvals,
        collectors,
        tasks,
        contacts,
        portal_links,
        portal_requests,
        experiments,
        simulations,
    ):
        app.include_router(module.router)
    codec.install(app, settings.temporal_ui_url)  # /codec for Temporal's Web UI and CLI
    web.install(app, settings)  # the dashboard at /app: session cookie, static files, pages
    for page in (
        web_payments,
        web_reports,
        web_customers,
        web_policy_lab,
    ):  # its pages in modules of their own
        app.include_router(page.router)
    portal.install(app)  # the customer portal at /portal/<signed link>
    app.add_middleware(SecurityHeaders)  # outermost: the session and error pages get it too

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if settings.metrics_token or settings.is_relaxed:
        _serve_metrics(app, settings.metrics_token)
    return app


def _serve_metrics(app: FastAPI, token: str) -> None:
    """``GET /metrics``: with ``ARFLOW_METRICS_TOKEN`` set, only for ``Authorization: Bearer
    <token>`` (a wrong token counts as a failed sign-in); without one it is served openly in
    development and test, and not at all in production (create_app does not call this)."""

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    def metrics(request: Request) -> Response:
        if token:
            scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
            limiter, address = request.app.state.auth_failures, client_address(request)
            wait = limiter.retry_after(address)
            if wait is not None:
                raise too_many_attempts(wait)
            if scheme.lower() != "bearer" or not same_secret(offered.strip(), token):
                limiter.failed(address)
                raise HTTPException(
                    401,
                    "metrics need the ARFLOW_METRICS_TOKEN bearer token",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        body, content_type = observability.metrics_exposition()
        return Response(body, media_type=content_type)
