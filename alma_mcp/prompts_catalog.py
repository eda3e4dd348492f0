"""``prompts/*.md``: MCP prompts kept as data, validated at start-up, rendered with a safe template syntax.

A prompt file is YAML front matter between two ``---`` lines, then the body::

    ---
    name: architect_review
    title: Architect review                 # optional
    description: Review a change as the council's architect.
    arguments:
      - name: ipr_id
        description: An IPR to review
        required: false                     # the default
    ---
    You are the Architect ... {{ subject }} ...

The body's only syntax is ``{{ variable }}``: a lowercase identifier between double braces. The
variables are the prompt's own arguments (an optional one left out renders as an empty string) and
the context variables the renderer supplies (named to ``from_directory``; an argument may not reuse
one of their names). Rendering is one regular-expression pass over the body, so a value that itself
contains ``{{ x }}`` is inserted as it is, never expanded: no Jinja, no ``eval``, no attribute
access, no loops. A ``{{`` that does not open such a placeholder, or a variable that is neither an
argument nor a context variable, is a start-up error naming the file, like a duplicate prompt name;
a lone ``}}`` is plain text, so JSON examples need no escaping.
"""

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from alma_mcp.blueprint.loader import load_data_file
from alma_mcp.errors import ConfigError, InvalidRequest

PLACEHOLDER: Final = re.compile(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}")
"""``{{ name }}``: the one construct a body may use."""
_OPENING: Final = re.compile(r"\{\{")
MAX_FILE_BYTES: Final = 64 * 1024
_IDENTIFIER: Final = r"^[a-z][a-z0-9_]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PromptArgument(_Strict):
    """One argument a client passes when it gets the prompt (always a string on the wire)."""

    name: str = Field(pattern=_IDENTIFIER)
    description: str = Field(min_length=1, max_length=500)
    required: bool = False


class _FrontMatter(_Strict):
    name: str = Field(pattern=_IDENTIFIER)
    title: str | None = Field(default=None, min_length=1, max_length=200)
    description: str = Field(min_length=1, max_length=2000)
    arguments: list[PromptArgument] = Field(default_factory=list, max_length=20)

    @field_validator("arguments")
    @classmethod
    def _unique(cls, value: list[PromptArgument]) -> list[PromptArgument]:
        names = [a.name for a in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"argument {repeated[0]!r} is declared more than once")
        return value


@dataclass(frozen=True)
class PromptSpec:
    """A validated prompt file."""

    name: str
    title: str | None
    description: str
    arguments: tuple[PromptArgument, ...]
    body: str
    path: Path
    placeholders: frozenset[str]

    @property
    def argument_names(self) -> frozenset[str]:
        return frozenset(a.name for a in self.arguments)


