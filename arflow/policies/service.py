"""Creating and finding dunning policies; the built-in default is created on first use."""

from __future__ import annotations

from sqlmodel import Session, select

from arflow.db import insert_unique
from arflow.errors import Conflict
from models import DunningPolicy
from models.policy import DEFAULT_POLICY, DEFAULT_POLICY_NAME, DunningPolicyCreate


def create_policy(session: Session, body: DunningPolicyCreate) -> DunningPolicy:
    policy = DunningPolicy.model_validate(
        body.model_dump() | {"steps": [s.model_dump() for s in body.steps]}
    )
    return insert_unique(session, policy, f"a policy named {body.name!r} already exists")


def ensure_default_policy(session: Session) -> DunningPolicy:
    found = session.exec(
        select(DunningPolicy).where(DunningPolicy.name == DEFAULT_POLICY_NAME)
    ).first()
    if found is not None:
        return found
    try:
        return create_policy(session, DEFAULT_POLICY)
    except Conflict:  # created concurrently
        found = session.exec(
            select(DunningPolicy).where(DunningPolicy.name == DEFAULT_POLICY_NAME)
        ).first()
        assert found is not None
        return found
