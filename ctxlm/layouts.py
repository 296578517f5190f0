"""How each model family lays out a (source, target) pair for fine-tuning and a source for decoding.

The layouts are the families' own (`ctxlm/families/<name>.py`): PALM's encoder `[CLS] source [SEP]`
and decoder `[CLS] target`; GLM's Part A `[CLS] source [gMASK]` and Part B `[sop] target`;
UniLMv2's `[SOS] source [EOS] target [EOS]` with a pseudo mask [P] per target token.

Limits count special tokens; sources are cut from their end, targets keep their beginning.
"""

from __future__ import annotations

import numpy as np

from .errors import CtxlmError
from .families import get_family, resolve


def _layout(cfg, which: str):
    function = getattr(get_family(cfg.family), which)
    if function is None:
        raise CtxlmError(f"no seq2seq layout for model family '{cfg.family}'")
    return resolve(function)


def pair_example(cfg, source: list[int], target: list[int], max_source: int, max_target: int) -> dict:
    """Model inputs and labels for one (source, target) pair of token ids (no special tokens)."""
    return _layout(cfg, "pair_example")(
        cfg, np.asarray(source, np.int64), np.asarray(target, np.int64), max_source, max_target
    )


def prompt_example(cfg, source: list[int], max_source: int) -> dict:
    """The decoding input for one source (what `start_decoding` takes)."""
    return _layout(cfg, "prompt_example")(cfg, np.asarray(source, np.int64), max_source)


def pair_limits(cfg, max_source: int, max_target: int, target_length: int) -> tuple[int, int]:
    """(source, target) limits, specials included, of one training pair whose target has
    `target_length` tokens: the recipe's `max_source` and `max_target`; but where source and target
    share one sequence and one position table (GLM, UniLMv2: no separate decoder) the target keeps
    at most `max_position_embeddings − 3` positions (the source keeps its two special tokens and
    one of its own) and the source no more than the target leaves, so every pair fits the model.
    An encoder-decoder's source and target each keep at most its `max_position_embeddings`."""
    if hasattr(cfg, "decoder_layers"):  # an encoder-decoder: the target has its own positions
        return min(max_source, cfg.max_position_embeddings), min(max_target, cfg.max_position_embeddings)
    max_target = min(max_target, cfg.max_position_embeddings - 3)
    target_positions = min(target_length + 1, max_target)  # the target and its end token
    return min(max_source, cfg.max_position_embeddings - target_positions), max_target


def decoding_source_budget(cfg, max_source: int, max_new_tokens: int) -> int:
    """The most tokens (specials included) a prompt may have with `max_new_tokens` to follow:
    `max_source`, at most `max_position_embeddings`, and for UniLMv2 also no more than its target's
    first position allows, since target token t takes position S + t < max_position_embeddings (§3.4)."""
    if cfg.family != "unilm":
        return min(max_source, cfg.max_position_embeddings)
    room = cfg.max_position_embeddings - max_new_tokens
    if room < 2:
        raise CtxlmError(
            f"max_new_tokens {max_new_tokens} leaves no room for the source in "
            f"max_position_embeddings {cfg.max_position_embeddings}"
        )
    return min(max_source, room)
