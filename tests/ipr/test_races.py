"""Races between processes: two approvals, two deploys of one IPR. Exactly one wins each time."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alma_mcp.services import open_services
from alma_mcp.settings import Settings
from tests.ipr.test_service import ALICE, MODEL, READER, SHOP

pytestmark = pytest.mark.slow

ROUNDS = 3


def run_together(commands: list[list[str]], env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    procs = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for cmd in commands
    ]
    results = []
    for proc, cmd in zip(procs, commands, strict=True):
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
    return results


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "alma_mcp", "ipr", *args]


def test_two_processes_approving_at_once(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "alma.db"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMA_")}
    env["ALMA_DB_PATH"] = str(tmp_path / "alma.db")
    for _ in range(ROUNDS):
        with open_services(settings, "test") as services:
            ipr_id = str(services.iprs.create(MODEL, title="race", blueprint=SHOP).ipr.id)
        results = run_together([cli("--as", "alice", "approve", ipr_id), cli("--as", "bob", "approve", ipr_id)], env)
        codes = sorted(r.returncode for r in results)
        assert codes == [0, 1], [r.stderr for r in results]
        loser = next(r for r in results if r.returncode == 1)
        assert loser.stderr.startswith(("alma-mcp: [ipr.invalid_transition] ", "alma-mcp: [ipr.conflict] "))
        with open_services(settings, "test") as services:
            view = services.iprs.get(READER, int(ipr_id))
        assert view.ipr.state == "approved"
        assert [e.action for e in view.events] == ["open", "approve"]


def test_two_processes_deploying_at_once(tmp_path: Path) -> None:
    settings = Settings(db_path=str(tmp_path / "alma.db"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMA_")}
    # Slow enough (about 2 s) that the two deploys overlap; otherwise the second is a no-op re-deploy.
    env.update({"ALMA_DB_PATH": str(tmp_path / "alma.db"), "ALMA_SIM_TIME_SCALE": "0.01"})
    with open_services(settings, "test") as services:
        ipr_id = services.iprs.create(MODEL, title="race", blueprint=SHOP).ipr.id
        services.iprs.review(ALICE, ipr_id, "approve")
    results = run_together(
        [cli("--as", "ops1", "deploy", str(ipr_id)), cli("--as", "ops2", "deploy", str(ipr_id))], env
    )
    assert sorted(r.returncode for r in results) == [0, 1], [r.stderr for r in results]
    loser = next(r for r in results if r.returncode == 1)
    assert loser.stderr.startswith(("alma-mcp: [ipr.invalid_transition] ", "alma-mcp: [ipr.conflict] "))
    with open_services(settings, "test") as services:
        view = services.iprs.get(READER, ipr_id)
    assert view.ipr.state == "deployed"
    assert len(view.deployments) == 1
