"""The `ctxlm` command line. Each verb parses its flags and calls one public function.

    ctxlm tokenizer train --corpus PATH... --vocab-size N --out DIR
    ctxlm pretrain --objective palm --stage {mlm,generation} --corpus PATH... --config palm-tiny --out DIR
    ctxlm pretrain --objective {mass,bart,glm,unilm} ...   (MASS and BART run on a PALM config)
    ctxlm generate --model DIR (--text "..." | --input FILE.jsonl [--output FILE.jsonl])
    ctxlm convert (--from-hf HF_DIR_OR_HUB_ID [--family F] | --to-hf DIR) --out DIR
    ctxlm convert (--from-official PATH [--family F] [--format NAME] | --to-official DIR [--format NAME]) --out DIR
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from .config import CLOZE_TRAIN, check_ranges, ranged
from .errors import CtxlmError, plain_warnings


TRAIN_HELP = {  # TrainConfig field → help (every field has a flag; YAML `train:` sections set them too)
    "max_steps": "optimizer steps (the schedule's length)", "save_every": "checkpoint every N steps (and at the end)",
    "batch_size": "sequences per micro-batch", "grad_accum": "micro-batches per optimizer step",
    "lr": "peak learning rate (AdamW)", "warmup_steps": "steps of linear warm-up (then linear decay to 0)",
    "weight_decay": "AdamW weight decay", "adam_beta1": "AdamW beta1", "adam_beta2": "AdamW beta2",
    "adam_eps": "AdamW epsilon", "label_smoothing": "label smoothing of the token losses",
    "seed": "data order, dropout and new weights", "log_every": "write metrics.jsonl every N steps",
    "eval_batches": "held-out batches per validation", "keep_checkpoints": "checkpoints kept (the newest)",
    "max_nonfinite_steps": "stop after this many steps in a row with a NaN/Inf loss or gradient norm",
    "eval_every": "validate every N steps (and at the end)", "bf16": "bfloat16 autocast",
    "fsdp": "under torchrun: shard parameters, gradients and optimizer state over the ranks (FSDP2) instead of "
            "replicating them (DDP)",
    "compile": "torch.compile the model", "data_workers": "DataLoader worker processes (default: 4 on CUDA, 0 on CPU)",
    "progress": "no progress bar", "clip_norm": "gradient norm clipping (0: off)",
    "select_metric": "keep the best weights by this validation metric, e.g. valid/lm_loss (lower is better)",
    "early_stopping_patience": "stop after this many validations without improvement (0: never)",
    "warmup_ratio": "warm-up as a fraction of --max-steps (wins over --warmup-steps; pre-training defaults to the "
                    "model family's)",
    "collective_timeout": "under torchrun: seconds a collective (an all-reduce, a barrier) may wait before the run "
                          "stops",
    "heartbeat_timeout": "under torchrun: seconds without a rank's heartbeat before every rank stops, naming it",
}


def _train_help(field: dataclasses.Field) -> str | None:
    """TRAIN_HELP's text with the TrainConfig default, e.g. "... (default: 1000)", and where
    pre-training takes the model family's instead; an on/off flag's default is its absence, and a
    None default is explained by the text."""
    from .families import OPTIMIZER_FIELDS

    text = TRAIN_HELP.get(field.name)
    if field.default is dataclasses.MISSING or field.default is None or isinstance(field.default, bool):
        return text
    value = f"{field.default:g}" if isinstance(field.default, float) else field.default
    family = "; pre-training: the model family's" if field.name in OPTIMIZER_FIELDS else ""
    return f"{text or ''} (default: {value}{family})".strip()


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _train_overrides(args) -> dict:
    """The TrainConfig fields given as flags (refused, naming the flag, outside their ranges)."""
    from .config import TrainConfig, check_values

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
                 if getattr(args, f.name, None) is not None}
    check_values(TrainConfig, overrides, _flag)
    return overrides


def _run_flags(args) -> dict:
    return {"resume": args.resume, "overwrite": args.overwrite, "allow_config_change": args.allow_config_change}


def _optional_type(annotation: str) -> type:
    """The value type of an `X | None` TrainConfig field (default None)."""
    return next((kind for kind in (int, float) if annotation.startswith(kind.__name__)), str)


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (`--no-progress` for `progress`), plus --resume."""
    from .config import TrainConfig

    g = p.add_argument_group("training (TrainConfig; a YAML config's train: section sets the same fields)")
    for f in dataclasses.fields(TrainConfig):
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            flag = f"--{f.name}" if not default else f"--no-{f.name}"
            g.add_argument(flag.replace("_", "-"), dest=f.name, action="store_const", const=not default, default=None,
                           help=_train_help(f))
        else:
            kind = type(default) if default is not None else _optional_type(str(f.type))
            g.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, help=_train_help(f))
    _add_device_flag(p)
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"],
                   help="continue from the newest checkpoint in --out (one must exist); --resume auto: continue "
                        "if there is one, else start a new run (the same command restarts a preempted job)")
    p.add_argument("--overwrite", action="store_true", help="start over in an --out that holds a run (clears it)")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: allow a different --lr or --max-steps than the run was saved with")


def _add_device_flag(p: argparse.ArgumentParser, bf16_inference: bool = False) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    if bf16_inference:
        p.add_argument("--bf16", action="store_true", help="run the model with bfloat16 weights")


def _add_corpus_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", choices=["auto", "sentences", "paragraphs", "jsonl", "dataset"],
                   help="corpus file format (auto: .parquet/.arrow, save_to_disk directories and hub:NAME → "
                        "dataset; .jsonl → jsonl; text with one sentence a line → sentences; otherwise paragraphs)")
    p.add_argument("--text-field", help="JSONL/dataset field holding the text (default: text, paragraphs, ...)")
    p.add_argument("--fallback-encoding", help="decode lines that are not UTF-8 with this encoding "
                   "(e.g. latin-1) instead of stopping with an error")


# flags naming files or folders that must exist (or datasets: hub:NAME, DIR:SPLIT)
INPUT_PATHS = ("corpus", "tokenizer", "init", "model", "input", "train", "valid", "eval", "pred", "ref", "data_dir",
               "to_hf", "to_official")


# flags naming a folder to write (and a file to write) that may not exist yet
OUTPUT_DIRS = ("out", "cache_dir", "pretrain_dir")
OUTPUT_FILES = ("output", "predictions_out")


