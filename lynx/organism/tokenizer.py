"""The organism's tokenizer: byte-level BPE with Qwen3's special tokens and chat template.

Why byte-level BPE (like Qwen's) rather than a word list: it round-trips any text exactly,
so transformers, vLLM's incremental detokenizer and lynx's cue matcher all see the same
strings. Digits are split one per token (arithmetic stays learnable), and a cue word is
kept together with its comma (``Wait,``) so that the token *after* the cue is the verdict
(`` yes`` / `` no``) — the cue token's hidden state is then where the model commits to it.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]  # added but not "special": decode keeps them, as in Qwen3
PIECES = r" ?[A-Za-z]+,?| ?\d| ?[^\sA-Za-z\d]+|\s+"

#: Qwen3-style template: the model opens <think> itself; enable_thinking=False pre-fills an
#: empty thinking block, exactly like Qwen3's switch.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def train_tokenizer(corpus: list[str], vocab_size: int = 384) -> PreTrainedTokenizerFast:
    """Train the BPE on ``corpus`` (deterministic for a given corpus)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PIECES), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(tok: PreTrainedTokenizerFast, path: Path) -> None:
    tok.save_pretrained(str(path))
