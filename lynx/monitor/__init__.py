"""Keeping the promise on live traffic: shadow audits, a live risk bound, a drift test, responses.

* :mod:`lynx.monitor.labels` — labels of shadow audits by forced exits (as ``lynx collect``);
* :mod:`lynx.monitor.sequences` — the sequential tests (MAPIE's, with bounded memory);
* :mod:`lynx.monitor.live` — :class:`LiveMonitor`, the tests per traffic condition and the responses;
* :mod:`lynx.monitor.recalibrate` — the ``recalibrate`` response's calibration from audits;
* :mod:`lynx.monitor.driver` — :class:`Monitoring`, the glue next to an in-process engine;
* :mod:`lynx.monitor.follow` — the same behind an OpenAI server, reading its audit file;
* :mod:`lynx.monitor.report` — ``lynx monitor AUDIT.jsonl``: the state and a plot;
* :mod:`lynx.monitor.metrics` — lynx on the server's Prometheus ``/metrics``.

Lazy: importing this package (as the engines do for the metrics files) loads nothing else.
"""

from __future__ import annotations

_EXPORTS = {
    "LiveMonitor": "lynx.monitor.live",
    "Monitoring": "lynx.monitor.driver",
    "label_audits": "lynx.monitor.labels",
    "RiskBound": "lynx.monitor.sequences",
    "DriftTest": "lynx.monitor.sequences",
}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
