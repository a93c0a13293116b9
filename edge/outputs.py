"""Door outputs: what a grant drives (the relay, a Wiegand panel input, ...), off the frame loop.

Every output has the same three verbs (:class:`Output`): ``grant(g)`` for a
person let in, ``lock()`` to lock now, ``close()`` to lock and let go of its
pins. :class:`Outputs` fans a grant out to each configured output through its
own queue and worker thread, so the frame loop only puts a value on a queue and
a slow output (a busy panel, a broker) never delays another or the camera.

``door.outputs: []`` is a kiosk: greet and log only, nothing is driven.

Fail-secure stays where it was: the relay is a :class:`edge.door.Door`, locked
by its own exit, signal and crash hooks. On close, grants still queued are
dropped, never delivered: a door that is stopping does not open.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Grant", "Output", "Outputs", "RelayOutput"]

log = logging.getLogger(__name__)

_JOIN_SECONDS = 2.0


@dataclass(frozen=True)
class Grant:
    """One person let in, as the outputs see it."""

    name: str | None
    person_id: int | None
    #: ``time.monotonic()`` when the decision was made (for latency figures).
    decided_mono: float


class Output(Protocol):
    """Something a grant drives. Called from that output's own worker thread."""

    name: str

    def grant(self, g: Grant) -> None: ...

    def lock(self) -> None: ...

    def close(self) -> None: ...


class RelayOutput:
    """The lock relay (:class:`edge.door.Door`) as an output: a grant unlocks it."""

    name = "relay"

    def __init__(self, door: Any) -> None:
        self.door = door

    def grant(self, g: Grant) -> None:
        self.door.unlock()

    def lock(self) -> None:
        self.door.lock()

    def close(self) -> None:
        self.door.close()


_STOP = object()


class Outputs:
    """Several outputs at once, each on its own worker thread.

    ``on_delivered(output_name, grant, seconds)`` is called (on the worker)
    after each grant an output handled, with the time from decision to done.
    """

    def __init__(
        self,
        outputs: Sequence[Output],
        on_delivered: Callable[[str, Grant, float], Any] | None = None,
    ) -> None:
        self.outputs = list(outputs)
        self._on_delivered = on_delivered
        self._closed = False
        self._queues: list[queue.SimpleQueue[Any]] = []
        self._threads: list[threading.Thread] = []
        for out in self.outputs:
            q: queue.SimpleQueue[Any] = queue.SimpleQueue()
            t = threading.Thread(
                target=self._work, args=(out, q), name=f"output-{out.name}", daemon=True
            )
            self._queues.append(q)
            self._threads.append(t)
            t.start()

    @property
    def kiosk(self) -> bool:
        """True when nothing is driven: greet and log only."""
        return not self.outputs

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def waiting(self) -> list[str]:
        """The outputs not ready yet (an OSDP reader its panel has not polled);
        an output that cannot tell is ready."""
        return [o.name for o in self.outputs if not getattr(o, "ready", True)]

    def grant(self, g: Grant) -> None:
        """Queue ``g`` for every output; returns at once."""
        if self._closed:
            return
        for q in self._queues:
            q.put(g)

    def lock(self) -> None:
        """Lock every output now, on the caller's thread (locking must never wait)."""
        for out in self.outputs:
            try:
                out.lock()
            except Exception:
                log.exception("output %s: lock failed", out.name)

    def close(self) -> None:
        """Drop queued grants, stop the workers and close every output (locked). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for q in self._queues:
            while True:  # pending grants are dropped: a stopping door does not open
                try:
                    q.get_nowait()
                except queue.Empty:
                    break
            q.put(_STOP)
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(_JOIN_SECONDS)
        for out in self.outputs:
            try:
                out.close()
            except Exception:
                log.exception("output %s: close failed", out.name)

    def _work(self, out: Output, q: queue.SimpleQueue[Any]) -> None:
        while (item := q.get()) is not _STOP:
            if self._closed:
                continue
            try:
                out.grant(item)
            except Exception:
                log.exception("output %s: grant for %s failed", out.name, item.name)
                continue
            if self._on_delivered is not None:
                try:
                    self._on_delivered(out.name, item, time.monotonic() - item.decided_mono)
                except Exception:
                    log.exception("output %s: delivery callback failed", out.name)


def build_outputs(
    cfg: Any,
    db_path: Any,
    door: Any,
    pin_factory: Any = None,
    on_delivered: Callable[[str, Grant, float], Any] | None = None,
) -> Outputs:
    """The outputs ``cfg.door.outputs`` names, in that order (``door`` is the relay, if any)."""
    made: list[Output] = []
    try:
        for kind in cfg.door.outputs:
            if kind == "relay":
                made.append(RelayOutput(door))
            elif kind == "wiegand":
                from .cards import CardLookup
                from .wiegand import WiegandOutput

                made.append(
                    WiegandOutput(cfg.wiegand, CardLookup(db_path), pin_factory=pin_factory)
                )
            elif kind == "osdp":
                from .cards import CardLookup
                from .osdp import OsdpOutput

                made.append(
                    OsdpOutput(cfg, CardLookup(db_path), door=door, pin_factory=pin_factory)
                )
    except Exception:
        for out in made:
            if out.name != "relay":  # the relay is the daemon's; it closes it itself
                out.close()
        raise
    if not made:
        log.info("kiosk: no door outputs (door.outputs is empty); greeting and logging only")
    return Outputs(made, on_delivered)
