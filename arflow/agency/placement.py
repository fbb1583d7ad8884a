"""Placing an invoice with a collection agency: the adapters (a signed JSON webhook or a
file drop), the signature agencies check, and the placement record.

**When the agency misbehaves.** Unlike the email and SMS providers, an agency gets an
``Idempotency-Key`` (``invoice-<id>-placement`` / ``-recall``), so every failure may be
retried, the ones where the agency may already have acted too (no answer within the
timeout, the connection reset after the request went out): the agency answers a key it has
seen with what it did the first time and places nothing twice. That holds only if a retry
is the *same* request: the body must not change between attempts (an agency following the
IETF Idempotency-Key draft refuses a reused key with another body, 422), so its timestamps
(``placed_at``, ``recalled_at``) are the time the activity was first scheduled, not the
attempt's. A 429 or 503 with ``Retry-After`` is retried no earlier than it says
(``AgencyDeliveryError.next_retry_delay``); any other failure after the workflow's backoff.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlmodel import Session, select
from temporalio.exceptions import ApplicationError

from arflow.agency.targets import UnsafeTarget, confined_folder, public_addresses
from arflow.invoices.timeline import (
    add_event,
)
from models import Agency, AgencyPlacement
from models.types import utcnow

#: the drop folder used when no agency is configured (``settings.agency_folder``)
BUILTIN_AGENCY = "file-drop"
PLACED = "placed"
END_OUTCOMES = ("recalled", "returned", "closed")
PLACEMENT_FAILED = "agency_placement_failed"
RECALL_FAILED = "agency_recall_failed"
ENDED_KEY = "agency:ended"  # one placement per invoice, so it ends once
SIGNATURE_VERSION = "v1"
TIMESTAMP_HEADER = "X-Arflow-Timestamp"
SIGNATURE_HEADER = "X-Arflow-Signature"
AGENCY_HEADER = "X-Arflow-Agency"
IDEMPOTENCY_HEADER = "Idempotency-Key"


# -- what an agency receives ----------------------------------------------------------------


@dataclass(frozen=True)
class PlacementRequest:
    """An invoice handed to an agency: the debt, and whom and how to collect it from."""

    invoice_id: int
    invoice_number: str
    customer_external_id: str
    customer_name: str
    customer_email: str | None
    customer_phone: str | None
    customer_address: str | None
    amount_minor: int
    currency: str
    due_date: str
    placed_at: datetime
    stage: str = "agency"

    def record(self) -> dict[str, Any]:
        return asdict(self) | {"placed_at": self.placed_at.isoformat()}


@dataclass(frozen=True)
class RecallRequest:
    """We take the invoice back: the agency stops working it."""

    invoice_id: int
    invoice_number: str
    reference: str
    reason: str
    recalled_at: datetime

    def record(self) -> dict[str, Any]:
        return asdict(self) | {"recalled_at": self.recalled_at.isoformat()}


class AgencyAdapter(Protocol):
    name: str

    def place(self, request: PlacementRequest) -> str:
        """Place the invoice; return the agency's reference. Idempotent per invoice."""
        ...

    def recall(self, request: RecallRequest) -> None:
        """Tell the agency to stop working the invoice. Idempotent per invoice."""
        ...


class AgencyDeliveryError(ApplicationError):
    """The agency did not take a placement or recall: Temporal retries the activity (after
    ``retry_after``, the agency's ``Retry-After``, when it gave one)."""

    def __init__(self, message: str, retry_after: timedelta | None = None) -> None:
        super().__init__(message, type=type(self).__name__, next_retry_delay=retry_after)

    def __str__(self) -> str:
        return self.message  # without the type ApplicationError puts first: the task says it


def retry_after(headers: httpx.Headers) -> timedelta | None:
    """A ``Retry-After`` in seconds, between 1 second and 10 minutes (a date is ignored)."""
    try:
        seconds = int(headers.get("Retry-After", "").strip())
    except ValueError:
        return None
    return timedelta(seconds=min(max(seconds, 1), 600))


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256 of "timestamp.body">``: how we sign what we send an agency and
    how an agency signs the updates it sends us."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={digest.hexdigest()}"


# -- adapters -------------------------------------------------------------------------------


#: a text cell starting with one of these is a formula to a spreadsheet (OWASP: CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
#: a reference taken from an agency's answer: an identifier, nothing more
REFERENCE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/#-]{0,299}")


