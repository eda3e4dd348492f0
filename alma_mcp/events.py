"""In-process domain events: the one seam through which metrics, the audit log and the SSE stream
learn what the domain did, without the domain importing any of them.

Publishers call ``bus.publish(event)`` after their transaction committed; subscribers are plain
callables run synchronously in order. A subscriber that raises is logged and skipped: observing must
never break the thing observed.
"""

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

logger = logging.getLogger(__name__)


class DomainEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["ipr.transition", "deployment.step", "deployment.finished", "tool.call", "auth.failure"]
    data: dict[str, Any]


Subscriber = Callable[[DomainEvent], None]


class EventBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Add a subscriber; returns a function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, event: DomainEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(event)
            except Exception:  # an observer's bug must not fail the observed operation
                logger.exception("event subscriber failed on %s", event.kind)

    def emit(self, event_kind: str, /, **data: Any) -> None:
        self.publish(DomainEvent.model_validate({"kind": event_kind, "data": data}))
