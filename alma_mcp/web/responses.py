"""The one JSON error shape of every HTTP error the side app returns.

    {"ok": false, "status": 404, "error": {"code": "ipr.not_found", "message": "...", "data": {...}}}

``code`` is an ``AlmaError`` code where one exists, else an ``http.*`` code. Messages never carry
stack traces or secrets; an unexpected failure gets a fresh error id that is also logged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from alma_mcp.errors import AlmaError

logger = logging.getLogger(__name__)

HTTP_STATUS_FOR_CODE: dict[str, int] = {
    "auth.unauthenticated": 401,
    "auth.forbidden": 403,
    "rate_limit.exceeded": 429,
    "request.invalid": 400,
    "request.unprocessable": 422,
    "health.unhealthy": 503,
    "request.too_large": 413,
    "ipr.not_found": 404,
    "deploy.not_found": 404,
    "template.not_found": 404,
    "tool.not_found": 404,
    "ipr.invalid_transition": 409,
    "ipr.conflict": 409,
    "ipr.approval_blocked": 409,
}
"""Status for coded errors; any other ``blueprint.*``, ``template.*`` or ``request.*`` code is 400/422."""


def status_for(code: str) -> int:
    if code in HTTP_STATUS_FOR_CODE:
        return HTTP_STATUS_FOR_CODE[code]
    if code.startswith(("blueprint.", "template.")):
        return 422
    return 400


def error_response(
    status: int,
    code: str,
    message: str,
    data: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"ok": False, "status": status, "error": {"code": code, "message": message, "data": dict(data or {})}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def from_alma_error(err: AlmaError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return error_response(status_for(err.code), err.code, err.message, err.data, headers)


def internal_error(exc: BaseException) -> JSONResponse:
    """A 500 that tells the client only an id to quote; the traceback goes to the log under that id."""
    error_id = uuid.uuid4().hex
    logger.error("unhandled error %s", error_id, exc_info=exc)
    return error_response(
        500, "http.internal", f"internal error; quote id {error_id} when reporting it", {"error_id": error_id}
    )
