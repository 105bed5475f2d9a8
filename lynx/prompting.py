"""How a problem becomes a prompt: the LYNX instruction inside the model's chat template."""

from __future__ import annotations

INSTRUCTION = "\nPlease reason step by step, and put your final answer within \\boxed{}."


def user_message(problem_text: str, suffix: str = INSTRUCTION) -> str:
    return problem_text + suffix


def chat_prompt(tokenizer, problem_text: str, enable_thinking: bool = True, suffix: str = INSTRUCTION) -> str:
    """The prompt string for one problem, thinking on by default (as LYNX runs its models).

    Templates that know no ``enable_thinking`` switch ignore it.
    """
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_message(problem_text, suffix)}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=enable_thinking,
    )
