"""GLM (Du et al., 2021): one pre-LN transformer with 2D positions, pre-trained by autoregressive
blank infilling."""

from __future__ import annotations

import dataclasses

from ..config import GlmConfig, GlmDataConfig
from . import Family, Objective, register


def prepare_glm(store, tokenizer, model_config, data: GlmDataConfig, stage: str, seed: int):
    from ..models.glm import glm_tokens
    from ..objectives.glm import prepare_glm_data
    from ..pretraining import PreparedData

    return PreparedData(*prepare_glm_data(store, glm_tokens(model_config), data, seed,
                                          model_config.max_position_embeddings,
                                          sentinel_ids=tokenizer.sentinel_ids or None))


def pair_example(cfg, source, target, max_source: int, max_target: int) -> dict:
    """Part A `[CLS] source [gMASK]`, Part B `[sop] target`, labels `target [eop]` (GLM §2.3)."""
    from ..models.glm import glm_tokens
    from ..objectives.glm import build_seq2seq_example

    return build_seq2seq_example(source, target, glm_tokens(cfg), max_source=max_source, max_target=max_target)


def prompt_example(cfg, source, max_source: int) -> dict:
    from ..models.glm import glm_tokens
    from ..objectives.glm import build_seq2seq_example

    return build_seq2seq_example(source, None, glm_tokens(cfg), max_source=max_source)


def apply_config_flags(data: GlmDataConfig, given: dict) -> GlmDataConfig:
    """The ablations `ctxlm pretrain --glm-no-shuffle` (Part B spans in text order) and `--glm-sentinel`."""
    return dataclasses.replace(data, shuffle_spans=data.shuffle_spans and not given.get("glm_no_shuffle"),
                               sentinel=data.sentinel or bool(given.get("glm_sentinel")))


register(Family(
    name="glm",
    config=GlmConfig,
    model="ctxlm.models.glm:GlmModel",
    objectives=(Objective("glm", "glm", GlmDataConfig, prepare_glm),),
    pair_example=pair_example,
    prompt_example=prompt_example,
    heads={"glm-cloze": "ctxlm.tasks.cloze:GlmClozeModel"},
    from_hf={"bert": "ctxlm.models.hf_glm:glm_from_bert", "ctxlm-glm": "ctxlm.models.hf_glm:glm_from_export"},
    to_hf="ctxlm.models.hf_glm:export_glm",
    # THUDM/GLM's pre-training configs: Adam β (0.9, 0.98), ε 1e-6, weight decay 0.1 (config_block_*.json),
    # warm-up 5% (ds_block_*.sh; their decay is cosine, ours linear). Peak lr: 1e-3 trains glm-tiny
    # (reports/quality), where their 2e-4 (large) / 4e-4 (base) is for 335M / 110M models.
    train_defaults=dict(lr=1e-3, warmup_ratio=0.05, weight_decay=0.1, adam_beta2=0.98, adam_eps=1e-6),
    objective_flags={"glm_task": "task"},
    config_flags=("glm_no_shuffle", "glm_sentinel"), apply_config_flags=apply_config_flags,
    config_flags_error="--glm-no-shuffle and --glm-sentinel are GLM options",
))
