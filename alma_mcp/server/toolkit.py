"""Helpers shared by tool modules: coded tool errors.

The SDK prefixes a raised ``ToolError`` with ``Error executing tool NAME:``. A model (and a script)
should see the stable code first, so an ``AlmaError`` is returned as an ``is_error`` result whose
text is exactly ``[code] message``, with the code repeated in ``_meta`` for programs.
"""

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from mcp.types import CallToolResult, TextContent, ToolAnnotations

from alma_mcp.errors import AlmaError

P = ParamSpec("P")
R = TypeVar("R")

ERROR_META_KEY = "alma/error"

READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
"""The annotations of every analysis and read tool: no side effects, same answer for the same input."""


def error_result(err: AlmaError) -> CallToolResult:
    """The ``is_error`` tool result for a coded error."""
    return CallToolResult(
        content=[TextContent(type="text", text=str(err))],
        is_error=True,
        _meta={ERROR_META_KEY: {"code": err.code, "data": err.data}},
    )


def coded_errors(fn: Callable[P, R]) -> Callable[P, R | CallToolResult]:
    """Wrap a tool so that ``AlmaError`` becomes a coded ``is_error`` result; keeps the signature."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except AlmaError as err:
                return error_result(err)

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | CallToolResult:
        try:
            return fn(*args, **kwargs)
        except AlmaError as err:
            return error_result(err)

    return wrapper
