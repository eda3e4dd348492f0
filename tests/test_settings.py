from pathlib import Path

import pytest

from alma_mcp.errors import ConfigError
from alma_mcp.settings import Settings, load_settings

README = Path(__file__).resolve().parent.parent / "README.md"


def test_defaults_are_safe() -> None:
    s = load_settings()
    assert s.http_host == "127.0.0.1"
    assert s.db_path is None
    assert s.allowed_hosts == []


def test_environment_variables_are_read_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMA_HTTP_PORT", "9123")
    monkeypatch.setenv("ALMA_ALLOWED_HOSTS", "mcp.example.com, alma.internal")
    monkeypatch.setenv("ALMA_LOG_LEVEL", "DEBUG")
    s = load_settings()
    assert s.http_port == 9123
    assert s.allowed_hosts == ["mcp.example.com", "alma.internal"]
    assert s.log_level == "DEBUG"


def test_a_bad_value_names_the_variable_and_what_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALMA_HTTP_PORT", "eighty")
    monkeypatch.setenv("ALMA_MAX_DEPTH", "2")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.code == "config.invalid"
    assert "ALMA_HTTP_PORT: Input should be a valid integer" in info.value.message
    assert "ALMA_MAX_DEPTH: Input should be greater than or equal to 4" in info.value.message
    assert info.value.data == {"fields": ["ALMA_HTTP_PORT", "ALMA_MAX_DEPTH"]}


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.http_port = 1  # type: ignore[misc]


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [f"ALMA_{name.upper()}" for name in Settings.model_fields if f"`ALMA_{name.upper()}`" not in text]
    assert missing == []
