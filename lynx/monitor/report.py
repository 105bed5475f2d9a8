"""``lynx monitor AUDIT.jsonl``: what an engine's audit file says about its promise.

The file holds the engine's events (``request`` summaries, ``exit``, ``audit_trace``, flagged
requests) and the monitor's (``audit_label``, ``bound`` after each labelled audit, ``alarm``,
``response``, ``cleared``, ``recalibrated``). This module reads it (a half-written last line
is skipped: the file may be growing), sums it up per traffic group, and plots the live
answer-change risk with its time-uniform bounds and the alarm level, the drift martingale,
and the alarms and responses.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from lynx.errors import InvalidInput, MissingInput


def read_events(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise MissingInput(f"audit file {path} does not exist (an engine writes it when its lynx settings have audit_path)")
    events = []
    with path.open() as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                e = json.loads(line)
            except ValueError:
                if f.readline() == "":  # the last line, still being written
                    break
                raise InvalidInput(f"{path}:{n} is not a JSON line; is this a lynx audit file?") from None
            if isinstance(e, dict):
                events.append(e)
    return events


def summarize(events: list[dict]) -> dict:
    """Totals, and per group: requests, exits, audits, the latest live risk and bounds per alpha,
    the drift martingale, and the monitor's alarms and responses."""
    kinds = Counter(e.get("event") for e in events)
    requests = [e for e in events if e.get("event") == "request"]
    groups: dict[str, dict] = {}

    def group(key):
        return groups.setdefault(
            key or "default", {"requests": 0, "exits": 0, "audits": 0, "labelled": 0, "uncalibrated": 0, "risk": {}, "drift_martingale": None, "alarms": [], "responses": []}
        )

    for e in events:
        kind = e.get("event")
        if kind not in ("request", "audit_label", "bound", "alarm", "response", "cleared", "recalibrated"):
            continue
        g = group(e.get("group"))
        if kind == "request":
            g["requests"] += 1
            g["exits"] += bool(e.get("exited"))
            g["audits"] += bool(e.get("audited"))
            g["uncalibrated"] += bool(e.get("uncalibrated_condition"))
        elif kind == "audit_label":
            g["labelled"] += 1
        elif kind == "bound":
            g["risk"] = e.get("risk") or {}
            g["drift_martingale"] = e.get("drift_martingale")
        elif kind == "alarm":
            g["alarms"].append({k: e.get(k) for k in ("kind", "request", "audits", "detail")})
        elif kind in ("response", "cleared", "recalibrated"):
            g["responses"].append({"event": kind} | {k: e.get(k) for k in ("response", "request", "condition", "audits") if e.get(k) is not None})
    extra = sum(int(e.get("extra_tokens") or 0) for e in events if e.get("event") == "audit_label")
    out_tokens = sum(int(e.get("output_tokens") or 0) for e in requests)
    return {
        "events": dict(kinds),
        "requests": len(requests),
        "exits": sum(bool(e.get("exited")) for e in requests),
        "audits": sum(bool(e.get("audited")) for e in requests),
        "labelled": kinds.get("audit_label", 0),
        "output_tokens": out_tokens,
        "audit_extra_tokens": extra,
        "audit_extra_share": extra / out_tokens if out_tokens else None,
        "groups": groups,
    }


def tables(summary: dict) -> list:
    """Rich tables: the stream, and the live risk per group and alpha."""
    from rich.table import Table

    t = Table(title="lynx monitor: the stream")
    for c in ("group", "requests", "exits", "audits", "labelled", "uncalibrated", "drift martingale", "alarms", "responses"):
        t.add_column(c, justify="left" if c in ("group", "alarms", "responses") else "right")
    for key, g in summary["groups"].items():
        alarms = "; ".join(f"{a['kind']} @ {a['request']}" for a in g["alarms"]) or "-"
        resp = (
            "; ".join(
                f"{r['event']}{' ' + r['response'] if r.get('response') else ''}{' ' + r['condition'] if r.get('condition') else ''} @ {r.get('request')}" for r in g["responses"]
            )
            or "-"
        )
        dm = g["drift_martingale"]
        t.add_row(key, str(g["requests"]), str(g["exits"]), str(g["audits"]), str(g["labelled"]), str(g["uncalibrated"]), "-" if dm is None else f"{dm:.3g}", alarms, resp)
    r = Table(title="lynx monitor: live answer-change risk of the audited requests (time-uniform bounds)")
    for c in ("group", "alpha", "audits", "live rate", "lower bound", "upper bound", "alarm above"):
        r.add_column(c, justify="left" if c == "group" else "right")
    for key, g in summary["groups"].items():
        for alpha, b in g["risk"].items():
            f = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
            r.add_row(key, alpha, str(b.get("n")), f(b.get("rate")), f(b.get("lower")), f(b.get("upper")), f(b.get("alarm_level")))
    return [t, r]


def plot(events: list[dict], out: str | Path) -> Path | None:
    """Per group: the live risk and its bounds per alpha over the group's requests (top), the
    drift martingale against its rejection level (bottom), alarms and responses as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bounds: dict[str, list[dict]] = {}
    marks: dict[str, list[tuple[int, str]]] = {}
    for e in events:
        if e.get("event") == "bound":
            bounds.setdefault(e.get("group") or "default", []).append(e)
        elif e.get("event") in ("alarm", "response", "cleared", "recalibrated"):
            label = e["event"] + (f" ({e['kind']})" if e.get("kind") else "")
            marks.setdefault(e.get("group") or "default", []).append((e.get("request") or 0, label))
    if not bounds:
        return None
    fig, axes = plt.subplots(2, len(bounds), figsize=(6 * len(bounds), 6.5), squeeze=False, sharex="col")
    for col, (key, bs) in enumerate(bounds.items()):
        ax, ax2 = axes[0][col], axes[1][col]
        x = [b["request"] for b in bs]
        for alpha in bs[-1].get("risk") or {}:
            pts = [(xi, b["risk"].get(alpha)) for xi, b in zip(x, bs, strict=True) if (b.get("risk") or {}).get(alpha)]
            xs = [p for p, _ in pts]
            line = ax.plot(xs, [r["rate"] for _, r in pts], label=f"alpha {alpha}: live rate")[0]
            ax.fill_between(xs, [r["lower"] for _, r in pts], [r["upper"] for _, r in pts], color=line.get_color(), alpha=0.15, label=f"alpha {alpha}: time-uniform bounds")
            ax.plot(xs, [r["alarm_level"] for _, r in pts], "--", color=line.get_color(), label=f"alpha {alpha}: alarm level")
        dm = [(xi, v) for xi, b in zip(x, bs, strict=True) if (v := b.get("drift_martingale")) is not None]
        if dm:
            ax2.semilogy([p for p, _ in dm], [max(v, 1e-6) for _, v in dm], label="drift martingale")
        level = next((b["drift_reject_above"] for b in bs if b.get("drift_reject_above")), None)
        if level is not None:
            ax2.axhline(level, color="grey", ls="--", label="rejection level (1 / test level)")
        for req, label in marks.get(key, []):
            for a in (ax, ax2):
                a.axvline(req, color="red" if label.startswith("alarm") else "green", lw=0.8)
            ax.annotate(label, (req, 0.95), xycoords=("data", "axes fraction"), rotation=90, fontsize=7, va="top")
        ax.set_title(f"group {key}: live answer-change risk (audited requests)")
        ax.set_ylabel("answer-change risk")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax2.set_xlabel(f"requests of group {key}")
        ax2.set_ylabel("martingale (log)")
        ax2.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
