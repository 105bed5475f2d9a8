"""The live monitor against an unannounced temperature shift, on the organism with the vLLM engine.

One engine per response (warn, conservative, recalibrate) serves a stream of N requests at
T = 0.6 (the calibrated condition) then N at T = 1.0 (not calibrated: the probe folder is a copy
of the shipped one with only its T0.6 calibration), alpha 0.1, audit_fraction 0.1, in batches;
the monitor runs between batches (labels by forced exits on the same engine). A vanilla pass
(same prompts, same per-request seeds, no lynx) gives each request's full-CoT answer, so every
request's premature exit (gold) and answer change (vs vanilla) are known.

Reported (JSON + a table + plots):
* false alarms: the T0.6 segment of each live run, plus >= 50 offline replays of unshifted
  streams — the recorded live T0.6 events in random orders, and half-splits of the probe's T0.6
  calibration traces (one half the reference, the other the stream);
* detection delay: requests of the T = 1.0 segment until each test's alarm (live, and over
  replays of the recorded T = 1.0 events in random orders);
* after the response: realised premature-exit and answer-change rates of the requests sent
  after the response started (conservative, recalibrate), and of the same segment under warn;
* cost: the audits' forced-exit tokens as a share of the stream's generated tokens, and the
  saving the audited requests gave up.

Usage: python benchmarks/shift_monitor.py [--n 600] [--n-shifted N] [--replays 200] [--out runs/shift-monitor] [--replays-only]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np


def probe_without_t1(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    for extra in (dst / "calibrations").iterdir():
        if extra.name != "T0.6":
            shutil.rmtree(extra)
    return dst


def run_stream(args, response: str, records, vanilla: dict | None):
    """One engine, one response: the 2N-request stream; returns per-request rows and the monitor's events."""
    from lynx.config import rollout_seed
    from lynx.evaluate.backends import VLLMBackend
    from lynx.exit_policy import ExitPolicy, request_args
    from lynx.grading import extract_boxed
    from lynx.models import resolve_model
    from lynx.prompting import chat_prompt

    work = Path(args.out) / response
    work.mkdir(parents=True, exist_ok=True)
    probe = probe_without_t1(Path(args.probe), work / "probe")
    audit = work / "audit.jsonl"
    audit.unlink(missing_ok=True)
    policy = ExitPolicy.load(probe)
    monitor = {
        "audit_fraction": args.audit_fraction,
        "alphas": [args.alpha],
        "response": response,
        "grader": "integer",
        "min_audits": args.min_audits,
        "test_level": args.test_level,
    }
    hook = policy.hook_config({"keep_events": True, "audit_path": str(audit), "monitor": monitor})
    backend = VLLMBackend(resolve_model("organism"), hook, policy)
    tok = backend.tokenizer
    prompts = [tok(chat_prompt(tok, r.question, suffix=policy.prompt_suffix), add_special_tokens=False)["input_ids"] for r in records]
    seeds = [rollout_seed(args.seed, r.id, 0) for r in records]
    temps = [0.6] * args.n + [1.0] * (len(records) - args.n)
    if vanilla is None:  # the full-CoT answer of every request (same seed = the same trace as an audited request's)
        vanilla = {}
        t0 = time.monotonic()
        for T in (0.6, 1.0):
            idx = [i for i, t in enumerate(temps) if t == T]
            outs = backend.complete([prompts[i] for i in idx], max_tokens=args.max_tokens, temperature=T, top_p=0.95, seeds=[seeds[i] for i in idx], stop_ids=[tok.eos_token_id])
            for i, o in zip(idx, outs, strict=True):
                vanilla[i] = {"answer": extract_boxed(tok.decode(o.ids)), "tokens": len(o.ids)}
        print(f"vanilla pass: {time.monotonic() - t0:.0f} s", flush=True)
    rows, monitor_events = [], []
    t0 = time.monotonic()
    for start in range(0, len(records), args.batch):
        idx = list(range(start, min(start + args.batch, len(records))))
        T = temps[idx[0]]
        tags = [f"req{args.seed}-{i}" for i in idx]  # the same requests are audited in every run (the seeded hash of the tag)
        outs = backend.complete(
            [prompts[i] for i in idx],
            max_tokens=args.max_tokens,
            temperature=T,
            top_p=0.95,
            seeds=[seeds[i] for i in idx],
            stop_ids=[tok.eos_token_id],
            extra_args=[request_args(alpha=args.alpha, tag=t) for t in tags],
        )
        events = backend.take_events(tags)  # the monitor observes them here (labels, tests, responses)
        by_tag = {t: {e["event"]: e for e in events[t][0]} for t in tags}
        for i, t, o in zip(idx, tags, outs, strict=True):
            req = by_tag[t].get("request", {})
            rows.append(
                {
                    "i": i,
                    "temperature": T,
                    "tag": t,
                    "answer": extract_boxed(tok.decode(o.ids)),
                    "tokens": len(o.ids),
                    "exited": "exit" in by_tag[t],
                    "audited": bool(req.get("audited")),
                    "response": req.get("response"),
                    "threshold": req.get("threshold"),
                    "condition": req.get("condition"),
                }
            )
        monitor_events = [e for e in _read(audit) if e.get("event") in ("alarm", "response", "cleared", "recalibrated", "bound", "audit_label")]
        print(f"{response}: {len(rows)}/{len(records)} requests, {time.monotonic() - t0:.0f} s", flush=True)
    state = backend.monitoring.state()
    del backend
    import gc

    gc.collect()
    return rows, vanilla, monitor_events, state, audit


