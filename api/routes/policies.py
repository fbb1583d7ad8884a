from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import col, select

from api.deps import Admin, SessionDep, Viewer
from api.errors import not_found
from arflow.policies import service as policies
from models import DunningPolicy
from models.policy import DunningPolicyCreate, DunningPolicyPublic

router = APIRouter(prefix="/v1/policies", tags=["policies"])


@router.post("", status_code=201, response_model=DunningPolicyPublic)
def create_policy(body: DunningPolicyCreate, session: SessionDep, _: Admin) -> DunningPolicy:
    return policies.create_policy(session, body)


@router.get("", response_model=list[DunningPolicyPublic])
def list_policies(session: SessionDep, _: Viewer) -> list[DunningPolicy]:
    return list(session.exec(select(DunningPolicy).order_by(col(DunningPolicy.id))).all())


@router.get("/{policy_id}", response_model=DunningPolicyPublic)
def get_policy(policy_id: int, session: SessionDep, _: Viewer) -> DunningPolicy:
    policy = session.get(DunningPolicy, policy_id)
    if policy is None:
        raise not_found("policy", policy_id)
    return policy
