"""Which architectures lynx's vLLM hook wraps: decided from vLLM's registry at run time, each
refusal one line that says why.

The verdicts are computed in a subprocess: deciding imports vLLM's model modules, and importing
all of them (as the registry-wide check does) leaves custom-op state behind that breaks a later
in-process engine in the same worker ("'_lib_fn_wrapper' object has no attribute 'get'")."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

pytestmark = pytest.mark.vllm

SUPPORTED = [
    "Qwen3ForCausalLM",
    "Qwen2ForCausalLM",
    "LlamaForCausalLM",
    "MistralForCausalLM",
    "Qwen3MoeForCausalLM",
    "GptOssForCausalLM",
    "DeepseekV3ForCausalLM",
    "GraniteForCausalLM",
]
REFUSED = {
    "GemmaForCausalLM": "does not expose auxiliary hidden states",
    "MixtralForCausalLM": "does not expose auxiliary hidden states",
    "Eagle3LlamaForCausalLM": "speculative-decoding draft model",
    "BertModel": "pooling model",
    "NoSuchForCausalLM": "has no model class",
}

_SCRIPT = """
import json, sys
from lynx.engines.vllm_plugin import wrapper_name
from lynx.engines.vllm_plugin.support import UnsupportedArchitecture, hook_support
out = {}
for arch in sys.argv[1:]:
    v = hook_support(arch)
    try:
        message = wrapper_name(arch)
    except UnsupportedArchitecture as e:
        message = "refused: " + str(e)
    try:
        from lynx.engines.vllm_plugin import model
        getattr(model, "Lynx" + arch)
        built = "built"
    except UnsupportedArchitecture as e:
        built = "refused: " + str(e)
    out[arch] = {"supported": v.supported, "reason": v.reason, "moe": v.moe, "vllm_class": v.vllm_class, "wrapper": message, "class": built}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def verdicts():
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, *SUPPORTED, *REFUSED], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("arch", SUPPORTED)
def test_reasoning_families_are_supported(verdicts, arch):
    v = verdicts[arch]
    assert v["supported"] and v["vllm_class"].startswith("vllm.model_executor.models.")
    assert v["wrapper"] == f"Lynx{arch}" and v["class"] == "built"


@pytest.mark.parametrize("arch", sorted(REFUSED))
def test_unsupported_architectures_are_one_line_with_the_reason(verdicts, arch):
    v, why = verdicts[arch], REFUSED[arch]
    assert not v["supported"] and why in v["reason"]
    for message in (v["wrapper"], v["class"]):  # lynx's own start-up, and the wrapper class vLLM would build
        assert message.startswith("refused: ") and why in message and arch in message and "\n" not in message


def test_moe_is_told_apart(verdicts):
    assert verdicts["Qwen3MoeForCausalLM"]["moe"] and verdicts["DeepseekV3ForCausalLM"]["moe"] and verdicts["GptOssForCausalLM"]["moe"]
    assert not verdicts["LlamaForCausalLM"]["moe"]


@pytest.mark.slow  # imports every model module of vLLM (~10 s)
def test_every_supported_architecture_gets_a_wrapper_name_registered():
    script = """
import json
from vllm import ModelRegistry
from lynx.engines.vllm_plugin import register
from lynx.engines.vllm_plugin.support import all_architectures
register()
names = set(ModelRegistry.get_supported_archs())
supported = [v.architecture for v in all_architectures() if v.supported]
register()
print(json.dumps({"supported": supported, "missing": [a for a in supported if "Lynx" + a not in names],
                  "double": [n for n in names if n.startswith("LynxLynx")], "idempotent": set(ModelRegistry.get_supported_archs()) == names}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(r["supported"]) >= 40  # about 70 in vLLM 0.32: the hook is no longer a hand list of three
    assert r["missing"] == [] and r["double"] == [] and r["idempotent"]


@pytest.mark.slow
def test_lynx_run_on_an_unsupported_architecture_is_one_clear_line(tmp_path):
    """A tiny Gemma (vLLM's Gemma class has no auxiliary hidden states): `lynx run --engine vllm`
    ends with one line naming the reason and status 2, before vLLM starts."""
    from lynx.conformance.tiny_models import build_tiny

    folder = build_tiny("gemma", tmp_path / "gemma")
    r = subprocess.run(
        [sys.executable, "-m", "lynx.cli", "run", "--model", str(folder), "--engine", "vllm", "--prompt", "Compute 1 + 2."], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert "GemmaForCausalLM" in lines[-1] and "SupportsEagle3" in lines[-1]
    assert "Traceback" not in r.stderr
