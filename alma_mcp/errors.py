"""One exception tree with stable dotted codes.

Every failure a caller can act on is an ``AlmaError``. Its ``code`` never changes once released;
clients match on it. ``str(error)`` is ``"[code] message"``, which is exactly the text a tool error
carries to the model.

    AlmaError                         alma.error              base class; never raised itself
    ├── ConfigError                   config.invalid          a setting or data file is wrong at start-up
    ├── BlueprintError                blueprint.invalid       a blueprint failed validation (carries issues)
    │   ├── BlueprintParseError       blueprint.parse_error   text is neither YAML nor JSON, or not a mapping
    │   ├── BlueprintTooLarge         blueprint.too_large     document bigger than the size limit
    │   ├── BlueprintTooDeep          blueprint.too_deep      nesting deeper than the depth limit
    │   ├── BlueprintAliasBomb        blueprint.alias_bomb    YAML aliases expand past the node limit
    │   ├── BlueprintTooManyResources blueprint.too_many_resources
    │   └── BlueprintCycle            blueprint.cycle         the dependencies form a cycle (shown)
    ├── TemplateNotFound              template.not_found
    ├── TemplateInvalidParameter      template.invalid_parameter
    ├── ToolNotFound                  tool.not_found          ``alma-mcp call`` with an unknown tool
    ├── InvalidRequest                request.invalid         arguments that contradict each other or are missing
    ├── IPRNotFound                   ipr.not_found           no IPR with that id
    ├── InvalidTransition             ipr.invalid_transition  the action is not allowed from the IPR's state
    ├── IPRConflict                   ipr.conflict            another transition of the same IPR won the race
    ├── ApprovalBlocked               ipr.approval_blocked    a check blocks approval (failed validation, ...)
    ├── Forbidden                     auth.forbidden          the principal lacks the role, or approves its own IPR
    ├── Unauthenticated               auth.unauthenticated    no valid API key (defined in alma_mcp.keys)
    ├── DeploymentNotFoundError       deploy.not_found        no deployment with that id
    ├── StoreError                    store.error             the database cannot be opened or migrated
    ├── EngineNotFound                engine.not_found        no engine registered under that name
    ├── EngineUnavailable             engine.unavailable      the engine's optional SDK is not installed
    ├── DeploymentNotFound            deployment.not_found    an engine knows nothing of that deployment
    └── EngineError                   engine.error            an engine operation failed
        ├── TransientEngineError      engine.transient        worth retrying (timeouts, conflicts, 5xx)
        └── PermanentEngineError      engine.permanent        retrying will not help (bad spec, auth, quota)
"""

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class Issue(BaseModel):
    """One problem found in an input, located by a JSON pointer."""

    model_config = ConfigDict(frozen=True)

    code: str
    path: str
    message: str


class AlmaError(Exception):
    """Base of every error alma-mcp reports on purpose."""

    code: ClassVar[str] = "alma.error"

    def __init__(self, message: str, *, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.data: dict[str, Any] = dict(data or {})

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def to_payload(self) -> dict[str, Any]:
        """The error as plain data: what JSON error shapes and structured results carry."""
        return {"code": self.code, "message": self.message, "data": self.data}


class ConfigError(AlmaError):
    """A setting, or a data file read at start-up, is invalid."""

    code = "config.invalid"


class BlueprintError(AlmaError):
    """A blueprint is invalid; ``issues`` lists every problem found, each with a path."""

    code = "blueprint.invalid"

    def __init__(
        self,
        message: str,
        *,
        issues: Sequence[Issue] = (),
        data: Mapping[str, Any] | None = None,
    ) -> None:
        merged = dict(data or {})
        merged["issues"] = [issue.model_dump() for issue in issues]
        super().__init__(message, data=merged)
        self.issues: tuple[Issue, ...] = tuple(issues)


class BlueprintParseError(BlueprintError):
    """The text is neither YAML nor JSON, or its top level is not a mapping."""

    code = "blueprint.parse_error"


class BlueprintTooLarge(BlueprintError):
    """The document is bigger than ``ALMA_MAX_DOCUMENT_BYTES``."""

    code = "blueprint.too_large"


class BlueprintTooDeep(BlueprintError):
    """The document nests deeper than ``ALMA_MAX_DEPTH``."""

    code = "blueprint.too_deep"


class BlueprintAliasBomb(BlueprintError):
    """YAML aliases would expand the document past ``ALMA_MAX_NODES`` (billion laughs)."""

    code = "blueprint.alias_bomb"


class BlueprintTooManyResources(BlueprintError):
    """The blueprint declares more resources than ``ALMA_MAX_RESOURCES``."""

    code = "blueprint.too_many_resources"


class BlueprintCycle(BlueprintError):
    """The dependencies form at least one cycle; the message shows one, the issues list all."""

    code = "blueprint.cycle"


class InvalidRequest(AlmaError):
    """Arguments that are missing or contradict each other (each is fine alone)."""

    code = "request.invalid"


class IPRNotFound(AlmaError):
    """No IPR has that id."""

    code = "ipr.not_found"


class InvalidTransition(AlmaError):
    """The action is not allowed from the IPR's current state; ``data['allowed']`` lists what is."""

    code = "ipr.invalid_transition"


class IPRConflict(AlmaError):
    """A concurrent transition changed the IPR first (compare-and-set lost); re-read and retry."""

    code = "ipr.conflict"


class ApprovalBlocked(AlmaError):
    """A check blocks approval: validation failed (later: critical findings, budget)."""

    code = "ipr.approval_blocked"


class Forbidden(AlmaError):
    """The principal lacks the role the action needs, or would approve its own IPR."""

    code = "auth.forbidden"


class DeploymentNotFoundError(AlmaError):
    """No deployment record has that id."""

    code = "deploy.not_found"


class TemplateNotFound(AlmaError):
    """No template has that name or alias."""

    code = "template.not_found"


class TemplateInvalidParameter(AlmaError):
    """A customization parameter is unknown or out of its allowed range."""

    code = "template.invalid_parameter"


class ToolNotFound(AlmaError):
    """A scripted call named a tool the server does not have."""

    code = "tool.not_found"


class StoreError(AlmaError):
    """The database cannot be opened or migrated."""

    code = "store.error"


class EngineNotFound(AlmaError):
    """No engine is registered under that name."""

    code = "engine.not_found"


class EngineUnavailable(AlmaError):
    """The engine exists but its optional SDK is not installed."""

    code = "engine.unavailable"


class DeploymentNotFound(AlmaError):
    """An engine has no record of that deployment."""

    code = "deployment.not_found"


class EngineError(AlmaError):
    """An engine operation failed; the provider's message is truncated and free of secrets."""

    code = "engine.error"


class TransientEngineError(EngineError):
    """A failure worth retrying after ``delay`` seconds."""

    code = "engine.transient"

    def __init__(self, message: str, *, delay: float = 1.0, data: Mapping[str, Any] | None = None) -> None:
        super().__init__(message, data=data)
        self.delay = delay


class PermanentEngineError(EngineError):
    """A failure that retrying will not fix."""

    code = "engine.permanent"


def all_error_classes() -> list[type[AlmaError]]:
    """Every AlmaError subclass, depth first; used to check that codes are unique."""
    found: list[type[AlmaError]] = [AlmaError]
    stack: list[type[AlmaError]] = [AlmaError]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found