def _read(path: Path) -> list[dict]:
    from lynx.monitor.report import read_events

    return read_events(path) if path.exists() else []


def rates(rows, records, vanilla) -> dict:
    """Premature exits (the exit turned a right full-CoT answer wrong, by gold) and answer changes
    (vs the same seed's full CoT, :func:`lynx.evaluate.table.changed_answers`) of ``rows``."""
    from types import SimpleNamespace

    from lynx.evaluate.table import changed_answers
    from lynx.grading import grader_for

    grade = grader_for("integer")
    n = len(rows)
    if not n:
        return {"n": 0}
    prem = sum(bool(r["exited"] and grade(vanilla[r["i"]]["answer"], records[r["i"]].answer) and not grade(r["answer"], records[r["i"]].answer)) for r in rows)
    changed = changed_answers([SimpleNamespace(answer=r["answer"]) for r in rows], [SimpleNamespace(answer=vanilla[r["i"]]["answer"]) for r in rows], [grade] * n)
    saved = sum(vanilla[r["i"]]["tokens"] - r["tokens"] for r in rows)
    return {
        "n": n,
        "premature": prem / n,
        "answer_change": float(changed.mean()),
        "exit_rate": float(np.mean([r["exited"] for r in rows])),
        "saving": saved / max(1, sum(vanilla[r["i"]]["tokens"] for r in rows)),
        "se_at_0.1": math.sqrt(0.1 * 0.9 / n),
    }


def cost(rows, vanilla, audit_events) -> dict:
    labels = [e for e in audit_events if e.get("event") == "audit_label"]
    extra = sum(e["extra_tokens"] for e in labels)
    stream = sum(r["tokens"] for r in rows)
    # the saving the audited requests gave up: they ran to the end instead of exiting at the first cue clearing their threshold
    thr = {r["tag"]: r["threshold"] for r in rows}
    lost = 0
    for e in labels:
        t = thr.get(e["tag"])
        if t is None:
            continue
        hit = next((pos for pos, score, _ in e["cues"] if score >= t), None)
        if hit is not None:
            lost += e["thinking_tokens"] - hit
    saving = sum(vanilla[r["i"]]["tokens"] - r["tokens"] for r in rows)
    return {
        "audited_requests": sum(r["audited"] for r in rows),
        "forced_exit_tokens": extra,
        "stream_tokens": stream,
        "forced_exit_share": extra / stream,
        "saving_lost_tokens": lost,
        "saving_lost_share_of_stream": lost / stream,
        "saving_tokens": saving,
        "saving_lost_share_of_saving": lost / max(1, saving + lost),
    }


