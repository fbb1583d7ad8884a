"""Who is acting: the role and key behind a request, as the domain needs it.

The API and the dashboard build a ``Principal`` from the API key they were given; the domain's
rules (who may cancel, credit, raise a limit, approve) take it as it is, so every caller gets
the same rules. ``actor`` is what the timeline records: the role and a hash prefix of the key,
never the key itself; two keys of the same role are two actors (four eyes)."""

from __future__ import annotations

from dataclasses import dataclass

from arflow.config import Role


@dataclass(frozen=True)
class Principal:
    role: Role
    key_id: str  # a hash prefix of the key: recorded on the timeline, never the key itself

    @property
    def actor(self) -> str:
        return f"{self.role.value}:{self.key_id}"

    @property
    def is_admin(self) -> bool:
        return self.role is Role.admin
