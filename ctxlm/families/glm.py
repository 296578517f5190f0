"""GLM (Du et al., 2021): one pre-LN transformer with 2D positions, pre-trained by autoregressive
blank infilling."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from ..config import DataConfig, ModelConfig, ranged
from ..objectives.glm import GLM_TASKS
from . import Family, Objective, PreparedData, register


@dataclass
class GlmDataConfig(DataConfig):
    """GLM pre-training examples: documents cut into chunks of whole sentences."""

    max_length: int = ranged(512, 4)  # tokens per example, Part A and Part B together
    task: str = "blank"  # the GLM objective: blank | sentence | document | multitask
    mask_ratio: float = ranged(0.15, 0, 1, low_open=True, high_open=True)
    poisson_lambda: float = ranged(3.0, 0, low_open=True)
    shuffle_spans: bool = True  # off: the "no shuffle" ablation
    sentinel: bool = False  # on: distinct sentinel tokens instead of one [MASK] (ablation)
    long_mode: str = "document"  # multitask: the long-span objective mixed with blank infilling
    # document objective: P([gMASK] span ends the text), else anywhere (THUDM/GLM)
    gmask_end_prob: float = ranged(0.5, 0, 1)
    valid_fraction: float = ranged(0.01, 0, 1, high_open=True)
    max_valid_documents: int = ranged(50, 0)


@dataclass
class GlmConfig(ModelConfig):
    """GLM (Du et al., 2021): one pre-LN transformer with 2D positions and a tied output layer."""

    family: str = "glm"
    data_config: ClassVar[type] = GlmDataConfig  # the default objective's
    vocab_size: int = 30522
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12
    ffn_dim: int = 3072
    max_position_embeddings: int = 512
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_function: str = "gelu"
    layer_norm_eps: float = 1e-5
    init_std: float = 0.02
    pad_token_id: int = 0
    bos_token_id: int = 2  # [CLS]
    eos_token_id: int = 3  # [SEP]
    mask_token_id: int = 4  # [MASK]
    sop_token_id: int = 5  # [sop]: starts each Part B span
    eop_token_id: int = 6  # [eop]: ends each Part B span
    # [sMASK]: sentence-level blank; [gMASK]: document-level / generation blank. None where the vocabulary
    # has none (THUDM's glm-large, glm-roberta-large): seq2seq prompts then end in [MASK], as THUDM/GLM's
    # seq2seq tasks do without --task-mask, and the sentence / document objectives refuse to run.
    smask_token_id: int | None = 7
    gmask_token_id: int | None = 8
    copy: bool = False  # PALM's copy head (eqs. 2-8) over Part A's tokens; ctxlm's extension (models/glm.py)
    # Which blank of a prompt `start_decoding` fills by default: "last" (the paper's §2.3: the mask appended
    # at the end), or "first", as the THUDM hub code's `build_inputs_for_generation` does.
    decode_blank: str = "last"


# `--config` names (registered into `ctxlm.families.NAMED_CONFIGS`). GLM sizes (paper §3.1): BERT-base and
# BERT-large shapes; tiny for a laptop.
GLM_NAMED_CONFIGS = {
    "glm-tiny": dict(d_model=256, num_layers=4, num_heads=4, ffn_dim=1024),
    "glm-base": dict(d_model=768, num_layers=12, num_heads=12, ffn_dim=3072),
    "glm-large": dict(d_model=1024, num_layers=24, num_heads=16, ffn_dim=4096),
}


def prepare_glm(store, tokenizer, model_config, data: GlmDataConfig, stage: str, seed: int):
    from ..models.glm import glm_tokens
    from ..objectives.glm import prepare_glm_data

    return PreparedData(
        *prepare_glm_data(
            store,
            glm_tokens(model_config),
            data,
            seed,
            model_config.max_position_embeddings,
            sentinel_ids=tokenizer.sentinel_ids or None,
        )
    )


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
    return dataclasses.replace(
        data,
        shuffle_spans=data.shuffle_spans and not given.get("glm_no_shuffle"),
        sentinel=data.sentinel or bool(given.get("glm_sentinel")),
    )


register(
    Family(
        name="glm",
        config=GlmConfig,
        named_configs=GLM_NAMED_CONFIGS,
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
        config_flags=("glm_no_shuffle", "glm_sentinel"),
        apply_config_flags=apply_config_flags,
        config_flags_error="--glm-no-shuffle and --glm-sentinel are GLM options",
        flags={
            "glm_task": dict(choices=list(GLM_TASKS)),
            "glm_no_shuffle": dict(action="store_true", help="GLM ablation: Part B spans in text order"),
            "glm_sentinel": dict(
                action="store_true", help="GLM ablation: distinct sentinel tokens [S0] [S1] ... instead of one [MASK]"
            ),
        },
    )
)
