"""A heavier stand-in for a real model, for timing only: random-weight Qwen3 with the organism's
tokenizer and chat template, ``--width`` x its hidden size and ``--depth`` x its layers, plus a
random probe of the method's shape (StandardScaler + MLP (256, 64)) on the default layers.

Why: lynx's hook costs a fixed amount per step and per cue, so its share of the run depends on
how heavy the model's step is; the organism (2.46M parameters) is the worst case. Real weights
cannot be downloaded here, and the hook's cost does not depend on what the weights are, only on
their shapes. The outputs of this model are meaningless (random tokens, so cues and thinking
spans come and go at random); only time is measured.

    python benchmarks/scaled_model.py --out runs/scaled --width 2 --depth 2
    python benchmarks/vllm_overhead.py --model runs/scaled --probe runs/scaled/probe --n 128 --max-tokens 128
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--width", type=int, default=2, help="hidden size multiple of the organism's")
    ap.add_argument("--depth", type=int, default=2, help="layer count multiple of the organism's")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lynx.layers import default_layers
    from lynx.models import ORGANISM_DIR, model_fingerprint, resolve_model
    from lynx.probe import load_probe
    from lynx.probe.artifact import Probe, save_probe

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = AutoConfig.from_pretrained(ORGANISM_DIR)
    cfg.hidden_size *= args.width
    cfg.intermediate_size *= args.width
    cfg.num_attention_heads *= args.width  # head_dim stays 64 (vLLM's CPU attention needs it)
    cfg.num_key_value_heads *= args.width
    cfg.num_hidden_layers *= args.depth
    if hasattr(cfg, "layer_types") and cfg.layer_types is not None:
        cfg.layer_types = [cfg.layer_types[0]] * cfg.num_hidden_layers
    torch.manual_seed(args.seed)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.float32)
    model.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"):
        if (ORGANISM_DIR / name).exists():
            shutil.copy(ORGANISM_DIR / name, out / name)

    organism_probe = load_probe(Path(__file__).resolve().parents[1] / "probes" / "organism")
    layers = list(default_layers(cfg.num_hidden_layers))
    d = len(layers) * cfg.hidden_size
    g = torch.Generator().manual_seed(args.seed)
    sizes = [d, 256, 64, 1]
    probe = Probe(
        torch.zeros(d),
        torch.ones(d),
        [torch.randn(a, b, generator=g) / a**0.5 for a, b in zip(sizes[:-1], sizes[1:], strict=True)],
        [torch.zeros(b) for b in sizes[1:]],
        {
            "layers": layers,
            "hidden_size": cfg.hidden_size,
            "model": str(out),
            "model_fingerprint": model_fingerprint(resolve_model(str(out))),
            "cues": organism_probe.meta["cues"],
            "exit_string": organism_probe.meta["exit_string"],
            "prompt_suffix": organism_probe.meta.get("prompt_suffix"),
        },
    )
    save_probe(probe, out / "probe")
    n_params = sum(p.numel() for p in model.parameters())
    print(json.dumps({"out": str(out), "parameters": n_params, "hidden_size": cfg.hidden_size, "layers": cfg.num_hidden_layers, "probe_layers": layers}))


if __name__ == "__main__":
    main()
