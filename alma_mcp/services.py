"""The application's services, opened once per process by whoever runs the server.

Transports come and go (an SSE connection runs the MCP lifespan once per connection), so the
store and catalogues are opened here, by the CLI, the HTTP app's lifespan or a test, and the MCP
lifespan only hands them to handlers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from alma_mcp import __version__
from alma_mcp.blueprint.loader import Limits
from alma_mcp.catalog.templates import TemplateCatalog
from alma_mcp.paths import find_data_dir
from alma_mcp.settings import Settings
from alma_mcp.store import Store
from engines.registry import EngineRegistry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Everything a handler needs; built once, shared by every session."""

    settings: Settings
    limits: Limits
    catalog: TemplateCatalog
    store: Store
    engines: EngineRegistry


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.max_document_bytes,
        max_depth=settings.max_depth,
        max_nodes=settings.max_nodes,
        max_resources=settings.max_resources,
    )


def load_catalog(settings: Settings) -> TemplateCatalog:
    """Find the data folder and validate every template (a bad file stops start-up).

    Raises:
        ConfigError: no data folder, or an invalid or duplicate template (the file is named).
    """
    data_dir = find_data_dir(settings.data_dir)
    return TemplateCatalog.from_directory(data_dir / "resources" / "templates", limits_from(settings))


@contextmanager
def open_services(settings: Settings, transport: str) -> Iterator[Services]:
    """Validate the data, open and migrate the store, record this run; close it all on exit.

    Raises:
        ConfigError: invalid data files.
        StoreError: the database cannot be opened or migrated.
    """
    catalog = load_catalog(settings)
    store = Store.open(settings.db_path)
    run_id = store.record_start(__version__, transport)
    logger.info("store %s ready (run %d, %d templates)", store.path, run_id, len(catalog.names()))
    try:
        yield Services(
            settings=settings,
            limits=limits_from(settings),
            catalog=catalog,
            store=store,
            engines=EngineRegistry(),
        )
    finally:
        store.record_stop(run_id)
        store.close()
