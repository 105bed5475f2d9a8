"""lynx's state inside one vLLM worker: its settings, its policy, its exit controller, and
the per-step hand-off from the wrapper model to the logits processor.

Why attached to the worker's ``VllmConfig``: the wrapper model and the logits processor are
built by vLLM from the same ``VllmConfig`` object in the same worker process and never see
each other, yet every step the model must leave the step's probe features for the processor,
and both need the probe. A :class:`LynxWorker` hung on that config object (created by
whichever of the two comes first) is shared by exactly the components of one engine: no
module-level state, nothing shared between two engines in one process, and it lives as
long as the engine does. The front end reaches it through ``LLM.collective_rpc``
(:func:`lynx.engines.vllm_engine.take_events`).

In both vLLM runners ``compute_logits`` and the logits processors run one after the other,
on the same rows in the same order, so the model's :class:`StepHandoff` is the processor's
input of that step. A row-count mismatch means the hand-off is not for this step, and the
processor then leaves the logits alone.

Scoring is lazy by default: the model publishes a :class:`StepFeatures` (references, no copy,
no compute) and the processor asks :meth:`StepHandoff.scores_for` only for the rows that sit
on a cue of a request that opted in; only those rows' features are ever gathered.
``probe_rows: "all"`` in the engine's lynx config makes the model score every row on device
instead (the dense variant: no per-step row selection, constant work).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lynx.engines.exit_control import ExitController, score_rows
from lynx.exit_policy import ExitPolicy

if TYPE_CHECKING:
    from lynx.probe.artifact import DeviceProbe


class StepFeatures:
    """The probe input of one step's logits rows, gathered only for the rows asked for.

    ``parts`` are ``(tensor, per_token)`` pairs in the probe's layer order, concatenated along
    the last dimension on demand. A ``per_token`` tensor has a row per token the model ran
    this step (prefill chunks included) and is read at the token that became logits row
    ``r``: ``query_start_loc[r + 1] - 1``, the runner's own ``logits_indices`` rule when
    there is no speculative decoding (which the hook refuses). The other tensors already
    have one row per logits row. Indexing mimics a tensor's: ``f[i]`` is one row's
    features, ``f[[i, j]]`` a ``(2, width)`` batch; :meth:`dense` is every row.
    """

    def __init__(self, parts: list[tuple[torch.Tensor, bool]], n_rows: int, query_start_loc: torch.Tensor | None = None, input_ids: torch.Tensor | None = None):
        if (any(per_token for _, per_token in parts) or input_ids is not None) and (query_start_loc is None or query_start_loc.shape[0] < n_rows + 1):
            raise ValueError("per-token features need query_start_loc with one entry per logits row plus one")
        self.parts, self.n_rows, self.query_start_loc, self.input_ids = parts, n_rows, query_start_loc, input_ids
        self.shape = (n_rows, sum(t.shape[-1] for t, _ in parts))
        self._token_rows: torch.Tensor | None = None

    @classmethod
    def of(cls, features: torch.Tensor) -> StepFeatures:
        """A ready ``(rows, width)`` tensor (e.g. a view of the model's output)."""
        return cls([(features, False)], features.shape[0])

    def _token_index(self, device) -> torch.Tensor:
        """The step's token index of each logits row (``query_start_loc[r + 1] - 1``)."""
        if self._token_rows is None or self._token_rows.device != device:
            assert self.query_start_loc is not None  # checked in __init__ for per-token parts and input ids, the only callers
            self._token_rows = self.query_start_loc[1 : self.n_rows + 1].to(device, torch.long) - 1
        return self._token_rows

    def _gather(self, rows: torch.Tensor) -> torch.Tensor:
        # index_select, and the rows' token index looked up once for all layers: inside the
        # engine's step every tensor op costs ~10 us (caches cold after the model's forward)
        rows = rows.to(self.parts[0][0].device)  # the row list is built on the host; index_select wants one device
        tok, cols = None, []
        for t, per_token in self.parts:
            if per_token:
                if tok is None:
                    tok = self._token_index(t.device).index_select(0, rows)
                cols.append(t.index_select(0, tok))
            else:
                cols.append(t.index_select(0, rows))
        return cols[0] if len(cols) == 1 else torch.cat(cols, dim=-1)

    def rows_with_last_token_in(self, watched: torch.Tensor) -> list[int] | None:
        """The logits rows whose token this step (the request's latest: the one a decode step
        feeds in) is marked in ``watched`` (a boolean table over the vocabulary, on the input
        ids' device), found with one table lookup for all rows; None when the step's input ids
        were not handed over."""
        if self.input_ids is None:
            return None
        last = self.input_ids[self._token_index(self.input_ids.device)]
        return watched[last].nonzero().view(-1).tolist()

    def __getitem__(self, rows) -> torch.Tensor:
        if isinstance(rows, int):
            return self._gather(torch.tensor([rows]))[0]
        return self._gather(torch.as_tensor(rows, dtype=torch.long))

    def dense(self) -> torch.Tensor:
        """Every row's features, ``(rows, width)`` (a view when that needs no gathering)."""
        if len(self.parts) == 1 and not self.parts[0][1]:
            return self.parts[0][0]
        return self._gather(torch.arange(self.n_rows))


class StepHandoff:
    """What the wrapper model leaves for the logits processor of the same step."""

    def __init__(self) -> None:
        self.features: StepFeatures | None = None  # this step's probe input of every logits row
        self.scores: torch.Tensor | None = None  # (rows,) P(safe) of every row, only in all-rows mode
        self.probe: DeviceProbe | None = None  # the probe on the features' device, set by the model
        self.step = 0  # incremented by every compute_logits call
        self.errors: list[str] = []  # probe failures, reported once each
        #: the wrapper's forward -> its compute_logits, in the "direct" hand-off: the probe's
        #: intermediate layers (every token's row), the step's query_start_loc and input_ids, by reference
        self.layer_states: tuple[dict[int, torch.Tensor], torch.Tensor, torch.Tensor | None] | None = None

    def publish(self, features: StepFeatures | torch.Tensor | None, scores: torch.Tensor | None = None) -> None:
        if isinstance(features, torch.Tensor):
            features = StepFeatures.of(features)
        self.features, self.scores, self.step = features, scores, self.step + 1

    def features_for(self, n_rows: int) -> StepFeatures | None:
        """This step's features if they match a logits tensor of ``n_rows`` rows, else None."""
        f = self.features
        return f if f is not None and f.shape[0] == n_rows else None

    def scores_for(self, rows: list[int], n_rows: int) -> list[float] | None:
        """P(safe) of ``rows`` of this step (None when there is no valid hand-off or the probe failed)."""
        feats = self.features_for(n_rows)
        if feats is None:
            return None
        if self.scores is not None:
            return self.scores[rows].tolist() if self.scores.shape[0] == n_rows else None
        if self.probe is None:
            return None
        return score_rows(self.probe, feats, rows, self.errors)


class LynxWorker:
    """lynx's state in one vLLM worker (see the module docstring)."""

    _ATTR = "_lynx_worker"

    def __init__(self, vllm_config) -> None:
        # the probe folder, read once per worker
        self.policy, self.hook = ExitPolicy.resolve((vllm_config.additional_config or {}).get("lynx"))
        self.handoff = StepHandoff()
        self._tokenizer = vllm_config.model_config.tokenizer
        self._controller: ExitController | None = None
        self.processors: list = []  # this engine's lynx logits processors (V1 and V2), for finish_requests

    def finish_requests(self) -> None:
        """The engine is idle (an offline ``LLM`` after ``generate``): every request its processors
        still hold has ended; emit their monitor summaries now."""
        for proc in self.processors:
            proc.finish_all()

    @classmethod
    def of(cls, vllm_config) -> LynxWorker:
        """The engine's lynx state, created on first use."""
        state = getattr(vllm_config, cls._ATTR, None)
        if state is None:
            state = cls(vllm_config)
            setattr(vllm_config, cls._ATTR, state)
        return state

    @classmethod
    def find(cls, worker) -> LynxWorker | None:
        """The lynx state of a worker object as ``collective_rpc`` hands it (None: lynx is not
        installed in that engine, or nothing of lynx ran yet)."""
        for path in (("vllm_config",), ("worker", "vllm_config"), ("worker", "model_runner", "vllm_config")):
            obj = worker
            for name in path:
                obj = getattr(obj, name, None)
            state = getattr(obj, cls._ATTR, None) if obj is not None else None
            if state is not None:
                return state
        return None

    def reload_calibrations(self) -> None:
        """Pick up calibrations added to the probe folder since the engine started."""
        if self.policy is not None:
            self.controller.reload_calibrations()
            self.policy = self.controller.policy

    @property
    def controller(self) -> ExitController:
        """The engine's exit rule and its per-request and event state (built on first use)."""
        if self._controller is None:
            self._controller = ExitController(self.hook, self._tokenizer, policy=self.policy)
        return self._controller
