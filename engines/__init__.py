"""Deploy engines: the protocol every backend implements, and the registry that finds them."""

from engines.base import (
    ApplyResult,
    Change,
    DeploymentRef,
    DesiredResource,
    DesiredState,
    Engine,
    EngineHealth,
    ObservedResource,
    Plan,
    ResourceOutcome,
)
from engines.registry import BUILTIN_ENGINES, EngineRegistry

__all__ = [
    "BUILTIN_ENGINES",
    "ApplyResult",
    "Change",
    "DeploymentRef",
    "DesiredResource",
    "DesiredState",
    "Engine",
    "EngineHealth",
    "EngineRegistry",
    "ObservedResource",
    "Plan",
    "ResourceOutcome",
]
