"""The IPR state machine as data and one pure function (no I/O).

    open --approve--> approved --deploy--> deploying --succeed--> deployed --rollback--> rolling_back
      |                  |                     \\--fail--> failed --deploy--> deploying   (continues)
      |                  |                                   \\--rollback--> rolling_back
      |--request_changes--> changes_requested --revise--> open
      |--reject--> rejected (final)                        rolling_back --succeed--> rolled_back
      \\--close--> closed (final; also from changes_requested, approved, rolled_back)  \\--fail--> failed

``approve`` on an open IPR that still needs more approvals keeps it open (the approval is recorded);
``deploy`` on a deployed IPR re-deploys (a no-op when nothing drifted). ``succeed`` and ``fail`` are
the orchestrator's actions, never a person's.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from alma_mcp.errors import InvalidTransition


class IPRState(StrEnum):
    OPEN = "open"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    DEPLOYING = "deploying"
    DEPLOYED = "deployed"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    REJECTED = "rejected"
    CLOSED = "closed"


class Action(StrEnum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    REJECT = "reject"
    REVISE = "revise"
    DEPLOY = "deploy"
    SUCCEED = "succeed"
    FAIL = "fail"
    ROLLBACK = "rollback"
    CLOSE = "close"


S, A = IPRState, Action
TRANSITIONS: Final[Mapping[tuple[IPRState, Action], IPRState]] = MappingProxyType(
    {
        (S.OPEN, A.APPROVE): S.APPROVED,
        (S.OPEN, A.REQUEST_CHANGES): S.CHANGES_REQUESTED,
        (S.OPEN, A.REJECT): S.REJECTED,
        (S.OPEN, A.REVISE): S.OPEN,
        (S.OPEN, A.CLOSE): S.CLOSED,
        (S.CHANGES_REQUESTED, A.REVISE): S.OPEN,
        (S.CHANGES_REQUESTED, A.REJECT): S.REJECTED,
        (S.CHANGES_REQUESTED, A.CLOSE): S.CLOSED,
        (S.APPROVED, A.DEPLOY): S.DEPLOYING,
        (S.APPROVED, A.CLOSE): S.CLOSED,
        (S.DEPLOYING, A.SUCCEED): S.DEPLOYED,
        (S.DEPLOYING, A.FAIL): S.FAILED,
        (S.DEPLOYED, A.DEPLOY): S.DEPLOYING,
        (S.DEPLOYED, A.ROLLBACK): S.ROLLING_BACK,
        (S.FAILED, A.DEPLOY): S.DEPLOYING,
        (S.FAILED, A.ROLLBACK): S.ROLLING_BACK,
        (S.ROLLING_BACK, A.SUCCEED): S.ROLLED_BACK,
        (S.ROLLING_BACK, A.FAIL): S.FAILED,
        (S.ROLLED_BACK, A.CLOSE): S.CLOSED,
    }
)
FINAL: Final = frozenset({S.REJECTED, S.CLOSED})
SYSTEM_ACTIONS: Final = frozenset({A.SUCCEED, A.FAIL})
"""Actions only the orchestrator takes."""


def allowed_actions(state: IPRState) -> list[Action]:
    """The actions that can be taken from ``state``, in table order."""
    return [action for (from_state, action) in TRANSITIONS if from_state == state]


def next_state(state: IPRState, action: Action) -> IPRState:
    """The state ``action`` leads to from ``state``.

    Raises:
        InvalidTransition: the action is not allowed from that state (the allowed ones are named).
    """
    target = TRANSITIONS.get((state, action))
    if target is None:
        allowed = allowed_actions(state)
        shown = ", ".join(a.value for a in allowed) if allowed else "none (it is final)"
        raise InvalidTransition(
            f"cannot {action.value} an IPR that is '{state.value}'; allowed from '{state.value}': {shown}",
            data={"state": state.value, "action": action.value, "allowed": [a.value for a in allowed]},
        )
    return target
