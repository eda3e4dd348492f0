"""The body-size limit refuses declared and streamed oversize bodies with the one error shape."""

from collections.abc import AsyncIterator

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from alma_mcp.web.hardening import BodySizeLimitMiddleware

pytestmark = pytest.mark.anyio


async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"size": len(body)})


APP = BodySizeLimitMiddleware(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), max_bytes=1000)


def client() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(transport=httpx2.ASGITransport(app=APP), base_url="http://127.0.0.1:8000")


async def test_a_body_within_the_limit_passes() -> None:
    async with client() as h:
        response = await h.post("/echo", content=b"x" * 1000)
    assert response.status_code == 200
    assert response.json() == {"size": 1000}


async def test_a_declared_oversize_body_is_refused_before_reading() -> None:
    async with client() as h:
        response = await h.post("/echo", content=b"x" * 1001)
    assert response.status_code == 413
    assert response.json() == {
        "ok": False,
        "status": 413,
        "error": {
            "code": "request.too_large",
            "message": "request body of 1001 bytes is over the limit of 1000 (ALMA_MAX_BODY_BYTES)",
            "data": {"limit": 1000},
        },
    }


async def test_a_streamed_oversize_body_is_refused() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * 300

    async with client() as h:
        response = await h.post("/echo", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["message"] == (
        "request body of more than 1000 bytes is over the limit of 1000 (ALMA_MAX_BODY_BYTES)"
    )