class PromptCatalog:
    """The prompts by name; build it once with ``from_directory``."""

    def __init__(self, specs: Iterable[PromptSpec], context_variables: Collection[str] = ()) -> None:
        self._specs = {spec.name: spec for spec in sorted(specs, key=lambda s: s.name)}
        self.context_variables = frozenset(context_variables)

    @classmethod
    def from_directory(cls, folder: Path, context_variables: Collection[str] = ()) -> "PromptCatalog":
        """Load and validate every ``*.md`` file in ``folder`` except ``README.md``.

        Raises:
            ConfigError: no prompt files, or a file is unreadable, has no or invalid front matter, uses
                an unknown variable or malformed braces, or claims a name another file has (named).
        """
        files = sorted(p for p in folder.glob("*.md") if p.name != "README.md")
        if not files:
            raise ConfigError(f"no prompt files (*.md) in {folder}", data={"folder": str(folder)})
        known = frozenset(context_variables)
        specs: dict[str, PromptSpec] = {}
        for path in files:
            spec = load_prompt_file(path, known)
            if spec.name in specs:
                other = specs[spec.name].path
                raise ConfigError(
                    f"prompt file {path.name} claims the name '{spec.name}', already claimed by {other.name}",
                    data={"file": str(path), "name": spec.name, "other": str(other)},
                )
            specs[spec.name] = spec
        return cls(specs.values(), known)

    def names(self) -> list[str]:
        return list(self._specs)

    def specs(self) -> list[PromptSpec]:
        return list(self._specs.values())

    def get(self, name: str) -> PromptSpec:
        """The prompt with that name.

        Raises:
            InvalidRequest: no such prompt (the known ones are named).
        """
        try:
            return self._specs[name]
        except KeyError:
            raise InvalidRequest(
                f"no prompt {name!r}; available: {', '.join(self._specs)}", data={"name": name}
            ) from None

    def require(self, names: Iterable[str]) -> None:
        """Raises ``ConfigError`` naming the first of ``names`` that has no prompt file."""
        for name in names:
            if name not in self._specs:
                raise ConfigError(
                    f"no prompt file defines '{name}'; add prompts/{name}.md (see prompts/README.md)",
                    data={"name": name},
                )

    def render(self, name: str, arguments: Mapping[str, str], context: Mapping[str, str]) -> str:
        """The body with every placeholder filled in one pass.

        ``arguments`` are what the client passed (an optional argument left out renders as an empty
        string); ``context`` holds the renderer's variables.

        Raises:
            InvalidRequest: unknown prompt, unknown argument, or a required argument is missing.
            ConfigError: the body uses a context variable the renderer did not supply.
        """
        spec = self.get(name)
        unknown = sorted(set(arguments) - spec.argument_names)
        if unknown:
            allowed = ", ".join(sorted(spec.argument_names)) or "none"
            raise InvalidRequest(
                f"prompt {name} has no argument {unknown[0]!r}; allowed: {allowed}", data={"argument": unknown[0]}
            )
        missing = [a.name for a in spec.arguments if a.required and not arguments.get(a.name)]
        if missing:
            raise InvalidRequest(f"prompt {name} needs the argument {missing[0]!r}", data={"argument": missing[0]})
        values: dict[str, str] = {a.name: arguments.get(a.name, "") for a in spec.arguments}
        values.update({k: v for k, v in context.items() if k not in spec.argument_names})
        absent = sorted(spec.placeholders - set(values))
        if absent:
            raise ConfigError(
                f"prompt file {spec.path.name} uses {{{{ {absent[0]} }}}}, which the renderer of '{name}' does not "
                "supply",
                data={"file": str(spec.path), "variable": absent[0]},
            )
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], spec.body)


def load_prompt_file(path: Path, context_variables: Collection[str] = ()) -> PromptSpec:
    """One prompt file, validated.

    Raises:
        ConfigError: the file is unreadable, too large, lacks front matter, or is invalid (named).
    """

    def invalid(reason: str) -> ConfigError:
        return ConfigError(f"prompt file {path.name} is invalid: {reason}", data={"file": str(path)})

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise invalid(f"cannot be read ({exc.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise invalid(f"{len(raw)} bytes, more than {MAX_FILE_BYTES}")
    try:
        text = raw.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise invalid("not UTF-8") from None
    if not text.startswith("---\n"):
        raise invalid("it must start with YAML front matter between '---' lines (name, description, arguments)")
    head, sep, body = text[4:].partition("\n---\n")
    if not sep:
        raise invalid("the front matter has no closing '---' line")
    try:
        data: Any = load_data_file(head)
    except yaml.YAMLError as exc:
        raise invalid(f"the front matter is not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise invalid("the front matter must be a mapping with name, description and arguments")
    try:
        front = _FrontMatter.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "/".join(str(p) for p in first["loc"]) or "front matter"
        raise invalid(f"{where}: {first['msg']}") from None
    body = body.strip("\n") + "\n"
    if not body.strip():
        raise invalid("the body is empty")
    arguments = frozenset(a.name for a in front.arguments)
    known = frozenset(context_variables)
    clash = sorted(arguments & known)
    if clash:
        raise invalid(f"argument {clash[0]!r} has the name of a context variable; rename it")
    placeholders = frozenset(PLACEHOLDER.findall(body))
    spans = [m.span() for m in PLACEHOLDER.finditer(body)]
    for brace in _OPENING.finditer(body):
        if not any(start <= brace.start() < end for start, end in spans):
            line = body.count("\n", 0, brace.start()) + 1
            raise invalid(
                f"body line {line}: '{{{{' must open a placeholder: one lowercase variable, as in {{{{ name }}}}"
            )
    unknown = sorted(placeholders - arguments - known)
    if unknown:
        allowed = ", ".join(sorted(arguments | known))
        raise invalid(f"the body uses {{{{ {unknown[0]} }}}}, which is neither an argument nor one of: {allowed}")
    return PromptSpec(
        name=front.name,
        title=front.title,
        description=front.description.strip(),
        arguments=tuple(front.arguments),
        body=body,
        path=path,
        placeholders=placeholders,
    )
