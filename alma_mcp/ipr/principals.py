"""Principals and roles: who is calling, and what they may do.

Every call carries a principal. Over stdio it is the local principal with the roles settings give it
(by default viewer, proposer and deployer: a model may propose, and deploy what a person approved,
but never approve); the CLI's person is the OS user (or ``--as``); HTTP keys carry their own roles.
``admin`` implies every role.
"""

from collections.abc import Iterable
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from alma_mcp.errors import Forbidden


class Role(StrEnum):
    VIEWER = "viewer"
    PROPOSER = "proposer"
    APPROVER = "approver"
    DEPLOYER = "deployer"
    ADMIN = "admin"


class Principal(BaseModel):
    """An identity with roles; ``id`` is what events and approvals record (never a secret)."""

    model_config = ConfigDict(frozen=True)

    id: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        return role in self.roles or Role.ADMIN in self.roles

    def require(self, role: Role, doing: str) -> None:
        """Raises ``Forbidden`` naming the role needed, unless the principal has it."""
        if not self.has(role):
            held = ", ".join(sorted(r.value for r in self.roles)) or "none"
            raise Forbidden(
                f"{self.id} needs the '{role.value}' role to {doing}; it has: {held}",
                data={"principal": self.id, "needed": role.value, "roles": sorted(r.value for r in self.roles)},
            )


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Role names to roles; an unknown name raises ``ValueError`` naming the allowed ones."""
    roles = set()
    for name in names:
        try:
            roles.add(Role(name.strip().lower()))
        except ValueError:
            allowed = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown role {name!r}; allowed: {allowed}") from None
    return frozenset(roles)


SYSTEM = Principal(id="system:orchestrator", roles=frozenset({Role.ADMIN}))
"""The orchestrator itself, for the succeed/fail transitions it records."""
