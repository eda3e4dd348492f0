"""The docker engine in the contract suite, against the private dockerd of ``scripts/backends start``.

No image can be pulled there, and ``local/busybox:latest`` runs ``/bin/sh``, which exits at once. So
the contract runs ``alma-test/web:1``, built here from it once per daemon: busybox httpd on port
8080 serving ``/www`` (with a ``/health`` page), as the image's own command. ``alma-test/web:2`` is
the same image under another tag, for the replace. Each engine the factory makes works in its own
``scope``, and everything in that scope is removed when the engine is closed: the contract reuses
deployment ids from test to test.
"""

import io
import tarfile
import threading
import uuid
from typing import Any

import docker  # type: ignore[import-untyped]
from docker import errors as docker_errors

from alma_mcp.store import Store
from engines.docker import DockerEngine
from tests.engines.backends import EngineCase, require_backend

BASE_IMAGE = "local/busybox:latest"
WEB_IMAGE = "alma-test/web:1"
OTHER_WEB_IMAGE = "alma-test/web:2"
WEB_PORT = 8080
INDEX_PAGE = "alma web test page\n"

DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY index.html /www/index.html
COPY health /www/health
EXPOSE {WEB_PORT}
CMD ["httpd", "-f", "-p", "{WEB_PORT}", "-h", "/www"]
"""

_built = threading.Lock()


def docker_host() -> str:
    """The private dockerd's URL; skips the test when it is not running (fails in CI)."""
    return require_backend("DOCKER_HOST", "the private dockerd")


def _context() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (("Dockerfile", DOCKERFILE), ("index.html", INDEX_PAGE), ("health", "ok\n")):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def ensure_images(client: Any) -> None:
    """Build ``alma-test/web:1`` and tag ``:2`` unless the daemon has them (offline, classic builder)."""
    with _built:
        try:
            client.images.get(WEB_IMAGE)
            client.images.get(OTHER_WEB_IMAGE)
        except docker_errors.ImageNotFound:
            image, _ = client.images.build(
                fileobj=_context(), custom_context=True, tag=WEB_IMAGE, rm=True, labels={"alma.test": "1"}
            )
            repository, _, tag = OTHER_WEB_IMAGE.partition(":")
            image.tag(repository, tag)


def purge(client: Any, label: str) -> None:
    """Remove every container, network and volume carrying ``label`` (``key=value``)."""
    filters = {"label": label}
    for container in client.containers.list(all=True, filters=filters):
        container.remove(force=True)
    for network in client.networks.list(filters=filters):
        network.remove()
    for volume in client.volumes.list(filters=filters):
        volume.remove(force=True)


class ScopedDockerEngine(DockerEngine):
    """A docker engine in a scope of its own that removes everything in it when closed."""

    async def aclose(self) -> None:
        client = self._client
        if client is not None:
            purge(client, f"alma.scope={self._scope}")
        await super().aclose()


def new_scope() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def make_engine(store: Store) -> DockerEngine:
    client = docker.DockerClient(base_url=docker_host())
    ensure_images(client)
    return ScopedDockerEngine(client, address=docker_host(), scope=new_scope(), stop_timeout=2)


CASE = EngineCase("docker", make_engine, WEB_IMAGE, OTHER_WEB_IMAGE)
