"""The transformers engine: batched sampling, greedy forced answers, hidden states.

Runs on CPU (the organism, tests) or a GPU (real models). Prompts are left-padded so a
batch decodes in lock-step; every function takes and returns plain token-id lists, so the
rest of lynx never depends on transformers' tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from transformers import LogitsProcessorList


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _chunks(n: int, size: int) -> Iterator[range]:
    for i in range(0, n, size):
        yield range(i, min(n, i + size))


def _left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def _trim(row: list[int], stop_ids: set[int], pad_id: int) -> list[int]:
    out = []
    for t in row:
        out.append(t)
        if t in stop_ids:
            break
    while out and out[-1] == pad_id and pad_id not in stop_ids:
        out.pop()
    return out


class RowSampler:
    """Samples each row with its own ``torch.Generator`` (temperature, then top-p exactly as
    transformers' warpers), then leaves only the sampled token possible, so the greedy step that
    follows emits it. Why: ``generate``'s own sampling draws from one global stream for the
    whole batch, so a row's tokens depended on its batch-mates; with a generator per row they
    depend only on the row's seed (and its own logits). Must be the last processor."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device):
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature
        if self.top_p < 1.0:  # transformers' TopPLogitsWarper: drop the low tail whose mass is <= 1 - top_p, keep >= 1 token
            sorted_logits, sorted_idx = torch.sort(logits, descending=False, dim=-1)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= (1 - self.top_p)
            remove[..., -1:] = False
            logits = logits.masked_fill(remove.scatter(1, sorted_idx, remove), float("-inf"))
        probs = logits.softmax(dim=-1)
        picked = [int(torch.multinomial(probs[r], 1, generator=g)) for r, g in enumerate(self.generators)]
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(len(picked)), torch.tensor(picked, device=scores.device)] = 0.0
        return out


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 64,
    stop_ids: Sequence[int] | None = None,
    on_batch=None,
    batch_processors=None,
    seeds: Sequence[int] | None = None,
) -> list[list[int]]:
    """Continue each prompt (token ids); returns only the new tokens, ending at a stop id.

    ``temperature == 0`` is greedy. With ``seeds`` (one per prompt) each row samples from its
    own generator (:class:`RowSampler`), so its tokens do not depend on the batch it ran in;
    without, sampling is seeded per batch from ``seed`` (reproducible for a fixed batch size).
    ``batch_processors(indices, prompt_width)``, if given, returns the transformers logits
    processors for one batch (lynx's online exit uses it).
    """
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
    stops = set(stop_ids) if stop_ids is not None else {tokenizer.eos_token_id}
    pad = tokenizer.pad_token_id
    out: list[list[int]] = []
    for b, idx in enumerate(_chunks(len(prompts), batch_size)):
        ids, mask = _left_pad([prompts[i] for i in idx], pad, _device(model))
        torch.manual_seed(seed * 1_000_003 + b)
        processors = LogitsProcessorList(batch_processors(idx, ids.shape[1]) if batch_processors is not None else [])
        if seeds is not None and temperature > 0:
            processors.append(RowSampler([seeds[i] for i in idx], temperature, top_p, ids.device))
            kwargs: dict[str, bool | float | int] = dict(do_sample=False)
        else:
            kwargs = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 else dict(do_sample=False)
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(stops),
            pad_token_id=pad,
            logits_processor=processors,
            **kwargs,
        )
        for row in gen[:, ids.shape[1] :].tolist():
            out.append(_trim(row, stops, pad))
        if on_batch is not None:
            on_batch(len(idx))
    return out


@torch.inference_mode()
def hidden_states_at(model, sequences: Sequence[Sequence[int]], positions: Sequence[Sequence[int]], layers: Sequence[int], batch_size: int = 16) -> list[np.ndarray]:
    """Hidden states of ``sequences[i]`` at ``positions[i]`` for each of ``layers``.

    Returns, per sequence, an array ``(len(positions[i]), len(layers), hidden)`` in float32.
    Layer indices follow transformers' ``hidden_states`` tuple: 0 is the embedding output,
    ``L`` (= number of layers) is the last layer *after* the final norm.
    """
    out: list[np.ndarray] = []
    pad = model.config.pad_token_id or 0
    for idx in _chunks(len(sequences), batch_size):
        seqs = [sequences[i] for i in idx]
        ids, mask = _left_pad(seqs, pad, _device(model))
        hs = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        stacked = torch.stack([hs[layer] for layer in layers], dim=2)  # (B, T, n_layers, H)
        for r, i in enumerate(idx):
            offset = ids.shape[1] - len(sequences[i])
            pos = torch.tensor([p + offset for p in positions[i]], dtype=torch.long, device=stacked.device)
            out.append(stacked[r, pos].float().cpu().numpy())
    return out


