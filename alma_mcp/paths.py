"""Where the data folders and the default database live.

``resources/`` and ``prompts/`` sit at the repository root in a checkout and in an editable
install, and inside the package (``alma_mcp/_data``) in a wheel. The first folder that holds
``resources/templates`` wins, so an explicit ``ALMA_DATA_DIR`` can override both.
"""

from __future__ import annotations

from pathlib import Path

from platformdirs import user_data_path

from alma_mcp.errors import ConfigError

_PACKAGE_DIR = Path(__file__).resolve().parent


def candidate_data_dirs() -> tuple[Path, ...]:
    """The places searched for data, in order: wheel layout first, then the checkout root."""
    return (_PACKAGE_DIR / "_data", _PACKAGE_DIR.parent)


def find_data_dir(override: Path | None = None) -> Path:
    """The folder holding ``resources/`` and ``prompts/``.

    Raises:
        ConfigError: no candidate holds ``resources/templates``.
    """
    candidates = (override,) if override is not None else candidate_data_dirs()
    for candidate in candidates:
        if (candidate / "resources" / "templates").is_dir():
            return candidate
    searched = ", ".join(str(c) for c in candidates)
    raise ConfigError(
        f"no data folder with resources/templates found (searched: {searched}); set ALMA_DATA_DIR",
        data={"searched": [str(c) for c in candidates]},
    )


def default_db_path() -> Path:
    """``alma.db`` in the user's data directory (created on first use)."""
    return user_data_path("alma-mcp", appauthor=False) / "alma.db"
