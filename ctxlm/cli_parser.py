"""The `ctxlm` command line's flags: each verb's parser, built over argparse with `ctxlm.cli_flags`.
The flags of the settings bundles are generated from their dataclasses (`add_field_flags`):
TrainConfig, GenerationConfig, RunOptions, CorpusSpec, HfInit, TaskData, ScratchModel, NluOptions,
compare's ComparisonSpec (read from its source: `ctxlm.compare` imports torch) and each family's
pre-training data config (`Family.objective_flags`, `config_flags`), with their help from the fields'
comments; the verbs' own flags come from the signature of the public function they call
(`add_signature_flags`, help from its docstring's `Args:`), so each flag's help has one source. The few
written out here (`tests/test_cli_flags.py`'s HAND_WRITTEN says which and why) are purely the command
line's, or wait for their function's `Args:`. `--help` shows every default. `ctxlm.cli` maps each verb to
its function.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
from pathlib import Path

from .cli_flags import Parser as _Parser
from .cli_flags import add_field_flags, add_signature_flags, field_comments, given_help
from .cli_flags import option_name as _flag
from .cli_flags import ranged_number as _ranged
from .config import CLOZE_TRAIN
from .errors import CtxlmError
from .run_options import HfInit


def _train_config_help() -> dict[str, str]:
    from .config import TrainConfig

    return field_comments(TrainConfig)


TRAIN_HELP = _train_config_help()  # TrainConfig field → help (every field has a flag; YAML `train:` sets them too)


def _train_overrides(args) -> dict:
    """The TrainConfig fields given as flags (refused, naming the flag, outside their ranges)."""
    from .config import TrainConfig, check_values

    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    check_values(TrainConfig, overrides, _flag)
    return overrides


def _train_help(field: dataclasses.Field, text: str | None) -> str | None:
    """A TrainConfig flag's help (`given_help`), saying where pre-training takes the model family's default."""
    from .families import OPTIMIZER_FIELDS

    return given_help(field, text, "; pre-training: the model family's" if field.name in OPTIMIZER_FIELDS else "")


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (`--no-progress` for `progress`), plus how the run starts."""
    from .config import TrainConfig

    g = p.add_argument_group("training (TrainConfig; a YAML config's train: section sets the same fields)")
    add_field_flags(g, TrainConfig, given=True, help=_train_help)
    _add_run_flags(p, "device", "resume", "overwrite", "allow_config_change")


def _add_run_flags(p: argparse.ArgumentParser, *names: str) -> None:
    """RunOptions' flags among `names` (device, bf16, resume, overwrite, allow_config_change)."""
    from .run_options import RunOptions

    add_field_flags(p, RunOptions, names, options={"resume": dict(nargs="?", const=True, choices=["auto"])})


def _add_corpus_flags(p: argparse.ArgumentParser, *names: str) -> None:
    """CorpusSpec's flags: `names` (e.g. paths: --corpus) and how the corpus is read."""
    from .data.corpus import FORMATS
    from .run_options import CorpusSpec

    add_field_flags(
        p,
        CorpusSpec,
        [*names, "format", "text_field", "fallback_encoding"],
        options={
            "paths": dict(option="--corpus", dest="corpus", nargs="+", required=True, default=None),
            "format": dict(choices=list(FORMATS)),
        },
    )


def _add_task_data_flags(p, *names: str, options: dict | None = None) -> None:
    """TaskData's flags among `names` (the files, dataset and limits a task reads); `options` as
    `add_field_flags`'s."""
    from .tasks import TaskData

    rows = {name: dict(type=_row_count) for name in ("train_limit", "valid_limit", "limit")}
    add_field_flags(
        p, TaskData, names, options={name: {**rows.get(name, {}), **(options or {}).get(name, {})} for name in names}
    )


