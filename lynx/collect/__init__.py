"""Stage 1 of lynx: labelled cue points (hidden states + forced-exit safety)."""

from lynx.collect.pipeline import CollectConfig, collect, summarize

__all__ = ["CollectConfig", "collect", "summarize"]
