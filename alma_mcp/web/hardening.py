"""Request hardening: a body-size limit and the one error shape for anything Starlette rejects.

``BodySizeLimitMiddleware`` refuses a declared ``Content-Length`` over the limit before reading, and
a chunked body that streams past it with the same 413; the app never sees the excess.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from alma_mcp.web.responses import error_response


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self, size: str) -> ASGIApp:
        return error_response(
            413,
            "request.too_large",
            f"request body of {size} bytes is over the limit of {self.max_bytes} (ALMA_MAX_BODY_BYTES)",
            {"limit": self.max_bytes},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                declared = value.decode("latin-1")
                if not declared.isdigit() or int(declared) > self.max_bytes:
                    await self._refusal(declared if declared.isdigit() else "unknown")(scope, receive, send)
                    return
        declared_length = any(name == b"content-length" for name, _ in scope.get("headers", []))
        if declared_length:
            await self.app(scope, receive, send)  # the server enforces a declared length; checked above
            return
        # No declared length (chunked): read up to the limit first, then replay it to the app. An
        # error raised mid-read would only reach the app's own 500 handler.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            body = message.get("body", b"")
            seen += len(body)
            if seen > self.max_bytes:
                await self._refusal(f"more than {self.max_bytes}")(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
