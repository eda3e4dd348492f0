"""Start-up pauses the cyclic collector and resumes it once; bulk sections nest inside it."""

import gc
import sys
from collections.abc import Iterator

import pytest

from alma_mcp import gcpause
from alma_mcp.cli import main
from alma_mcp.server.app import build_server
from alma_mcp.services import Services


@pytest.fixture(autouse=True)
def collector_restored() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.enable()
    yield
    gcpause.start_up_done()
    gc.unfreeze()
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_start_up_pause_is_resumed_once() -> None:
    gcpause.pause_for_start_up()
    assert not gc.isenabled()
    gcpause.start_up_done()
    assert gc.isenabled()
    gc.disable()
    gcpause.start_up_done()  # idempotent: a second call changes nothing
    assert not gc.isenabled()


def test_a_collector_already_off_stays_off() -> None:
    gc.disable()
    gcpause.pause_for_start_up()
    gcpause.start_up_done()
    assert not gc.isenabled()


def test_freeze_moves_start_up_objects_out_of_collection() -> None:
    gcpause.pause_for_start_up()
    assert gc.get_freeze_count() == 0
    gcpause.start_up_done(freeze=True)
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()


def test_start_up_ending_inside_a_bulk_section_resumes_when_the_section_ends() -> None:
    gcpause.pause_for_start_up()
    with gcpause.paused_gc():
        gcpause.start_up_done()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_cli_resumes_collection_after_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["templates", "list"]) == 0
    assert "simple-web-app" in capsys.readouterr().out
    assert gc.isenabled()


def test_building_the_server_does_not_import_rich_or_leave_it_blocked(services: Services) -> None:
    # MCPServer() would import rich only to build a log handler that logging then discards.
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name == "rich" or name.startswith("rich.")}
    try:
        build_server(services)
        assert "rich" not in sys.modules
        import rich.console  # noqa: F401 - importable as usual afterwards
    finally:
        sys.modules.update(saved)


def test_plan_and_compare_from_documents_hold_one_pause_from_load_to_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading pauses collection, and so does the analysis; with a gap between the two, the first
    # allocation in it would start a collection walking every model just built (a large share of a
    # 10,000-resource call). The tools' entry points hold one pause across both.
    from pathlib import Path
    from typing import Any

    from alma_mcp.analysis import compare, plan
    from alma_mcp.analysis.durations import load_durations

    durations = load_durations(Path(__file__).resolve().parent.parent / "resources" / "plan" / "durations.yaml")
    data = {"name": "small", "resources": [{"name": "a", "type": "compute", "provider": "simulation"}]}
    collecting: list[tuple[str, bool]] = []

    def watched(module: Any, name: str) -> None:
        real = getattr(module, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            collecting.append((name, gc.isenabled()))
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, call)

    for module, name in ((plan, "load_with_nodes"), (plan, "plan_deployment")):
        watched(module, name)
    for module, name in ((compare, "load_blueprint"), (compare, "compare_blueprints")):
        watched(module, name)
    plan.plan_sources(data, None, durations)
    compare.compare_sources(data, data)
    assert collecting == [
        ("load_with_nodes", False),
        ("plan_deployment", False),
        ("load_blueprint", False),
        ("load_blueprint", False),
        ("compare_blueprints", False),
    ]
    assert gc.isenabled()
