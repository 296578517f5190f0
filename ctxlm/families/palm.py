"""PALM (Bi et al., 2020): a BART-shaped encoder-decoder with a pointer-generator, pre-trained by
encoder MLM (stage 1) and context-conditioned continuation generation (stage 2)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..config import DataConfig, ModelConfig, ranged
from ..objectives.palm import PalmTokens, build_palm_example
from . import Family, Objective, register


@dataclass
class PalmDataConfig(DataConfig):
    """PALM pre-training examples (paper §2.2, §3.1), and the MASS and BART baselines that run on the
    PALM model family (segments of at most `fragment_length` tokens, special tokens included)."""

    fragment_length: int = ranged(500, 4)  # PALM's fragment length L: source + target tokens, special tokens included
    # the source takes 80%·L, the target the remaining 20%·L
    source_ratio: float = ranged(0.8, 0, 1, low_open=True, high_open=True)
    mlm_probability: float = ranged(0.15, 0, 1)
    mlm_weight: float = ranged(0.0, 0)  # PALM stage 2: weight of an added encoder MLM loss (0: the paper's reading)
    mass_ratio: float = ranged(0.5, 0, 1, low_open=True, high_open=True)  # MASS: the masked span's share of a segment
    bart_mask_ratio: float = ranged(0.3, 0, 1)  # BART text infilling: share of tokens masked
    bart_poisson_lambda: float = ranged(3.0, 0, low_open=True)  # BART: span lengths ~ Poisson(λ)
    bart_permute_sentences: bool = True  # BART: sentence permutation before infilling
    valid_fraction: float = ranged(0.01, 0, 1, high_open=True)  # held-out documents
    max_valid_documents: int = ranged(50, 0)


@dataclass
class PalmConfig(ModelConfig):
    """A BART-shaped transformer encoder-decoder with PALM's pointer-generator and MLM head.

    Field names follow `transformers.BartConfig` where they mean the same thing, so configs
    convert both ways (`ctxlm.models.hf`).
    """

    family: str = "palm"
    data_config: ClassVar[type] = PalmDataConfig  # the default objective's
    vocab_size: int = 30522
    d_model: int = 768
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 12
    decoder_attention_heads: int = 12
    encoder_ffn_dim: int = 3072
    decoder_ffn_dim: int = 3072
    max_position_embeddings: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    activation_function: str = "gelu"
    mlm_head_activation: str = "gelu"  # BERT's head uses hidden_act, RoBERTa's always GELU
    layer_norm_eps: float = 1e-5
    scale_embedding: bool = False
    init_std: float = 0.02
    copy: bool = True  # PALM's pointer-generator (paper eqs. 2-8); off = a plain BART-style model
    pad_token_id: int = 0
    bos_token_id: int = 2
    eos_token_id: int = 3
    decoder_start_token_id: int = 2
    mask_token_id: int = 4
    # The AliceMind release (docs/official-models.md): its decoder is PreSumm's, not BART's.
    decoder_style: str = "bart"  # "presumm": pre-LN layers + final LayerNorm, sinusoidal positions, embedding·√d
    decoder_layer_norm_eps: float | None = None  # None = layer_norm_eps (the release: 1e-6)
    decoder_activation_function: str | None = None  # None = activation_function (the release: "gelu_tanh")
    tie_decoder_embedding: bool = True  # False: the decoder's own embedding (also its output layer) + a trained bias
    copy_head: str = "pointer"  # with copy: "pointer" = the paper's eqs. 2-8; "attention" = the release's p_gen


# `--config` names (registered into `ctxlm.families.NAMED_CONFIGS`)
PALM_NAMED_CONFIGS = {
    # Trains on a laptop CPU in minutes (the demo and the tests use it).
    "palm-tiny": dict(
        d_model=256,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
        max_position_embeddings=512,
    ),
    # `make demo`'s model: pre-trained and fine-tuned twice in about 16 minutes on two CPU cores.
    "palm-mini": dict(
        d_model=128,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=512,
        decoder_ffn_dim=512,
        max_position_embeddings=256,
    ),
    # PALM (paper §3.1): 12-layer encoder, 12-layer decoder, 768 hidden, 3072 FFN, 12 heads.
    "palm-base": dict(
        d_model=768,
        encoder_layers=12,
        decoder_layers=12,
        encoder_attention_heads=12,
        decoder_attention_heads=12,
        encoder_ffn_dim=3072,
        decoder_ffn_dim=3072,
        max_position_embeddings=512,
    ),
    # PALM-large (paper §3.1): 24-layer encoder, 6-layer decoder, 1024 hidden, 16 heads.
    "palm-large": dict(
        d_model=1024,
        encoder_layers=24,
        decoder_layers=6,
        encoder_attention_heads=16,
        decoder_attention_heads=16,
        encoder_ffn_dim=4096,
        decoder_ffn_dim=4096,
        max_position_embeddings=512,
    ),
}


def palm_config_tokens(cfg) -> PalmTokens:
    return PalmTokens(
        cls=cfg.bos_token_id, sep=cfg.eos_token_id, mask=cfg.mask_token_id, decoder_start=cfg.decoder_start_token_id
    )


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


register(
    Family(
        name="palm",
        config=PalmConfig,
        named_configs=PALM_NAMED_CONFIGS,
        model="ctxlm.models.palm:PalmModel",
        objectives=(
            Objective(
                "palm",
                "palm",
                PalmDataConfig,
                "ctxlm.families.palm_data:prepare_palm_objective",
                palm_loss_options,
                stages=("mlm", "generation"),
                prepare_model=prepare_stage,
            ),
            # baselines on the same encoder-decoder (`objectives/mass.py`, `objectives/bart.py`)
            Objective("mass", "palm", PalmDataConfig, "ctxlm.families.palm_data:prepare_mass_objective"),
            Objective("bart", "palm", PalmDataConfig, "ctxlm.families.palm_data:prepare_bart_objective"),
        ),
        pair_example=pair_example,
        prompt_example=prompt_example,
        from_hf={
            "bart": "ctxlm.models.hf:palm_from_bart_model",
            "bert": "ctxlm.models.hf:palm_from_encoder_model",
            "roberta": "ctxlm.models.hf:palm_from_encoder_model",
        },
        to_hf="ctxlm.models.hf:export_palm",
        # PALM's fairseq scripts: Adam β (0.9, 0.999), ε 1e-8, weight decay 0.01 (TrainConfig's own). Peak lr
        # 1e-3 trains palm-tiny better than 3e-4 (reports/quality); the paper's 1e-5 is for a RoBERTa-initialised
        # 24+6-layer model. Warm-up: the paper's 10k steps is 1.25% of its run; 5% here, for short runs at 1e-3.
        train_defaults=dict(lr=1e-3, warmup_ratio=0.05),
        config_flags=("fragment_length", "mlm_weight"),
        apply_config_flags=apply_config_flags,
        config_flags_error="--fragment-length and --mlm-weight are PALM-model options (palm, mass, bart)",
    )
)
