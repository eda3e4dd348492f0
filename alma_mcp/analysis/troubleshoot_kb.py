"""troubleshoot_issue's knowledge base: failure patterns kept as data in ``resources/troubleshooting``.

One record shape for every family (Kubernetes after k8sgpt's analyzers, container exit codes,
Docker, Proxmox VE, PostgreSQL/MySQL, Redis, Nginx, network): an id, a title, weighted
case-insensitive patterns, causes, remediation steps, verify commands, the blueprint checks that
make the cause more likely, and which blueprint resources the entry is about. ``load_knowledge_base``
validates and compiles it once; a bad file stops start-up with the file named.
"""

import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alma_mcp import __version__
from alma_mcp.analysis.troubleshoot_checks import CHECKS
from alma_mcp.blueprint.model import Provider, ResourceType
from alma_mcp.datacache import NO_CACHE, ParseCache
from alma_mcp.errors import ConfigError

MIN_ENTRIES: Final = 80
MAX_PATTERN_LENGTH: Final = 300


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PatternSpec(_Data):
    re: str = Field(min_length=1, max_length=MAX_PATTERN_LENGTH)
    w: float = Field(gt=0, le=10, description="Weight: 3-5 for the failure's own wording, 1-2 for a generic symptom.")


class Attribution(_Data):
    """Which blueprint resources an entry is about when the text names none."""

    types: list[ResourceType] = Field(default_factory=list)
    kinds: list[str] = Field(default_factory=list)
    providers: list[Provider] = Field(default_factory=list)


class Entry(_Data):
    id: str = Field(pattern=r"^[a-z0-9]+(\.[a-z0-9-]+)+$")
    title: str = Field(min_length=1)
    category: str = Field(min_length=1)
    patterns: list[PatternSpec] = Field(min_length=1)
    causes: list[str] = Field(min_length=1)
    remediation: list[str] = Field(min_length=1)
    verify: list[str] = Field(default_factory=list)
    checks: list[str] = Field(default_factory=list)
    attribution: Attribution = Field(default_factory=Attribution)
    references: list[str] = Field(default_factory=list)


class _File(_Data):
    family: str = Field(pattern=r"^[a-z0-9-]+$")
    entries: list[Entry] = Field(min_length=1)


PATTERN_FLAGS: Final = re.IGNORECASE | re.MULTILINE
# What an earlier start proved of a file's bytes: every pattern compiles with these flags.
PATTERNS_COMPILE: Final = f"alma-mcp {__version__}: troubleshooting patterns compile with flags {int(PATTERN_FLAGS)}"


@dataclass(frozen=True)
class CompiledPattern:
    text: str
    weight: float

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        """Compiled on first use: at start-up only when no earlier start proved it compiles."""
        return re.compile(self.text, PATTERN_FLAGS)


@dataclass(frozen=True)
class KBEntry:
    """An entry with its patterns compiled; ``order`` is its place in the knowledge base (a tie-break)."""

    entry: Entry
    family: str
    order: int
    patterns: tuple[CompiledPattern, ...]

    @property
    def id(self) -> str:
        return self.entry.id


class KnowledgeBase:
    """The validated, compiled entries, in file order (files sorted by name)."""

    def __init__(self, entries: Sequence[KBEntry]) -> None:
        self._entries = tuple(entries)
        self._by_id = {e.id: e for e in entries}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[KBEntry]:
        return iter(self._entries)

    def get(self, entry_id: str) -> KBEntry | None:
        return self._by_id.get(entry_id)

    def families(self) -> list[str]:
        return sorted({e.family for e in self._entries})


def load_knowledge_base(path: Path, *, minimum: int = MIN_ENTRIES, cache: ParseCache = NO_CACHE) -> KnowledgeBase:
    """Read (through ``cache``), validate and compile every ``*.yaml`` file in ``path``.

    Raises:
        ConfigError: a file is unreadable or invalid, an id is repeated, a pattern does not compile, a check
            is unknown, or there are fewer than ``minimum`` entries (the file is named).
    """
    files = sorted(path.glob("*.yaml"))
    if not files:
        raise ConfigError(f"no knowledge-base files (*.yaml) in {path}", data={"folder": str(path)})
    compiled: list[KBEntry] = []
    owner: dict[str, str] = {}
    unproven: list[Path] = []
    for file in files:
        try:
            content = _File.model_validate(cache.data_file(file))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"knowledge-base file {file.name} is invalid: {exc}", data={"file": str(file)}) from exc
        # Compiling 250 patterns is most of loading the knowledge base; bytes an earlier start has
        # compiled (recorded in the parse cache) compile again on first use instead.
        proven = cache.proven(file, PATTERNS_COMPILE)
        for entry in content.entries:
            where = f"knowledge-base file {file.name}, entry {entry.id}"
            if entry.id in owner:
                raise ConfigError(f"{where} repeats an id defined in {owner[entry.id]}", data={"file": str(file)})
            owner[entry.id] = file.name
            unknown = [c for c in entry.checks if c not in CHECKS]
            if unknown:
                raise ConfigError(
                    f"{where} names unknown checks {', '.join(unknown)}; known: {', '.join(sorted(CHECKS))}",
                    data={"file": str(file)},
                )
            patterns = tuple(CompiledPattern(spec.re, spec.w) for spec in entry.patterns)
            if not proven:
                for pattern in patterns:
                    try:
                        pattern.regex  # noqa: B018 - compiling is the check
                    except re.error as exc:
                        raise ConfigError(f"{where}: pattern {pattern.text!r} does not compile: {exc}") from exc
            compiled.append(KBEntry(entry=entry, family=content.family, order=len(compiled), patterns=patterns))
        if not proven:
            unproven.append(file)
    if len(compiled) < minimum:
        raise ConfigError(f"the knowledge base in {path} has {len(compiled)} entries; at least {minimum} are expected")
    for file in unproven:
        cache.prove(file, PATTERNS_COMPILE)
    return KnowledgeBase(compiled)
