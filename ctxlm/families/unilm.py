"""UniLMv2 (Bao et al., 2020): a BERT-shaped post-LN transformer with relative position bias,
pre-trained as a pseudo-masked LM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..config import DataConfig, ModelConfig, ranged
from ..objectives.unilm import OBJECTIVES as UNILM_OBJECTIVES
from . import Family, Objective, PreparedData, register


@dataclass
class UnilmDataConfig(DataConfig):
    """UniLMv2 pre-training examples: `[SOS] S1 [EOS] S2 [EOS]` from whole sentences."""

    max_length: int = ranged(512, 4)  # the in-place sequence; appended [P]/original tokens come on top
    objective: str = "ae+par"  # the UniLMv2 objective: ae+par | ae | par | ae+ar | ar (Table 6)
    mask_ratio: float = ranged(0.15, 0, 1, low_open=True, high_open=True)
    block_prob: float = ranged(0.4, 0, 1)
    max_block: int = ranged(6, 1)
    valid_fraction: float = ranged(0.01, 0, 1, high_open=True)
    max_valid_documents: int = ranged(50, 0)


@dataclass
class UnilmConfig(ModelConfig):
    """UniLMv2 (Bao et al., 2020): a BERT-shaped post-LN transformer with T5-style bucketed relative
    position bias shared across layers."""

    family: str = "unilm"
    data_config: ClassVar[type] = UnilmDataConfig  # the default objective's
    vocab_size: int = 30522
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_function: str = "gelu"
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02
    relative_position_bias: bool = True  # off = the paper's "- rel pos" ablation (the release's rel_pos_bins 0)
    relative_buckets: int = 32
    relative_max_distance: int = 128
    pad_token_id: int = 0
    bos_token_id: int = 2  # [SOS] = [CLS]
    eos_token_id: int = 3  # [EOS] = [SEP]
    mask_token_id: int = 4  # [M]
    pseudo_token_id: int = 9  # [P]; the unilm2 release and s2s-ft feed [MASK] (pseudo_token_id = mask_token_id)
    # False: the key projection has no bias, as the unilm2 release's fused `qkv_linear` (s2s-ft
    # convert_state_dict.py). A key bias adds q·b to every score of a query alike, so it never changes attention.
    key_bias: bool = True
    copy: bool = False  # PALM's copy head (eqs. 2-8) over the seq2seq source; ctxlm's extension (models/unilm.py)


# `--config` names (registered into `ctxlm.families.NAMED_CONFIGS`). UniLMv2-base (paper §4.1): 12 layers,
# 768 hidden, 12 heads, 3072 FFN.
UNILM_NAMED_CONFIGS = {
    "unilm-tiny": dict(d_model=256, num_layers=4, num_heads=4, ffn_dim=1024),
    "unilm-base": dict(d_model=768, num_layers=12, num_heads=12, ffn_dim=3072),
}


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

    return UnilmTokens(
        sos=cfg.bos_token_id,
        eos=cfg.eos_token_id,
        mask=cfg.mask_token_id,
        pseudo=cfg.pseudo_token_id,
        pad=cfg.pad_token_id,
        replace_pool=np.zeros(0, np.int64),
    )


def pretraining_tokens(tokenizer, model_config):
    """The tokenizer's role tokens; the pseudo mask is its [P], or, in a vocabulary without one (the
    microsoft/unilm releases: s2s-ft feeds [MASK]), the model's `pseudo_token_id`."""
    from ..objectives.unilm import UnilmTokens, unilm_tokens

    if tokenizer.token_to_id("[P]") is not None:
        return unilm_tokens(tokenizer)
    return UnilmTokens(
        sos=tokenizer.cls_id,
        eos=tokenizer.sep_id,
        mask=tokenizer.mask_id,
        pseudo=model_config.pseudo_token_id,
        pad=tokenizer.pad_id,
        replace_pool=tokenizer.replace_pool,
    )


def prepare_unilm(store, tokenizer, model_config, data: UnilmDataConfig, stage: str, seed: int):
    from ..objectives.unilm import prepare_unilm_data

    return PreparedData(
        *prepare_unilm_data(
            store, pretraining_tokens(tokenizer, model_config), data, seed, model_config.max_position_embeddings
        )
    )


def pair_example(cfg, source, target, max_source: int, max_target: int) -> dict:
    """`[SOS] source [EOS] target [EOS]` plus a pseudo mask [P] per target token (§3.4)."""
    from ..objectives.unilm import build_seq2seq_example

    example = build_seq2seq_example(source, target, config_tokens(cfg), max_source=max_source, max_target=max_target)
    return {key: value for key, value in example.items() if isinstance(value, np.ndarray)}  # the model's inputs


def prompt_example(cfg, source, max_source: int) -> dict:
    from ..objectives.unilm import build_seq2seq_prompt

    return build_seq2seq_prompt(source, config_tokens(cfg), max_source=max_source)


register(
    Family(
        name="unilm",
        config=UnilmConfig,
        named_configs=UNILM_NAMED_CONFIGS,
        model="ctxlm.models.unilm:UnilmModel",
        objectives=(Objective("unilm", "unilm", UnilmDataConfig, prepare_unilm),),
        pair_example=pair_example,
        prompt_example=prompt_example,
        heads={
            "unilm-classifier": "ctxlm.models.unilm:UnilmClassifier",
            "unilm-qa": "ctxlm.models.unilm:UnilmQuestionAnswering",
        },
        from_hf={"bert": "ctxlm.models.hf_unilm:unilm_from_bert"},
        to_hf="ctxlm.models.hf_unilm:export_unilm",
        # the paper's appendix table (Adam β (0.9, 0.98), ε 1e-6, warm-up ratio 0.048, weight decay 0.01,
        # linear decay); its peak lr (6e-4 at base) as measured at our sizes: see UNILM_LR and UNILM_DEEP_LR
        train_defaults=dict(lr=UNILM_LR, warmup_ratio=0.048, weight_decay=0.01, adam_beta2=0.98, adam_eps=1e-6),
        shape_train_defaults=shape_train_defaults,
        objective_flags={"unilm_objective": "objective"},
        flags={"unilm_objective": dict(choices=list(UNILM_OBJECTIVES))},
    )
)
