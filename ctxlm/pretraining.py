"""Pre-training entry points: corpus → token store → objective examples → the training loop.

`pretrain(...)` is what `ctxlm pretrain` calls; researchers can call it with a `PretrainConfig`
built in Python. Each objective family contributes one `prepare_*` function that turns a token
store into training and held-out `Examples`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from .checkpoint import build_model, latest_checkpoint, load_model_dir
from .config import DATA_CONFIG_TYPES, PalmDataConfig, PretrainConfig
from .data.store import TokenStore
from .device import resolve_device
from .errors import CtxlmError
from .objectives.palm import PalmExamples, PalmTokens, fragment_budgets, palm_windows
from .tokenization import TextTokenizer
from .training import TrainResult, train

PALM_STAGES = ("mlm", "generation")
OBJECTIVES = ("palm", "glm", "unilm")


@dataclass
class PreparedData:
    train: Any  # Examples
    valid: Any  # Examples
    description: dict[str, Any]


def palm_tokens(tokenizer: TextTokenizer) -> PalmTokens:
    return PalmTokens(cls=tokenizer.cls_id, sep=tokenizer.sep_id, mask=tokenizer.mask_id,
                      decoder_start=tokenizer.cls_id)


def prepare_palm_data(store: TokenStore, tokenizer: TextTokenizer, data: PalmDataConfig, stage: str,
                      seed: int, max_positions: int | None = None) -> PreparedData:
    """PALM examples of a store: fragments of whole sentences (paper §2.2), split by document."""
    if stage not in PALM_STAGES:
        raise CtxlmError(f"unknown PALM stage '{stage}' (choose from {', '.join(PALM_STAGES)})")
    source_max, target_max = fragment_budgets(data.fragment_length, data.source_ratio)
    if max_positions is not None and max(source_max, target_max) > max_positions:
        raise CtxlmError(f"data.fragment_length {data.fragment_length} gives {source_max} source tokens, "
                         f"more than the model's max_position_embeddings {max_positions}")
    train_docs, valid_docs = store.split_documents(data.valid_fraction, seed)
    valid_docs = valid_docs[: data.max_valid_documents]
    lengths = store.sentence_lengths
    windows = {name: palm_windows(lengths, store.document_offsets, docs, source_max, target_max)
               for name, docs in (("train", train_docs), ("valid", valid_docs))}
    if len(windows["train"]) == 0:
        raise CtxlmError(f"the corpus yields no PALM fragments of ≤ {data.fragment_length} tokens "
                         "(documents need at least two sentences that fit)")
    objective = "generation+mlm" if stage == "generation" and data.mlm_weight > 0 else stage
    tok = palm_tokens(tokenizer)
    make = lambda w: PalmExamples(store, w, tok, objective, replace_pool=tokenizer.replace_pool,  # noqa: E731
                                  mlm_probability=data.mlm_probability, seed=seed)
    return PreparedData(make(windows["train"]), make(windows["valid"]), {
        "objective": f"palm/{objective}", "source_max": source_max, "target_max": target_max,
        "train_documents": len(train_docs), "valid_documents": len(valid_docs),
        "train_fragments": len(windows["train"]), "valid_fragments": len(windows["valid"]),
    })


def prepare_data(objective: str, store: TokenStore, tokenizer: TextTokenizer, model_config, data_config,
                 stage: str, seed: int) -> PreparedData:
    """Training and held-out examples of a store for an objective family."""
    max_positions = model_config.max_position_embeddings
    if objective == "palm":
        return prepare_palm_data(store, tokenizer, data_config, stage, seed, max_positions)
    if objective == "glm":
        from .models.glm import glm_tokens
        from .objectives.glm import prepare_glm_data

        return PreparedData(*prepare_glm_data(store, glm_tokens(model_config), data_config, seed, max_positions,
                                              sentinel_ids=tokenizer.sentinel_ids or None))
    from .objectives.unilm import prepare_unilm_data, unilm_tokens

    return PreparedData(*prepare_unilm_data(store, unilm_tokens(tokenizer), data_config, seed, max_positions))


# Model config fields filled from the tokenizer: `<field>` → the token's name.
TOKEN_FIELDS = {
    "pad_token_id": "[PAD]", "bos_token_id": "[CLS]", "eos_token_id": "[SEP]", "mask_token_id": "[MASK]",
    "decoder_start_token_id": "[CLS]", "sop_token_id": "[sop]", "eop_token_id": "[eop]",
    "smask_token_id": "[sMASK]", "gmask_token_id": "[gMASK]", "pseudo_token_id": "[P]",
}


def token_id(tokenizer: TextTokenizer, name: str) -> int:
    roles = {"[PAD]": "pad_id", "[CLS]": "cls_id", "[SEP]": "sep_id", "[MASK]": "mask_id"}
    return getattr(tokenizer, roles[name]) if name in roles else tokenizer.special_id(name)


def model_config_for_tokenizer(model_config, tokenizer: TextTokenizer):
    """Fill the vocabulary size and every special-token id the config has from the tokenizer."""
    fields = {f.name for f in dataclasses.fields(model_config)}
    ids = {field: token_id(tokenizer, name) for field, name in TOKEN_FIELDS.items() if field in fields}
    return dataclasses.replace(model_config, vocab_size=tokenizer.vocab_size, **ids)


def pretrain(
    corpus: Sequence[str | Path],
    out_dir: str | Path,
    config: PretrainConfig,
    *,
    objective: str = "palm",
    stage: str = "generation",
    tokenizer: TextTokenizer | str | Path | None = None,
    init: str | Path | None = None,
    resume: bool = False,
    glm_task: str | None = None,
    unilm_objective: str | None = None,
    cache_dir: str | Path | None = None,
    corpus_format: str = "auto",
    text_field: str | None = None,
    fallback_encoding: str | None = None,
    device: str | torch.device | None = "auto",
) -> TrainResult:
    """Pre-train (or continue pre-training) a model on `corpus`; see `ctxlm pretrain --help`.

    `objective` is the model family's: "palm" (with `stage` "mlm" or "generation"), "glm" (with
    `glm_task` overriding `config.data.task`) or "unilm" (with `unilm_objective` overriding
    `config.data.objective`). The architecture comes from `init` when given (a model directory:
    PALM's stage 2 starts from stage 1), else from `config.model`. With `resume`, training continues
    exactly from the newest checkpoint in `out_dir`.
    """
    out_dir = Path(out_dir)
    if objective not in OBJECTIVES:
        raise CtxlmError(f"unknown objective '{objective}' (choose from {', '.join(OBJECTIVES)})")
    resume_from = latest_checkpoint(out_dir) if resume else None
    if resume and resume_from is None:
        raise CtxlmError(f"{out_dir}: --resume given but there is no checkpoint under {out_dir}/checkpoints")
    torch.manual_seed(config.train.seed)
    if resume_from is not None or init is not None:  # a resumed run's weights come with its training state
        model, saved_tokenizer = load_model_dir(resume_from or init, weights=resume_from is None)
        tokenizer = tokenizer or saved_tokenizer
    else:
        model = None
    if tokenizer is None:
        raise CtxlmError("no tokenizer: pass --tokenizer (or --init a model directory that has one)")
    if not isinstance(tokenizer, TextTokenizer):
        tokenizer = TextTokenizer.load(tokenizer)
    if model is None:
        model = build_model(model_config_for_tokenizer(config.model, tokenizer))
    if model.config.vocab_size < tokenizer.vocab_size:
        raise CtxlmError(f"the tokenizer has {tokenizer.vocab_size} tokens, the model only {model.config.vocab_size}")

    if model.config.family != objective:
        raise CtxlmError(f"--objective {objective} needs a {objective} model; the config is a "
                         f"{model.config.family} model (e.g. --config {objective}-tiny)")
    data_config = config.data
    if not isinstance(data_config, DATA_CONFIG_TYPES[objective]):
        data_config = DATA_CONFIG_TYPES[objective]()
    if glm_task is not None:
        data_config = dataclasses.replace(data_config, task=glm_task)
    if unilm_objective is not None:
        data_config = dataclasses.replace(data_config, objective=unilm_objective)

    store = TokenStore.build(corpus, tokenizer, cache_dir=cache_dir, format=corpus_format, text_field=text_field,
                             fallback_encoding=fallback_encoding, progress=config.train.progress)
    data = prepare_data(objective, store, tokenizer, model.config, data_config, stage, config.train.seed)
    loss_options = {}
    if objective == "palm" and stage == "generation":
        loss_options["mlm_weight"] = data_config.mlm_weight
    if config.train.label_smoothing and (objective != "palm" or stage == "generation"):
        loss_options["label_smoothing"] = config.train.label_smoothing
    run_info = {"objective": objective, "stage": stage if objective == "palm" else None,
                "corpus": [str(c) for c in corpus],
                "init": str(init) if init else None, "data": dataclasses.asdict(data_config),
                "store": str(store.directory), **data.description}
    return train(model, data.train, config.train, out_dir, pad_id=tokenizer.pad_id, tokenizer=tokenizer,
                 valid_examples=data.valid, resume=resume, loss_options=loss_options, run_info=run_info,
                 device=resolve_device(device))
