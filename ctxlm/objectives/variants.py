"""Named pre-training variants: each paper's objective, its ablations, and the MASS / BART / no
pre-training baselines, as one public mapping (`PRETRAIN_VARIANTS`, name → `Variant`).

A variant is a model family, model-config overrides, and the pre-training stages to run in order,
each starting from the previous stage's model (`pretraining.pretrain_variant` runs them; `ctxlm
pretrain` flags do the same by hand, given in each description). No stages means no pre-training:
fine-tuning starts from a fresh model. Fine-tuning always starts from the last stage's directory.

PALM's Table 6 rows. The paper ablates autoencoding and autoregression "by randomly initializing
the weights of the encoder and the decoder, respectively"; here they are stages left out, which
leave the same part untrained by its objective: "− autoencoding" skips stage 1 (stage 2 from
scratch: the encoder is trained only through the decoder's loss), "− autoregression" stops after
stage 1 (the decoder keeps its initialisation until fine-tuning).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One `pretrain(...)` call: its objective, PALM's stage, and data-config overrides."""

    objective: str  # palm | mass | bart | glm | unilm
    stage: str = "generation"  # PALM only: "mlm" (stage 1) or "generation" (stage 2)
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    family: str  # the model family (palm, glm, unilm)
    stages: tuple[Stage, ...]  # run in order; () = no pre-training
    description: str
    model: dict[str, Any] = field(default_factory=dict)  # model-config overrides


PALM_BOTH_STAGES = (Stage("palm", "mlm"), Stage("palm", "generation"))

PRETRAIN_VARIANTS: dict[str, Variant] = {
    "palm": Variant(
        "palm",
        PALM_BOTH_STAGES,
        "PALM: stage 1 encoder MLM, then stage 2 continuation with the "
        "pointer-generator (Table 6 row 1; --stage mlm, then --stage generation --init STAGE1)",
    ),
    "palm-nocopy": Variant(
        "palm",
        PALM_BOTH_STAGES,
        "PALM − pointer-generator: the plain tied softmax, a "
        "BART-shaped model (Table 6; --no-copy, or copy: false in the model config)",
        model={"copy": False},
    ),
    "palm-noae": Variant(
        "palm",
        (Stage("palm", "generation"),),
        "PALM − autoencoding: no stage 1, stage 2 from scratch (Table 6; --stage generation without --init)",
    ),
    "palm-noar": Variant(
        "palm",
        (Stage("palm", "mlm"),),
        "PALM − autoregression: stage 1 only, fine-tuning "
        "starts from it with an untrained decoder (Table 6; finetune --init STAGE1)",
    ),
    "none": Variant(
        "palm",
        (),
        "no pre-training: fine-tune a fresh PALM model (Table 6 − pre-training; "
        "finetune --config palm-... --tokenizer T)",
    ),
    "mass": Variant(
        "palm",
        (Stage("mass"),),
        "MASS on the PALM model: a 50% span masked in the encoder, predicted by the decoder (--objective mass)",
    ),
    "bart": Variant(
        "palm",
        (Stage("bart"),),
        "BART on the PALM model: sentence permutation + Poisson(3) "
        "text infilling of 30%, the decoder reconstructs the original (--objective bart)",
    ),
    "glm": Variant("glm", (Stage("glm", data={"task": "blank"}),), "GLM blank infilling (--objective glm)"),
    "glm-noshuffle": Variant(
        "glm",
        (Stage("glm", data={"task": "blank", "shuffle_spans": False}),),
        "GLM − span shuffling: Part B in text order (--glm-no-shuffle)",
    ),
    "glm-sentinel": Variant(
        "glm",
        (Stage("glm", data={"task": "blank", "sentinel": True}),),
        "GLM with sentinel tokens instead of one [MASK] (--glm-sentinel; the tokenizer needs sentinel tokens)",
    ),
    "unilm": Variant("unilm", (Stage("unilm", data={"objective": "ae+par"}),), "UniLMv2 AE + PAR (--objective unilm)"),
    "unilm-ae": Variant(
        "unilm", (Stage("unilm", data={"objective": "ae"}),), "UniLMv2 AE only (Table 6; --unilm-objective ae)"
    ),
    "unilm-par": Variant(
        "unilm", (Stage("unilm", data={"objective": "par"}),), "UniLMv2 PAR only (Table 6; --unilm-objective par)"
    ),
    "unilm-ae-ar": Variant(
        "unilm",
        (Stage("unilm", data={"objective": "ae+ar"}),),
        "UniLMv2 AE + AR, one token per step (Table 6; --unilm-objective ae+ar)",
    ),
    "unilm-ar": Variant(
        "unilm", (Stage("unilm", data={"objective": "ar"}),), "UniLMv2 AR only (Table 6; --unilm-objective ar)"
    ),
    "glm-copy": Variant(
        "glm",
        (Stage("glm", data={"task": "blank"}),),
        "GLM blank infilling with PALM's pointer-generator over Part A (ctxlm's extension; --copy, or copy: true)",
        model={"copy": True},
    ),
    "unilm-copy": Variant(
        "unilm",
        (Stage("unilm", data={"objective": "ae+par"}),),
        "UniLMv2 AE + PAR with "
        "PALM's pointer-generator for seq2seq fine-tuning (ctxlm's extension; --copy, or copy: true)",
        model={"copy": True},
    ),
    "unilm-norelpos": Variant(
        "unilm",
        (Stage("unilm", data={"objective": "ae+par"}),),
        "UniLMv2 − relative positions (Table 6; relative_position_bias: false)",
        model={"relative_position_bias": False},
    ),
}
