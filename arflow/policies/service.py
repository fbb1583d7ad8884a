"""Creating and finding dunning policies; the built-in default is created on first use."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.errors import Conflict, conflict
from models import DunningPolicy, PolicyVersion
from models.policy import DEFAULT_POLICY, DEFAULT_POLICY_NAME, DunningPolicyCreate


def create_policy(
    session: Session, body: DunningPolicyCreate, actor: str = "system"
) -> DunningPolicy:
    """Store a new policy and its version 1 (one transaction; 409 when the name is taken)."""
    policy = DunningPolicy.model_validate(
        body.model_dump() | {"steps": [s.model_dump() for s in body.steps]}
    )
    session.add(policy)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise conflict(f"a policy named {body.name!r} already exists") from None
    assert policy.id is not None
    session.add(
        PolicyVersion(
            policy_id=policy.id,
            version=1,
            body=body_of(body),
            created_by=actor,
            note="created",
            created_at=policy.created_at,
        )
    )
    session.commit()
    session.refresh(policy)
    return policy


def list_policies(session: Session) -> list[DunningPolicy]:
    return list(session.exec(select(DunningPolicy).order_by(col(DunningPolicy.id))).all())


def body_of(create: DunningPolicyCreate) -> dict[str, Any]:
    """A version's stored body: the content as JSON."""
    return create.model_dump(mode="json")


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