def replays(args, live_events_by_segment, policy_folder) -> dict:
    """Offline replays: recorded live events in random orders, and calibration half-splits."""
    import types

    from lynx.calibrate.conditions import load_calibrations
    from lynx.calibrate.store import Calibration
    from lynx.monitor.live import LiveMonitor
    from lynx.monitor.replay import replay, trace_events

    cals = load_calibrations(policy_folder)
    c06 = cals["T0.6"]
    cfg = {"audit_fraction": args.audit_fraction, "alphas": [args.alpha], "response": "warn", "test_level": args.test_level}
    rng = np.random.default_rng(0)
    out = {}
    # (a) the live T0.6 segment (requests + their labelled audits), reordered: unshifted traffic
    for seg, events in live_events_by_segment.items():
        units = _units(events)
        alarms = {"risk": [], "drift": []}
        for r in range(args.replays):
            m = LiveMonitor(types.SimpleNamespace(calibrations={"T0.6": c06}), cfg | {"seed": r})
            stream = [e for k in rng.permutation(len(units)) for e in units[k]]
            res = replay(m, stream)["first_alarm"].get(seg, {})
            for kind in alarms:
                alarms[kind].append(res.get(kind, math.inf))
        out[f"live {seg} reordered"] = {kind: _delays(v, len(units)) for kind, v in alarms.items()} | {"replays": args.replays, "requests": len(units)}
        if seg == "T1":  # how long the risk bound needs at this shift: the recorded requests resampled to a longer stream
            long, risk = 5 * len(units), []  # (resampling repeats requests, which only the risk test tolerates: drift is not reported)
            for r in range(args.replays):
                m = LiveMonitor(types.SimpleNamespace(calibrations={"T0.6": c06}), cfg | {"seed": r})
                stream = [e | {"tag": f"{e.get('tag')}#{j}"} for j, k in enumerate(rng.integers(0, len(units), long)) for e in units[k]]
                risk.append(replay(m, stream)["first_alarm"].get(seg, {}).get("risk", math.inf))
            out[f"live {seg} resampled x5 (risk only)"] = {"risk": _delays(risk, long), "replays": args.replays, "requests": long}
    # (b) the probe's own T0.6 calibration traces: half the reference, the other half the stream
    t = c06.traces
    alarms = {"risk": [], "drift": []}
    for r in range(args.replays):
        perm = rng.permutation(t.n_traces)
        ref, live = perm[: t.n_traces // 2], perm[t.n_traces // 2 :]
        m = LiveMonitor(types.SimpleNamespace(calibrations={"T0.6": Calibration(t.take(ref), dict(c06.meta))}), cfg | {"seed": r})
        res = replay(m, trace_events(t.take(live), rng.permutation(len(live)), group="T0.6", condition="T0.6", temperature=0.6, audit_fraction=args.audit_fraction, seed=r))[
            "first_alarm"
        ].get("T0.6", {})
        for kind in alarms:
            alarms[kind].append(res.get(kind, math.inf))
    out["calibration half-splits (T0.6)"] = {kind: _delays(v, len(live)) for kind, v in alarms.items()} | {"replays": args.replays, "requests": int(len(live))}
    return out


def _units(events) -> list[list[dict]]:
    """Group recorded events per request (its ``request`` event and its ``audit_label``, if any)."""
    by_tag: dict[str, list[dict]] = {}
    for e in events:
        by_tag.setdefault(e.get("tag"), []).append(e)
    return [sorted(v, key=lambda e: e["event"] != "request") for v in by_tag.values()]


def _delays(values, n) -> dict:
    v = np.asarray(values, float)
    hit = np.isfinite(v)
    return {
        "alarm_rate": float(hit.mean()),
        "median_delay": float(np.median(v[hit])) if hit.any() else None,
        "p90_delay": float(np.quantile(v[hit], 0.9)) if hit.any() else None,
        "stream_length": n,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--probe", default="probes/organism")
    ap.add_argument("--n", type=int, default=600, help="requests per segment (T = 0.6, then T = 1.0)")
    ap.add_argument("--n-shifted", type=int, default=None, help="requests at T = 1.0 (default: --n)")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--audit-fraction", type=float, default=0.1)
    ap.add_argument("--test-level", type=float, default=0.05)
    ap.add_argument("--min-audits", type=int, default=40)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--responses", default="warn,conservative,recalibrate")
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--out", default="runs/shift-monitor")
    ap.add_argument("--replays-only", action="store_true", help="only the offline replays, from an earlier run's warn/audit.jsonl")
    args = ap.parse_args()
    if args.replays_only:
        audit = Path(args.out) / "warn" / "audit.jsonl"
        seg = {g: [e for e in _read(audit) if e.get("group") == g and e.get("event") in ("request", "audit_label")] for g in ("T0.6", "T1")}
        rep = replays(args, seg, Path(args.out) / "warn" / "probe")
        res = json.loads((Path(args.out) / "shift_monitor.json").read_text())
        res["replays"] = rep
        (Path(args.out) / "shift_monitor.json").write_text(json.dumps(res, indent=1, default=str))
        report({"replays": rep})
        return

    from lynx.datasets import load

    Path(args.out).mkdir(parents=True, exist_ok=True)
    records = load(f"organism:test:{args.n + (args.n_shifted or args.n)}", seed=args.seed)
    vanilla, results = None, {}
    t_all = time.monotonic()
    for response in args.responses.split(","):
        t0 = time.monotonic()
        rows, vanilla, mev, state, audit = run_stream(args, response, records, vanilla)
        shifted = [r for r in rows if r["temperature"] == 1.0]
        calm = [r for r in rows if r["temperature"] == 0.6]
        groups = state["groups"]
        first = {g: groups[g]["first_alarm"] for g in groups}
        resp = next((e for e in mev if e.get("event") == "response" and e.get("group") == "T1"), None)
        alarm = next((e for e in mev if e.get("event") == "alarm" and e.get("group") == "T1"), None)
        # requests sent after the response started (the monitor acts between batches)
        n_before = resp["request"] if resp else None
        after = shifted[_batch_ceil(n_before, args.batch) :] if resp is not None else []
        if response == "warn" and alarm is not None:  # no response: the same requests, served as calibrated
            after = shifted[_batch_ceil(alarm["request"], args.batch) :]
        results[response] = {
            "seconds": round(time.monotonic() - t0, 1),
            "first_alarm": first,
            "events": [e for e in mev if e.get("event") in ("alarm", "response", "cleared", "recalibrated")],
            "T0.6 segment": rates(calm, records, vanilla),
            "T1 segment": rates(shifted, records, vanilla),
            "T1 after the alarm / response": rates(after, records, vanilla),
            "T1 after the recalibration": rates(_after_event(shifted, mev, "recalibrated", args.batch), records, vanilla),
            "cost": cost(rows, vanilla, mev),
            "audit_file": str(audit),
        }
        if response == "warn":
            from lynx.monitor.report import plot

            plot(_read(audit), Path(args.out) / "shift_monitor_warn.png")
            seg = {
                "T0.6": [e for e in _read(audit) if e.get("group") == "T0.6" and e.get("event") in ("request", "audit_label")],
                "T1": [e for e in _read(audit) if e.get("group") == "T1" and e.get("event") in ("request", "audit_label")],
            }
            results["replays"] = replays(args, seg, Path(args.out) / "warn" / "probe")
        elif response == "recalibrate":
            from lynx.monitor.report import plot

            plot(_read(audit), Path(args.out) / "shift_monitor_recalibrate.png")
    results["seconds"] = round(time.monotonic() - t_all, 1)
    results["command"] = "python benchmarks/shift_monitor.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items())
    (Path(args.out) / "shift_monitor.json").write_text(json.dumps(results, indent=1, default=str))
    report(results)


def _after_event(shifted, events, kind, batch):
    e = next((e for e in events if e.get("event") == kind and e.get("group") == "T1"), None)
    return [] if e is None else shifted[_batch_ceil(e["request"], batch) :]


def _batch_ceil(n: int, batch: int) -> int:
    return int(math.ceil(n / batch) * batch)


def report(results: dict) -> None:
    print("\nresponse      segment                          n   premature  answer-change  exit-rate  saving")
    for response, r in results.items():
        if not isinstance(r, dict) or "T1 segment" not in r:
            continue
        for seg in ("T0.6 segment", "T1 segment", "T1 after the alarm / response", "T1 after the recalibration"):
            x = r[seg]
            if x.get("n"):
                print(f"{response:13s} {seg:31s} {x['n']:4d}   {x['premature']:.3f}      {x['answer_change']:.3f}          {x['exit_rate']:.3f}      {x['saving']:.1%}")
        print(
            f"{'':13s} first alarms: {r['first_alarm']}   cost: forced exits {r['cost']['forced_exit_share']:.1%} of stream tokens, "
            f"saving given up by audits {r['cost']['saving_lost_share_of_saving']:.1%} of the saving"
        )
    for name, rep in results.get("replays", {}).items():
        print(f"replays  {name}: risk {rep['risk']}  drift {rep.get('drift', '-')}  ({rep['replays']} replays of {rep['requests']} requests)")


if __name__ == "__main__":
    main()