def _check_output(name: str, value: str, folder: bool) -> None:
    """Refuse an output path that is (or lies under) a file, or a file path that is a folder."""
    path = Path(value)
    blocker = next((p for p in [path, *path.parents][0 if folder else 1:] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise CtxlmError(f"{_flag(name)} {value}: {blocker} is a file, not a folder")
    if not folder and path.is_dir():
        raise CtxlmError(f"{_flag(name)} {value}: a folder; give a file name")


def _check_inputs(args) -> None:
    """Refuse a --device that is not here, an input path that does not exist and an output path
    that cannot be written, before any work."""
    from .data.hf_datasets import is_dataset
    from .device import resolve_device

    if getattr(args, "device", None) is not None:
        resolve_device(args.device)
    for name in INPUT_PATHS:
        values = getattr(args, name, None)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and not (Path(value).exists() or is_dataset(value)):
                raise CtxlmError(f"--{name.replace('_', '-')} {value}: no such file or directory")
    for names, folder in ((OUTPUT_DIRS, True), (OUTPUT_FILES, False)):
        for name in names:
            if getattr(args, name, None) is not None:
                _check_output(name, getattr(args, name), folder)


def cmd_tokenizer_train(args) -> None:
    _check_inputs(args)
    from .tokenization import train_tokenizer

    tok = train_tokenizer(args.corpus, args.vocab_size, args.out, min_frequency=args.min_frequency,
                          format=args.format, text_field=args.text_field, fallback_encoding=args.fallback_encoding)
    short = "" if tok.vocab_size >= args.vocab_size else f" of {args.vocab_size:,} asked: the corpus has no more pieces"
    print(f"wrote {Path(args.out) / 'tokenizer.json'} ({tok.vocab_size:,} tokens{short})")


def cmd_pretrain(args) -> None:
    _check_inputs(args)
    from .config_loading import load_pretrain_config, train_keys_given
    from .families import default_objective
    from .pretraining import pretrain

    config = load_pretrain_config(args.config)
    overrides = _train_overrides(args)
    config.train = dataclasses.replace(config.train, **overrides)
    if args.fragment_length is not None or args.mlm_weight is not None:
        if config.model.family != "palm":
            raise CtxlmError("--fragment-length and --mlm-weight are PALM-model options (palm, mass, bart)")
        if args.fragment_length is not None:
            config.data = dataclasses.replace(config.data, fragment_length=args.fragment_length)
        if args.mlm_weight is not None:
            config.data = dataclasses.replace(config.data, mlm_weight=args.mlm_weight)
    if args.no_copy or args.copy:
        if args.no_copy and args.copy:
            raise CtxlmError("--copy and --no-copy exclude each other")
        config.model = _set_copy(config.model, args.copy)
    if args.glm_no_shuffle or args.glm_sentinel:
        if config.model.family != "glm":
            raise CtxlmError("--glm-no-shuffle and --glm-sentinel are GLM options")
        config.data = dataclasses.replace(config.data, shuffle_spans=config.data.shuffle_spans and not args.glm_no_shuffle,
                                          sentinel=config.data.sentinel or args.glm_sentinel)
    objective = args.objective or default_objective(config.model.family).name
    result = pretrain(args.corpus, args.out, config, objective=objective, stage=args.stage,
                      glm_task=args.glm_task, unilm_objective=args.unilm_objective,
                      tokenizer=args.tokenizer, init=args.init, init_from_hf=args.init_from_hf,
                      hf_decoder=args.decoder, cache_dir=args.cache_dir,
                      corpus_format=args.format, text_field=args.text_field,
                      fallback_encoding=args.fallback_encoding, device=args.device,
                      train_given=set(overrides) | train_keys_given(args.config), **_run_flags(args))
    _print_result(result, args.out)


GENERATION_FLAGS = {  # flag → GenerationConfig field
    "beam": "num_beams", "max_length": "max_new_tokens", "min_length": "min_new_tokens",
    "length_penalty": "length_penalty", "length_penalty_type": "length_penalty_type",
    "no_repeat_ngram": "no_repeat_ngram_size", "block_subword_loops": "block_subword_loops",
    "block_word_repeats": "block_word_repeats",
    "early_stopping": "early_stopping", "sample": "do_sample",
    "top_k": "top_k", "top_p": "top_p", "temperature": "temperature", "seed": "seed",
}


def _generation_flags(args) -> dict:
    """The GenerationConfig fields given as decoding flags (refused, naming the flag, outside their ranges)."""
    from .config import GenerationConfig, check_values

    flags = {field: getattr(args, flag) for flag, field in GENERATION_FLAGS.items() if getattr(args, flag) is not None}
    flag_of = {field: _flag(flag) for flag, field in GENERATION_FLAGS.items()}
    check_values(GenerationConfig, flags, flag_of.get)
    return flags


def _generation_config(args, defaults):
    """The model's decoding defaults (its recipe's generation.json, else ours), overridden by flags
    (`GenerationConfig.with_overrides`, as a Python config given to `Seq2SeqPredictor.generate`)."""
    from .config import GenerationConfig

    return (defaults or GenerationConfig()).with_overrides(**_generation_flags(args))


def _run_info(model: Path) -> dict:
    """The run.json of the run that wrote a model directory (the directory itself, its best/ or one
    of its checkpoints), or {}."""
    from .checkpoint import BEST_DIR, CHECKPOINTS_DIR

    run = model
    if model.name == BEST_DIR:
        run = model.parent
    elif model.parent.name == CHECKPOINTS_DIR:
        run = model.parent.parent
    path = run / "run.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CtxlmError(f"{path}: unreadable ({error}); give --source-field") from None
    return info if isinstance(info, dict) else {}


def _model_source_field(model: str, input_path: str) -> str:
    """generate's default --source-field: the model's fine-tuning recipe's reader source_field, else
    the first of its task's source fields (summarization: document, article, source) that the
    input's first row has, else the task's first; "source" for a model without a seq2seq run.json."""
    from .data.tasks import jsonl_rows, task_source_fields

    info = _run_info(Path(model))
    reader = (info.get("recipe") or {}).get("reader") or {}
    if reader.get("source_field"):
        return reader["source_field"]
    fields = task_source_fields(info.get("task"))
    _, first = next(iter(jsonl_rows(input_path)), (None, {}))
    return next((field for field in fields if field in first), fields[0])


def _read_sources(path: Path, field: str) -> list[dict]:
    from .data.tasks import jsonl_rows, row_fields

    rows = []
    for at, row in jsonl_rows(path):
        if not isinstance(row.get(field), str):
            raise CtxlmError(f"{at}: field '{field}' missing or not a string (the row has {row_fields(row)}); "
                             "name the source field with --source-field")
        rows.append(row)
    if not rows:
        raise CtxlmError(f"{path}: no input rows")
    return rows


def cmd_generate(args) -> None:
    _check_inputs(args)
    from .predict import Seq2SeqPredictor
    from .prediction_file import SORT_WINDOW

    if (args.text is None) == (args.input is None):
        raise CtxlmError("give exactly one of --text and --input")
    _generation_flags(args)  # ranges checked before the model is read
    predictor = Seq2SeqPredictor.load(args.model, args.device, bf16=args.bf16,
                                      max_source_tokens=args.max_source_tokens)
    cfg = _generation_config(args, predictor.default_generation)
    if args.text is not None:
        print(predictor.generate([args.text], cfg)[0])
        return
    if args.resume and args.output is None:
        raise CtxlmError("--resume needs --output (the file to continue)")
    field = args.source_field or _model_source_field(args.model, args.input)
    rows = _read_sources(Path(args.input), field)[:args.limit]
    window = SORT_WINDOW if args.sort_window is None else args.sort_window
    predictor.generate_to_file(rows, args.output or sys.stdout, cfg, source_field=field,
                               batch_size=args.batch_size, sort_window=window, resume=args.resume,
                               progress=args.output is not None)


SEQ2SEQ_TASKS = ["qa", "summarization", "qg", "dialog", "seq2seq"]
NLU_TASKS = ["cloze", "classify", "squad"]  # GLM's cloze questions; UniLMv2's classifier and span QA
FINETUNE_DEFAULTS = (
    "Training flags override the --recipe's train: section, which overrides the task's settings, which override "
    "the defaults shown: seq2seq tasks: the recipe's (e.g. gigaword); cloze: PET's few-shot settings ("
    + ", ".join(f"{k} {v:g}" for k, v in CLOZE_TRAIN.items()) + "); classify and squad: UniLMv2's Table 9 "
    "(batch_size 32, lr 2e-05, 10% warm-up, weight_decay 0.01, 10 epochs (squad: 4), validating once an epoch).")


def _set_copy(model_config, copy: bool):
    """`model_config` with PALM's copy head on or off (--copy / --no-copy)."""
    if not any(f.name == "copy" for f in dataclasses.fields(model_config)):
        raise CtxlmError(f"--copy/--no-copy: model family '{model_config.family}' has no copy head option")
    return dataclasses.replace(model_config, copy=copy)


def _scratch_model_config(args):
    from .config_loading import load_pretrain_config

    if args.init is not None:
        if getattr(args, "copy", False):
            raise CtxlmError("--copy applies to a model trained from scratch (--config), not to --init")
        return None
    if args.config is None or args.tokenizer is None:
        raise CtxlmError("give --init MODEL_DIR (or --config and --tokenizer to train from scratch)")
    model = load_pretrain_config(args.config).model
    return _set_copy(model, True) if getattr(args, "copy", False) else model


def _other_rank() -> bool:
    """True in a process of a torchrun launch other than rank 0 (RANK > 0): it prints no warnings
    (rank 0 prints the same ones) and no result line; its errors still show."""
    return os.environ.get("RANK", "0") not in ("", "0")


def _print_result(result, out) -> None:
    if _other_rank():
        return
    if result.interrupted:
        print(f"stopped by a signal at step {result.step}; checkpoint written; continue with --resume "
              f"(or --resume auto)")
        return
    summary = ", ".join(f"{k} {v:.4g}" for k, v in result.final_metrics.items() if v is not None)
    print(f"done: {result.step} steps → {out}" + (f" ({summary})" if summary else ""))


def cmd_finetune(args) -> None:
    _check_inputs(args)
    from .config import TrainConfig, load_finetune_config

    overrides = _train_overrides(args)
    if args.task is None and args.recipe is not None:
        args.task = _nlu_recipe_task(args.recipe)  # an NLU recipe names its task; seq2seq ones keep None
    model_config = _scratch_model_config(args)
    common = dict(model_config=model_config, tokenizer=args.tokenizer, device=args.device, **_run_flags(args))
    if args.task in NLU_TASKS:
        nlu, recipe_train = _nlu_options(args)
        overrides = {**recipe_train, **overrides}
    if args.task == "cloze":
        from .tasks.cloze import finetune_cloze

        _need(nlu, "dataset", "data_dir")
        epochs = None if "max_steps" in overrides else nlu.epochs  # --max-steps wins over the recipe's epochs
        result = finetune_cloze(args.init, nlu.dataset, nlu.data_dir, args.out,
                                TrainConfig(**{**CLOZE_TRAIN, **overrides}), max_length=nlu.max_length,
                                score_eop=nlu.score_eop, epochs=epochs, **common)
    elif args.task == "classify":
        from .tasks.classification import finetune_classifier

        _need(nlu, "dataset", "data_dir")
        result = finetune_classifier(args.init, nlu.dataset, nlu.data_dir, args.out, train_overrides=overrides,
                                     max_length=nlu.max_length or 128, pooler=nlu.pooler,
                                     train_limit=args.train_limit, valid_limit=args.valid_limit, **common)
    elif args.task == "squad":
        from .tasks.extractive_qa import QaSettings, finetune_squad

        _need(args, "train")
        settings = QaSettings(max_length=nlu.max_length or 384, doc_stride=nlu.doc_stride,
                              max_query_length=nlu.max_query_length, max_answer_length=nlu.max_answer_length)
        result = finetune_squad(args.init, args.train, args.valid, args.out, train_overrides=overrides,
                                settings=settings, train_limit=args.train_limit, valid_limit=args.valid_limit,
                                **common)
    else:
        from .tasks.seq2seq import finetune

        _need(args, "train")
        recipe = load_finetune_config(args.recipe)
        if args.task is not None:
            recipe.task = args.task
        recipe.reader.update({f"{side}_field": getattr(args, f"{side}_field") for side in ("source", "target")
                              if getattr(args, f"{side}_field") is not None})
        if args.skip_empty:
            recipe.reader["skip_empty"] = True
        recipe.train = dataclasses.replace(recipe.train, **overrides)
        if "max_steps" in overrides:
            recipe.epochs = None  # --max-steps wins over the recipe's epochs
        result = finetune(args.train, args.valid, args.out, recipe, init=args.init, train_limit=args.train_limit,
                          **common)
    _print_result(result, args.out)


def _need(args, *names: str) -> None:
    for name in names:
        if getattr(args, name) is None:
            raise CtxlmError(f"--task {args.task} needs --{name.replace('_', '-')}")


@dataclass
class NluOptions:
    """`finetune --task cloze|classify|squad` settings: flags, or the top level of a --recipe YAML
    (whose `train:` section holds TrainConfig fields, as the seq2seq recipes)."""

    task: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    max_length: int | None = ranged(None, 8)
    epochs: int | None = ranged(None, 1)  # cloze: passes over the training rows instead of max_steps (GLM's scripts)
    score_eop: bool = False
    pooler: bool = False
    doc_stride: int = ranged(128, 1)
    max_query_length: int = ranged(64, 1)
    max_answer_length: int = ranged(30, 1)

    __post_init__ = check_ranges  # flags and recipes alike


def _nlu_recipe_task(spec: str) -> str | None:
    """The `task:` of recipe `spec` (a YAML file or a packaged name) when it is an NLU task, else None."""
    from .config import read_yaml, recipe_path

    task = read_yaml(recipe_path(spec)).get("task")
    return task if task in NLU_TASKS else None


def _nlu_options(args) -> tuple[NluOptions, dict]:
    """The NLU settings (flags over the recipe's values over the defaults) and the recipe's train
    section. The recipe is a YAML file or a packaged name (`glm-superglue-rte`)."""
    from .config import TrainConfig, check_values, from_mapping, read_yaml, recipe_path

    values, train = {}, {}
    if args.recipe is not None:
        path = recipe_path(args.recipe)
        values = read_yaml(path)
        train = values.pop("train", None) or {}
        from_mapping(TrainConfig, train, f"{path}: train")  # names a typo or a wrong type
    options = from_mapping(NluOptions, values, str(args.recipe))
    if options.task not in (None, args.task):
        raise CtxlmError(f"{args.recipe}: a recipe for --task {options.task}, not {args.task}")
    if options.epochs is not None and (args.task != "cloze" or "max_steps" in train):
        raise CtxlmError(f"{args.recipe}: epochs is read by --task cloze without train: max_steps "
                         f"(classify and squad count UniLMv2's Table 9 epochs)")
    flags = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(NluOptions)
             if f.name != "task" and getattr(args, f.name, None) is not None}
    check_values(NluOptions, flags, _flag)
    return dataclasses.replace(options, task=args.task, **flags), train


def cmd_evaluate(args) -> None:
    _check_inputs(args)
    from .metrics import evaluate_files, format_markdown_table

    placement = dict(device=args.device, bf16=args.bf16)

    if args.task == "cloze":
        from .tasks.cloze import evaluate_cloze

        _need(args, "model", "data_dir")
        results = evaluate_cloze(args.model, args.dataset, args.data_dir, args.split or "dev32", limit=args.limit,
                                 max_length=args.max_length, **placement)
    elif args.task == "classify":
        from .tasks.classification import evaluate_classifier

        _need(args, "model", "data_dir")
        results = evaluate_classifier(args.model, args.dataset, args.data_dir, args.split or "dev", limit=args.limit,
                                      max_length=args.max_length, **placement)
    elif args.task == "squad":
        from .tasks.extractive_qa import evaluate_squad

        _need(args, "model", "ref")
        results = evaluate_squad(args.model, args.ref, limit=args.limit, predictions_out=args.predictions_out,
                                 **placement)
    elif args.model is not None:
        from .tasks.seq2seq import read_pairs
        from .predict import Seq2SeqPredictor

        if args.task is None or args.ref is None:
            raise CtxlmError("--model scores references by perplexity; give --task and --ref")
        pairs = read_pairs(args.task, args.ref, {"skip_empty": True} if args.task == "dialog" else None, args.limit)
        predictor = Seq2SeqPredictor.load(args.model, **placement)
        results = {"perplexity": predictor.perplexity([p.source for p in pairs], [p.target for p in pairs],
                                                      progress=True)}
    else:
        if args.pred is None or args.ref is None:
            raise CtxlmError("give --pred (predictions) and --ref, or --model --task --ref for perplexity")
        results = evaluate_files(args.pred, args.ref, args.metrics, pred_field=args.pred_field,
                                 ref_field=args.ref_field, limit=args.limit)
    print(json.dumps(results, indent=2))
    print(format_markdown_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def cmd_infill(args) -> None:
    _check_inputs(args)
    from .tasks.infilling import evaluate_infilling, infill_texts
    from .config import load_generation_config

    cfg = _generation_config(args, load_generation_config(args.model))
    if args.eval is not None:
        results = evaluate_infilling(args.model, args.eval, mask_ratio=args.mask_ratio, seed=args.seed or 0,
                                     limit=args.limit, generation_config=cfg, output=args.output, progress=True,
                                     device=args.device, bf16=args.bf16)
        print(json.dumps(results, indent=2))
        return
    if (args.text is None) == (args.input is None):
        raise CtxlmError("give --text (one or more), --input FILE (one text a line) or --eval FILE")
    texts = args.text if args.text is not None else _read_lines(Path(args.input))
    for filled in infill_texts(args.model, texts, cfg, device=args.device, bf16=args.bf16):
        print(filled)


def _read_lines(path: Path) -> list[str]:
    from .data.corpus import iter_lines

    if not path.is_file():
        raise CtxlmError(f"{path}: no such file")
    lines = [text for _, text, _ in iter_lines(path) if text.strip()]  # file:line errors for bad bytes
    if not lines:
        raise CtxlmError(f"{path}: no input lines")
    return lines


def cmd_convert(args) -> None:
    _check_inputs(args)
    if (args.from_official, args.to_official) != (None, None):
        return _convert_official(args)
    from .convert import export_to_hf, import_from_hf

    if (args.from_hf is None) == (args.to_hf is None):
        raise CtxlmError("give exactly one of --from-hf and --to-hf (or --from-official / --to-official)")
    if args.format is not None:
        raise CtxlmError("--format names an official format: give it with --from-official or --to-official")
    if args.from_hf:
        print(import_from_hf(args.from_hf, args.out, family=args.family, decoder=args.decoder).summary())
    else:
        for note in export_to_hf(args.to_hf, args.out, drop_copy_head=args.drop_copy_head):
            print(note)
    print(f"wrote {args.out}")


def _convert_official(args) -> None:
    """`convert --from-official / --to-official`: thin over `ctxlm.official`."""
    from .official import convert_from_official, convert_to_official

    if args.from_official:
        report = convert_from_official(args.from_official, args.out, family=args.family, format=args.format,
                                       max_shard_size=args.max_shard_size)
        print(report.summary())
    else:
        if args.family is not None:
            raise CtxlmError("--family applies to --from-hf and --from-official; --to-official writes the family "
                             "of the model directory")
        for note in convert_to_official(args.to_official, args.out, format=args.format):
            print(note)
    print(f"wrote {args.out}")


def _command_line(args) -> str:
    """The verb's command line, rebuilt from its parsed flags (defaults included)."""
    import shlex

    words = ["ctxlm", args.verb]
    for name, value in vars(args).items():
        if name in ("verb", "func") or value is None or value is False:
            continue
        words.append("--" + name.replace("_", "-"))
        if value is not True:
            words += [shlex.quote(str(v)) for v in (value if isinstance(value, list) else [value])]
    return " ".join(words)


def cmd_compare(args) -> None:
    _check_inputs(args)
    from .compare import DEFAULT_OBJECTIVES, Budget, compare, compare_train_sizes

    objectives = [o.strip() for o in (args.objectives or "").split(",") if o.strip()] or None
    common = dict(budget=Budget(minutes=args.budget_minutes, tokens=args.budget_tokens), objectives=objectives,
                  config=args.config, seeds=args.seeds, finetune_steps=args.finetune_steps,
                  eval_limit=args.eval_limit, cache_dir=args.cache_dir, pretrain_dir=args.pretrain_dir,
                  corpus_format=args.format, text_field=args.text_field, fallback_encoding=args.fallback_encoding,
                  resamples=args.resamples, plots=not args.no_plots, command=_command_line(args))
    limits = args.train_limit or [None]
    nlu, nlu_train = _compare_nlu_options(args)
    if nlu is not None:
        from .compare_nlu import compare_nlu

        if args.eval is not None or len(limits) > 1:
            raise CtxlmError(f"--task {nlu.task} scores its dataset's dev split and takes one --train-limit; "
                             "--eval and several training-set sizes are for seq2seq tasks")
        compare_nlu(args.corpus, args.tokenizer, nlu.task, nlu.dataset, nlu.data_dir, args.out, train=nlu_train,
                    max_length=nlu.max_length, score_eop=nlu.score_eop, pooler=nlu.pooler, train_limit=limits[0],
                    **common)
        print(f"report: {Path(args.out) / 'report.md'} and report.html")
        return
    _need(args, "train", "valid")
    common.update(objectives=objectives or list(DEFAULT_OBJECTIVES), eval_path=args.eval)
    task = (args.corpus, args.tokenizer, args.task, args.train, args.valid, args.out)
    if len(limits) > 1:
        compare_train_sizes(*task, train_limits=limits, **common)
        print(f"report: {Path(args.out) / 'train_sizes.md'} and train_sizes.html (each size: train-<size>/report.md)")
        return
    compare(*task, train_limit=limits[0], **common)
    print(f"report: {Path(args.out) / 'report.md'} and report.html")


def _compare_nlu_options(args) -> tuple[NluOptions | None, dict]:
    """compare's NLU settings and the recipe's train section, as `finetune` reads them
    (`_nlu_options`), when --task is cloze, classify or a YAML for one (its `task:`); else (None, {})."""
    from .compare_nlu import NLU_TASKS
    from .config import RECIPES_DIR, read_yaml

    task, recipe = args.task, None
    if task not in NLU_TASKS:
        packaged = RECIPES_DIR / f"{task}.yaml"  # a packaged NLU recipe (glm-superglue-rte) by name
        if Path(task).suffix in (".yaml", ".yml") and Path(task).is_file():
            task, recipe = read_yaml(args.task).get("task"), args.task
        elif "/" not in task and packaged.is_file():
            task, recipe = read_yaml(packaged).get("task"), args.task
        else:
            return None, {}
        if task not in NLU_TASKS:
            return None, {}
    flags = argparse.Namespace(task=task, recipe=recipe, **{f.name: getattr(args, f.name, None) for f in
                                                            dataclasses.fields(NluOptions) if f.name != "task"})
    nlu, train = _nlu_options(flags)
    _need(nlu, "dataset", "data_dir")
    if nlu.epochs is not None and args.finetune_steps is None:
        raise CtxlmError(f"{recipe}: compare counts fine-tuning steps; give --finetune-steps (the recipe's "
                         f"epochs are read by finetune)")
    return nlu, train


def _row_count(text: str) -> int:
    """A --limit-style flag's value: a number of rows, at least 1; else argparse's usage error."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of rows (1 or more), got '{text}'")
    return int(text)


def _ranged(kind: type, low=None, high=None, **open_ends):
    """An argparse type: a `kind` (int or float) number in `config.Range(low, high, **open_ends)`;
    else argparse's usage error naming the range."""
    from .config import Range

    bounds = Range(low, high, **open_ends)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole' if kind is int else 'a'} number, got '{text}'")
        if not bounds.holds(value):
            raise argparse.ArgumentTypeError(f"must be {bounds.describe()}, got '{text}'")
        return value

    return parse


def _train_sizes(text: str) -> list[int | None]:
    """--train-limit of compare: N, or sizes separated by commas, `all` for every pair."""
    sizes = []
    for word in text.split(","):
        word = word.strip().lower()
        if word != "all" and not (word.isdigit() and int(word) > 0):
            raise argparse.ArgumentTypeError(f"expected positive numbers of pairs or 'all', separated by commas, "
                                             f"got '{text}'")
        sizes.append(None if word == "all" else int(word))
    return sizes


BOOLEAN_WORDS = {"yes": True, "true": True, "1": True, "no": False, "false": False, "0": False}


def _true_or_false(text: str) -> bool:
    """A boolean flag's value: yes/no, true/false or 1/0 (any case); else argparse's usage error."""
    value = BOOLEAN_WORDS.get(text.strip().lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected yes/no, true/false or 1/0, got '{text}'")
    return value


def _true_false_or_never(text: str) -> bool | str:
    """--early-stopping: a boolean (as `_true_or_false`) or "never"."""
    if text.strip().lower() == "never":
        return "never"
    if text.strip().lower() not in BOOLEAN_WORDS:
        raise argparse.ArgumentTypeError(f"expected yes/no, true/false, 1/0 or never, got '{text}'")
    return _true_or_false(text)


def _model_default(flag: str, text: str = "") -> str:
    """A decoding flag's help: `text` and its default, the model's generation.json or else ours."""
    from .config import GenerationConfig

    value = getattr(GenerationConfig(), GENERATION_FLAGS[flag])
    if value is None or isinstance(value, bool):
        value = {True: "true", False: "false", None: "none"}[value]
    return f"{text} (default: the model's generation.json, else {value})".strip()


def _add_decoding_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("decoding (defaults: the model's generation.json, else beam 5, 64 tokens)")
    g.add_argument("--beam", type=int, help=_model_default("beam", "beam size"))
    g.add_argument("--max-length", type=int, help=_model_default("max_length", "max generated tokens (start token "
                                                                               "excluded)"))
    g.add_argument("--min-length", type=int, help=_model_default("min_length", "min generated tokens before EOS"))
    g.add_argument("--length-penalty", type=float, help=_model_default("length_penalty", "exponent a"))
    g.add_argument("--length-penalty-type", choices=["hf", "gnmt"],
                   help=_model_default("length_penalty_type", "hf (= fairseq): score/len^a; gnmt: score/((5+len)/6)^a"))
    g.add_argument("--no-repeat-ngram", type=int, help=_model_default("no_repeat_ngram", "n-grams of this size "
                                                                                         "may not repeat (0: off)"))
    g.add_argument("--block-subword-loops", type=_true_or_false, help=_model_default(
        "block_subword_loops", "true/false: a '##' word piece may not occur twice in one word"))
    g.add_argument("--block-word-repeats", type=_true_or_false, help=_model_default(
        "block_word_repeats", "true/false: a one-piece word may not come twice in a row ('share share')"))
    g.add_argument("--early-stopping", type=_true_false_or_never,
                   help=_model_default("early_stopping", "true, false (transformers' heuristic) or never"))
    g.add_argument("--sample", action="store_true", default=None,
                   help=_model_default("sample", "sample instead of beam search (beam 1)"))
    g.add_argument("--top-k", type=int, help=_model_default("top_k", "sample from the k likeliest (0: all)"))
    g.add_argument("--top-p", type=float, help=_model_default("top_p", "nucleus sampling mass"))
    g.add_argument("--temperature", type=float, help=_model_default("temperature", "sampling temperature"))
    g.add_argument("--seed", type=int, help=_model_default("seed", "sampling seed"))


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each flag's default, `(default: X)`, where it has one (not None, not an
    off switch) and its text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help or "", action.default
        if default in (None, False, argparse.SUPPRESS) or not action.option_strings or "default" in text.lower():
            return action.help
        value = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {value.replace('%', '%%')})".strip()


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows the defaults (verbs' parsers are this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """A usage error in one line (without argparse's usage block), naming the verb's --help."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .config import NAMED_CONFIGS
    from .families import FAMILIES, OBJECTIVES

    named = ", ".join(NAMED_CONFIGS)
    named_palm = ", ".join(name for name, values in NAMED_CONFIGS.items() if values["family"] == "palm")
    parser = _Parser(prog="ctxlm", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"ctxlm {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    tok = verbs.add_parser("tokenizer", help="train a WordPiece tokenizer").add_subparsers(dest="action", required=True)
    p = tok.add_parser("train", help="train an uncased BERT-style WordPiece tokenizer on a corpus")
    p.add_argument("--corpus", nargs="+", required=True, help="files or directories")
    p.add_argument("--vocab-size", type=_ranged(int, 1, 2**31 - 1), required=True,
                   help="tokens in all: the special tokens, the <unk> marker and the trained pieces")
    p.add_argument("--out", required=True, help="directory for tokenizer.json")
    p.add_argument("--min-frequency", type=_ranged(int, 0, 2**32 - 1), default=2,
                   help="the fewest occurrences of a piece the trainer merges")
    _add_corpus_flags(p)
    p.set_defaults(func=cmd_tokenizer_train)

    p = verbs.add_parser("pretrain", help="pre-train a model on unlabeled text")
    p.add_argument("--objective", choices=list(OBJECTIVES),
                   help="pre-training objective (default: the --config family's own; mass and bart run on a PALM config)")
    p.add_argument("--stage", default="generation", choices=["mlm", "generation"],
                   help="PALM stage 1 (encoder MLM) or 2 (continuation generation)")
    p.add_argument("--glm-task", choices=["blank", "sentence", "document", "multitask"],
                   help="GLM objective (default: the config's data.task, blank)")
    p.add_argument("--glm-no-shuffle", action="store_true", help="GLM ablation: Part B spans in text order")
    p.add_argument("--glm-sentinel", action="store_true",
                   help="GLM ablation: distinct sentinel tokens [S0] [S1] ... instead of one [MASK]")
    p.add_argument("--unilm-objective", choices=["ae+par", "ae", "par", "ae+ar", "ar"],
                   help="UniLMv2 objective (default: the config's data.objective, ae+par)")
    p.add_argument("--corpus", nargs="+", required=True, help="files or directories")
    p.add_argument("--tokenizer", help="tokenizer.json or its directory (default: the --init model's)")
    p.add_argument("--config", default="palm-tiny", help=f"named config ({named}) or YAML file")
    p.add_argument("--out", required=True)
    p.add_argument("--init", help="model directory to start from (stage 2 starts from stage 1)")
    p.add_argument("--init-from-hf", help="a transformers directory or hub id, converted on the fly "
                   "(see `ctxlm convert`; the objective's family is the target)")
    p.add_argument("--decoder", default="fresh", choices=["fresh", "encoder"],
                   help="--init-from-hf BERT/RoBERTa into PALM: a fresh decoder or one from the encoder")
    p.add_argument("--fragment-length", type=int, help="PALM fragment length L (source 80%%, target 20%%)")
    p.add_argument("--mlm-weight", type=float, help="stage 2: weight of an added encoder MLM loss")
    p.add_argument("--no-copy", action="store_true", help="without the pointer-generator")
    p.add_argument("--copy", action="store_true", help="with PALM's pointer-generator (GLM, UniLMv2: copy: true)")
    p.add_argument("--cache-dir", help="token store cache (default $CTXLM_CACHE or ~/.cache/ctxlm)")
    _add_corpus_flags(p)
    _add_train_flags(p)
    p.set_defaults(func=cmd_pretrain)

    p = verbs.add_parser("generate", help="generate from a model (beam search by default)")
    p.add_argument("--model", required=True)
    p.add_argument("--text")
    p.add_argument("--input", help="JSONL (or a dataset: .parquet, .arrow, save_to_disk directory, hub:NAME) "
                   "with a source field per row")
    p.add_argument("--output", help="JSONL output (input rows plus 'prediction'); default stdout")
    p.add_argument("--source-field", help="--input's field holding the source text (default: the one the "
                   "model's fine-tuning task reads, from its run.json: e.g. document for Gigaword; else source)")
    p.add_argument("--batch-size", type=_ranged(int, 1), default=16, help="sources decoded together")
    p.add_argument("--max-source-tokens", type=_ranged(int, 2), help="truncate sources to this many tokens")
    p.add_argument("--sort-window", type=_ranged(int, 1),
                   help="batches sorted by source length together (default 8; 1: input order); "
                        "the output keeps input order")
    p.add_argument("--resume", action="store_true", help="keep the rows --output already holds, decode the rest")
    p.add_argument("--limit", type=_row_count, help="--input: decode only the first N rows")
    _add_device_flag(p, bf16_inference=True)
    _add_decoding_flags(p)
    p.set_defaults(func=cmd_generate)

    p = verbs.add_parser("finetune", help="fine-tune on a task", description=FINETUNE_DEFAULTS)
    p.add_argument("--init", help="pre-trained model directory")
    p.add_argument("--config", help=f"with --tokenizer: train a new model from scratch (named config: {named}; "
                   "or YAML)")
    p.add_argument("--tokenizer", help="tokenizer for --config")
    p.add_argument("--copy", action="store_true", help="with --config: PALM's pointer-generator on (copy: true)")
    p.add_argument("--task", choices=SEQ2SEQ_TASKS + NLU_TASKS,
                   help="a seq2seq task (default: the recipe's), GLM's cloze NLU, UniLMv2's classify or squad")
    p.add_argument("--recipe", help="seq2seq recipe: gigaword, cnndm, xsum, squad_qg, marco, cornell, the papers' "
                   "unilm2-xsum, unilm2-cnndm, unilm2-squad-qg, palm-cnndm, palm-gigaword, or YAML; cloze/classify/"
                   "squad: a YAML of their options (dataset, data_dir, max_length, epochs, ...) and train:, or "
                   "GLM's glm-superglue-<task> (its task: sets --task)")
    p.add_argument("--train", help="training file in the task's format, or a dataset (.parquet, .arrow, "
                   "save_to_disk directory, hub:NAME) with --source-field/--target-field")
    p.add_argument("--valid", help="validation file (loss, best checkpoint, early stopping)")
    p.add_argument("--source-field", help="seq2seq: the JSONL/dataset field holding the source")
    p.add_argument("--target-field", help="seq2seq: the JSONL/dataset field holding the target")
    p.add_argument("--skip-empty", action="store_true", help="seq2seq: skip (and count) rows whose source or "
                   "target is empty instead of stopping (the recipe's reader: {skip_empty: true})")
    p.add_argument("--out", required=True)
    p.add_argument("--train-limit", type=_row_count, help="use only the first N training rows")
    p.add_argument("--valid-limit", type=_row_count, help="classify/squad: use only the first N validation rows")
    g = p.add_argument_group("NLU (--task cloze / classify / squad)")
    g.add_argument("--dataset", help="cloze: superglue/<Task>; classify: glue/MRPC, glue/STS-B, superglue/RTE")
    g.add_argument("--data-dir", help="the NLU data folder (e.g. ../shared/data/nlu)")
    g.add_argument("--max-length", type=int, help="tokens per input (cloze: the model's; classify 128; squad 384)")
    g.add_argument("--score-eop", action="store_const", const=True,
                   help="cloze: also score [eop] after multi-token answers")
    g.add_argument("--pooler", action="store_const", const=True,
                   help="classify: BERT's dense+tanh pooler before the classifier")
    g.add_argument("--doc-stride", type=int, help="squad: tokens between window starts (default 128)")
    g.add_argument("--max-query-length", type=int, help="squad: default 64")
    g.add_argument("--max-answer-length", type=int, help="squad: default 30")
    _add_train_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = verbs.add_parser("evaluate", help="score predictions against references, or a model on a task")
    p.add_argument("--pred", help="JSONL predictions (field 'prediction') or a .txt file, one a line")
    p.add_argument("--ref", help="JSONL references (field 'target') or a .txt file; squad: the SQuAD JSON")
    p.add_argument("--metrics", nargs="+", default=["summarization"],
                   help="metric names or groups, space- or comma-separated: summarization, qg, qa, dialog, "
                        "rouge1, rougeL, rougeLsum, bleu4, meteor, coco_rougeL, sacrebleu, marco_rougeL, marco_bleu1")
    p.add_argument("--pred-field", default="prediction", help="--pred JSONL's field holding the prediction")
    p.add_argument("--ref-field", default="target", help="--ref JSONL's field holding the reference")
    p.add_argument("--model", help="a model: perplexity of --ref (seq2seq tasks), or cloze/classify/squad scores")
    p.add_argument("--task", choices=SEQ2SEQ_TASKS + NLU_TASKS, help="with --model: the task")
    p.add_argument("--dataset", help="cloze/classify: the dataset (default: the one the model was fine-tuned on)")
    p.add_argument("--data-dir", help="cloze/classify: the NLU data folder")
    p.add_argument("--split", help="cloze: dev32 (default) or train; classify: dev (default) or train")
    p.add_argument("--max-length", type=_ranged(int, 8))
    p.add_argument("--limit", type=_row_count, help="score only the first N rows")
    p.add_argument("--predictions-out", help="squad: write {id: answer} JSON here")
    p.add_argument("--output", help="also write the JSON results here")
    _add_device_flag(p, bf16_inference=True)
    p.set_defaults(func=cmd_evaluate)

    p = verbs.add_parser("infill", help="fill [MASK] blanks with a GLM model, or evaluate infilling")
    p.add_argument("--model", required=True)
    p.add_argument("--text", nargs="+", help='texts with blanks, e.g. "the [MASK] sat on the [MASK] ."')
    p.add_argument("--input", help="a file of texts with blanks, one a line")
    p.add_argument("--eval", help="evaluate: mask --mask-ratio of each line's words, fill, BLEU against the line")
    p.add_argument("--mask-ratio", type=_ranged(float, 0, 1, low_open=True, high_open=True), default=0.1,
                   help="--eval: the share of each line's words masked")
    p.add_argument("--limit", type=_row_count, help="--eval: the first N lines")
    p.add_argument("--output", help="--eval: write each line's masked, filled and original text (JSONL)")
    _add_device_flag(p, bf16_inference=True)
    _add_decoding_flags(p)
    p.set_defaults(func=cmd_infill)

    p = verbs.add_parser("compare", help="pre-train, fine-tune and score several objectives; write a report")
    p.add_argument("--corpus", nargs="+", required=True, help="pre-training files or directories")
    p.add_argument("--tokenizer", required=True, help="tokenizer.json or its directory")
    p.add_argument("--task", required=True, help="the fine-tuning recipe: gigaword, squad_qg, cornell, or YAML; or "
                   "an NLU task: cloze (GLM variants, FewGLUE), classify (UniLMv2 variants), or a YAML of their "
                   "options with task: and train: (as finetune's --recipe)")
    p.add_argument("--train", help="seq2seq tasks: the training file")
    p.add_argument("--valid", help="seq2seq tasks: the validation file (best checkpoint; scored unless --eval)")
    p.add_argument("--eval", help="seq2seq tasks: score this file instead of --valid")
    p.add_argument("--objectives", help="comma-separated pre-training variants (objectives/variants.py; default: "
                   "palm,palm-nocopy,palm-noae,mass,bart,glm,unilm,none; cloze: glm,glm-noshuffle,none; classify: "
                   "unilm,unilm-ae,unilm-par,none; none is a new model of the task's family)")
    p.add_argument("--config", default="palm-tiny", help=f"the PALM model and pre-training config (named: "
                   f"{named_palm}; or YAML); GLM and UniLMv2 are sized to its parameter count")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget-minutes", type=float, help="pre-training wall time per objective")
    budget.add_argument("--budget-tokens", type=int, help="pre-training tokens per objective")
    p.add_argument("--seeds", type=_ranged(int, 1), default=3,
                   help="runs per objective (seeds 0..N-1), each pre-training and fine-tuning")
    p.add_argument("--finetune-steps", type=_ranged(int, 1), help="override the recipe's max_steps")
    p.add_argument("--train-limit", type=_train_sizes,
                   help="fine-tune on the first N pairs (dialog: 10000; classify: rows); several sizes, e.g. "
                        "1000,4000,all (seq2seq tasks): one comparison per size sharing the pre-training, and "
                        "train_sizes.md (PALM Table 5's question)")
    p.add_argument("--eval-limit", type=_row_count, help="score only the first N pairs (classify: dev rows, also "
                   "those it validates on; cloze: dev32 rows)")
    p.add_argument("--resamples", type=_ranged(int, 1), default=1000, help="paired bootstrap resamples")
    g = p.add_argument_group("NLU (--task cloze / classify: select and score on the dev split)")
    g.add_argument("--dataset", help="cloze: superglue/RTE, CB, COPA or BoolQ; classify: glue/MRPC, glue/STS-B, "
                   "superglue/RTE")
    g.add_argument("--data-dir", help="the NLU data folder (e.g. ../shared/data/nlu)")
    g.add_argument("--max-length", type=_ranged(int, 8), help="tokens per input (cloze: the model's; classify 128)")
    p.add_argument("--no-plots", action="store_true", help="no loss plots (no matplotlib needed)")
    p.add_argument("--cache-dir", help="token store cache (default OUT/store)")
    p.add_argument("--pretrain-dir", help="pre-train each cell here, shared by comparisons of other tasks on "
                   "the same corpus, budget and config (default: inside each cell)")
    _add_corpus_flags(p)
    p.add_argument("--out", required=True, help="the comparison's folder (rerun to resume)")
    p.set_defaults(func=cmd_compare)

    p = verbs.add_parser("convert", help="convert between ctxlm and transformers checkpoints, or the papers' own "
                         "releases (docs/official-models.md)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--from-hf", help="a transformers directory or hub id: BART (PALM), BERT/RoBERTa (PALM's "
                        "encoder; BERT also UniLMv2 or GLM with --family), or a directory ctxlm exported")
    source.add_argument("--to-hf", help="a ctxlm model directory: PALM → BART, UniLMv2 → BERT, GLM → its own layout")
    source.add_argument("--from-official", help="a release of a paper's own code (directory, file or hub id): "
                        "THUDM GLM (hub or Megatron), microsoft/unilm UniLMv2 (release or s2s-ft), AliceMind PALM; "
                        "the format is detected (or give --format)")
    source.add_argument("--to-official", help="a ctxlm model directory, written in its family's official layout "
                        "(for the official fine-tuning code)")
    p.add_argument("--out", required=True)
    p.add_argument("--family", choices=list(FAMILIES),
                   help="the ctxlm family to convert into (default: PALM for BART, BERT and RoBERTa); with "
                        "--from-official: try only this family's formats")
    p.add_argument("--format", help="with --from-official / --to-official: the official format by name (default: "
                   "detected / the family's only writable one; names: docs/official-models.md)")
    p.add_argument("--max-shard-size", default="5GB",
                   help="with --from-official: weights above this are written as shards with an index, as "
                        "transformers (default: 5GB)")
    p.add_argument("--decoder", default="fresh", choices=["fresh", "encoder"],
                   help="PALM from BERT/RoBERTa: a fresh decoder, or one starting from the encoder's layers")
    p.add_argument("--drop-copy-head", action="store_true", help="export PALM without saving its copy head alongside")
    p.set_defaults(func=cmd_convert)
    for verb in ("pretrain", "finetune", "generate", "evaluate", "infill", "convert", "compare"):
        verbs.choices[verb].add_argument(
            "--verify", choices=["full", "size", "off"], default="full",
            help="check model directories and checkpoints against their manifest.json before use: sha256 and "
                 "size (full, the default), sizes only (size: fast for huge files), or not at all (off)")
    return parser


def _verification(level: str):
    """The readers' verification level for one command (`ctxlm.checkpoint.verification`)."""
    if level == "full":  # the default: nothing to import for the verbs that load no model
        return contextlib.nullcontext()
    from .checkpoint import verification

    return verification(level)


TRAINING_VERBS = ("pretrain", "finetune", "compare")  # the verbs that write checkpoints


def _stopped_after_checkpoint(interrupt: KeyboardInterrupt) -> bool:
    """True for `training.RunStopped` (a pipeline's run stopped by a signal after its checkpoint),
    without importing torch for the other verbs."""
    training = sys.modules.get("ctxlm.training")
    return training is not None and isinstance(interrupt, training.RunStopped)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plain_warnings()
    if _other_rank():
        warnings.simplefilter("ignore")
    try:
        with _verification(getattr(args, "verify", "full")):
            args.func(args)
    except CtxlmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        if _stopped_after_checkpoint(interrupt):  # compare: exit 0, as a training run stopped by a signal
            print(f"{interrupt}; checkpoint written; rerun the same command to continue")
            return 0
        kept = " (finished checkpoints are kept)" if args.verb in TRAINING_VERBS else ""
        print(f"interrupted{kept}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
