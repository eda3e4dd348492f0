"""The parsed-data cache: hits only for the same bytes and parser, misses on anything odd, never an error."""

import datetime
import json
from pathlib import Path
from typing import Any

import pytest

from alma_mcp import datacache
from alma_mcp.blueprint.loader import Limits
from alma_mcp.catalog.templates import TemplateCatalog
from alma_mcp.datacache import ParseCache, default_directory
from alma_mcp.errors import BlueprintParseError, BlueprintTooDeep, ConfigError
from alma_mcp.server.app import build_server
from alma_mcp.services import open_services
from alma_mcp.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DATA_FOLDERS = ("templates", "policies", "troubleshooting", "architecture", "create")


class CountingParse:
    """Wraps a parser so a test can see whether the cache called it."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.calls = 0
        self._real = getattr(datacache, name)
        monkeypatch.setattr(datacache, name, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._real(*args, **kwargs)


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json"))


def test_the_same_bytes_are_served_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parse = CountingParse(monkeypatch, "load_data_file")
    data = tmp_path / "data.yaml"
    data.write_text("a: 1\nb: [x, 2.5, null, true]\nc: {d: e}\n", encoding="utf-8")
    cache = ParseCache(tmp_path / "cache")
    expected = {"a": 1, "b": ["x", 2.5, None, True], "c": {"d": "e"}}
    assert cache.data_file(data) == expected
    assert parse.calls == 1
    assert len(entries(tmp_path / "cache")) == 1
    assert cache.data_file(data) == expected
    assert parse.calls == 1


def test_an_edited_file_is_parsed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parse = CountingParse(monkeypatch, "load_data_file")
    data = tmp_path / "data.yaml"
    cache = ParseCache(tmp_path / "cache")
    data.write_text("a: 1\n", encoding="utf-8")
    assert cache.data_file(data) == {"a": 1}
    data.write_text("a: 2\n", encoding="utf-8")
    assert cache.data_file(data) == {"a": 2}
    assert parse.calls == 2
    assert len(entries(tmp_path / "cache")) == 2


def test_a_corrupt_entry_is_a_miss_and_is_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("a: 1\n", encoding="utf-8")
    cache = ParseCache(tmp_path / "cache")
    cache.data_file(data)
    (entry,) = entries(tmp_path / "cache")
    for garbage in (b"\x00\xff not json", b'"a string, not a mapping"', b""):
        entry.write_bytes(garbage)
        parse = CountingParse(monkeypatch, "load_data_file")
        assert cache.data_file(data) == {"a": 1}
        assert parse.calls == 1
        assert json.loads(entry.read_text(encoding="utf-8")) == {"a": 1}
        monkeypatch.undo()


def test_an_unwritable_cache_still_returns_the_parse(tmp_path: Path) -> None:
    data = tmp_path / "data.yaml"
    data.write_text("a: 1\n", encoding="utf-8")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be", encoding="utf-8")
    assert ParseCache(blocker / "cache").data_file(data) == {"a": 1}
    assert blocker.read_text(encoding="utf-8") == "a file where the cache folder should be"


def test_values_json_cannot_store_exactly_are_returned_but_never_cached(tmp_path: Path) -> None:
    cache = ParseCache(tmp_path / "cache")
    for name, text, expected in (
        ("date.yaml", "when: 2026-11-26\n", {"when": datetime.date(2026, 11, 26)}),
        ("intkey.yaml", "ports: {80: http}\n", {"ports": {80: "http"}}),
    ):
        data = tmp_path / name
        data.write_text(text, encoding="utf-8")
        assert cache.data_file(data) == expected
        assert cache.data_file(data) == expected
    assert entries(tmp_path / "cache") == []


def test_off_parses_every_time_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parse = CountingParse(monkeypatch, "load_data_file")
    data = tmp_path / "data.yaml"
    data.write_text("a: 1\n", encoding="utf-8")
    cache = ParseCache.from_setting("off")
    assert cache.directory is None
    cache.data_file(data)
    cache.data_file(data)
    assert parse.calls == 2


def test_setting_values() -> None:
    assert ParseCache.from_setting(None).directory == default_directory()
    assert ParseCache.from_setting("").directory == default_directory()
    assert ParseCache.from_setting(" OFF ").directory is None
    assert ParseCache.from_setting("/srv/alma/cache").directory == Path("/srv/alma/cache")
    assert default_directory().parts[-2:] == ("alma-mcp", "parsed")


def test_documents_are_keyed_by_their_limits_and_errors_are_never_cached(tmp_path: Path) -> None:
    cache = ParseCache(tmp_path / "cache")
    nested = tmp_path / "nested.yaml"
    nested.write_text("a: {b: {c: {d: 1}}}\n", encoding="utf-8")
    assert cache.document(nested, Limits(max_depth=8)) == {"a": {"b": {"c": {"d": 1}}}}
    # The same bytes under a tighter limit are not served the earlier, looser parse.
    with pytest.raises(BlueprintTooDeep):
        cache.document(nested, Limits(max_depth=3))
    assert len(entries(tmp_path / "cache")) == 1
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text("a: 1\na: 2\n", encoding="utf-8")
    for _ in range(2):
        with pytest.raises(BlueprintParseError, match="duplicate key 'a'"):
            cache.document(duplicate, Limits())
    assert len(entries(tmp_path / "cache")) == 1


def test_a_template_broken_after_a_cached_start_still_stops_start_up(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    source = ROOT / "resources" / "templates" / "simple-web-app.yaml"
    (folder / source.name).write_bytes(source.read_bytes())
    cache = ParseCache(tmp_path / "cache")
    assert TemplateCatalog.from_directory(folder, cache=cache).names() == ["simple-web-app"]
    assert TemplateCatalog.from_directory(folder, cache=cache).names() == ["simple-web-app"]
    broken = source.read_text(encoding="utf-8").replace("type: compute", "type: mainframe", 1)
    assert broken != source.read_text(encoding="utf-8")
    (folder / source.name).write_text(broken, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"template file simple-web-app\.yaml is invalid"):
        TemplateCatalog.from_directory(folder, cache=cache)


def test_every_shipped_data_file_is_cached_after_one_start(tmp_path: Path) -> None:
    settings = Settings(db_path=":memory:", cache_dir=str(tmp_path / "cache"))
    shipped = [p for folder in DATA_FOLDERS for p in (ROOT / "resources" / folder).glob("*.yaml")]
    with open_services(settings, "test") as services:
        build_server(services)
    assert len(entries(tmp_path / "cache")) == len(shipped) == 30
    first = {p.name: p.read_bytes() for p in entries(tmp_path / "cache")}
    with open_services(settings, "test") as services:
        build_server(services)
    assert {p.name: p.read_bytes() for p in entries(tmp_path / "cache")} == first
