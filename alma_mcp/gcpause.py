"""Pausing the cyclic garbage collector around bulk analysis and during process start-up.

Validating a 10,000-resource blueprint allocates hundreds of thousands of short-lived objects; each
allocation burst triggers full collections that rescan everything alive (the input included), which
makes the work grow faster than the input. Refcounting still frees garbage while the collector is
paused (the analysis builds no reference cycles), and the collector resumes when the last paused
section ends, so other threads only see a short pause of cycle collection, never of freeing.

Start-up has the same shape: importing the SDK and our modules, building ~200 pydantic models and the
tools' schemas, and loading the data files allocate objects that live until exit, and the collector
rescans all of them on every full collection (about 350 collections, ~120 ms of a stdio start). The
entry point pauses it, and resumes it once the server is built, after freezing what start-up made so
later full collections skip it.
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
_start_up_paused = False


def pause_for_start_up() -> None:
    """Pause cyclic collection until ``start_up_done``; does nothing if it is already off."""
    global _start_up_paused
    with _lock:
        if gc.isenabled():
            gc.disable()
            _start_up_paused = True


def start_up_done(*, freeze: bool = False) -> None:
    """Resume what ``pause_for_start_up`` paused; with ``freeze``, first move every object alive now
    (modules, classes, schemas, catalogues: they live until exit) out of the collector's sight.

    Idempotent, so an entry point can call it on every exit path.
    """
    global _start_up_paused, _was_enabled
    with _lock:
        if not _start_up_paused:
            return
        _start_up_paused = False
        if freeze:
            gc.freeze()
        if _depth == 0:
            gc.enable()
        else:
            _was_enabled = True  # a bulk section is running: it resumes collection when it ends


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
