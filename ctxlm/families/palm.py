"""PALM (Bi et al., 2020): a BART-shaped encoder-decoder with a pointer-generator, pre-trained by
encoder MLM (stage 1) and context-conditioned continuation generation (stage 2)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..config import PalmConfig, PalmDataConfig
from ..objectives.palm import PalmTokens, build_palm_example
from . import Family, Objective, register


def palm_config_tokens(cfg) -> PalmTokens:
    return PalmTokens(cls=cfg.bos_token_id, sep=cfg.eos_token_id, mask=cfg.mask_token_id,
                      decoder_start=cfg.decoder_start_token_id)


def pair_example(cfg, source, target, max_source: int, max_target: int) -> dict:
    """Encoder `[CLS] source [SEP]`, decoder `[CLS] target`, labels `target [SEP]`. A target longer
    than `max_target − 1` keeps its first `max_target` tokens as labels and no `[SEP]`: a cut target
    must not teach the model to stop mid-sentence."""
    tok = palm_config_tokens(cfg)
    if len(target) < max_target:
        return build_palm_example(source[: max_source - 2], target, tok)
    kept = np.asarray(target[:max_target], dtype=np.int64)
    return {**build_palm_example(source[: max_source - 2], kept[:-1], tok), "labels": kept}


def prompt_example(cfg, source, max_source: int) -> dict:
    tok = palm_config_tokens(cfg)
    return {"input_ids": np.concatenate([[tok.cls], source[: max_source - 2], [tok.sep]]).astype(np.int64)}


def palm_loss_options(data: PalmDataConfig, stage: str, label_smoothing: float) -> dict:
    """Stage 2 may add the encoder MLM loss; label smoothing applies to generation only."""
    if stage != "generation":
        return {}
    return {"mlm_weight": data.mlm_weight, **({"label_smoothing": label_smoothing} if label_smoothing else {})}


def prepare_stage(model, stage: str) -> None:
    """Stage 1 ("mlm") trains the encoder and its MLM head only."""
    import torch

    if stage != "mlm":
        return
    model.decoder.requires_grad_(False)
    for head in (model.pointer, model.attention_copy):
        if head is not None:
            head.requires_grad_(False)
    if isinstance(model.final_logits_bias, torch.nn.Parameter):  # the release's trained output bias
        model.final_logits_bias.requires_grad_(False)


def apply_config_flags(data: PalmDataConfig, given: dict) -> PalmDataConfig:
    """`ctxlm pretrain --fragment-length L --mlm-weight W`."""
    return dataclasses.replace(data, **given)


register(Family(
    name="palm",
    config=PalmConfig,
    model="ctxlm.models.palm:PalmModel",
    objectives=(Objective("palm", "palm", PalmDataConfig, "ctxlm.families.palm_data:prepare_palm_objective",
                          palm_loss_options, stages=("mlm", "generation"), prepare_model=prepare_stage),
                # baselines on the same encoder-decoder (`objectives/mass.py`, `objectives/bart.py`)
                Objective("mass", "palm", PalmDataConfig, "ctxlm.families.palm_data:prepare_mass_objective"),
                Objective("bart", "palm", PalmDataConfig, "ctxlm.families.palm_data:prepare_bart_objective")),
    pair_example=pair_example,
    prompt_example=prompt_example,
    from_hf={"bart": "ctxlm.models.hf:palm_from_bart_model", "bert": "ctxlm.models.hf:palm_from_encoder_model",
             "roberta": "ctxlm.models.hf:palm_from_encoder_model"},
    to_hf="ctxlm.models.hf:export_palm",
    # PALM's fairseq scripts: Adam β (0.9, 0.999), ε 1e-8, weight decay 0.01 (TrainConfig's own). Peak lr
    # 1e-3 trains palm-tiny better than 3e-4 (reports/quality); the paper's 1e-5 is for a RoBERTa-initialised
    # 24+6-layer model. Warm-up: the paper's 10k steps is 1.25% of its run; 5% here, for short runs at 1e-3.
    train_defaults=dict(lr=1e-3, warmup_ratio=0.05),
    config_flags=("fragment_length", "mlm_weight"), apply_config_flags=apply_config_flags,
    config_flags_error="--fragment-length and --mlm-weight are PALM-model options (palm, mass, bart)",
))