def sliding_window(config) -> int | None:
    """The attention window of a model that slides it on some layer (None: every layer sees the
    whole context). Reads the config as transformers does: ``sliding_window``, unless
    ``use_sliding_window`` is off, and ``layer_types`` naming sliding layers where present."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(text, "sliding_window", None)
    if not isinstance(window, int) or window <= 0 or getattr(text, "use_sliding_window", True) is False:
        return None
    kinds = getattr(text, "layer_types", None)
    if kinds is not None and not any("sliding" in str(k) for k in kinds):
        return None
    return window


def _greedy_rows(model, seqs: list[list[int]], max_new_tokens: int, stop_ids: set[int], pad_id: int) -> list[list[int]]:
    """Greedy continuations of ``seqs`` (left-padded, one batch), each cut after its first stop token."""
    ids, mask = _left_pad(seqs, pad_id, _device(model))
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stop_ids) or None, pad_token_id=pad_id)
    rows = []
    for row in out[:, ids.shape[1] :].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stop_ids), len(row))
        rows.append(row[:cut])
    return rows


@torch.inference_mode()
def cue_states_and_exits(
    model,
    sequences: Sequence[Sequence[int]],
    cue_positions: Sequence[Sequence[int]],
    layers: Sequence[int],
    exit_ids: Sequence[int],
    *,
    max_answer_tokens: int,
    stop_ids: set[int],
    pad_id: int,
) -> tuple[list[np.ndarray], list[list[list[int]]]]:
    """Hidden states at cue tokens and a greedy forced answer after each cue, in one pass.

    One forward over the traces (cut after their last cue) yields both the hidden states
    and the KV cache; every cue's forced exit then continues *from that cache*: rows are
    the cache's batch entries repeated once per cue, with the attention mask closing every
    position after the row's cue. So the prefix is never re-encoded, and forced exits of
    all traces in the batch decode together.

    Returns (per trace: ``(n_cues, n_layers, hidden)`` float32, per trace and cue: answer ids).
    """
    device = _device(model)
    cut = [list(s[: max(p) + 1]) for s, p in zip(sequences, cue_positions, strict=True)]
    ids, mask = _left_pad(cut, pad_id, device)
    width = ids.shape[1]
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, output_hidden_states=True)
    stacked = torch.stack([out.hidden_states[layer] for layer in layers], dim=2)
    states: list[np.ndarray] = []
    rows, row_cut = [], []
    for b, (s, ps) in enumerate(zip(cut, cue_positions, strict=True)):
        offset = width - len(s)
        states.append(stacked[b, [p + offset for p in ps]].float().cpu().numpy())
        for p in ps:
            rows.append(b)
            row_cut.append(p + offset)
    window = sliding_window(model.config)
    if window is not None and width + len(exit_ids) + max_answer_tokens > window:
        # the cache trick masks each row's tail after its cue, but those positions still occupy
        # cache slots, and sliding-window attention counts its window in slots: a row would lose
        # real tokens from its window (gpt-oss's forced answers came out wrong). Re-encode instead.
        answers_flat = _greedy_rows(
            model, [cut[b][: p - (width - len(cut[b])) + 1] + list(exit_ids) for b, p in zip(rows, row_cut, strict=True)], max_answer_tokens, stop_ids, pad_id
        )
        per_row: list[list[list[int]]] = [[] for _ in cut]
        for r, b in enumerate(rows):
            per_row[b].append(answers_flat[r])
        return states, per_row
    cache = out.past_key_values
    cache.reorder_cache(torch.tensor(rows, device=device))
    n = len(rows)
    row_cut_t = torch.tensor(row_cut, device=device)
    prefix_mask = mask[rows] * (torch.arange(width, device=device)[None, :] <= row_cut_t[:, None])
    next_pos = pos[rows, row_cut_t] + 1
    feed = torch.tensor([list(exit_ids)] * n, dtype=torch.long, device=device)
    feed_pos = next_pos[:, None] + torch.arange(feed.shape[1], device=device)[None, :]
    attn = torch.cat([prefix_mask, torch.ones_like(feed)], dim=1)
    answers: list[list[int]] = [[] for _ in range(n)]
    done = torch.zeros(n, dtype=torch.bool, device=device)
    for _ in range(max_answer_tokens):
        logits = model(input_ids=feed, attention_mask=attn, position_ids=feed_pos, past_key_values=cache, use_cache=True).logits[:, -1]
        tok = logits.argmax(-1)
        for r in torch.nonzero(~done).flatten().tolist():
            answers[r].append(int(tok[r]))
            if int(tok[r]) in stop_ids:
                done[r] = True
        if bool(done.all()):
            break
        feed = tok[:, None]
        feed_pos = feed_pos[:, -1:] + 1
        attn = torch.cat([attn, torch.ones((n, 1), dtype=attn.dtype, device=device)], dim=1)
    per_trace: list[list[list[int]]] = [[] for _ in cut]
    for r, b in enumerate(rows):
        per_trace[b].append(answers[r])
    return states, per_trace
