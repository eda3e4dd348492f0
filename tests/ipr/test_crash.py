"""Crash safety: SIGKILL a deploying process at random points, many times, then recover and finish."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from alma_mcp.services import open_services
from alma_mcp.settings import Settings
from tests.ipr.test_service import ALICE, MODEL, READER

pytestmark = pytest.mark.slow

KILLS = 10


def blueprint(tag: int = 0) -> dict[str, Any]:
    # Six waves of four containers: long enough (about a second) to be killed in the middle.
    resources = []
    for wave in range(6):
        for i in range(4):
            deps = [f"c{wave - 1}-{j}" for j in range(4)] if wave else []
            resources.append(
                {
                    "name": f"c{wave}-{i}",
                    "type": "container",
                    "provider": "simulation",
                    "specs": {"image": f"busybox:1.{36 + tag}"},
                    "dependencies": deps,
                }
            )
    return {"name": "crashy", "resources": resources}


def deploying(path: Path) -> bool:
    conn = sqlite3.connect(path, timeout=5)
    try:
        row = conn.execute("SELECT count(*) FROM deployments WHERE state = 'running'").fetchone()
        return bool(row[0])
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def check_database(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        # Every resource the engine holds was recorded as a step that created it (succeeded, or
        # interrupted after the engine wrote it) - and no resource was created twice.
        created = {r[0] for r in conn.execute("SELECT name FROM sim_resources WHERE scope = 'crashy'")}
        steps = conn.execute("SELECT resource, status FROM deployment_steps WHERE action = 'create'").fetchall()
        recorded = {name for name, status in steps if status in ("succeeded", "interrupted")}
        assert created <= recorded, created - recorded
        per_deployment = conn.execute(
            "SELECT deployment_id, resource, count(*) FROM deployment_steps WHERE status = 'succeeded' "
            "GROUP BY deployment_id, resource HAVING count(*) > 1"
        ).fetchall()
        assert per_deployment == [], "a step succeeded twice in one deployment"
        running = conn.execute("SELECT count(*) FROM deployment_steps WHERE status = 'running'").fetchone()[0]
        assert running == 0  # recovery has run: nothing is left looking alive
    finally:
        conn.close()


def test_sigkill_during_deploys_is_recovered_every_time(tmp_path: Path) -> None:
    db = tmp_path / "alma.db"
    settings = Settings(db_path=str(db), sim_time_scale=0.0)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMA_")}
    env.update({"ALMA_DB_PATH": str(db), "ALMA_SIM_TIME_SCALE": "0.01", "ALMA_PLAN_PARALLELISM": "2"})
    rng = random.Random(20261126)
    states: list[str] = []
    tag = 0
    with open_services(settings, "test") as services:
        ipr_id = services.iprs.create(MODEL, title="crash me", blueprint=blueprint(tag)).ipr.id
        services.iprs.review(ALICE, ipr_id, "approve")
    for _ in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-m", "alma_mcp", "ipr", "--as", "ops", "deploy", str(ipr_id)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # Kill at a random point inside the deploy: wait until it has started (the machine may be
        # slow to start the process), then a random part of the way through.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not deploying(db):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.9))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with open_services(settings, "test") as services:  # start-up recovery runs here
            view = services.iprs.get(READER, ipr_id)
            states.append(view.ipr.state.value)
            assert view.ipr.state.value in ("approved", "failed", "deployed")
            assert all(d.state in ("succeeded", "failed", "interrupted") for d in view.deployments)
            if view.ipr.state.value == "deployed":
                # Finished before the kill: propose the next change (every container replaced) and go on.
                tag += 1
                ipr_id = services.iprs.create(MODEL, title=f"bump {tag}", blueprint=blueprint(tag)).ipr.id
                services.iprs.review(ALICE, ipr_id, "approve")
        check_database(db)
    print("states after each kill:", states)
    assert states.count("failed") >= KILLS // 2  # most kills landed mid-deploy
    with open_services(settings, "test") as services:
        if services.iprs.get(READER, ipr_id).ipr.state.value != "deployed":
            outcome = anyio.run(lambda: services.orchestrator.deploy(MODEL, ipr_id))
            assert outcome.state == "succeeded"
        assert services.iprs.get(READER, ipr_id).ipr.state.value == "deployed"
        rolled = anyio.run(lambda: services.orchestrator.rollback(MODEL, ipr_id))
        assert rolled.state == "succeeded"
        interrupted = services.store.db.execute("SELECT count(*) FROM deployments WHERE state = 'interrupted'")
        assert interrupted.fetchone()[0] >= KILLS // 2
    check_database(db)
