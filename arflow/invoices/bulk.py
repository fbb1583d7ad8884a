"""Bulk import of customers and invoices from CSV files (``arflow import``).

A row goes through what ``POST /v1/customers`` and ``POST /v1/invoices`` do: the same Pydantic
models, the same referential checks (customer, policy), the same idempotency on ``external_id``
and the same rows and ``created`` event. What differs is the pace: rows are validated and
stored in batches (one transaction per batch, in a thread) while the invoices' workflows of
the batches already stored are started with bounded concurrency.

A row that cannot be imported is written to a rejects file (the row, its physical ``line`` and
one ``reason``); the other rows are imported. A file that cannot be read at all (encoding,
header) imports nothing. Running the same file again is safe: rows already stored with the same
data are ``unchanged``, and their workflows are started if an earlier run could not.

A row whose invoice exists with other data is rejected, unless the import runs with
``update``: then a new due date, another policy or a lower amount (a credit note for the
difference) is applied through the invoice's workflow as ``PATCH /v1/invoices/{id}`` and
``POST .../credit-notes`` do, once the batches are stored. Anything else that differs (number,
currency, customer, lines, discount, a higher amount) is still rejected with the reason.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, SQLModel, col, select
from temporalio.client import Client
from temporalio.service import RPCError

from arflow import gateway
from arflow.codec import data_converter
from arflow.config import Settings
from arflow.errors import DomainError
from arflow.invoices import amendments
from arflow.invoices.arms import Run, RunCache, run_for
from arflow.invoices.service import (
    _resolve_policy,
    named,
    new_invoice,
    record_created,
    request_hash,
    running_spec,
    workflow_input,
)
from models import CreditNote, Customer, DunningPolicy, Invoice
from models.customer import CustomerCreate
from models.invoice import CreditNoteCreate, InvoiceAmend, InvoiceCreate
from workflows.types import CLOSED_STATUSES, InvoiceWorkflowInput

BATCH_SIZE = 500
CONCURRENCY = 32
# Columns of a rejects file: skipped on input, so a corrected rejects file imports as it is.
REPORT_COLUMNS = ("line", "reason")
# Exactly one of these names the customer of an invoice (as in the API).
CUSTOMER_COLUMNS = ("customer_id", "customer_external_id")

Kind = Literal["customers", "invoices"]
Stage = Literal["validated", "stored", "workflows"]
M = TypeVar("M", bound=SQLModel)


class ImportAborted(Exception):
    """Nothing was imported: the file cannot be read, or the database cannot be used."""


class Progress(Protocol):
    """Where an import reports how far it is (the CLI draws rich progress bars)."""

    def add_total(self, stage: Stage, n: int) -> None: ...

    def advance(self, stage: Stage, n: int) -> None: ...


class NoProgress:
    def add_total(self, stage: Stage, n: int) -> None:
        pass

    def advance(self, stage: Stage, n: int) -> None:
        pass


# -- reading the file ---------------------------------------------------------------------


@dataclass
class CsvRow:
    line: int  # physical line of the row's first cell; the header is line 1
    cells: list[str]


@dataclass
class CsvFile:
    path: Path
    header: list[str]
    rows: list[CsvRow]


def read_csv(path: Path, model: type[SQLModel]) -> CsvFile:
    """The whole file, checked before anything is stored: encoding, CSV syntax and a header
    naming the ``model``'s fields. Raises ImportAborted with what is wrong."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise ImportAborted(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise ImportAborted(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save it as CSV UTF-8"
        ) from None
    except OSError as exc:
        raise ImportAborted(f"{path}: cannot be read: {exc.strerror or exc}") from None
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ImportAborted(f"{path}, line {line}: a NUL byte: a binary file, not CSV text")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[CsvRow] = []
    last = 0
    try:
        for cells in reader:
            if any(c.strip() for c in cells):  # blank lines are skipped, but counted
                records.append(CsvRow(line=last + 1, cells=cells))
            last = reader.line_num
    except csv.Error as exc:
        raise ImportAborted(f"{path}, line {reader.line_num}: not valid CSV: {exc}") from None
    if not records:
        raise ImportAborted(f"{path}: the file is empty; expected a header line first")
    header = [c.strip() for c in records[0].cells]
    _check_header(path, header, model)
    return CsvFile(path=path, header=header, rows=records[1:])


