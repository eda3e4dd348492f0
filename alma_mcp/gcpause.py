"""Pausing the cyclic garbage collector around bulk analysis.

Validating a 10,000-resource blueprint allocates hundreds of thousands of short-lived objects; each
allocation burst triggers full collections that rescan everything alive (the input included), which
makes the work grow faster than the input. Refcounting still frees garbage while the collector is
paused (the analysis builds no reference cycles), and the collector resumes when the last paused
section ends, so other threads only see a short pause of cycle collection, never of freeing.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause cyclic collection for the block; nested and concurrent uses resume it once, at the end."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()


def without_gc(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator form of ``paused_gc``."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with paused_gc():
            return fn(*args, **kwargs)

    return wrapper
