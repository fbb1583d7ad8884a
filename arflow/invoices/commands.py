"""The specialist actions the domain sends to an invoice's workflow, recorded before they go.

A workflow update can be sent by anyone who reaches the Temporal frontend, past the API and
its roles. So each update that carries money or state (``workflows.trust.GUARDED_UPDATES``) is
first stored here as an ``InvoiceCommand`` (the request's fingerprint, who asked), its id goes
in the request, and the workflow applies it only when ``check_command`` finds that row.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from sqlmodel import Session

from arflow.invoices.timeline import add_event, already_recorded, commit_once
from models import InvoiceCommand
from workflows.trust import GUARDED_UPDATES, fingerprint
from workflows.types import CheckCommandInput, CommandCheck

R = TypeVar("R")


def record_command(session: Session, invoice_id: int, name: str, request: R) -> R:
    """Store the request the domain is about to send as update ``name`` and return it with
    the row's id as its ``command_id`` (commits: the workflow's activity reads it from
    another session). Updates outside ``GUARDED_UPDATES`` go as they are."""
    if name not in GUARDED_UPDATES:
        return request
    data: Any = request
    row = InvoiceCommand(
        invoice_id=invoice_id,
        name=name,
        fingerprint=fingerprint(data),
        actor=str(getattr(data, "actor", ""))[:100],
    )
    session.add(row)
    session.commit()
    return replace(data, command_id=row.id)


def check_command(session: Session, inp: CheckCommandInput) -> CommandCheck:
    """Whether the update the workflow is about to apply is one the domain recorded: a row
    with its id, invoice, name and fingerprint, not applied before (the row keeps the key of
    its one application, so a retry of this check passes and a replay of the update does
    not). When it is not, a ``command_rejected`` event says which and why."""
    row = session.get(InvoiceCommand, inp.command_id) if inp.command_id is not None else None
    if row is None:
        reason = "no recorded command" if inp.command_id is None else "unknown command"
    elif row.invoice_id != inp.invoice_id:
        reason = "the command was recorded for another invoice"
    elif row.name != inp.name:
        reason = f"the command was recorded as {row.name}"
    elif row.fingerprint != inp.fingerprint:
        reason = "the request differs from the one recorded"
    elif row.used_by not in (None, inp.key):
        reason = "the command was applied already"
    else:
        row.used_by = inp.key
        session.add(row)
        session.commit()
        return CommandCheck()
    key = f"{inp.key}:rejected"
    if not already_recorded(session, inp.invoice_id, key):
        add_event(
            session,
            inp.invoice_id,
            "command_rejected",
            {"command": inp.name, "command_id": inp.command_id, "reason": reason},
            dedupe_key=key,
        )
        commit_once(session, inp.invoice_id, key)
    return CommandCheck(reason=reason)
