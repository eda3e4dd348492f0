"""The proxmox engine in the contract suite, against one fakepve served for the whole session.

fakepve (AGPL, a test-only dependency, never imported by ``engines``) runs in process: a FakePve on
its own event loop in a daemon thread, on 127.0.0.1 with a port the system picks and a certificate
made for it, stopped at exit. It is started on the first use of the factory, not at import, and
holds a VM template (vmid 9000), a Debian LXC template in storage ``local`` and an API token.

Every engine the factory builds starts from a clean fake: the guests a previous test made (anything
but templates) and their disks are dropped first. The contract's "container" resources become LXC
containers from the engine's default OS template; their ``image`` cannot run on PVE, so it is only
recorded (a change to it still replaces the container, as the contract expects).
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import pytest
from pydantic import SecretStr

from alma_mcp.settings import Settings
from alma_mcp.store import Store
from engines.base import Engine
from tests.engines.backends import EngineCase

T = TypeVar("T")

HOST: Final = "127.0.0.1"
USER: Final = "root@pam"
TOKEN_NAME: Final = "alma"
TOKEN_VALUE: Final = "5e1d3c0a-7b2f-4d8e-9a61-0c4b2f7e8d93"
TEMPLATE_VMID: Final = 9000
TEMPLATE_NAME: Final = "ubuntu-22.04-cloudinit"
OSTEMPLATE_FILE: Final = "debian-12-standard_12.7-1_amd64.tar.zst"
START_TIMEOUT: Final = 30.0


def seed(pve: Any) -> None:
    """A VM template, the default LXC template and the API token: what the engine needs to find."""
    pve.add_vm(
        TEMPLATE_VMID,
        TEMPLATE_NAME,
        template=True,
        config={
            "memory": "2048",
            "scsi0": f"local-lvm:base-{TEMPLATE_VMID}-disk-0,size=8G",
            "net0": "virtio=BC:24:11:00:90:00,bridge=vmbr0",
            "ostype": "l26",
        },
    )
    pve.store_file("local", OSTEMPLATE_FILE, 120 * 1024**2, content="vztmpl")
    pve.apitokens[f"{USER}!{TOKEN_NAME}"] = TOKEN_VALUE


def settings_for(host: str, port: int, cafile: str, **overrides: Any) -> Settings:
    """Settings that point the proxmox engine at a fake: token auth, TLS verified with the fake's certificate."""
    values: dict[str, Any] = {
        "db_path": ":memory:",
        "proxmox_host": host,
        "proxmox_port": port,
        "proxmox_user": USER,
        "proxmox_token_name": TOKEN_NAME,
        "proxmox_token_value": SecretStr(TOKEN_VALUE),
        "proxmox_ca_file": Path(cafile),
        "engine_timeout_seconds": 30.0,
        **overrides,
    }
    return Settings(**values)


class ServedFakePve:
    """A seeded FakePve on a private event loop in a daemon thread (as fakepve's own fixtures run it)."""

    def __init__(self) -> None:
        from fakepve import FakePve  # type: ignore[import-untyped]
        from fakepve.certs import make_cert  # type: ignore[import-untyped]

        self.directory = tempfile.mkdtemp(prefix="alma-fakepve-")
        self.cafile, keyfile, _ = make_cert(self.directory, hosts=(HOST,))
        self.pve: Any = FakePve(host=HOST, port=0)
        self.pve.time_scale = 0
        seed(self.pve)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="alma-fakepve", daemon=True)
        self.thread.start()
        self.run(self.pve.start(self.cafile, keyfile))

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(START_TIMEOUT)

    def call(self, function: Callable[[], T]) -> T:
        """Run ``function`` on the fake's loop, so its state never changes under a request."""

        async def inside() -> T:
            return function()

        return self.run(inside())

    def reset(self) -> None:
        """Drop every guest but the templates, and their disks."""

        def drop() -> None:
            pve = self.pve
            pve.vms = [vm for vm in pve.vms if vm.template]
            pve.cts = [ct for ct in pve.cts if ct.template]
            kept = {guest.vmid for guest in [*pve.vms, *pve.cts]}
            for store in pve.storages.values():
                volumes = store.get("volumes", {})
                for name in [n for n, v in volumes.items() if v.get("vmid") not in (None, *kept)]:
                    del volumes[name]

        self.call(drop)

    def stop(self) -> None:
        from fakepve import settle

        try:
            self.run(settle())
            self.run(self.pve.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(START_TIMEOUT)
            if not self.thread.is_alive():
                self.loop.close()
            shutil.rmtree(self.directory, ignore_errors=True)


_served: ServedFakePve | None = None


def _missing(exc: ModuleNotFoundError) -> NoReturn:
    """A skip on a developer's machine, a failure in CI (as for the other backends)."""
    message = f"the proxmox backend needs {exc.name}: pip install 'fakepve[crypto]' proxmoxer requests"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def served() -> ServedFakePve:
    """The session's fake, started on first use and stopped at exit."""
    global _served
    if _served is None:
        try:
            _served = ServedFakePve()
        except ModuleNotFoundError as exc:
            _missing(exc)
        atexit.register(_served.stop)
    return _served


def make_engine(store: Store) -> Engine:
    try:
        from engines.proxmox import ProxmoxEngine
    except ModuleNotFoundError as exc:
        _missing(exc)
    fake = served()
    fake.reset()
    return ProxmoxEngine.from_settings(store, settings_for(HOST, fake.pve.port, fake.cafile))


CASE = EngineCase(
    name="proxmox",
    factory=make_engine,
    image="docker.io/library/nginx:1.27",
    other_image="docker.io/library/nginx:1.28",
)