def _check_header(path: Path, header: list[str], model: type[SQLModel]) -> None:
    fields = model.model_fields
    columns = [c for c in header if c not in REPORT_COLUMNS]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    unknown = [c for c in columns if c not in fields]
    required = [n for n, f in fields.items() if f.is_required()]
    missing = [n for n in required if n not in header]
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if model is InvoiceCreate and not any(c in header for c in CUSTOMER_COLUMNS):
        problems.append(f"missing column: {' or '.join(CUSTOMER_COLUMNS)}")
    if unknown:
        problems.append(f"unknown column(s): {', '.join(unknown)}")
    if dupes:
        problems.append(f"column(s) given twice: {', '.join(dupes)}")
    if problems:
        hint = ""
        if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
            hint = " (columns must be separated by commas)"
        raise ImportAborted(
            f"{path}: {'; '.join(problems)}{hint}. Expected a header line with the columns "
            f"{', '.join(fields)} (required: {', '.join(required)})"
        )


@dataclass(frozen=True)
class CellTypes:
    """Which of a model's fields take integers, and which take JSON (lists, objects)."""

    integers: frozenset[str]
    json: frozenset[str]

    @classmethod
    def of(cls, model: type[SQLModel]) -> CellTypes:
        def has(tp: Any, test: Callable[[Any], bool]) -> bool:
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                return any(has(a, test) for a in typing.get_args(tp))
            return test(tp)

        def structured(tp: Any) -> bool:
            origin = typing.get_origin(tp) or tp
            return origin in (list, dict) or (isinstance(tp, type) and issubclass(tp, BaseModel))

        fields = model.model_fields.items()
        return cls(
            integers=frozenset(n for n, f in fields if has(f.annotation, lambda t: t is int)),
            json=frozenset(n for n, f in fields if has(f.annotation, structured)),
        )


_INTEGER = re.compile(r"[+-]?\d+")


