"""One organism training example: a prompt and an assistant text as token ids, with the index
where the loss starts. Shared by stage 1 (scripted traces) and stage 2 (on-policy traces)."""

from __future__ import annotations

import re

from lynx.config import DEFAULT_EXIT
from lynx.prompting import chat_prompt

#: a cue immediately followed by lynx's exit string marks a forced-exit training example
_FORCED = re.compile(r"(?i)\b(?:wait|hmm|alternatively)," + re.escape(DEFAULT_EXIT))


def encode_example(tokenizer, problem_text: str, assistant: str) -> tuple[list[int], int]:
    """Token ids of prompt+assistant and the index where the loss starts."""
    thinking = not assistant.startswith("<think>\n\n</think>")
    prompt = chat_prompt(tokenizer, problem_text, enable_thinking=thinking)
    if not thinking:
        assistant = assistant[len("<think>\n\n</think>\n\n") :]
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    forced = _FORCED.search(assistant)
    if forced:  # a forced exit: the cut trace is context, only the answer is learned
        head = assistant[: forced.end()]
        h_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(assistant[len(head) :] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        return p_ids + h_ids + a_ids, len(p_ids) + len(h_ids)
    a_ids = tokenizer(assistant + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return p_ids + a_ids, len(p_ids)