def _add_nlu_flags(p, *names: str, checked: bool = False) -> None:
    """NluOptions' flags among `names`: not given (None) unless set, over the recipe's values."""
    from .tasks import NluOptions

    add_field_flags(p, NluOptions, names, given=not checked, checked=checked)


def _add_family_flags(p: argparse.ArgumentParser) -> None:
    """Each family's `ctxlm pretrain` flags (`Family.objective_flags`, `config_flags`): those naming a field
    of its default objective's data config generated from the field, the others from `Family.flags`."""
    from .families import FAMILIES, default_objective

    for family in FAMILIES.values():
        data = default_objective(family.name).data_config if family.objectives else None
        fields = {f.name for f in dataclasses.fields(data)} if data is not None else set()
        for dest in (*family.objective_flags, *family.config_flags):
            name, extra = family.objective_flags.get(dest, dest), dict(family.flags.get(dest, {}))
            if name not in fields:
                p.add_argument(_flag(dest), dest=dest, **extra)
                continue
            text = f"{field_comments(data).get(name, '')} (default: the config's data.{name})"
            add_field_flags(
                p,
                data,
                [name],
                given=True,
                help=lambda f, _, text=text: text,
                options={name: dict(option=_flag(dest), dest=dest, **extra)},
            )


PRETRAIN = "ctxlm.pretraining:pretrain"  # functions and bundles read from their modules' source (torch)
COMPARISON = "ctxlm.compare:ComparisonSpec"
COPY = "ctxlm.config_loading:set_copy"  # --copy / --no-copy: the model config's copy head
OUT = dict(option="--out", dest="out", required=True)  # a function's out_dir as --out
MODEL = dict(option="--model", dest="model", required=True)  # a function's model directory as --model


# flags naming files or folders that must exist (or datasets: hub:NAME, DIR:SPLIT)


INPUT_PATHS = (
    "corpus",
    "tokenizer",
    "init",
    "model",
    "input",
    "train",
    "valid",
    "eval",
    "pred",
    "ref",
    "data_dir",
    "to_hf",
    "to_official",
)


# flags naming a folder to write (and a file to write) that may not exist yet
OUTPUT_DIRS = ("out", "cache_dir", "pretrain_dir")
OUTPUT_FILES = ("output", "predictions_out")


def _check_output(name: str, value: str, folder: bool) -> None:
    """Refuse an output path that is (or lies under) a file, or a file path that is a folder."""
    path = Path(value)
    blocker = next((p for p in [path, *path.parents][0 if folder else 1 :] if p.exists()), None)
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


