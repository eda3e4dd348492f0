"""A cache of parsed data files, keyed by everything the parse depends on.

Parsing the shipped YAML (policies, troubleshooting entries, templates, architecture data, about
300 KB) runs PyYAML's pure-Python constructor: about 40 ms of every start, for files that rarely
change. An entry holds a file's parsed value as JSON (the C decoder reads it ~20x faster than
PyYAML parses the YAML, and it cannot build anything but plain data) under the SHA-256 of the file's
bytes, the parser and its limits, and PyYAML's version, so an edited file, another parser or an
upgrade is never served an old value. Only successful parses are stored, and only the
parse is cached: every start still validates each value against its model, so a broken file still
stops start-up. An unreadable, corrupt or unwritable entry is a miss, never an error.

The same folder records facts a loader proved of a file's exact bytes (``prove``/``proven``), so a
later start with the same bytes may defer work that only re-proves them, such as compiling patterns.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import yaml

from alma_mcp.blueprint.loader import Limits, load_data_file, parse_document

logger = logging.getLogger(__name__)

# Bump when what a parser returns for the same bytes changes (a new YAML rule, another loader).
FORMAT: Final = 1
OFF: Final = "off"

# Values JSON stores exactly (mapping keys must be strings); a parse that yields anything else (a YAML
# timestamp, an integer key) is not cached.
_PLAIN: Final = (dict, list, str, int, float, bool, type(None))


def default_directory() -> Path:
    """``parsed/`` in the user's cache directory."""
    from platformdirs import user_cache_path

    return user_cache_path("alma-mcp", appauthor=False) / "parsed"


class ParseCache:
    """Parsed data files by content; ``ParseCache(None)`` parses every time."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        # SHA-256 of the bytes each file had when this cache last read it: facts are proven of those
        # bytes, not of whatever the file holds by the time the loader has finished checking them.
        self._read: dict[Path, str] = {}

    @classmethod
    def from_setting(cls, value: str | None) -> ParseCache:
        """``ALMA_CACHE_DIR``: unset for the default folder, a path, or ``off``."""
        if value is None or value == "":
            return cls(default_directory())
        if value.strip().lower() == OFF:
            return cls(None)
        return cls(Path(value).expanduser())

    def data_file(self, path: Path) -> Any:
        """One of our YAML data files, parsed like ``load_data_file``.

        Raises:
            OSError: the file cannot be read.
            UnicodeDecodeError: it is not UTF-8.
            yaml.YAMLError: it is not YAML.
        """
        return self._parsed(path, "data_file", load_data_file)

    def document(self, path: Path, limits: Limits) -> Any:
        """A data file parsed like ``parse_document`` (duplicate keys refused, limits applied).

        Raises:
            OSError, UnicodeDecodeError: the file cannot be read as UTF-8 text.
            BlueprintError: a limit or a parse error, with its code.
        """
        return self._parsed(path, f"document:{limits!r}", lambda text: parse_document(text, limits))

    def proven(self, path: Path, fact: str) -> bool:
        """Whether an earlier start recorded ``fact`` (by ``prove``) for the bytes this cache last read
        from ``path`` (through ``data_file`` or ``document``); False for a file it has not read.

        A fact is something a loader checked that depends only on the bytes and on ``fact`` itself
        (which names what was checked and how, e.g. the regular-expression flags) and this Python: the
        loader may then skip checking it again and do the work on first use instead.
        """
        marker = self._marker(path, fact)
        return marker is not None and marker.is_file()

    def prove(self, path: Path, fact: str) -> None:
        """Record ``fact`` for the bytes this cache last read from ``path``, once the check has passed."""
        marker = self._marker(path, fact)
        if marker is None:
            return
        try:
            marker.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            marker.touch()
        except OSError as exc:
            logger.debug("parse cache: cannot record %s for %s: %s", fact, path.name, exc)

    def _marker(self, path: Path, fact: str) -> Path | None:
        content = self._read.get(path)
        if self.directory is None or content is None:
            return None
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        return self.directory / f"{_key(content, 'fact', fact, version)}.proven"

    def _parsed(self, path: Path, parser: str, parse: Callable[[str], Any]) -> Any:
        raw = path.read_bytes()
        if self.directory is None:
            return parse(raw.decode("utf-8"))
        content = self._read[path] = hashlib.sha256(raw).hexdigest()
        entry = self.directory / f"{_key(content, parser, yaml.__version__)}.json"
        try:
            value = json.loads(entry.read_bytes())
        except (OSError, ValueError):
            pass
        else:
            if isinstance(value, dict | list):
                return value
        value = parse(raw.decode("utf-8"))
        self._store(entry, value)
        return value

    def _store(self, entry: Path, value: Any) -> None:
        if not _plain(value):
            return
        try:
            entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=entry.parent, prefix=".", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    json.dump(value, out, ensure_ascii=False, separators=(",", ":"))
                # Atomic: a reader sees the whole entry or none, even with two servers starting.
                os.replace(tmp, entry)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            logger.debug("parse cache: cannot store %s: %s", entry.name, exc)


def _key(content: str, *about: str) -> str:
    """An entry's name: the content's SHA-256 with everything else the entry depends on."""
    return hashlib.sha256("\0".join((str(FORMAT), *about, content)).encode()).hexdigest()


def _plain(value: Any) -> bool:
    # Iterative: data files nest, and a recursive walk would be bounded by the stack instead of the data.
    stack = [value]
    while stack:
        item = stack.pop()
        if not isinstance(item, _PLAIN):
            return False
        if isinstance(item, dict):
            if not all(isinstance(key, str) for key in item):
                return False
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


NO_CACHE: Final = ParseCache(None)
