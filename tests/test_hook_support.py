"""Which architectures lynx's vLLM hook wraps: decided from vLLM's registry at run time, each
refusal one line that says why; the docs' table is what the registry and the tests say."""

import subprocess
import sys

import pytest

pytest.importorskip("vllm")

from lynx.engines.vllm_plugin import register, wrapper_name  # noqa: E402
from lynx.engines.vllm_plugin.support import UnsupportedArchitecture, all_architectures, hook_support  # noqa: E402

pytestmark = pytest.mark.vllm


@pytest.mark.parametrize(
    "arch",
    ["Qwen3ForCausalLM", "Qwen2ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM", "Qwen3MoeForCausalLM", "GptOssForCausalLM", "DeepseekV3ForCausalLM", "GraniteForCausalLM"],
)
def test_reasoning_families_are_supported(arch):
    v = hook_support(arch)
    assert v.supported and v.vllm_class.endswith(":" + v.vllm_class.rsplit(":", 1)[-1])
    assert wrapper_name(arch) == f"Lynx{arch}"


@pytest.mark.parametrize(
    ("arch", "why"),
    [
        ("GemmaForCausalLM", "does not expose auxiliary hidden states"),
        ("MixtralForCausalLM", "does not expose auxiliary hidden states"),
        ("Eagle3LlamaForCausalLM", "speculative-decoding draft model"),
        ("BertModel", "pooling model"),
        ("NoSuchForCausalLM", "has no model class"),
    ],
)
def test_unsupported_architectures_are_one_line_with_the_reason(arch, why):
    v = hook_support(arch)
    assert not v.supported and why in v.reason
    with pytest.raises(UnsupportedArchitecture, match=why) as e:
        wrapper_name(arch)
    assert "\n" not in str(e.value) and arch in str(e.value)


def test_moe_is_told_apart():
    assert hook_support("Qwen3MoeForCausalLM").moe and hook_support("DeepseekV3ForCausalLM").moe
    assert not hook_support("LlamaForCausalLM").moe


@pytest.mark.slow  # imports every model module of vLLM (~10 s)
def test_every_supported_architecture_gets_a_wrapper_name_registered():
    from vllm import ModelRegistry

    register()
    names = set(ModelRegistry.get_supported_archs())
    supported = [v.architecture for v in all_architectures() if v.supported]
    assert len(supported) >= 40  # about 70 in vLLM 0.32: the hook is no longer a hand list of three
    assert all(f"Lynx{a}" in names for a in supported)
    assert not any(n.startswith("LynxLynx") for n in names)
    register()  # idempotent
    assert set(ModelRegistry.get_supported_archs()) == names


def test_the_wrapper_class_refuses_an_unsupported_base():
    from lynx.engines.vllm_plugin import model

    with pytest.raises(UnsupportedArchitecture, match="GemmaForCausalLM"):
        model.LynxGemmaForCausalLM  # noqa: B018


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