GENERATION_FLAGS = {  # flag → GenerationConfig field
    "beam": "num_beams",
    "max_length": "max_new_tokens",
    "min_length": "min_new_tokens",
    "length_penalty": "length_penalty",
    "length_penalty_type": "length_penalty_type",
    "no_repeat_ngram": "no_repeat_ngram_size",
    "block_subword_loops": "block_subword_loops",
    "block_word_repeats": "block_word_repeats",
    "early_stopping": "early_stopping",
    "sample": "do_sample",
    "top_k": "top_k",
    "top_p": "top_p",
    "temperature": "temperature",
    "seed": "seed",
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


FINETUNE_DEFAULTS = (
    "Training flags override the --recipe's train: section, which overrides the task's settings, which override "
    "the defaults shown: seq2seq tasks: the recipe's (e.g. gigaword); cloze: PET's few-shot settings ("
    + ", ".join(f"{k} {v:g}" for k, v in CLOZE_TRAIN.items())
    + "); classify and squad: UniLMv2's Table 9 "
    "(batch_size 32, lr 2e-05, 10% warm-up, weight_decay 0.01, 10 epochs (squad: 4), validating once an epoch)."
)


def _other_rank() -> bool:
    """True in a process of a torchrun launch other than rank 0 (RANK > 0): it prints no warnings
    (rank 0 prints the same ones) and no result line; its errors still show."""
    return os.environ.get("RANK", "0") not in ("", "0")


def _verification(level: str):
    """The readers' verification level for one command (`ctxlm.checkpoint.verification`)."""
    if level == "full":  # the default: nothing to import for the verbs that load no model
        return contextlib.nullcontext()
    from .checkpoint import verification

    return verification(level)


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


def _row_count(text: str) -> int:
    """A --limit-style flag's value: a number of rows, at least 1; else argparse's usage error."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of rows (1 or more), got '{text}'")
    return int(text)


def _train_sizes(text: str) -> list[int | None]:
    """--train-limit of compare: N, or sizes separated by commas, `all` for every pair."""
    sizes = []
    for word in text.split(","):
        word = word.strip().lower()
        if word != "all" and not (word.isdigit() and int(word) > 0):
            raise argparse.ArgumentTypeError(
                f"expected positive numbers of pairs or 'all', separated by commas, got '{text}'"
            )
        sizes.append(None if word == "all" else int(word))
    return sizes


def _flops_budget(text: str) -> float | str:
    """--budget-flops: a positive number, or VARIANT:TOKENS (the variant is checked by `compare.Budget`)."""
    try:
        value = float(text)
    except ValueError:
        name, colon, tokens = text.partition(":")
        if colon and name.strip() and tokens.strip().isdigit() and int(tokens) > 0:
            return text.strip()
        raise argparse.ArgumentTypeError(
            f"expected a number of FLOPs or VARIANT:TOKENS (e.g. palm:4000000), got '{text}'"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of FLOPs, got '{text}'")
    return value


def _lr_grid(text: str) -> list[float]:
    """--lr-grid: positive learning rates separated by commas, each once."""
    try:
        values = [float(word) for word in text.split(",") if word.strip()]
    except ValueError:
        values = []
    if not values or any(not 0 < v < float("inf") for v in values) or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(
            f"expected distinct positive learning rates separated by commas, e.g. 3e-4,1e-3,3e-3, got '{text}'"
        )
    return values


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


def _model_default(field: dataclasses.Field, text: str | None) -> str:
    """A decoding flag's help: the field's comment and its default, the model's generation.json or else ours."""
    value = field.default
    if value is None or isinstance(value, bool):
        value = {True: "true", False: "false", None: "none"}[value]
    return f"{text or ''} (default: the model's generation.json, else {value})".strip()


# decoding flags whose value is parsed (booleans written out, "never") or chosen from a list; --sample a switch
DECODING_OPTIONS = {
    "block_subword_loops": dict(type=_true_or_false),
    "block_word_repeats": dict(type=_true_or_false),
    "early_stopping": dict(type=_true_false_or_never),
    "length_penalty_type": dict(choices=["hf", "gnmt"]),
    "do_sample": dict(action="store_true"),
}


def _add_decoding_flags(p: argparse.ArgumentParser) -> None:
    """One flag per GenerationConfig field (`GENERATION_FLAGS` names them), helped by its comment."""
    from .config import GenerationConfig

    g = p.add_argument_group("decoding (defaults: the model's generation.json, else beam 5, 64 tokens)")
    options = {
        field: dict(option=_flag(flag), dest=flag, **DECODING_OPTIONS.get(field, {}))
        for flag, field in GENERATION_FLAGS.items()
    }
    add_field_flags(
        g, GenerationConfig, list(GENERATION_FLAGS.values()), given=True, help=_model_default, options=options
    )


def build_parser(commands: dict | None = None) -> argparse.ArgumentParser:
    """Every verb's flags; `commands` (verb, or "tokenizer train", → function) become each parser's `func`."""
    commands = commands or {}
    from . import __version__
    from .families import FAMILIES, NAMED_CONFIGS, OBJECTIVES, REFERENCE_FAMILY
    from .tasks import ScratchModel, finetunable

    parser = _Parser(
        prog="ctxlm", description="The `ctxlm` command line. Each verb parses its flags and calls one public function."
    )
    parser.add_argument("--version", action="version", version=f"ctxlm {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)

    tok = verbs.add_parser("tokenizer", help="train a WordPiece tokenizer").add_subparsers(dest="action", required=True)
    p = tok.add_parser("train", help="train an uncased BERT-style WordPiece tokenizer on a corpus")
    add_signature_flags(
        p,
        "ctxlm.tokenization:train_tokenizer",
        ["vocab_size", "out_dir", "min_frequency"],
        options={
            "vocab_size": dict(type=_ranged(int, 1, 2**31 - 1), required=True),
            "out_dir": dict(option="--out", dest="out", required=True),
            "min_frequency": dict(type=_ranged(int, 0, 2**32 - 1)),
        },
    )
    _add_corpus_flags(p, "paths")
    p.set_defaults(func=commands.get("tokenizer train"))

    p = verbs.add_parser("pretrain", help="pre-train a model on unlabeled text")
    stages = list(dict.fromkeys(s for o in OBJECTIVES.values() for s in o.stages))
    add_signature_flags(
        p,
        PRETRAIN,
        ["objective", "stage"],
        options={"objective": dict(choices=list(OBJECTIVES), default=None), "stage": dict(choices=stages)},
    )
    _add_family_flags(p)
    add_signature_flags(
        p,
        PRETRAIN,
        ["tokenizer", "config", "out_dir", "init"],
        options={"config": dict(default="palm-tiny", known=list(NAMED_CONFIGS)), "out_dir": OUT},
    )
    add_field_flags(
        p,
        HfInit,
        ["source", "decoder"],
        options={
            "source": dict(option="--init-from-hf", dest="init_from_hf"),
            "decoder": dict(choices=["fresh", "encoder"]),
        },
    )
    add_signature_flags(p, COPY, ["copy"], options={"copy": dict(option="--no-copy", dest="no_copy", default=False)})
    add_signature_flags(p, COPY, ["copy"], options={"copy": dict(default=False)})
    _add_corpus_flags(p, "paths", "cache_dir")
    _add_train_flags(p)
    p.set_defaults(func=commands.get("pretrain"))

    p = verbs.add_parser("generate", help="generate from a model (beam search by default)")
    add_signature_flags(p, "ctxlm.predict:Seq2SeqPredictor.load", ["directory"], options={"directory": MODEL})
    add_signature_flags(
        p, "ctxlm.predict:Seq2SeqPredictor.generate", ["texts"], options={"texts": dict(option="--text", dest="text")}
    )
    add_signature_flags(
        p, "ctxlm.predict:read_sources", ["path"], options={"path": dict(option="--input", dest="input")}
    )
    add_signature_flags(
        p,
        "ctxlm.predict:Seq2SeqPredictor.generate_to_file",
        ["output", "source_field"],
        options={"source_field": dict(default=None)},
    )
    add_signature_flags(
        p,
        "ctxlm.predict:Seq2SeqPredictor.__init__",
        ["max_source_tokens"],
        options={"max_source_tokens": dict(type=_ranged(int, 2))},
    )
    add_signature_flags(
        p,
        "ctxlm.predict:Seq2SeqPredictor.generate_to_file",
        ["batch_size", "sort_window", "resume"],
        options={"batch_size": dict(type=_ranged(int, 1)), "sort_window": dict(type=_ranged(int, 1), default=None)},
    )
    p.add_argument("--limit", type=_row_count, help="--input: decode only the first N rows")
    _add_run_flags(p, "device", "bf16")
    _add_decoding_flags(p)
    p.set_defaults(func=commands.get("generate"))

    p = verbs.add_parser("finetune", help="fine-tune on a task", description=FINETUNE_DEFAULTS)
    add_signature_flags(p, "ctxlm.tasks:finetune", ["init"])
    add_field_flags(p, ScratchModel, ["config", "tokenizer"], options={"config": dict(known=list(NAMED_CONFIGS))})
    add_signature_flags(p, COPY, ["copy"], options={"copy": dict(default=False)})
    add_signature_flags(p, "ctxlm.tasks:finetune", ["task"], options={"task": dict(choices=finetunable())})
    _add_task_data_flags(p, "recipe", "train", "valid")
    add_signature_flags(
        p,
        "ctxlm.data.tasks:read_jsonl_pairs",
        ["source_field", "target_field", "skip_empty"],
        options={"source_field": dict(default=None), "target_field": dict(default=None)},
    )
    add_signature_flags(p, "ctxlm.tasks:finetune", ["out"], options={"out": dict(required=True)})
    _add_task_data_flags(p, "train_limit", "valid_limit")
    g = p.add_argument_group("NLU (--task cloze / classify / squad)")
    _add_task_data_flags(g, "dataset", "data_dir")
    _add_nlu_flags(g, "max_length", "score_eop", "pooler", "doc_stride", "max_query_length", "max_answer_length")
    _add_train_flags(p)
    p.set_defaults(func=commands.get("finetune"))

    p = verbs.add_parser("evaluate", help="score predictions against references, or a model on a task")
    add_signature_flags(
        p, "ctxlm.metrics:evaluate_files", ["pred_path"], options={"pred_path": dict(option="--pred", dest="pred")}
    )
    _add_task_data_flags(p, "ref")
    add_signature_flags(
        p,
        "ctxlm.metrics:evaluate_files",
        ["metrics", "pred_field", "ref_field"],
        options={"metrics": dict(nargs="+", default=["summarization"])},
    )
    add_signature_flags(p, "ctxlm.tasks:evaluate", ["model", "task"], options={"task": dict(choices=finetunable())})
    _add_task_data_flags(p, "dataset", "data_dir", "split")
    _add_nlu_flags(p, "max_length", checked=True)
    _add_task_data_flags(p, "limit")
    add_signature_flags(p, "ctxlm.tasks.extractive_qa:evaluate_squad", ["predictions_out"])
    p.add_argument("--output", help="also write the JSON results here")
    _add_run_flags(p, "device", "bf16")
    p.set_defaults(func=commands.get("evaluate"))

    p = verbs.add_parser("infill", help="fill [MASK] blanks with a GLM model, or evaluate infilling")
    add_signature_flags(
        p,
        "ctxlm.tasks.infilling:infill_texts",
        ["model_dir", "texts"],
        options={"model_dir": MODEL, "texts": dict(option="--text", dest="text", nargs="+")},
    )
    p.add_argument("--input", help="a file of texts with blanks, one a line")
    g = p.add_argument_group("evaluation (--eval)")
    add_signature_flags(
        g,
        "ctxlm.tasks.infilling:evaluate_infilling",
        ["path", "mask_ratio", "limit", "output"],
        options={
            "path": dict(option="--eval", dest="eval"),
            "mask_ratio": dict(type=_ranged(float, 0, 1, low_open=True, high_open=True), default=0.1),
            "limit": dict(type=_row_count),
        },
    )
    _add_run_flags(p, "device", "bf16")
    _add_decoding_flags(p)
    p.set_defaults(func=commands.get("infill"))

    p = verbs.add_parser("compare", help="pre-train, fine-tune and score several objectives; write a report")
    add_signature_flags(
        p,
        "ctxlm.tokenization:TextTokenizer.load",
        ["path"],
        options={"path": dict(option="--tokenizer", dest="tokenizer", required=True)},
    )
    add_signature_flags(
        p, "ctxlm.compare:compare", ["recipe"], options={"recipe": dict(option="--task", dest="task", required=True)}
    )
    _add_task_data_flags(p, "train", "valid")
    _add_task_data_flags(p, "ref", options={"ref": dict(option="--eval", dest="eval")})
    add_field_flags(p, COMPARISON, ["objectives"])
    palm_configs = [name for name, values in NAMED_CONFIGS.items() if values["family"] == REFERENCE_FAMILY]
    add_signature_flags(p, "ctxlm.compare:compare", ["config"], options={"config": dict(known=palm_configs)})
    budget = p.add_mutually_exclusive_group(required=True)
    add_field_flags(
        budget,
        "ctxlm.compare:Budget",
        ["minutes", "tokens", "flops"],
        options={
            "minutes": dict(option="--budget-minutes", dest="budget_minutes", type=float),
            "tokens": dict(option="--budget-tokens", dest="budget_tokens", type=int),
            "flops": dict(option="--budget-flops", dest="budget_flops", type=_flops_budget),
        },
    )
    add_field_flags(
        p,
        COMPARISON,
        ["seeds", "finetune_steps", "lr_grid", "pretrain_only", "lr_dir", "lr_pairs"],
        options={
            "seeds": dict(type=_ranged(int, 1)),
            "finetune_steps": dict(type=_ranged(int, 1)),
            "lr_grid": dict(type=_lr_grid, default=None),
            "lr_pairs": dict(type=_ranged(int, 1)),
        },
    )
    _add_task_data_flags(
        p,
        "train_limit",
        "limit",
        options={"train_limit": dict(type=_train_sizes), "limit": dict(option="--eval-limit", dest="eval_limit")},
    )
    add_field_flags(p, COMPARISON, ["resamples"], options={"resamples": dict(type=_ranged(int, 1))})
    g = p.add_argument_group("NLU (--task cloze / classify: select and score on the dev split)")
    _add_task_data_flags(g, "dataset", "data_dir")
    _add_nlu_flags(g, "max_length", checked=True)
    add_field_flags(
        p,
        COMPARISON,
        ["plots", "cache_dir", "pretrain_dir"],
        help=given_help,
        options={"plots": dict(option="--no-plots", dest="no_plots", action="store_true", default=False)},
    )
    _add_corpus_flags(p, "paths")
    add_signature_flags(p, "ctxlm.compare:compare", ["out_dir"], options={"out_dir": OUT})
    p.set_defaults(func=commands.get("compare"))

    p = verbs.add_parser(
        "convert",
        help="convert between ctxlm and transformers checkpoints, or the papers' own "
        "releases (docs/official-models.md)",
    )
    source = p.add_mutually_exclusive_group()
    for ref, name, option in (
        ("ctxlm.convert:import_from_hf", "source", "from_hf"),
        ("ctxlm.convert:export_to_hf", "model_dir", "to_hf"),
        ("ctxlm.official:convert_from_official", "source", "from_official"),
        ("ctxlm.official:convert_to_official", "model_dir", "to_official"),
    ):
        add_signature_flags(source, ref, [name], options={name: dict(option=_flag(option), dest=option)})
    p.add_argument("--out", required=True)
    add_signature_flags(p, "ctxlm.convert:import_from_hf", ["family"], options={"family": dict(choices=list(FAMILIES))})
    add_signature_flags(p, "ctxlm.official:convert_from_official", ["format"])
    add_signature_flags(
        p,
        "ctxlm.official:convert_from_official",
        ["max_shard_size"],
        options={"max_shard_size": dict(default="5GB", type=None)},
    )
    add_signature_flags(
        p, "ctxlm.convert:import_from_hf", ["decoder"], options={"decoder": dict(choices=["fresh", "encoder"])}
    )
    add_signature_flags(p, "ctxlm.convert:export_to_hf", ["drop_copy_head"])
    p.set_defaults(func=commands.get("convert"))
    for verb in ("pretrain", "finetune", "generate", "evaluate", "infill", "convert", "compare"):
        add_signature_flags(
            verbs.choices[verb],
            "ctxlm.checkpoint:verification",
            ["level"],
            options={"level": dict(option="--verify", dest="verify", choices=["full", "size", "off"], default="full")},
        )
    return parser
