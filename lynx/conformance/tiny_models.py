"""Tiny random-weight models, one per architecture family, built locally from transformers' config classes.

Why: lynx hooks vLLM through each model class's EAGLE-3 auxiliary-hidden-state support
(``SupportsEagle3.set_aux_hidden_state_layers``), and that support is written family by family.
A conformance test needs each family as a real model folder, loadable by transformers
(``AutoModelForCausalLM.from_pretrained``) and by vLLM (``vllm.LLM(model=folder)``), without a
download and cheap enough for CI: 4 layers, hidden size 128, heads of 64 (vLLM's CPU attention
needs a supported head size: 64 is one), 2 query heads and 1 key/value head, MoE families with 4
experts of 64 (top 2); 1-6 MB of float32 weights, built in ~0.2 s, loaded by transformers in
~0.3 s. (vLLM's start-up, 15-25 s on 2 free cores, is its processes and imports, not the model:
loading the weights takes ~0.01 s of it.)

Every model shares lynx's organism tokenizer (byte-level BPE with ``<think>``/``</think>`` and a
Qwen3-style chat template, shipped in the package), so the same prompt ids drive every family.

Weights are drawn with ``initializer_range`` 0.1 (the families' own 0.02 gives logits so flat that
greedy decoding repeats one token, and top-2 margins of ~1e-3; 0.1 gives varied greedy outputs
with margins ~1e-2, far above the ~1e-5 float32 differences between transformers and vLLM).

Each :class:`FamilySpec` records what a survey found in vLLM 0.32's CPU build: whether vLLM's class
implements ``SupportsEagle3`` (``eagle3``), whether it runs and matches transformers
(``vllm_cpu``, ``vllm_cpu_exact``), and what ``vllm.LLM`` needs besides (``vllm_cpu_kwargs``). A
conformance test picks its families with them, e.g. ``[f for f, s in FAMILIES.items() if s.eagle3 and s.vllm_cpu]``.

``python -m lynx.conformance.tiny_models FAMILY OUT`` writes one model folder (for runs on a GPU
machine, say).
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lynx.errors import InvalidInput

HIDDEN = 128
LAYERS = 4
HEADS = 2
KV_HEADS = 1
HEAD_DIM = 64
INTERMEDIATE = 256
EXPERTS = 4
TOP_K = 2
EXPERT_INTERMEDIATE = 64
MAX_POSITIONS = 512
INIT_STD = 0.1
#: the sliding window of the families that have one: smaller than ``MAX_POSITIONS``, so a long
#: enough prompt really slides
WINDOW = 128
#: Gemma's embedding std (x sqrt(128) = 0.23 in the residual stream; see :attr:`FamilySpec.embedding_std`)
GEMMA_EMBEDDING_STD = 0.02
#: the organism's tokenizer files copied into every tiny model
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")

#: overrides every family gets (a family's own overrides win)
COMMON: Mapping[str, Any] = MappingProxyType(
    {
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "intermediate_size": INTERMEDIATE,
        "max_position_embeddings": MAX_POSITIONS,
        "initializer_range": INIT_STD,
    }
)


@dataclass(frozen=True)
class FamilySpec:
    """One architecture family: the transformers config (by ``model_type``), the architecture
    name written to config.json (what vLLM's registry looks up) and the config overrides on top
    of :data:`COMMON`; plus what the survey found about it in vLLM 0.32."""

    model_type: str
    architecture: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    moe: bool = False
    #: some layers attend within a window (:data:`WINDOW` tokens)
    sliding_window: bool = False
    #: hybrid: some layers are linear attention / state-space, not softmax attention
    hybrid: bool = False
    #: vLLM's class for it implements ``SupportsEagle3`` (lynx's hook can attach)
    eagle3: bool = True
    #: vLLM's CPU build (0.32: eager, no chunked prefill, float32 unless ``vllm_cpu_kwargs`` says
    #: otherwise) runs vLLM's class for it and computes the same model as transformers (False: see ``note``)
    vllm_cpu: bool = True
    #: ... to float32 rounding: on the survey's prompt, the same 16 greedy tokens as transformers and
    #: log-probs within ~1e-5 (False: a CPU kernel approximates, or bf16 only; ``note`` says by how much)
    vllm_cpu_exact: bool = True
    #: what ``vllm.LLM`` needs on CPU besides the usual (eager, no chunked prefill, max_model_len 512)
    vllm_cpu_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: the embedding matrix redrawn with this std (None: the config's ``initializer_range``): for
    #: families that scale their embeddings up (Gemma by sqrt(hidden)) and tie them to the output
    #: layer, where a 0.1 embedding dominates the residual stream and a random model repeats its
    #: last token forever
    embedding_std: float | None = None
    note: str = ""
    #: the thinking format of the family's tokenizer (lynx.thinking): ``think`` (the organism's
    #: tokenizer as it is) or ``harmony`` (gpt-oss's: harmony's special tokens and chat template added)
    thinking: str = "think"

    def config_kwargs(self) -> dict[str, Any]:
        return {**COMMON, **self.overrides}


def _moe(**kw: Any) -> dict[str, Any]:
    return {"num_experts_per_tok": TOP_K, **kw}


_SLIDING, _FULL = "sliding_attention", "full_attention"
_LAST_FULL = [_SLIDING] * (LAYERS - 1) + [_FULL]
_TRANSFORMERS_BACKEND = "vLLM has no class of its own: it runs it through its Transformers backend (TransformersForCausalLM, which implements SupportsEagle3)"
_HYBRID_CPU = MappingProxyType({"enable_prefix_caching": False})  # else: "Chunked prefill is required for mamba cache mode 'align'"

FAMILIES: Mapping[str, FamilySpec] = MappingProxyType(
    {
        "llama": FamilySpec("llama", "LlamaForCausalLM", {"head_dim": HEAD_DIM, "tie_word_embeddings": False}),
        "mistral": FamilySpec("mistral", "MistralForCausalLM", {"head_dim": HEAD_DIM, "sliding_window": None, "tie_word_embeddings": False}),
        "qwen2": FamilySpec(
            "qwen2",
            "Qwen2ForCausalLM",
            {"tie_word_embeddings": False},  # head_dim = hidden / heads = 64
            note=(
                "transformers loads its tokenizer as Qwen2Tokenizer (its model type overrides tokenizer_config.json), "
                "which splits digits one by one: the same text gives other ids than in the other families"
            ),
        ),
        "qwen3": FamilySpec("qwen3", "Qwen3ForCausalLM", {"head_dim": HEAD_DIM, "tie_word_embeddings": True}),
        "qwen3_moe": FamilySpec(
            "qwen3_moe",
            "Qwen3MoeForCausalLM",
            _moe(head_dim=HEAD_DIM, num_experts=EXPERTS, moe_intermediate_size=EXPERT_INTERMEDIATE, norm_topk_prob=True, tie_word_embeddings=False),
            moe=True,
        ),
        "gpt_oss": FamilySpec(
            "gpt_oss",
            "GptOssForCausalLM",
            # unquantised (no MXFP4 quantization_config), attention sinks and yarn RoPE as released
            _moe(
                head_dim=HEAD_DIM,
                num_local_experts=EXPERTS,
                intermediate_size=EXPERT_INTERMEDIATE,
                sliding_window=WINDOW,
                layer_types=[_SLIDING, _FULL] * (LAYERS // 2),
                tie_word_embeddings=False,
            ),
            moe=True,
            sliding_window=True,
            thinking="harmony",  # gpt-oss thinks in harmony's analysis channel
        ),
        "deepseek_v3": FamilySpec(
            "deepseek_v3",
            "DeepseekV3ForCausalLM",
            _moe(
                num_key_value_heads=HEADS,
                q_lora_rank=64,
                kv_lora_rank=512,  # vLLM's CPU MLA backend supports a 512 + 64 latent only
                qk_rope_head_dim=64,
                qk_nope_head_dim=64,
                v_head_dim=64,
                n_routed_experts=EXPERTS,
                n_shared_experts=1,
                moe_intermediate_size=EXPERT_INTERMEDIATE,
                n_group=1,
                topk_group=1,
                first_k_dense_replace=1,
                # the released checkpoints' routing fields, which vLLM reads (transformers always routes so)
                topk_method="noaux_tc",
                scoring_func="sigmoid",
                tie_word_embeddings=False,
            ),
            moe=True,
            vllm_cpu=False,
            vllm_cpu_exact=False,
            note=(
                "vLLM CPU: runs, but the CPU rotary kernel (ops.rotary_embedding) rotates a 3-D [tokens, heads, dim] query wrongly past head 0 "
                "and a strided key view wrongly past position 0, and MLA hands it both (q_pe, k_pe): log-probs off by ~1 from the 3rd token. "
                "With LLM(..., model_impl='transformers') (TransformersMoEForCausalLM) it matches transformers exactly"
            ),
        ),
        "granite": FamilySpec(
            "granite",
            "GraniteForCausalLM",
            # Granite 3's multipliers (attention's scaled to head size 64), so that their handling is exercised;
            # untied (Granite 3 ties): tied, the x12 embedding dominates the residual stream and a random
            # model repeats its last token forever
            {"embedding_multiplier": 12.0, "residual_multiplier": 0.22, "attention_multiplier": 1 / HEAD_DIM, "logits_scaling": 8.0, "tie_word_embeddings": False},
        ),
        "gemma": FamilySpec("gemma", "GemmaForCausalLM", {"head_dim": HEAD_DIM, "tie_word_embeddings": True}, eagle3=False, embedding_std=GEMMA_EMBEDDING_STD),
        "gemma2": FamilySpec(
            "gemma2",
            "Gemma2ForCausalLM",
            # with the released soft-caps (attention 50, final 30)
            {"head_dim": HEAD_DIM, "query_pre_attn_scalar": HEAD_DIM, "sliding_window": WINDOW, "tie_word_embeddings": True},
            sliding_window=True,
            eagle3=False,
            vllm_cpu_exact=False,
            embedding_std=GEMMA_EMBEDDING_STD,
            note=(
                "vLLM CPU: the CPU attention kernel's logit soft-capping is approximate: log-probs off by ~6e-4 (1e-6 without soft-capping), "
                "and greedy tokens part at a 9e-5 near-tie (the 10th of 16)"
            ),
        ),
        "gemma3": FamilySpec(
            "gemma3_text",
            "Gemma3ForCausalLM",
            {"head_dim": HEAD_DIM, "query_pre_attn_scalar": HEAD_DIM, "sliding_window": WINDOW, "layer_types": _LAST_FULL, "tie_word_embeddings": True},
            sliding_window=True,
            eagle3=False,
            embedding_std=GEMMA_EMBEDDING_STD,
        ),
        "gemma4": FamilySpec(
            "gemma4_text",
            "Gemma4ForCausalLM",
            # global layers' heads of 128 (512 released), no per-layer input embeddings (as the larger models)
            {
                "head_dim": HEAD_DIM,
                "global_head_dim": 2 * HEAD_DIM,
                "sliding_window": WINDOW,
                "layer_types": _LAST_FULL,
                "hidden_size_per_layer_input": 0,
                "tie_word_embeddings": True,
            },
            sliding_window=True,
            embedding_std=GEMMA_EMBEDDING_STD,
        ),
        "phi3": FamilySpec("phi3", "Phi3ForCausalLM", {"original_max_position_embeddings": MAX_POSITIONS, "tie_word_embeddings": False}),
        "apertus": FamilySpec(
            "apertus",
            "ApertusForCausalLM",
            {"tie_word_embeddings": False},
            vllm_cpu_exact=False,
            note="vLLM: its XIELU activation keeps alpha_p/alpha_n in bfloat16 whatever the model's dtype: log-probs off by ~1.4e-3 in float32, the same 16 greedy tokens",
        ),
        "ernie4_5": FamilySpec("ernie4_5", "Ernie4_5ForCausalLM", {"head_dim": HEAD_DIM, "tie_word_embeddings": True}),
        "minimax_m2": FamilySpec(
            "minimax_m2",
            "MiniMaxM2ForCausalLM",
            # rotary_dim / scoring_func / use_routing_bias: the released checkpoints' fields, which vLLM reads
            _moe(
                head_dim=HEAD_DIM,
                num_local_experts=EXPERTS,
                intermediate_size=EXPERT_INTERMEDIATE,
                rotary_dim=HEAD_DIM // 2,
                scoring_func="sigmoid",
                use_routing_bias=True,
                tie_word_embeddings=False,
            ),
            moe=True,
            vllm_cpu=False,
            vllm_cpu_exact=False,
            note=(
                "vLLM CPU: the CPU MoE router routes by softmax only (cpu_router.py: assert self.scoring_func == 'softmax'); "
                "MiniMax-M2 routes by sigmoid with a bias, natively and with model_impl='transformers'"
            ),
        ),
        "qwen3_next": FamilySpec(
            "qwen3_next",
            "Qwen3NextForCausalLM",
            _moe(
                head_dim=HEAD_DIM,
                layer_types=["linear_attention"] * (LAYERS - 1) + [_FULL],
                linear_num_key_heads=1,
                linear_num_value_heads=2,
                linear_key_head_dim=64,  # the CPU gated-delta-rule kernel refuses 32 ("Unexpected head dim size")
                linear_value_head_dim=64,
                num_experts=EXPERTS,
                moe_intermediate_size=EXPERT_INTERMEDIATE,
                shared_expert_intermediate_size=EXPERT_INTERMEDIATE,
                tie_word_embeddings=False,
            ),
            moe=True,
            hybrid=True,
            vllm_cpu_exact=False,
            vllm_cpu_kwargs=MappingProxyType({**_HYBRID_CPU, "dtype": "bfloat16"}),
            note="vLLM CPU: bfloat16 only ('CPU GDN attention requires BF16'): log-probs off by ~0.07 from transformers' float32, the same 16 greedy tokens",
        ),
        "nemotron_h": FamilySpec(
            "nemotron_h",
            "NemotronHForCausalLM",
            {
                "head_dim": HEAD_DIM,
                "layers_block_type": ["linear_attention", "mlp", _FULL, "mlp"],  # Mamba-2, MLP, attention, MLP
                "mamba_num_heads": 4,
                "mamba_head_dim": 32,
                "n_groups": 1,
                "ssm_state_size": 16,
                "chunk_size": 64,
                "tie_word_embeddings": False,
            },
            hybrid=True,
            vllm_cpu_exact=False,
            vllm_cpu_kwargs=_HYBRID_CPU,
            note="vLLM CPU: log-probs off by ~2e-4 (its Mamba-2 kernels against transformers' reference scan), the same 16 greedy tokens",
        ),
        "olmo3": FamilySpec(
            "olmo3",
            "Olmo3ForCausalLM",
            {"sliding_window": WINDOW, "layer_types": _LAST_FULL, "tie_word_embeddings": False},
            sliding_window=True,
            note=_TRANSFORMERS_BACKEND,
        ),
        "smollm3": FamilySpec("smollm3", "SmolLM3ForCausalLM", {"no_rope_layer_interval": 4, "tie_word_embeddings": True}, note=_TRANSFORMERS_BACKEND),
        "seed_oss": FamilySpec(
            "seed_oss",
            "SeedOssForCausalLM",
            {"head_dim": HEAD_DIM, "attention_dropout": 0.0, "residual_dropout": 0.0, "tie_word_embeddings": False},
            note=_TRANSFORMERS_BACKEND,
        ),
    }
)


def known_families() -> list[str]:
    return sorted(FAMILIES)


def _spec(family: str) -> FamilySpec:
    try:
        return FAMILIES[family]
    except KeyError:
        raise InvalidInput(f"unknown model family {family!r}; known: {', '.join(known_families())}") from None


#: harmony's special tokens (gpt-oss), added to the organism's tokenizer for the ``harmony`` families
HARMONY_SPECIALS = ("<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>")
#: the shape of gpt-oss's chat template (its own needs a download): messages as ``<|start|>role<|message|>…<|end|>``,
#: the assistant's past turns in the final channel, a generation prompt of ``<|start|>assistant``; the model
#: then writes ``<|channel|>analysis<|message|>`` (its thinking), ``<|end|>``, and its final channel
HARMONY_TEMPLATE = (
    "{%- for message in messages %}<|start|>{{ message['role'] }}"
    "{%- if message['role'] == 'assistant' %}<|channel|>final{%- endif %}<|message|>{{ message['content'] }}<|end|>{%- endfor %}"
    "{%- if add_generation_prompt %}<|start|>assistant{%- endif %}"
)


def tiny_tokenizer(family: str):
    """The tokenizer of ``family``'s tiny model: the organism's, with harmony's tokens and chat
    template for the ``harmony`` families (end of turn ``<|return|>``)."""
    from transformers import AutoTokenizer

    from lynx.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("organism").path)
    if _spec(family).thinking == "harmony":
        tok.add_special_tokens({"additional_special_tokens": list(HARMONY_SPECIALS)})
        tok.chat_template = HARMONY_TEMPLATE
        tok.eos_token = "<|return|>"
    return tok


def conformance_families() -> list[str]:
    """The families lynx's hook is checked on with vLLM's CPU build (tests/test_conformance.py):
    the hook attaches (``eagle3``) and vLLM computes transformers' model to float32 rounding
    (``vllm_cpu_exact``), so hidden states and exits can be compared exactly."""
    return sorted(f for f, s in FAMILIES.items() if s.eagle3 and s.vllm_cpu and s.vllm_cpu_exact)


def tiny_config(family: str):
    """The transformers config of ``family``'s tiny model (vocabulary and special tokens from
    the organism tokenizer)."""
    from transformers import AutoConfig

    spec = _spec(family)
    tok = tiny_tokenizer(family)
    im_start = tok.convert_tokens_to_ids("<|im_start|>")
    config = AutoConfig.for_model(
        spec.model_type,
        **spec.config_kwargs(),
        vocab_size=len(tok),
        # the tokenizer has no BOS token; the organism's config names <|im_start|>, as here
        bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else im_start,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        architectures=[spec.architecture],
    )
    return config


def build_tiny(family: str, out: Path | str, seed: int = 0) -> Path:
    """Write ``family``'s tiny random model to the folder ``out`` (config.json, float32
    model.safetensors, generation_config.json, the organism tokenizer) and return it.

    The weights depend only on ``seed`` (and the installed transformers' initialisation)."""
    import torch
    from transformers import AutoModelForCausalLM

    from lynx.models import resolve_model

    spec = _spec(family)
    config = tiny_config(family)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if spec.embedding_std is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight.normal_(0.0, spec.embedding_std)
    if type(model).__name__ != spec.architecture:
        raise RuntimeError(f"{family}: transformers built {type(model).__name__}, not {spec.architecture}")
    model.save_pretrained(out)
    if spec.thinking == "think":
        organism = Path(resolve_model("organism").path)
        for name in TOKENIZER_FILES:
            shutil.copyfile(organism / name, out / name)
    else:
        tiny_tokenizer(family).save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lynx.conformance.tiny_models", description="Write a tiny random-weight model of one architecture family to a folder.")
    parser.add_argument("family", choices=known_families())
    parser.add_argument("out", type=Path, help="the model folder to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_tiny(args.family, args.out, seed=args.seed))


if __name__ == "__main__":
    main()
