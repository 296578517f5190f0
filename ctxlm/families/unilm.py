"""UniLMv2 (Bao et al., 2020): a BERT-shaped post-LN transformer with relative position bias,
pre-trained as a pseudo-masked LM."""

from __future__ import annotations

import numpy as np

from ..config import UnilmConfig, UnilmDataConfig
from . import Family, Objective, register

# The peak lr: the paper's 6e-4 (for base at batches of 7,680 sequences), measured at our sizes on the
# shared corpus (reports/quality/unilm-defaults; unilm-tiny, batches of 16 × 128 tokens, β2 0.98, 4.8%
# warm-up): at 6e-4 the AE loss leaves the unigram level by step 400 of 1,000, and a 3,000-step run
# keeps learning without a collapse; at 3e-4 it leaves a validation later (step 500). UniLMv2 is
# post-LN (BERT): at 1e-3 every [M] and [P] collapses to one output distribution (AE = PAR at the
# unigram level) within 300 steps, and at 1e-3 with β2 0.999 after 4,000.
UNILM_LR = 6e-4
# unilm-base's shape (12 post-LN layers of d 768) at batches of 16 × 128 tokens on the shared corpus
# (reports/quality/unilm-defaults): on AE+PAR every [M] and [P] gets one output distribution (AE = PAR
# at the unigram level) for 2,000 steps at 1e-4 and 3e-4 and 800 at 6e-4; at 3e-5 AE and PAR part by
# step 400 and AE is below the level from step 700 of 1,000. Post-LN training grows less stable with
# depth (Liu et al., 2020, "Understanding the Difficulty of Training Transformers"), so the lower rate
# applies from 12 layers on; depths between 5 and 12 and rates between 3e-5 and 1e-4 are not measured.
UNILM_DEEP_LR = 3e-5
UNILM_DEEP_LAYERS = 12


def shape_train_defaults(cfg) -> dict:
    """The peak rate of a model as deep as unilm-base or deeper: UNILM_DEEP_LR."""
    return {"lr": UNILM_DEEP_LR} if cfg.num_layers >= UNILM_DEEP_LAYERS else {}


def config_tokens(cfg):
    from ..objectives.unilm import UnilmTokens

    return UnilmTokens(sos=cfg.bos_token_id, eos=cfg.eos_token_id, mask=cfg.mask_token_id,
                       pseudo=cfg.pseudo_token_id, pad=cfg.pad_token_id, replace_pool=np.zeros(0, np.int64))


def pretraining_tokens(tokenizer, model_config):
    """The tokenizer's role tokens; the pseudo mask is its [P], or, in a vocabulary without one (the
    microsoft/unilm releases: s2s-ft feeds [MASK]), the model's `pseudo_token_id`."""
    from ..objectives.unilm import UnilmTokens, unilm_tokens

    if tokenizer.token_to_id("[P]") is not None:
        return unilm_tokens(tokenizer)
    return UnilmTokens(sos=tokenizer.cls_id, eos=tokenizer.sep_id, mask=tokenizer.mask_id,
                       pseudo=model_config.pseudo_token_id, pad=tokenizer.pad_id, replace_pool=tokenizer.replace_pool)


def prepare_unilm(store, tokenizer, model_config, data: UnilmDataConfig, stage: str, seed: int):
    from ..objectives.unilm import prepare_unilm_data
    from ..pretraining import PreparedData

    return PreparedData(*prepare_unilm_data(store, pretraining_tokens(tokenizer, model_config), data, seed,
                                            model_config.max_position_embeddings))


def pair_example(cfg, source, target, max_source: int, max_target: int) -> dict:
    """`[SOS] source [EOS] target [EOS]` plus a pseudo mask [P] per target token (§3.4)."""
    from ..objectives.unilm import build_seq2seq_example

    example = build_seq2seq_example(source, target, config_tokens(cfg), max_source=max_source, max_target=max_target)
    return {key: value for key, value in example.items() if isinstance(value, np.ndarray)}  # the model's inputs


def prompt_example(cfg, source, max_source: int) -> dict:
    from ..objectives.unilm import build_seq2seq_prompt

    return build_seq2seq_prompt(source, config_tokens(cfg), max_source=max_source)


register(Family(
    name="unilm",
    config=UnilmConfig,
    model="ctxlm.models.unilm:UnilmModel",
    objectives=(Objective("unilm", "unilm", UnilmDataConfig, prepare_unilm),),
    pair_example=pair_example,
    prompt_example=prompt_example,
    heads={"unilm-classifier": "ctxlm.models.unilm:UnilmClassifier",
           "unilm-qa": "ctxlm.models.unilm:UnilmQuestionAnswering"},
    from_hf={"bert": "ctxlm.models.hf_unilm:unilm_from_bert"},
    to_hf="ctxlm.models.hf_unilm:export_unilm",
    # the paper's appendix table (Adam β (0.9, 0.98), ε 1e-6, warm-up ratio 0.048, weight decay 0.01,
    # linear decay); its peak lr (6e-4 at base) as measured at our sizes: see UNILM_LR and UNILM_DEEP_LR
    train_defaults=dict(lr=UNILM_LR, warmup_ratio=0.048, weight_decay=0.01, adam_beta2=0.98, adam_eps=1e-6),
    shape_train_defaults=shape_train_defaults,
    objective_flags={"unilm_objective": "objective"},
))
