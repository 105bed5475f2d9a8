#!/usr/bin/env bash
# The promise under a temperature shift, before and after label-free recalibration, and the price of
# no gold — on the shipped organism probe (calibrations/T0.6 with gold labels; calibrations/T1 made by
#   lynx recalibrate --probe probes/organism --prompts runs/cal-unlabeled-1000.jsonl --temperature 1.0 --engine vllm
# from 1000 organism calibration prompts without answers). Usage: bash benchmarks/recalibration.sh [N_TEST]
set -euo pipefail
N=${1:-500}
OUT=runs/recalibration
mkdir -p $OUT
# 1. T = 1.0 requests get the T1 (agreement, answer-change) calibration
lynx eval --probe probes/organism --dataset organism:test --n-problems $N --temperature 1.0 --alphas 0.05,0.1,0.2 \
  --baselines vanilla --engine vllm --out $OUT/T1-agreement --json > $OUT/T1-agreement.json
# 2. the same requests with only the T = 0.6 calibration: the flagged conservative fallback (= the old reuse)
rm -rf $OUT/probe-T0.6-only && cp -r probes/organism $OUT/probe-T0.6-only && rm -rf $OUT/probe-T0.6-only/calibrations/T1
lynx eval --probe $OUT/probe-T0.6-only --dataset organism:test --n-problems $N --temperature 1.0 --alphas 0.05,0.1,0.2 \
  --baselines vanilla --engine vllm --out $OUT/T1-fallback --json > $OUT/T1-fallback.json
# 3. T = 0.6 requests: the same rows with and without the T1 condition in the folder
for P in probes/organism $OUT/probe-T0.6-only; do
  lynx eval --probe $P --dataset organism:test --n-problems $N --temperature 0.6 --alphas 0.05,0.1,0.2 \
    --baselines vanilla --engine vllm --out $OUT/T0.6-$(basename $P) --json > $OUT/T0.6-$(basename $P).json
done
# 4. the price of no gold: the same 1000 problems with their answers (same seeds: the same rollouts),
#    calibrated for premature exits with gold labels, as the T1 condition of a copy of the probe
lynx collect --model organism --dataset organism:calibration:1000 --temperature 1.0 --engine vllm --out $OUT/collect-T1-gold --json \
  > $OUT/collect-T1-gold.json
rm -rf $OUT/probe-T1-gold && cp -r probes/organism $OUT/probe-T1-gold
lynx calibrate --probe $OUT/probe-T1-gold --data $OUT/collect-T1-gold --risk premature --json > $OUT/calibrate-T1-gold.json
lynx eval --probe $OUT/probe-T1-gold --dataset organism:test --n-problems $N --temperature 1.0 --alphas 0.05,0.1,0.2 \
  --baselines vanilla --engine vllm --out $OUT/T1-gold --json > $OUT/T1-gold.json
python - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
print(f"{'run':26s} {'alpha':>5s} {'acc':>6s} {'saving':>7s} {'premature':>9s} {'changed':>8s}  condition")
for name in ("T1-fallback", "T1-agreement", "T1-gold", "T0.6-organism", "T0.6-probe-T0.6-only"):
    for r in json.load(open(f"{out}/{name}.json")):
        if r["method"] == "lynx":
            print(f"{name:26s} {r['alpha']:5.2f} {r['accuracy']:6.3f} {r['saving']:7.1%} {r['premature_exit_rate']:9.3f} "
                  f"{r['answer_change_rate']:8.3f}  {r['condition']} ({r['calibration_labels']})")
PY
