"""Which arm of its segment's experiment a new invoice joins, and what it then runs.

``arm`` is a pure function of the segment, the customer and the share: a stable hash (SHA-256,
never Python's per-process ``hash()``), so all of a customer's invoices in one segment land on
the same arm, in every process and after every restart. ``run_for`` loads what the invoice
runs: the segment's policy (the champion) at its current version, or the challenger version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sqlmodel import Session, select

from arflow.customers.segments import get_segment
from arflow.errors import DomainError
from arflow.policies import versions
from models import Customer, DunningPolicy, Segment
from models.experiment import CHALLENGER, CHAMPION, Arm
from workflows.types import PolicySpec


def bucket(segment_name: str, customer_id: int) -> int:
    """0..99: the customer's stable place in the segment's experiments."""
    digest = hashlib.sha256(f"{segment_name}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def arm(segment_name: str, customer_id: int, share_pct: int) -> Arm:
    """The challenger for the customers whose bucket is below ``share_pct``, else the champion."""
    return CHALLENGER if bucket(segment_name, customer_id) < share_pct else CHAMPION


@dataclass(frozen=True)
class Run:
    """What a new invoice runs: the policy row it names, the spec of the version it runs, and
    the experiment and arm it joined (None outside an experiment)."""

    policy: DunningPolicy
    spec: PolicySpec
    experiment_id: int | None = None
    arm: Arm | None = None


@dataclass
class _Challenger:
    segment: Segment | None
    policy: DunningPolicy | None = None
    spec: PolicySpec | None = None


@dataclass
class RunCache:
    """Segments and challenger specs already loaded (a bulk import names few segments)."""

    by_segment: dict[str, _Challenger] = field(default_factory=dict)

    def challenger(self, session: Session, segment_name: str) -> _Challenger:
        if segment_name not in self.by_segment:
            self.by_segment[segment_name] = _load(session, segment_name)
        return self.by_segment[segment_name]


def _load(session: Session, segment_name: str) -> _Challenger:
    seg = get_segment(session, segment_name)
    if seg is None or seg.experiment_id is None or seg.challenger_policy is None:
        return _Challenger(seg)
    policy = session.exec(
        select(DunningPolicy).where(DunningPolicy.name == seg.challenger_policy)
    ).first()
    if policy is None or policy.id is None or seg.challenger_version is None:
        return _Challenger(seg)
    try:
        spec = versions.load_spec(session, policy.id, seg.challenger_version)
    except DomainError:  # the version is gone: nobody joins the challenger
        return _Challenger(seg)
    return _Challenger(seg, policy, spec)


def run_for(
    session: Session,
    customer: Customer,
    policy: DunningPolicy,
    named: bool,
    cache: RunCache | None = None,
) -> Run:
    """What a new invoice of ``customer`` runs, given the policy resolved for it. Only an
    invoice that names no policy (it follows its segment's) joins the segment's experiment."""
    if named or customer.id is None:
        return Run(policy, policy.spec())
    found = (cache or RunCache()).challenger(session, customer.segment)
    seg = found.segment
    if seg is None or found.policy is None or found.spec is None or seg.policy_name != policy.name:
        return Run(policy, policy.spec())
    if arm(seg.name, customer.id, seg.challenger_share_pct) == CHALLENGER:
        return Run(found.policy, found.spec, seg.experiment_id, CHALLENGER)
    return Run(policy, policy.spec(), seg.experiment_id, CHAMPION)