def formula_safe(value: Any) -> Any:
    """A CSV cell the agency's spreadsheet shows as text: a text value that would start a
    formula gets a leading ``'``. Numbers (amounts, ids) stay numbers."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv(record: dict[str, Any], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)  # RFC 4180: CRLF line ends, quotes where needed
    writer.writerow(columns)
    writer.writerow(["" if record[c] is None else formula_safe(record[c]) for c in columns])
    return out.getvalue()


class FileAgencyAdapter:
    """One placement file per invoice (and a recall file on recall) in a folder the agency
    picks up, as JSON or CSV. Written atomically: a hidden temporary file, then a rename, so
    the agency never reads half a file and a retry rewrites the same file.

    With ``root`` (an agency an admin configured), the folder must stay inside it: checked
    again before every write, since a folder may have been replaced by a symbolic link since
    it was configured."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        file_format: str = "json",
        name: str = BUILTIN_AGENCY,
        root: str | None = None,
    ) -> None:
        if file_format not in ("json", "csv"):
            raise ValueError(f"unknown file format {file_format!r}: json or csv")
        self.folder = Path(folder)
        self.file_format = file_format
        self.name = name
        self.root = root

    def place(self, request: PlacementRequest) -> str:
        columns = [f.name for f in fields(PlacementRequest)]
        target = self._write(f"placement-invoice-{request.invoice_id}", request.record(), columns)
        return str(target)

    def recall(self, request: RecallRequest) -> None:
        columns = [f.name for f in fields(RecallRequest)]
        self._write(f"recall-invoice-{request.invoice_id}", request.record(), columns)

    def _checked_folder(self) -> Path:
        if self.root is None:
            return self.folder  # the built-in drop folder: the operator's own setting
        try:
            return confined_folder(str(self.folder), self.root)
        except UnsafeTarget as exc:
            raise AgencyDeliveryError(f"agency {self.name!r}: {exc}") from None

    def _write(self, stem: str, record: dict[str, Any], columns: list[str]) -> Path:
        self._checked_folder().mkdir(parents=True, exist_ok=True)  # nothing through a link
        folder = self._checked_folder()  # and still inside once it exists
        target = folder / f"{stem}.{self.file_format}"
        if self.file_format == "csv":
            text = _csv(record, columns)
        else:
            text = json.dumps(record, indent=2, sort_keys=True) + "\n"
        tmp = folder / f".{target.name}.tmp"
        tmp.unlink(missing_ok=True)  # a left-over, or a link planted to write elsewhere
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        with open(os.open(tmp, flags, 0o644), "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)  # replaces a link at target, never writes through it
        return target


class WebhookAgencyAdapter:
    """POSTs signed JSON to the agency's endpoint: ``{"type": "placement"|"recall", ...}``.

    Headers: ``X-Arflow-Timestamp`` (unix seconds), ``X-Arflow-Signature: v1=<hex>`` (see
    ``signature``) and ``Idempotency-Key: invoice-<id>-<type>``, the same on every retry.
    Any answer but 2xx (a redirect too: it is not followed), or no answer within ``timeout``
    seconds, raises. The agency's reference is the ``reference`` of its JSON answer, if it
    gives one that looks like an identifier; nothing else of the answer is kept.

    Before each request the host is resolved and every address checked
    (``targets.public_addresses``; loopback only with ``allow_loopback``), and the request
    goes to the address checked, with the host name in ``Host`` and for TLS (SNI and the
    certificate check): a name that resolves elsewhere a moment later is never reached."""

    def __init__(
        self,
        name: str,
        endpoint_url: str,
        secret: str,
        timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
        allow_loopback: bool = False,
    ) -> None:
        self.name = name
        self.endpoint_url = endpoint_url
        self.secret = secret
        self.timeout = timeout
        self.transport = transport
        self.allow_loopback = allow_loopback

    def place(self, request: PlacementRequest) -> str:
        answer = self._post("placement", request.invoice_id, request.record())
        reference = answer.get("reference") if isinstance(answer, dict) else None
        if isinstance(reference, str) and REFERENCE_PATTERN.fullmatch(reference):
            return reference
        return f"{self.name}:invoice-{request.invoice_id}"

    def recall(self, request: RecallRequest) -> None:
        self._post("recall", request.invoice_id, request.record())

    def _pinned(self, kind: str, invoice_id: int) -> tuple[str, str, str]:
        """(the URL with the checked address for the host, the ``Host`` header, the name
        TLS checks); ``AgencyDeliveryError`` when the host is no place to send to."""
        parts = urlsplit(self.endpoint_url)
        host = parts.hostname
        try:
            if parts.scheme not in ("http", "https") or not host:
                raise UnsafeTarget("endpoint_url is not an http(s) URL")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            address = public_addresses(host, port, self.allow_loopback)[0]
        except (UnsafeTarget, ValueError) as exc:
            raise AgencyDeliveryError(
                f"the {kind} of invoice {invoice_id} to agency {self.name!r} was not sent: {exc}"
            ) from None
        literal = f"[{address}]" if address.version == 6 else str(address)
        netloc = literal if parts.port is None else f"{literal}:{parts.port}"
        host_header = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        return url, host_header, host

    def _post(self, kind: str, invoice_id: int, record: dict[str, Any]) -> Any:
        body = json.dumps({"type": kind} | record, sort_keys=True, separators=(",", ":")).encode()
        stamp = str(int(time.time()))
        url, host_header, server_name = self._pinned(kind, invoice_id)
        headers = {
            "Host": host_header,
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: signature(self.secret, stamp, body),
            IDEMPOTENCY_HEADER: f"invoice-{invoice_id}-{kind}",
        }
        try:
            with httpx.Client(
                timeout=self.timeout, transport=self.transport, follow_redirects=False
            ) as client:
                resp = client.post(
                    url, content=body, headers=headers, extensions={"sni_hostname": server_name}
                )
        except httpx.HTTPError as exc:
            raise AgencyDeliveryError(
                f"{kind} of invoice {invoice_id} to agency {self.name!r} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if not resp.is_success:
            # The status only: what the agency wrote back is not ours to store or log.
            raise AgencyDeliveryError(
                f"agency {self.name!r} answered {resp.status_code} to the {kind} of invoice "
                f"{invoice_id}",
                retry_after(resp.headers) if resp.status_code in (429, 503) else None,
            )
        try:
            return resp.json()
        except ValueError:
            return None


AdapterFactory = Callable[[Agency | None], AgencyAdapter]


def adapter_factory(
    builtin_folder: str, timeout: float = 5.0, *, root: str, allow_loopback: bool = False
) -> AdapterFactory:
    """The adapter for an ``Agency`` row; None: the built-in drop folder. An agency's drop
    folder stays inside ``root`` (the data folder); its webhook reaches public addresses
    only (and loopback with ``allow_loopback``: development and test)."""

    def adapter_for(agency: Agency | None) -> AgencyAdapter:
        if agency is None:
            return FileAgencyAdapter(builtin_folder)
        if agency.delivery == "webhook":
            if not agency.endpoint_url:
                raise ApplicationError(f"agency {agency.name!r} has no endpoint_url")
            return WebhookAgencyAdapter(
                agency.name,
                agency.endpoint_url,
                agency.secret,
                timeout,
                allow_loopback=allow_loopback,
            )
        if not agency.folder:
            raise ApplicationError(f"agency {agency.name!r} has no folder")
        return FileAgencyAdapter(agency.folder, agency.file_format, agency.name, root=root)

    return adapter_for


# -- the record of a placement ----------------------------------------------------------------


def placement_of(session: Session, invoice_id: int) -> AgencyPlacement | None:
    return session.exec(
        select(AgencyPlacement).where(AgencyPlacement.invoice_id == invoice_id)
    ).first()


def record_end(
    session: Session,
    invoice_id: int,
    placement: AgencyPlacement | None,
    outcome: str,
    reason: str,
    actor: str,
) -> None:
    """Record that the agency no longer works the invoice (the caller commits): the
    placement's status, end and reason, and the ``agency_<outcome>`` event, once per invoice
    (``ENDED_KEY``). The invoice's own status is the workflow's to record."""
    data: dict[str, Any] = {"reason": reason}
    if placement is not None:
        if placement.status == PLACED:
            placement.status = outcome
            placement.ended_at = utcnow()
            placement.end_reason = reason[:500]
            session.add(placement)
        data |= {
            "agency": placement.agency,
            "reference": placement.reference,
            "collected_minor": placement.collected_minor,
            "commission_minor": placement.commission_minor,
        }
    add_event(session, invoice_id, f"agency_{outcome}", data, actor=actor, dedupe_key=ENDED_KEY)
