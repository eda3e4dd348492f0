"""Engine registry: provider-facing names to engine factories, loaded lazily.

Built-in engines are listed as import paths, so a provider SDK is imported only when its engine
is first asked for (a stdio server must start fast, and ``import alma_mcp`` must work without the
optional extras). Built-ins and any later plug-ins take the same path.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, Final

from alma_mcp.errors import EngineNotFound, EngineUnavailable
from engines.base import Engine

EngineFactory = Callable[..., Engine]

# name -> ("module:attribute", extra that provides its SDK). Engines land here as they are built.
BUILTIN_ENGINES: Final[Mapping[str, tuple[str, str | None]]] = {
    "simulation": ("engines.simulation:SimulationEngine", None),
    "proxmox": ("engines.proxmox:ProxmoxEngine", "proxmox"),
    "docker": ("engines.docker:DockerEngine", "docker"),
    "kubernetes": ("engines.kubernetes:KubernetesEngine", "kubernetes"),
}


class EngineRegistry:
    """Engine factories by name: registered objects, or import paths resolved on first use."""

    def __init__(self, builtins: Mapping[str, tuple[str, str | None]] = BUILTIN_ENGINES) -> None:
        self._paths = dict(builtins)
        self._factories: dict[str, EngineFactory] = {}

    def register(self, name: str, factory: EngineFactory) -> None:
        if name in self._factories or name in self._paths:
            raise ValueError(f"engine {name!r} is already registered")
        self._factories[name] = factory

    def names(self) -> list[str]:
        return sorted({*self._factories, *self._paths})

    def factory(self, name: str) -> EngineFactory:
        """The factory for ``name``, importing its module if needed.

        Raises:
            EngineNotFound: no engine has that name (the available ones are listed).
            EngineUnavailable: the engine's optional SDK is not installed.
        """
        if name in self._factories:
            return self._factories[name]
        if name not in self._paths:
            raise EngineNotFound(
                f"no engine {name!r}; available: {', '.join(self.names()) or 'none'}",
                data={"name": name, "available": self.names()},
            )
        target, extra = self._paths[name]
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"pip install 'alma-mcp[{extra}]'" if extra else "reinstall alma-mcp"
            raise EngineUnavailable(
                f"engine {name!r} needs a package that is not installed ({exc.name}); {hint}",
                data={"name": name, "extra": extra},
            ) from exc
        factory: Any = getattr(module, attribute)
        self._factories[name] = factory
        return factory  # type: ignore[no-any-return]
