"""Offline replays: calibration-format traces (scores, agreement labels, thinking lengths) as
the event stream an engine and the labeller would produce, through a :class:`LiveMonitor`.

Why: a monitor's false-alarm rate and detection delay are properties over many streams; one
live run gives one stream. Traces collected once (``lynx collect`` + ``lynx calibrate`` of a
scratch copy of the probe, or a probe's own calibration split in two) replay in milliseconds,
in any order, with any audit draw — the same code path as live (``LiveMonitor.observe``).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from lynx.calibrate.policy import Traces
from lynx.engines.exit_control import audit_selected
from lynx.monitor.live import first_cue_positions


def trace_events(traces: Traces, order, *, group: str, condition: str, temperature: float | None, audit_fraction: float, seed: int = 0, tag_prefix: str = "r") -> Iterator[dict]:
    """The ``request`` event of each trace in ``order`` and, for the ones a seeded hash picks as
    audits, the ``audit_label`` event (what the live path yields for them)."""
    first_positions = first_cue_positions(traces)
    for k, i in enumerate(order):
        s, e = traces.offsets[i], traces.offsets[i + 1]
        tag = f"{tag_prefix}{k}"
        audited = audit_selected(audit_fraction, seed, tag, [], None)
        base = {"group": group, "condition": condition, "temperature": temperature, "domain": None, "tag": tag}
        yield base | {"event": "request", "first_cue_position": int(first_positions[i]), "audited": audited}
        if audited:
            agree = traces.agreement if traces.agreement is not None else traces.label
            yield base | {
                "event": "audit_label",
                "thinking_tokens": int(traces.total[i]),
                "cues": [[int(traces.position[j]), float(traces.score[j]), int(agree[j])] for j in range(s, e)],
            }


def replay(monitor, events) -> dict:
    """Feed ``events`` to ``monitor``; returns its groups' first alarms (request counts) and its events."""
    out = []
    for e in events:
        out += monitor.observe(e)
    return {"first_alarm": {k: dict(g.first_alarm) for k, g in monitor.groups.items()}, "events": out}


def permutation(n: int, rng: np.random.Generator, size: int | None = None) -> np.ndarray:
    """``size`` trace indices: a permutation of ``n`` (resampled with replacement beyond ``n``)."""
    size = n if size is None else size
    return rng.permutation(n)[:size] if size <= n else rng.integers(0, n, size)
