"""Policy versions: a policy's content is kept as numbered, immutable versions.

Creating a policy stores its version 1; ``publish`` stores version n+1 and makes it current
(the ``dunning_policies`` row always holds the current version's content, so everything that
reads a policy by id or name, such as a new invoice, reads the current version). An invoice
records the version it runs (``invoices.policy_version``) and keeps it: its workflow carries
the spec it started with; ``arflow.invoices.policy_switch`` moves running invoices to a newer
version.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from arflow.errors import conflict, not_found, unprocessable
from arflow.policies.service import body_of
from models import DunningPolicy, PolicyVersion
from models.policy import DunningPolicyCreate, FieldChange, PolicyDiff, PolicyVersionPublic
from workflows.types import PolicySpec


def get_policy(session: Session, policy_id: int) -> DunningPolicy:
    policy = session.get(DunningPolicy, policy_id)
    if policy is None:
        raise not_found("policy", policy_id)
    return policy


def get_version(session: Session, policy_id: int, version: int) -> PolicyVersion:
    get_policy(session, policy_id)
    row = session.exec(
        select(PolicyVersion).where(
            PolicyVersion.policy_id == policy_id, PolicyVersion.version == version
        )
    ).first()
    if row is None:
        raise not_found(f"version of policy {policy_id}", version)
    return row


def list_versions(session: Session, policy_id: int) -> list[PolicyVersionPublic]:
    """Every version of the policy, newest first."""
    policy = get_policy(session, policy_id)
    rows = session.exec(
        select(PolicyVersion)
        .where(PolicyVersion.policy_id == policy_id)
        .order_by(col(PolicyVersion.version).desc())
    ).all()
    return [public(row, policy) for row in rows]


def public(row: PolicyVersion, policy: DunningPolicy) -> PolicyVersionPublic:
    return PolicyVersionPublic(
        policy_id=row.policy_id,
        version=row.version,
        current=row.version == policy.version,
        created_by=row.created_by,
        created_at=row.created_at,
        note=row.note,
        policy=DunningPolicyCreate.model_validate(row.body),
    )


def spec_of(row: PolicyVersion, policy_id: int) -> PolicySpec:
    """The workflow's spec of one stored version: the policy row it would be if it were the
    current one (``DunningPolicy.spec``, the one place a spec is built)."""
    stored = DunningPolicy.model_validate(row.body | {"id": policy_id, "version": row.version})
    return stored.spec()


def load_spec(session: Session, policy_id: int, version: int) -> PolicySpec:
    """The spec of version ``version`` of policy ``policy_id`` (NotFound when either is
    unknown)."""
    return spec_of(get_version(session, policy_id, version), policy_id)


def publish(
    session: Session, policy_id: int, body: DunningPolicyCreate, actor: str, note: str = ""
) -> PolicyVersion:
    """Store ``body`` as the policy's next version and make it current (commits). The name
    cannot change (segments and imports name the policy); content equal to the current
    version's is refused (nothing to publish). 409 when another version was published at the
    same moment."""
    policy = get_policy(session, policy_id)
    if body.name != policy.name:
        raise unprocessable(
            f"name: a policy keeps its name ({policy.name!r}): segments and imports name it; "
            "create a new policy for a new name",
            {"field": "name"},
        )
    new_body = body_of(body)
    if new_body == get_version(session, policy_id, policy.version).body:
        raise conflict(
            f"nothing changed: the content is version {policy.version}'s",
            {"version": policy.version},
        )
    version = policy.version + 1
    row = PolicyVersion(
        policy_id=policy_id, version=version, body=new_body, created_by=actor, note=note
    )
    for name, value in body.model_dump().items():
        setattr(policy, name, value)
    policy.steps = new_body["steps"]
    policy.ladder = new_body["ladder"]
    policy.charges = new_body["charges"]
    policy.version = version
    session.add(row)
    session.add(policy)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(
            f"version {version} of policy {policy_id} was published at the same moment; "
            "reload and try again"
        ) from None
    session.refresh(row)
    return row


def diff(session: Session, policy_id: int, before: int, after: int) -> PolicyDiff:
    """What changed from version ``before`` to ``after``: each field, and each step and ladder
    stage by its key (added, removed, or the fields of it that changed)."""
    old = get_version(session, policy_id, before).body
    new = get_version(session, policy_id, after).body
    return PolicyDiff(
        policy_id=policy_id,
        from_version=before,
        to_version=after,
        changes=changes(old, new),
    )


KEYED = ("steps", "ladder")


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[FieldChange]:
    """The differences between two version bodies, field by field."""
    out: list[FieldChange] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if name in KEYED:
            out.extend(_keyed(name, a or [], b or []))
        elif isinstance(a, dict) and isinstance(b, dict):
            out.extend(_dict(name, a, b))
        else:
            out.append(_change(name, a, b))
    return out


def _change(path: str, a: Any, b: Any) -> FieldChange:
    if a is None:
        return FieldChange(field=path, change="added", after=b)
    if b is None:
        return FieldChange(field=path, change="removed", before=a)
    return FieldChange(field=path, change="changed", before=a, after=b)


def _dict(path: str, a: dict[str, Any], b: dict[str, Any]) -> list[FieldChange]:
    return [
        _change(f"{path}.{key}", a.get(key), b.get(key))
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


def _keyed(path: str, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[FieldChange]:
    before = {item["key"]: item for item in a}
    after = {item["key"]: item for item in b}
    out: list[FieldChange] = []
    for key in [*after, *(k for k in before if k not in after)]:
        if key not in before:
            out.append(FieldChange(field=f"{path}.{key}", change="added", after=after[key]))
        elif key not in after:
            out.append(FieldChange(field=f"{path}.{key}", change="removed", before=before[key]))
        else:
            out.extend(_dict(f"{path}.{key}", before[key], after[key]))
    if [k for k in before if k in after] != [k for k in after if k in before]:
        out.append(
            FieldChange(
                field=f"{path}.order",
                change="changed",
                before=[i["key"] for i in a],
                after=[i["key"] for i in b],
            )
        )
    return out