def row_values(csv_file: CsvFile, row: CsvRow, types_: CellTypes) -> dict[str, Any]:
    """A row as the API's request body: an empty cell is an absent field, integers are ints,
    list and object fields (invoice ``lines``) are JSON text. Raises ValueError with the reason.

    Cells are text, so an integer column's cell that is a plain integer becomes an ``int``;
    anything else (``12.5``, ``1,000``) is passed as text and the model refuses it as the API
    does for a JSON string.
    """
    data: dict[str, Any] = {}
    for name, cell in zip(csv_file.header, row.cells, strict=False):
        value = cell.strip()
        if name in REPORT_COLUMNS or not value:
            continue
        if name in types_.json:
            try:
                data[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{name}: not valid JSON ({exc})") from None
        elif name in types_.integers and _INTEGER.fullmatch(value):
            data[name] = int(value)
        else:
            data[name] = value
    return data


def describe(exc: ValidationError) -> str:
    """One line naming each bad field, in the API's words (``field: message; ...``)."""
    parts = []
    for err in exc.errors():
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def validate_row(model: type[M], csv_file: CsvFile, row: CsvRow, types_: CellTypes) -> M | str:
    """The validated body, or the reason the row is rejected."""
    if len(row.cells) != len(csv_file.header):
        return f"the row has {len(row.cells)} cells, the header has {len(csv_file.header)}"
    try:
        return model.model_validate(row_values(csv_file, row, types_))
    except ValidationError as exc:
        return describe(exc)
    except ValueError as exc:
        return str(exc)


# -- results ------------------------------------------------------------------------------


@dataclass
class Reject:
    row: CsvRow
    reason: str


@dataclass
class ImportResult:
    kind: Kind
    path: Path
    rejects_path: Path
    rows: int = 0
    created: int = 0
    unchanged: int = 0
    updated: int = 0  # existing invoices changed (``update``)
    rejects: list[Reject] = field(default_factory=list)
    workflows_started: int = 0
    workflows_running: int = 0  # already running: an unchanged invoice from an earlier run
    workflows_not_started: int = 0  # Temporal unreachable or refusing: run the import again
    temporal_error: str | None = None
    seconds: float = 0.0
    stored_seconds: float = 0.0  # until the last batch was committed

    @property
    def rejected(self) -> int:
        return len(self.rejects)

    @property
    def exit_code(self) -> int:
        """0: all imported or unchanged; 1: some rows rejected; 3: stored, but some workflows
        not started (run the same import again once Temporal is up)."""
        if self.workflows_not_started:
            return 3
        return 1 if self.rejects else 0


def default_rejects_path(path: Path) -> Path:
    """``FILE.rejects.csv`` next to ``FILE.csv``."""
    return path.with_name(f"{path.stem}.rejects.csv")


def write_rejects(result: ImportResult, csv_file: CsvFile) -> None:
    """The rejected rows as read (cells padded or cut to the header) plus line and reason.
    Written on every run, so the file never shows an older run's rejects."""
    columns = [c for c in csv_file.header if c not in REPORT_COLUMNS]
    keep = [i for i, c in enumerate(csv_file.header) if c not in REPORT_COLUMNS]
    width = len(csv_file.header)
    result.rejects_path.parent.mkdir(parents=True, exist_ok=True)
    with result.rejects_path.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow([*columns, *REPORT_COLUMNS])
        for rej in sorted(result.rejects, key=lambda r: r.row.line):
            cells = (rej.row.cells + [""] * width)[:width]
            out.writerow([*(cells[i] for i in keep), rej.row.line, rej.reason])


def _batches(rows: Sequence[CsvRow], size: int) -> Iterable[Sequence[CsvRow]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _check_database(engine: Engine) -> None:
    try:
        with Session(engine) as session:
            session.exec(select(Customer.id).limit(1)).first()
            session.exec(select(Invoice.id).limit(1)).first()
    except SQLAlchemyError as exc:
        first = str(exc).splitlines()[0]
        raise ImportAborted(
            f"the database at {engine.url!r} cannot be used ({first}); "
            "check ARFLOW_DATABASE_URL and run `arflow migrate`"
        ) from None


# -- customers ----------------------------------------------------------------------------


def _customer_differences(existing: Customer, body: CustomerCreate) -> list[str]:
    return [n for n in CustomerCreate.model_fields if getattr(existing, n) != getattr(body, n)]


def _store_customer_batch(
    engine: Engine,
    csv_file: CsvFile,
    rows: Sequence[CsvRow],
    seen: dict[str, tuple[int, dict[str, Any]]],
) -> tuple[int, int, list[Reject]]:
    """Validate and store one batch in one transaction: (created, unchanged, rejects).

    ``seen``: the external ids accepted so far in this file, with their line and data.
    """
    cell_types = CellTypes.of(CustomerCreate)
    rejects: list[Reject] = []
    valid: list[tuple[CsvRow, CustomerCreate]] = []
    for row in rows:
        body = validate_row(CustomerCreate, csv_file, row, cell_types)
        if isinstance(body, str):
            rejects.append(Reject(row, body))
        else:
            valid.append((row, body))
    created = unchanged = 0
    added: list[str] = []
    with Session(engine, expire_on_commit=False) as session:
        ids = [b.external_id for _, b in valid]
        existing = {
            c.external_id: c
            for c in session.exec(select(Customer).where(col(Customer.external_id).in_(ids)))
        }
        new: list[Customer] = []
        for row, body in valid:
            ext = body.external_id
            if ext in seen:
                line, data = seen[ext]
                if body.model_dump() == data:
                    unchanged += 1
                else:
                    rejects.append(Reject(row, _earlier_in_file("customer", ext, line)))
                continue
            found = existing.get(ext)
            if found is not None:
                diffs = _customer_differences(found, body)
                if diffs:
                    rejects.append(
                        Reject(
                            row,
                            f"customer {ext!r} already exists with different data "
                            f"(different: {', '.join(diffs)})",
                        )
                    )
                    continue
                unchanged += 1
            else:
                new.append(Customer.model_validate(body))
            seen[ext] = (row.line, body.model_dump())
            added.append(ext)
        session.add_all(new)
        try:
            session.commit()
        except IntegrityError:
            # Stored meanwhile by someone else (the API, a second import): row by row instead.
            session.rollback()
            if len(rows) == 1:
                raise
            for ext in added:
                del seen[ext]
            results = [_store_customer_batch(engine, csv_file, [r], seen) for r in rows]
            return (
                sum(r[0] for r in results),
                sum(r[1] for r in results),
                [j for r in results for j in r[2]],
            )
        created += len(new)
    return created, unchanged, rejects


def _earlier_in_file(what: str, external_id: str, line: int) -> str:
    return (
        f"external_id: {what} {external_id!r} appears earlier in this file (line {line}) "
        "with different data"
    )


def import_customers(
    csv_file: CsvFile,
    engine: Engine,
    rejects_path: Path | None = None,
    batch_size: int = BATCH_SIZE,
    progress: Progress | None = None,
) -> ImportResult:
    """Import the customers of ``csv_file`` (see ``read_csv``); writes the rejects file."""
    t0 = time.perf_counter()
    progress = progress or NoProgress()
    result = ImportResult(
        kind="customers",
        path=csv_file.path,
        rejects_path=rejects_path or default_rejects_path(csv_file.path),
        rows=len(csv_file.rows),
    )
    _check_database(engine)
    progress.add_total("validated", result.rows)
    progress.add_total("stored", result.rows)
    seen: dict[str, tuple[int, dict[str, Any]]] = {}
    for batch in _batches(csv_file.rows, batch_size):
        created, unchanged, rejects = _store_customer_batch(engine, csv_file, batch, seen)
        result.created += created
        result.unchanged += unchanged
        result.rejects += rejects
        progress.advance("validated", len(batch))
        progress.advance("stored", created + unchanged)
    result.stored_seconds = result.seconds = time.perf_counter() - t0
    write_rejects(result, csv_file)
    return result


# -- invoices -----------------------------------------------------------------------------


async def ensure_workflow(
    client: Client, settings: Settings, inp: InvoiceWorkflowInput, new: bool
) -> bool:
    """Start the invoice's workflow through the gateway; True when this call
    started it. For an invoice stored before (``new`` False) a ``describe()`` first tells
    whether it already runs (a workflow that ran and closed must not be started again)."""
    if not new and await gateway.invoice_workflow_exists(client, settings, inp.invoice_id):
        return False  # it exists: a start would be refused as a duplicate
    return await gateway.start_invoice(client, settings, inp)


@dataclass
class _Validated:
    row: CsvRow
    body: InvoiceCreate
    digest: str


@dataclass
class _Amendment:
    """What an ``update`` row changes on its stored invoice."""

    row: CsvRow
    invoice_id: int
    external_id: str
    digest: str  # the row's request hash: stored once applied (the same row is then unchanged)
    due_date: Any = None  # a date
    policy_name: str | None = None
    credit_minor: int = 0  # the amount lowered by this much
    amount_minor: int = 0  # to this


# What ``update`` may change (``_invoice_differences`` names them so).
AMENDABLE = frozenset({"due_date", "amount_minor", "policy_id", "policy_name"})


@dataclass
class _InvoiceBatch:
    created: int = 0
    unchanged: int = 0
    rejects: list[Reject] = field(default_factory=list)
    to_start: list[tuple[InvoiceWorkflowInput, bool]] = field(default_factory=list)  # new?
    to_amend: list[_Amendment] = field(default_factory=list)


class _InvoiceImport:
    """One invoice import: what it has seen so far and the batches' database work."""

    def __init__(
        self,
        csv_file: CsvFile,
        engine: Engine,
        actor: str,
        indexed: bool,
        external: bool,
        update: bool = False,
    ) -> None:
        self.csv_file = csv_file
        self.update = update
        self.engine = engine
        self.actor = actor
        self.indexed = indexed  # the workflow inputs' flags, as the API sets them
        self.external = external
        self.cell_types = CellTypes.of(InvoiceCreate)
        self.seen: dict[str, tuple[int, str]] = {}  # external_id -> (line, request hash)
        self.policies: dict[tuple[int | None, str | None, str | None], DunningPolicy | str] = {}
        self.policies_by_id: dict[int, DunningPolicy] = {}
        self.runs = RunCache()  # segments' experiments: rows join their arm as through the API

    def policy(
        self, session: Session, body: InvoiceCreate, customer: Customer | str
    ) -> DunningPolicy | str:
        """The row's policy (cached: a file names few), or the reason it is refused. A row
        naming none gets its customer's segment's policy, as through the API."""
        owner = customer if isinstance(customer, Customer) else None
        named = body.policy_id is not None or body.policy_name is not None
        key = (body.policy_id, body.policy_name, None if named or owner is None else owner.segment)
        if key not in self.policies:
            try:
                found = _resolve_policy(session, body, owner)
            except DomainError as exc:
                field_name = "policy_id" if body.policy_id is not None else "policy_name"
                self.policies[key] = f"{field_name}: {exc.message}"
            else:
                self.policies[key] = found
                assert found.id is not None
                self.policies_by_id[found.id] = found
        return self.policies[key]

    def workflow_input(
        self, session: Session, invoice: Invoice, customer: Customer, policy: DunningPolicy
    ) -> InvoiceWorkflowInput:
        spec = running_spec(session, invoice, policy)
        return workflow_input(invoice, customer, policy, self.indexed, self.external, spec)

    def policy_by_id(self, session: Session, policy_id: int) -> DunningPolicy:
        if policy_id not in self.policies_by_id:
            found = session.get(DunningPolicy, policy_id)
            assert found is not None
            self.policies_by_id[policy_id] = found
        return self.policies_by_id[policy_id]

    def validate(self, rows: Sequence[CsvRow], out: _InvoiceBatch) -> list[_Validated]:
        valid = []
        for row in rows:
            body = validate_row(InvoiceCreate, self.csv_file, row, self.cell_types)
            if isinstance(body, str):
                out.rejects.append(Reject(row, body))
            else:
                valid.append(_Validated(row, body, request_hash(body)))
        return valid

    def store(self, rows: Sequence[CsvRow]) -> _InvoiceBatch:
        """Validate and store one batch in one transaction (a thread runs this)."""
        out = _InvoiceBatch()
        valid = self.validate(rows, out)
        with Session(self.engine, expire_on_commit=False) as session:
            existing = {
                inv.external_id: inv
                for inv in session.exec(
                    select(Invoice).where(
                        col(Invoice.external_id).in_([v.body.external_id for v in valid])
                    )
                )
            }
            customers = self._customers(session, [v.body for v in valid], existing.values())
            new: list[tuple[Invoice, Customer, Run]] = []
            added: list[str] = []
            for v in valid:
                ext = v.body.external_id
                if ext in self.seen:  # accepted on an earlier line: its workflow is seen to
                    line, digest = self.seen[ext]
                    if digest == v.digest:
                        out.unchanged += 1
                    else:
                        out.rejects.append(Reject(v.row, _earlier_in_file("invoice", ext, line)))
                    continue
                customer = self._customer_of(v.body, customers)
                policy = self.policy(session, v.body, customer)
                found = existing.get(ext)
                if found is not None:
                    if self._existing(session, v, found, customer, policy, customers, out):
                        self.seen[ext] = (v.row.line, v.digest)
                        added.append(ext)
                    continue
                if isinstance(customer, str) or isinstance(policy, str):
                    reasons = [r for r in (customer, policy) if isinstance(r, str)]
                    out.rejects.append(Reject(v.row, "; ".join(reasons)))
                    continue
                self.seen[ext] = (v.row.line, v.digest)
                added.append(ext)
                run = run_for(session, customer, policy, named(v.body), self.runs)
                new.append(
                    (new_invoice(v.body, customer, run.policy, v.digest, run), customer, run)
                )
            session.add_all(inv for inv, _, _ in new)
            try:
                session.flush()
                for inv, _, run in new:
                    record_created(session, inv, run.policy, self.actor)
                session.commit()
            except IntegrityError:
                # Stored meanwhile by someone else (the API, a second import): the rows of this
                # batch one by one, each then created, unchanged or rejected on its own.
                session.rollback()
                if len(rows) == 1:
                    raise
                for ext in added:
                    del self.seen[ext]
                return self._one_by_one(rows)
        out.created += len(new)
        out.to_start += [
            (workflow_input(inv, cust, run.policy, self.indexed, self.external, run.spec), True)
            for inv, cust, run in new
        ]
        return out

    def _one_by_one(self, rows: Sequence[CsvRow]) -> _InvoiceBatch:
        out = _InvoiceBatch()
        for row in rows:
            part = self.store([row])
            out.created += part.created
            out.unchanged += part.unchanged
            out.rejects += part.rejects
            out.to_start += part.to_start
        return out

    def _existing(
        self,
        session: Session,
        v: _Validated,
        found: Invoice,
        customer: Customer | str,
        policy: DunningPolicy | str,
        customers: dict[tuple[str, int | str], Customer],
        out: _InvoiceBatch,
    ) -> bool:
        """The API's rule: the same request again is unchanged (its workflow made sure of),
        a different one is refused, or with ``update`` queued as an amendment. True when
        unchanged or queued."""
        ext = v.body.external_id
        amendment = None
        if found.request_hash != v.digest and self.update:
            amendment = _amendment(session, v, found, customer, policy)
            if isinstance(amendment, str):
                out.rejects.append(Reject(v.row, amendment))
                return False
            if amendment is not None:
                out.to_amend.append(amendment)  # applied once its workflow surely runs
        elif found.request_hash != v.digest:
            diffs = _invoice_differences(found, v.body, customer, policy)
            detail = (
                "; ".join(diffs)
                if diffs
                else "the same values written differently: the stored request named its "
                "customer, policy or discount another way"
            )
            out.rejects.append(
                Reject(v.row, f"invoice {ext!r} already exists with different data ({detail})")
            )
            return False
        if amendment is None:
            out.unchanged += 1
        if found.status not in CLOSED_STATUSES:
            owner = customers.get(("id", found.customer_id)) or session.get(
                Customer, found.customer_id
            )
            assert owner is not None
            policy_then = self.policy_by_id(session, found.policy_id)
            out.to_start.append((self.workflow_input(session, found, owner, policy_then), False))
        return True

    def _customers(
        self, session: Session, bodies: list[InvoiceCreate], existing: Iterable[Invoice]
    ) -> dict[tuple[str, int | str], Customer]:
        """The batch's customers in two queries, by ("ext", external id) and by ("id", id)."""
        exts = {b.customer_external_id for b in bodies if b.customer_external_id is not None}
        ids = {b.customer_id for b in bodies if b.customer_id is not None}
        ids |= {inv.customer_id for inv in existing}
        found: list[Customer] = []
        if exts:
            found += session.exec(select(Customer).where(col(Customer.external_id).in_(exts)))
        if ids:
            found += session.exec(select(Customer).where(col(Customer.id).in_(ids)))
        out: dict[tuple[str, int | str], Customer] = {}
        for c in found:
            assert c.id is not None
            out[("ext", c.external_id)] = out[("id", c.id)] = c
        return out

    @staticmethod
    def _customer_of(
        body: InvoiceCreate, customers: dict[tuple[str, int | str], Customer]
    ) -> Customer | str:
        if body.customer_id is not None:
            return customers.get(("id", body.customer_id)) or (
                f"customer_id: unknown customer {body.customer_id}"
            )
        assert body.customer_external_id is not None
        return customers.get(("ext", body.customer_external_id)) or (
            f"customer_external_id: unknown customer {body.customer_external_id!r}"
        )


def _amendment(
    session: Session,
    v: _Validated,
    found: Invoice,
    customer: Customer | str,
    policy: DunningPolicy | str,
) -> _Amendment | str | None:
    """What an ``update`` row changes on ``found``; the reason it cannot; None when nothing
    that matters changed (the same values written another way)."""
    ext = v.body.external_id
    if found.status in CLOSED_STATUSES:
        return f"invoice {ext!r} is {found.status}: a closed invoice is not updated"
    diffs = _invoice_differences(found, v.body, customer, policy)
    fixed = [d for d in diffs if d.split(":", 1)[0] not in AMENDABLE]
    if fixed:
        return (
            f"invoice {ext!r} differs in what an update cannot change ({'; '.join(fixed)}): "
            "cancel it and import a new invoice"
        )
    assert found.id is not None and not isinstance(policy, str)
    credited = sum(
        session.exec(
            select(CreditNote.amount_minor).where(
                CreditNote.invoice_id == found.id, CreditNote.status == amendments.APPLIED
            )
        ).all()
    )
    current = found.amount_minor - credited
    if v.body.amount_minor > current:
        return (
            f"invoice {ext!r}: amount_minor {v.body.amount_minor} is more than its "
            f"{current}: an update only lowers an amount (a credit note); invoice the rest anew"
        )
    amendment = _Amendment(
        v.row,
        found.id,
        ext,
        v.digest,
        due_date=v.body.due_date if v.body.due_date != found.due_date else None,
        policy_name=policy.name if policy.id != found.policy_id else None,
        credit_minor=current - v.body.amount_minor,
        amount_minor=v.body.amount_minor,
    )
    if amendment.due_date is None and amendment.policy_name is None and not amendment.credit_minor:
        return None
    return amendment


def _invoice_differences(
    found: Invoice, body: InvoiceCreate, customer: Customer | str, policy: DunningPolicy | str
) -> list[str]:
    """What a conflicting row changes, field by field, as far as the stored row tells."""
    diffs = []
    for name in ("number", "currency", "amount_minor", "issued_on", "due_date"):
        stored, given = getattr(found, name), getattr(body, name)
        if stored != given:
            diffs.append(f"{name}: {stored} stored, {given} in the file")
    if isinstance(customer, str) or customer.id != found.customer_id:
        which = "customer_id" if body.customer_id is not None else "customer_external_id"
        diffs.append(f"{which}: another customer")
    if isinstance(policy, str) or policy.id != found.policy_id:
        which = "policy_id" if body.policy_id is not None else "policy_name"
        diffs.append(f"{which}: another policy")
    if body.due_at is not None and body.due_at != found.due_at:
        diffs.append(
            f"due_at: {found.due_at.isoformat()} stored, {body.due_at.isoformat()} in the file"
        )
    lines = [line.model_dump(mode="json") for line in body.lines or []]
    if lines != (found.lines or []):
        diffs.append("lines: other invoice lines")
    bp = int(body.discount_percent * 100) if body.discount_percent is not None else None
    if bp != found.discount_bp or body.discount_days != found.discount_days:
        diffs.append("discount_percent/discount_days: other discount terms")
    return diffs


async def connect_temporal(settings: Settings) -> tuple[Client | None, str | None]:
    """A client for ``ARFLOW_TEMPORAL_ADDRESS`` (default 127.0.0.1:7233, where ``arflow run``
    serves), or None and why not."""
    address = settings.temporal_address or "127.0.0.1:7233"
    try:
        client = await Client.connect(
            address,
            namespace=settings.temporal_namespace,
            data_converter=data_converter(settings),
        )
    except Exception as exc:  # noqa: BLE001 - any failure to connect means: store, do not start
        why = str(exc).splitlines()[0] if str(exc) else repr(exc)
        if "Connection refused" in why:
            why = "connection refused"
        return None, f"Temporal at {address} is not reachable ({why[:300]})"
    return client, None


async def import_invoices(
    csv_file: CsvFile,
    engine: Engine,
    settings: Settings,
    client: Client | None,
    temporal_error: str | None = None,
    rejects_path: Path | None = None,
    batch_size: int = BATCH_SIZE,
    concurrency: int = CONCURRENCY,
    actor: str | None = None,
    progress: Progress | None = None,
    update: bool = False,
) -> ImportResult:
    """Import the invoices of ``csv_file``; start their workflows with ``client``; with
    ``update``, apply the changed rows of stored invoices once all batches are stored.

    Batches are validated and stored in a thread, one transaction each, while up to
    ``concurrency`` workflow starts of the batches already committed run on the event loop.
    Without a client (``temporal_error`` says why), or once Temporal fails a start, the rows
    are still stored and the starts left undone are counted in ``workflows_not_started``.
    """
    t0 = time.perf_counter()
    progress = progress or NoProgress()
    result = ImportResult(
        kind="invoices",
        path=csv_file.path,
        rejects_path=rejects_path or default_rejects_path(csv_file.path),
        rows=len(csv_file.rows),
        temporal_error=temporal_error,
    )
    await asyncio.to_thread(_check_database, engine)
    indexed = await gateway.search_attributes_ready(client, settings) if client else False
    actor = (actor or f"import:{csv_file.path.name}")[:100]
    run = _InvoiceImport(csv_file, engine, actor, indexed, settings.external_delivery, update)
    to_amend: list[_Amendment] = []
    progress.add_total("validated", result.rows)
    progress.add_total("stored", result.rows)
    queue: _StartQueue = asyncio.Queue(maxsize=max(batch_size, 4 * concurrency))
    starters: list[asyncio.Task[None]] = []
    if client:
        starters = [
            asyncio.create_task(_start_workflows(queue, client, settings, result, progress))
            for _ in range(concurrency)
        ]
    try:
        for rows in _batches(csv_file.rows, batch_size):
            batch = await asyncio.to_thread(run.store, rows)
            result.created += batch.created
            result.unchanged += batch.unchanged
            result.rejects += batch.rejects
            to_amend += batch.to_amend
            progress.advance("validated", len(rows))
            progress.advance("stored", batch.created + batch.unchanged)
            progress.add_total("workflows", len(batch.to_start))
            for item in batch.to_start:
                if starters and result.temporal_error is None:
                    await queue.put(item)
                else:
                    result.workflows_not_started += 1
        result.stored_seconds = time.perf_counter() - t0
        for _ in starters:
            await queue.put(None)
        await asyncio.gather(*starters)
    finally:
        for task in starters:
            task.cancel()
    await _apply_amendments(to_amend, engine, settings, client, result, actor, concurrency)
    write_rejects(result, csv_file)
    result.seconds = time.perf_counter() - t0
    return result


# Workflow starts waiting for a starter: (input, whether the invoice is new); None: no more.
_StartQueue = asyncio.Queue[tuple[InvoiceWorkflowInput, bool] | None]


async def _start_workflows(
    queue: _StartQueue,
    client: Client,
    settings: Settings,
    result: ImportResult,
    progress: Progress,
) -> None:
    """One starter: starts the queued workflows until ``None``; after Temporal's first failure
    it only counts what it was given as not started."""
    while (item := await queue.get()) is not None:
        inp, new = item
        if result.temporal_error is not None:
            result.workflows_not_started += 1
            continue
        try:
            started = await ensure_workflow(client, settings, inp, new)
        except Exception as exc:  # noqa: BLE001 - stop starting, keep storing; reported
            cause = exc.__cause__ if isinstance(exc, DomainError) else exc
            result.temporal_error = result.temporal_error or (
                f"Temporal refused the workflow start of invoice {inp.invoice_id}: {cause}"
                if isinstance(cause, RPCError)
                else f"the workflow start of invoice {inp.invoice_id} failed: {exc!r}"
            )
            result.workflows_not_started += 1
            continue
        if started:
            result.workflows_started += 1
        else:
            result.workflows_running += 1
        progress.advance("workflows", 1)


async def _apply_amendments(
    to_amend: list[_Amendment],
    engine: Engine,
    settings: Settings,
    client: Client | None,
    result: ImportResult,
    actor: str,
    concurrency: int,
) -> None:
    """Apply the ``update`` rows through the invoices' workflows (the API's domain calls): each
    one ``updated``, or rejected with the reason; the row's request hash is stored once it is
    applied, so the same file again finds it unchanged."""
    gate = asyncio.Semaphore(concurrency)

    async def one(a: _Amendment) -> None:
        if client is None or result.temporal_error is not None:
            why = result.temporal_error or "Temporal is not reachable"
            result.rejects.append(Reject(a.row, f"invoice {a.external_id!r} not updated: {why}"))
            return
        async with gate:
            with Session(engine) as session:
                try:
                    await _amend(session, client, settings, a, actor)
                except DomainError as exc:
                    result.rejects.append(
                        Reject(a.row, f"invoice {a.external_id!r} not updated: {exc.message}")
                    )
                    return
                await asyncio.to_thread(_store_digest, session, a)
        result.updated += 1

    await asyncio.gather(*(one(a) for a in to_amend))


async def _amend(
    session: Session, client: Client, settings: Settings, a: _Amendment, actor: str
) -> None:
    if a.credit_minor:
        note = CreditNoteCreate(
            amount_minor=a.credit_minor,
            reason=f"amount corrected to {a.amount_minor} by an import",
            external_id=f"import-{a.invoice_id}-{a.amount_minor}",
        )
        await amendments.issue_credit_note(session, client, settings, a.invoice_id, note, actor)
    if a.due_date is not None or a.policy_name is not None:
        body = InvoiceAmend(due_date=a.due_date, policy_name=a.policy_name, reason="import")
        await amendments.amend_invoice(session, client, settings, a.invoice_id, body, actor)


def _store_digest(session: Session, a: _Amendment) -> None:
    invoice = session.get(Invoice, a.invoice_id)
    assert invoice is not None
    invoice.request_hash = a.digest
    session.add(invoice)
    session.commit()
