"""Hand-off of an invoice to a collection agency, behind an adapter interface."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class PlacementRequest:
    invoice_id: int
    invoice_number: str
    customer_external_id: str
    amount_minor: int
    currency: str
    due_date: str
    placed_at: datetime


class AgencyAdapter(Protocol):
    name: str

    def place(self, request: PlacementRequest) -> str:
        """Place the invoice; return the agency's reference. Must be idempotent per invoice."""
        ...


class FileAgencyAdapter:
    """Writes one JSON placement file per invoice into a folder an agency picks up."""

    name = "file-drop"

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def place(self, request: PlacementRequest) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"placement-invoice-{request.invoice_id}.json"
        payload = asdict(request) | {"placed_at": request.placed_at.isoformat()}
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
        os.replace(tmp, target)  # atomic: a retry rewrites the same file, never a second one
        return str(target)
