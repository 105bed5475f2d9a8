"""Where an engine's lynx hook leaves what it saw, for whoever runs the engine in-process.

Two kinds of events per request (keyed by its ``lynx_tag``): *audits* (an exit, or lynx
disabled for the request, with the score and threshold behind it) and *records* (the
features and score of every cue of a request that asked for ``lynx_record``, which is how
``lynx collect`` reads hidden states out of vLLM).

Why owned by the engine and bounded: a process-global dict, as lynx once had, grows forever
in a server where nobody reads it, and mixes engines. The sink belongs to one
:class:`~lynx.engines.exit_control.ExitController`; it keeps nothing unless the engine was
configured for an in-process reader (``keep_events``), who takes a request's events as soon
as its batch is done; and it never holds more than ``max_requests`` requests (the oldest
are dropped, counted and logged once).
"""

from __future__ import annotations

import logging
from collections import OrderedDict

log = logging.getLogger("lynx.exit")


class EventSink:
    def __init__(self, keep: bool = False, max_requests: int = 10_000):
        self.keep, self.max_requests = keep, max_requests
        self._events: OrderedDict[str, tuple[list[dict], list[tuple]]] = OrderedDict()
        self.dropped = 0  # requests whose events were dropped to stay within the bound

    def _slot(self, tag: str) -> tuple[list[dict], list[tuple]]:
        slot = self._events.get(tag)
        if slot is None:
            if len(self._events) >= self.max_requests:
                self._events.popitem(last=False)
                if not self.dropped:
                    log.warning("lynx keeps events of at most %d requests; the oldest are being dropped (nobody took them)", self.max_requests)
                self.dropped += 1
            slot = self._events[tag] = ([], [])
        return slot

    def audit(self, tag: str | None, entry: dict) -> None:
        if self.keep and tag is not None:
            self._slot(tag)[0].append(entry)

    def record(self, tag: str | None, position: int, features, score: float | None) -> None:
        """A recorded cue: its position in prompt + output, its features (host copy) and score."""
        if self.keep and tag is not None:
            self._slot(tag)[1].append((position, features, score))

    def take(self, tags) -> dict[str, tuple[list[dict], list[tuple]]]:
        """Remove and return ``{tag: (audits, records)}`` for ``tags`` (empty lists for a tag
        with no events)."""
        return {t: self._events.pop(t, ([], [])) for t in tags}

    def __len__(self) -> int:
        """Requests whose events are held."""
        return len(self._events)
