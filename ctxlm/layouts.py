"""How each model family lays out a (source, target) pair for fine-tuning and a source for decoding.

- PALM (encoder-decoder): encoder `[CLS] source [SEP]`, decoder `[CLS] target`, labels `target [SEP]`.
- GLM: Part A `[CLS] source [gMASK]`, Part B `[sop] target`, labels `target [eop]` (GLM §2.3).
- UniLMv2: `[SOS] source [EOS] target [EOS]` plus a pseudo mask [P] per target token (§3.4).

Limits count special tokens; sources are cut from their end, targets keep their beginning.
"""

from __future__ import annotations

import numpy as np

from .errors import CtxlmError
from .objectives.palm import PalmTokens, build_palm_example


def _palm_tokens(cfg) -> PalmTokens:
    return PalmTokens(cls=cfg.bos_token_id, sep=cfg.eos_token_id, mask=cfg.mask_token_id,
                      decoder_start=cfg.decoder_start_token_id)


def _glm_tokens(cfg):
    from .objectives.glm import GlmTokens

    return GlmTokens(mask=cfg.mask_token_id, smask=cfg.smask_token_id, gmask=cfg.gmask_token_id,
                     sop=cfg.sop_token_id, eop=cfg.eop_token_id, cls=cfg.bos_token_id, eos=cfg.eos_token_id,
                     pad=cfg.pad_token_id)


def _unilm_tokens(cfg):
    from .objectives.unilm import UnilmTokens

    return UnilmTokens(sos=cfg.bos_token_id, eos=cfg.eos_token_id, mask=cfg.mask_token_id,
                       pseudo=cfg.pseudo_token_id, pad=cfg.pad_token_id, replace_pool=np.zeros(0, np.int64))


def pair_example(cfg, source: list[int], target: list[int], max_source: int, max_target: int) -> dict:
    """Model inputs and labels for one (source, target) pair of token ids (no special tokens)."""
    source, target = np.asarray(source, np.int64), np.asarray(target, np.int64)
    if cfg.family == "palm":
        return build_palm_example(source[: max_source - 2], target[: max_target - 1], _palm_tokens(cfg))
    if cfg.family == "glm":
        from .objectives.glm import build_seq2seq_example

        return build_seq2seq_example(source, target, _glm_tokens(cfg), max_source=max_source, max_target=max_target)
    if cfg.family == "unilm":
        from .objectives.unilm import build_seq2seq_example

        return build_seq2seq_example(source, target, _unilm_tokens(cfg), max_source=max_source,
                                     max_target=max_target)
    raise CtxlmError(f"no seq2seq layout for model family '{cfg.family}'")


def prompt_example(cfg, source: list[int], max_source: int) -> dict:
    """The decoding input for one source (what `start_decoding` takes)."""
    source = np.asarray(source, np.int64)
    if cfg.family == "palm":
        tok = _palm_tokens(cfg)
        return {"input_ids": np.concatenate([[tok.cls], source[: max_source - 2], [tok.sep]]).astype(np.int64)}
    if cfg.family == "glm":
        from .objectives.glm import build_seq2seq_example

        return build_seq2seq_example(source, None, _glm_tokens(cfg), max_source=max_source)
    if cfg.family == "unilm":
        from .objectives.unilm import build_seq2seq_prompt

        return build_seq2seq_prompt(source, _unilm_tokens(cfg), max_source=max_source)
    raise CtxlmError(f"no seq2seq layout for model family '{cfg.family}'")


def decoding_source_budget(cfg, max_source: int, max_new_tokens: int) -> int:
    """The most tokens (specials included) a prompt may have with `max_new_tokens` to follow:
    `max_source`, but for UniLMv2 also no more than its target's first position allows, since target
    token t takes position S + t < max_position_embeddings (§3.4)."""
    if cfg.family != "unilm":
        return max_source
    room = cfg.max_position_embeddings - max_new_tokens
    if room < 2:
        raise CtxlmError(f"max_new_tokens {max_new_tokens} leaves no room for the source in "
                         f"max_position_embeddings {cfg.max_position_embeddings}")
    return min(max_source, room)
