"""Pre-training entry points: corpus → token store → objective examples → the training loop.

`pretrain(...)` is what `ctxlm pretrain` calls; researchers can call it with a `PretrainConfig`
built in Python. Each objective (registered with its model family in `ctxlm.families`) has one
`prepare` function that turns a token store into training and held-out `Examples`.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

import torch

from .checkpoint import TOKENIZER_NAME, build_model, load_model_dir, resume_checkpoint
from .config import PretrainConfig, TrainConfig
from .config_loading import default_data_config
from .data.store import TokenStore
from .distributed import main_process_first, setup
from .errors import CtxlmError
from .run_options import CorpusSpec, HfInit, RunOptions  # noqa: F401  (HfInit: pretrain's `init`)
from .families import OPTIMIZER_FIELDS, WARMUP_FIELDS, PreparedData, get_objective, resolve, train_defaults
from .tokenization import TextTokenizer
from .training import TrainingInputs, TrainResult, train


def report_skipped(skipped: dict[str, int]) -> None:
    """One warning line with the counts of what a run skipped (also in run.json, under 'skipped')."""
    counts = ", ".join(f"{n:,} {name.replace('_', ' ')}" for name, n in skipped.items() if n)
    if counts:
        warnings.warn(f"skipped while building examples: {counts} (counts in run.json under 'skipped')", stacklevel=2)


def prepare_data(
    objective: str, store: TokenStore, tokenizer: TextTokenizer, model_config, data_config, stage: str, seed: int
) -> PreparedData:
    """Training and held-out examples of a store for a registered objective."""
    return resolve(get_objective(objective).prepare)(store, tokenizer, model_config, data_config, stage, seed)


# Model config fields filled from the tokenizer: `<field>` → the token's name.
TOKEN_FIELDS = {
    "pad_token_id": "[PAD]",
    "bos_token_id": "[CLS]",
    "eos_token_id": "[SEP]",
    "mask_token_id": "[MASK]",
    "decoder_start_token_id": "[CLS]",
    "sop_token_id": "[sop]",
    "eop_token_id": "[eop]",
    "smask_token_id": "[sMASK]",
    "gmask_token_id": "[gMASK]",
    "pseudo_token_id": "[P]",
}


def token_id(tokenizer: TextTokenizer, name: str) -> int:
    roles = {"[PAD]": "pad_id", "[CLS]": "cls_id", "[SEP]": "sep_id", "[MASK]": "mask_id"}
    return getattr(tokenizer, roles[name]) if name in roles else tokenizer.special_id(name)


def model_config_for_tokenizer(model_config, tokenizer: TextTokenizer):
    """Fill the vocabulary size and every special-token id the config has from the tokenizer."""
    fields = {f.name for f in dataclasses.fields(model_config)}
    ids = {field: token_id(tokenizer, name) for field, name in TOKEN_FIELDS.items() if field in fields}
    return dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, **ids)


def with_train_defaults(
    train: TrainConfig, family: str, given: Collection[str] | None = None, model_config=None
) -> tuple[TrainConfig, dict[str, Any]]:
    """`train` with the model family's pre-training optimiser defaults (`families.train_defaults`:
    those of `model_config`'s shape when it is given) in the fields the user did not set: those not in
    `given`, or, when `given` is None, those still at TrainConfig's own defaults (so a flag or YAML
    value equal to TrainConfig's default reads as unset). The warm-up is one setting: a given
    `warmup_steps` or `warmup_ratio` keeps both. Returns the config and the values it took from the
    family."""
    base = TrainConfig()
    if given is None:
        given = {name for name in OPTIMIZER_FIELDS if getattr(train, name) != getattr(base, name)}
    given = set(given) | (set(WARMUP_FIELDS) if set(given) & set(WARMUP_FIELDS) else set())
    applied = {
        name: value
        for name, value in train_defaults(family, model_config).items()
        if name not in given and getattr(train, name) != value
    }
    return dataclasses.replace(train, **applied), applied


def pretrain(
    corpus: CorpusSpec | Sequence[str | Path],
    out_dir: str | Path,
    config: PretrainConfig,
    *,
    objective: str = "palm",
    stage: str = "generation",
    tokenizer: TextTokenizer | str | Path | None = None,
    init: str | Path | HfInit | None = None,
    objective_options: Mapping[str, Any] | None = None,
    run: RunOptions = RunOptions(),
    train_given: Collection[str] | None = None,
) -> TrainResult:
    """Pre-train (or continue pre-training) a model on `corpus`; see `ctxlm pretrain --help`.

    `objective` is a registered objective (`ctxlm.families.OBJECTIVES`): "palm" (with `stage` "mlm"
    or "generation"), "mass" or "bart" (baselines on a PALM model, `objectives/mass.py` and
    `bart.py`), "glm" or "unilm"; the model must be of its family. `objective_options` are fields of
    the objective's data config over `config.data`'s (e.g. GLM's `task`, UniLMv2's `objective`). The
    architecture comes from `init` when given (a model directory: PALM's stage 2 starts from stage
    1; or an `HfInit`, a transformers directory or hub id converted into the objective's family as
    `ctxlm convert` does), else from `config.model`. With `resume`, training continues exactly from
    the newest checkpoint in `out_dir`. `corpus` is a `CorpusSpec` (or its files and directories, read
    with the defaults; its `cache_dir` keeps the token store); `run` says how the run starts and where
    (`RunOptions`: resume, overwrite, allow_config_change, device). The optimiser settings the user did not
    set (`train_given`: the TrainConfig fields set; None: those not at TrainConfig's defaults) are
    the objective's family's for the model's shape (`with_train_defaults`); run.json lists them under
    `train_defaults`.

    Args:
        out_dir: the run's folder (checkpoints, run.json, the final model)
        config: the model and pre-training config: a named config or a YAML file (in Python a `PretrainConfig`)
        objective: pre-training objective (default: the config family's own; mass and bart run on a PALM config)
        stage: PALM stage 1 (encoder MLM) or 2 (continuation generation)
        tokenizer: tokenizer.json or its directory (default: the init model's)
        init: model directory to start from (stage 2 starts from stage 1)
    """
    out_dir, corpus = Path(out_dir), CorpusSpec.of(corpus)
    spec = get_objective(objective)
    resume_from = resume_checkpoint(out_dir, run.resume)
    torch.manual_seed(config.train.seed)
    # the model is built as for a new run (`train` checks it against the checkpoint it resumes
    # from, whose weights come with its training state)
    model = saved_tokenizer = conversion = None
    if isinstance(init, HfInit):
        from .convert import model_from_hf

        model, saved_tokenizer, conversion = model_from_hf(init.source, family=spec.family, decoder=init.decoder)
    elif init is not None:
        model, saved_tokenizer = load_model_dir(init, weights=resume_from is None)
    if resume_from is not None and (resume_from / TOKENIZER_NAME).is_file():
        saved_tokenizer = TextTokenizer.load(resume_from)
    tokenizer = tokenizer or saved_tokenizer
    if tokenizer is None:
        raise CtxlmError("no tokenizer: pass --tokenizer (or --init a model directory that has one)")
    if not isinstance(tokenizer, TextTokenizer):
        tokenizer = TextTokenizer.load(tokenizer)
    if model is None:
        model = build_model(model_config_for_tokenizer(config.model, tokenizer))
    if model.config.vocab_size < tokenizer.vocab_size:
        raise CtxlmError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model only {model.config.vocab_size}")

    if model.config.family != spec.family:
        raise CtxlmError(
            f"--objective {objective} needs a {spec.family} model; the config is a "
            f"{model.config.family} model (e.g. --config {spec.family}-tiny)"
        )
    train_config, defaults_applied = with_train_defaults(config.train, spec.family, train_given, model.config)
    data_config = config.data
    if not isinstance(data_config, spec.data_config):
        data_config = spec.data_config()
    if objective_options:
        unknown = sorted(set(objective_options) - {f.name for f in dataclasses.fields(data_config)})
        if unknown:
            raise CtxlmError(
                f"objective options {', '.join(unknown)} are not settings of the {objective} objective "
                f"({type(data_config).__name__})"
            )
        data_config = dataclasses.replace(data_config, **objective_options)

    cluster = setup(
        collective_timeout=train_config.collective_timeout, heartbeat_timeout=train_config.heartbeat_timeout
    )
    with main_process_first(cluster):  # rank 0 builds the store; the others then open it
        store = TokenStore.build(
            list(corpus.paths),
            tokenizer,
            cache_dir=corpus.cache_dir,
            **corpus.store_options(),
            progress=train_config.progress and cluster.is_main,
        )
    data = prepare_data(objective, store, tokenizer, model.config, data_config, stage, train_config.seed)
    data.description["skipped"] = {**store.meta.get("skipped", {}), **data.description.get("skipped", {})}
    report_skipped(data.description["skipped"])
    if spec.prepare_model is not None:  # e.g. PALM's stage 1 trains the encoder and its MLM head only
        resolve(spec.prepare_model)(model, stage)
    loss_options = spec.options(data_config, stage, train_config.label_smoothing)
    run_info = {
        "objective": objective,
        "stage": stage if stage in spec.stages else None,
        "corpus": [str(c) for c in corpus.paths],
        "init": str(init) if init and conversion is None else None,
        "data": dataclasses.asdict(data_config),
        "init_from_hf": conversion.summary() if conversion else None,
        "store": str(store.directory),
        "train_defaults": defaults_applied,
        **data.description,
    }
    inputs = TrainingInputs(data.train, tokenizer.pad_id, data.valid, loss_options)
    return train(model, inputs, train_config, out_dir, tokenizer=tokenizer, run_info=run_info, run=run)


def pretrain_variant(
    name: str,
    corpus: CorpusSpec | Sequence[str | Path],
    out_dir: str | Path,
    config: PretrainConfig,
    *,
    tokenizer: TextTokenizer | str | Path,
    **options,
) -> Path | None:
    """Run the stages of `PRETRAIN_VARIANTS[name]` (`objectives/variants.py`) in order, stage i in
    `out_dir/<i>-<objective>[-<stage>]`, each from the previous stage's model, with the variant's
    model and data overrides on `config`; `options` go to every `pretrain` call. Returns the last
    stage's directory, where fine-tuning starts, or None for a variant without pre-training."""
    from .objectives.variants import PRETRAIN_VARIANTS

    if name not in PRETRAIN_VARIANTS:
        raise CtxlmError(f"unknown pre-training variant '{name}' (choose from {', '.join(PRETRAIN_VARIANTS)})")
    variant = PRETRAIN_VARIANTS[name]
    if config.model.family != variant.family:
        raise CtxlmError(f"variant '{name}' needs a {variant.family} model config, got {config.model.family}")
    model = dataclasses.replace(config.model, **variant.model)
    data_type = default_data_config(variant.family)
    data = config.data if isinstance(config.data, data_type) else data_type()
    init = None
    for i, step in enumerate(variant.stages, start=1):
        stage_config = dataclasses.replace(config, model=model, data=dataclasses.replace(data, **step.data))
        suffix = f"-{step.stage}" if get_objective(step.objective).stages else ""
        stage_dir = Path(out_dir) / f"{i}-{step.objective}{suffix}"
        pretrain(
            corpus,
            stage_dir,
            stage_config,
            objective=step.objective,
            stage=step.stage,
            tokenizer=tokenizer,
            init=init,
            **options,
        )
        init = stage_dir
    return init
