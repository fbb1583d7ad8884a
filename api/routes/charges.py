"""Charges on an invoice (late fees, interest, compensation): listed, and waived by a
specialist with a reason. The workflow posts them; the invoice's amount never changes."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SessionDep, Specialist, Viewer
from arflow.charges import service as charges
from models import InvoiceCharge
from models.charge import ChargePublic, ChargesPublic, WaiveBody

router = APIRouter(prefix="/v1/invoices", tags=["charges"])


@router.get("/{invoice_id}/charges", response_model=ChargesPublic)
def list_charges(invoice_id: int, session: SessionDep, _: Viewer) -> ChargesPublic:
    return charges.charges_of(session, invoice_id)


@router.post("/{invoice_id}/charges/{charge_id}/waive", response_model=ChargePublic)
def waive_charge(
    invoice_id: int, charge_id: int, body: WaiveBody, session: SessionDep, who: Specialist
) -> InvoiceCharge:
    return charges.waive_charge(session, invoice_id, charge_id, body.reason, who.actor)
