"""Typed configuration: the family-independent dataclasses (training, decoding, fine-tuning and
pre-training settings), value ranges, YAML loading. Each model family's own configs and named configs
live in `ctxlm.families`, which imports this module (never the reverse).

Every config is a dataclass. `from_mapping` builds one from a dict (YAML, JSON) and rejects unknown
keys and wrong types with a one-line error that names the file and the key (and suggests the
closest known key for a typo).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import CtxlmError, not_utf8


# --------------------------------------------------------------------------------------------
# Value ranges: a numeric field's `metadata["range"]`, checked by every constructor (so by
# `from_mapping`, YAML and `dataclasses.replace` alike) and by the CLI before any work
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """The values a numeric field accepts: finite, between `low` and `high` (None: unbounded),
    each end included unless open."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, value) -> bool:
        if isinstance(value, float) and not math.isfinite(value):  # an int is finite, even past a float's range
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def describe(self) -> str:
        low, high = (f"{x:g}" if isinstance(x, float) else x for x in (self.low, self.high))
        if low is None and high is None:
            return "a finite number"
        if high is None:
            return f"{'>' if self.low_open else 'at least'} {low}"
        if low is None:
            return f"{'<' if self.high_open else 'at most'} {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def ranged(default, low=None, high=None, *, low_open=False, high_open=False):
    """A dataclass field with `default` whose value must lie in `Range(low, high, ...)` (None: any)."""
    return field(default=default, metadata={"range": Range(low, high, low_open, high_open)})


def range_error(cls: type, values: dict[str, Any], name=lambda key: key) -> str | None:
    """The first of `values` (fields of dataclass `cls`) outside its field's range, as
    "NAME must be at least 1, got 0" with `name(field)` (e.g. its flag); None when all hold."""
    ranges = {f.name: f.metadata["range"] for f in dataclasses.fields(cls) if "range" in f.metadata}
    for key, value in values.items():
        if (
            key in ranges
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
            and not ranges[key].holds(value)
        ):
            return f"{name(key)} must be {ranges[key].describe()}, got {value!r}"
    return None


def check_values(cls: type, values: dict[str, Any], name=lambda key: key) -> None:
    """Refuse `values` (some fields of dataclass `cls`, e.g. from flags) outside their ranges, in one
    line naming each by `name(field)`."""
    error = range_error(cls, values, name)
    if error is not None:
        raise CtxlmError(error)


def check_ranges(config) -> None:
    """Refuse a dataclass config with a field outside its range (`ranged`), in one line."""
    error = range_error(type(config), {f.name: getattr(config, f.name) for f in dataclasses.fields(config)})
    if error is not None:
        raise CtxlmError(error)


# --------------------------------------------------------------------------------------------
# Model and data config bases (each family's configs are in `ctxlm.families`)
# --------------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The base of every model family's config (`ctxlm.families`: PALM's, GLM's and UniLMv2's live in
    their family's module): `family` names the family's registry entry, and `data_config` the data
    config of the family's default pre-training objective (what `PretrainConfig` takes by default)."""

    family: str = ""
    data_config: ClassVar[type | None] = None


class DataConfig:
    """The base of every pre-training objective's data config (`ctxlm.families.Objective.data_config`):
    its values in their fields' ranges (`ranged`)."""

    def __post_init__(self):
        check_ranges(self)


# --------------------------------------------------------------------------------------------
# Training, decoding, fine-tuning and pre-training configs
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """The one training loop's settings (AdamW, linear warm-up and decay, accumulation, bf16)."""

    max_steps: int = ranged(1000, 1)  # optimizer steps (the schedule's length)
    batch_size: int = ranged(8, 1)  # sequences per micro-batch
    grad_accum: int = ranged(1, 1)  # micro-batches per optimizer step
    lr: float = ranged(1e-4, 0)  # peak learning rate (AdamW)
    warmup_steps: int = ranged(100, 0)  # steps of linear warm-up (then linear decay to 0)
    # warm-up as a fraction of --max-steps (wins over --warmup-steps; pre-training defaults to the model family's)
    warmup_ratio: float | None = ranged(None, 0, 1)
    weight_decay: float = ranged(0.01, 0)  # AdamW weight decay
    adam_beta1: float = ranged(0.9, 0, 1, high_open=True)  # AdamW beta1
    adam_beta2: float = ranged(0.999, 0, 1, high_open=True)  # AdamW beta2
    adam_eps: float = ranged(1e-8, 0, low_open=True)  # AdamW epsilon
    clip_norm: float = ranged(1.0, 0)  # gradient norm clipping (0: off)
    label_smoothing: float = ranged(0.0, 0, 1, high_open=True)  # label smoothing of the token losses
    bf16: bool = False  # bfloat16 autocast
    # under torchrun: shard parameters, gradients and optimizer state over the ranks (FSDP2) instead of
    # replicating them (DDP)
    fsdp: bool = False
    compile: bool = False  # torch.compile the model
    data_workers: int | None = ranged(None, 0)  # DataLoader worker processes (default: 4 on CUDA, 0 on CPU)
    seed: int = ranged(0, 0, 2**32 - 1)  # data order, dropout and new weights
    log_every: int = ranged(10, 1)  # write metrics.jsonl every N steps
    eval_every: int = ranged(200, 0)  # validate every N steps (and at the end)
    eval_batches: int = ranged(16, 1)  # held-out batches per validation
    save_every: int = ranged(500, 0)  # checkpoint every N steps (and at the end)
    keep_checkpoints: int = ranged(2, 0)  # checkpoints kept (the newest)
    progress: bool = True  # progress bar
    # keep the best weights by this validation metric, e.g. valid/lm_loss (lower is better)
    select_metric: str | None = None
    early_stopping_patience: int = ranged(0, 0)  # stop after this many validations without improvement (0: never)
    # stop after this many steps in a row with a NaN/Inf loss or gradient norm
    max_nonfinite_steps: int = ranged(5, 1)
    # under torchrun: seconds a collective (an all-reduce, a barrier) may wait before the run stops
    collective_timeout: float = ranged(600.0, 0, low_open=True)
    # under torchrun: seconds without a rank's heartbeat before every rank stops, naming it
    heartbeat_timeout: float = ranged(30.0, 0, low_open=True)

    def __post_init__(self):
        check_ranges(self)

    def warmup(self) -> int:
        """The warm-up in steps: round(warmup_ratio × max_steps), at least 1, when the ratio is set;
        else warmup_steps."""
        if self.warmup_ratio is None:
            return self.warmup_steps
        return max(1, round(self.warmup_ratio * self.max_steps))


def _remembers_given_fields(cls):
    """Make the dataclass `cls`'s constructor record the names of the fields it is given (`_given`)."""
    init = cls.__init__
    names = [f.name for f in dataclasses.fields(cls)]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        self._given = frozenset(names[: len(args)]) | frozenset(kwargs)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


@_remembers_given_fields
@dataclass
class GenerationConfig:
    """Decoding settings (see `ctxlm.generation`). Lengths count generated tokens, the start token
    excluded, as transformers' `min_new_tokens` / `max_new_tokens`.

    A config remembers the fields its constructor was given (`given_fields`), and `with_overrides`
    lays only those over other settings: `GenerationConfig(num_beams=3)` over a model's saved
    settings changes the beam and keeps the rest, as `ctxlm generate --beam 3` does. A config made
    by `dataclasses.replace` or from a complete mapping names every field."""

    num_beams: int = ranged(5, 1)  # beam size
    max_new_tokens: int = ranged(64, 1)  # max generated tokens (start token excluded)
    min_new_tokens: int = ranged(0, 0)  # min generated tokens before EOS
    length_penalty: float = ranged(1.0, -10, 10)  # exponent a
    length_penalty_type: str = "hf"  # hf (= fairseq): score/len^a; gnmt: score/((5+len)/6)^a
    no_repeat_ngram_size: int = ranged(0, 0)  # n-grams of this size may not repeat (0: off)
    block_subword_loops: bool = False  # true/false: a '##' word piece may not occur twice in one word
    block_word_repeats: bool = False  # true/false: a one-piece word may not come twice in a row ('share share')
    early_stopping: bool | str = False  # true, false (transformers' heuristic) or never
    do_sample: bool = False  # sample instead of beam search (beam 1)
    top_k: int = ranged(0, 0)  # sample from the k likeliest (0: all)
    top_p: float = ranged(1.0, 0, 1, low_open=True)  # nucleus sampling mass
    temperature: float = ranged(1.0, 0, low_open=True)  # sampling temperature
    seed: int | None = ranged(None, 0, 2**63 - 1)  # sampling seed

    def __post_init__(self):
        check_ranges(self)
        if self.length_penalty_type not in ("hf", "gnmt"):
            raise CtxlmError(f"length_penalty_type must be 'hf' or 'gnmt', not '{self.length_penalty_type}'")
        if self.early_stopping not in (True, False, "never"):
            raise CtxlmError(f"early_stopping must be true, false or never, not {self.early_stopping!r}")
        if self.do_sample and self.num_beams > 1:
            raise CtxlmError("sampling is supported with num_beams=1")

    @property
    def given_fields(self) -> frozenset[str]:
        """The fields the constructor was given (the others hold their defaults)."""
        return self.__dict__.get("_given", frozenset(f.name for f in dataclasses.fields(self)))

    def with_overrides(self, cfg: GenerationConfig | None = None, **overrides: Any) -> GenerationConfig:
        """These settings with the fields `cfg`'s constructor was given, then `overrides`, in their
        place. Sampling asked for without a beam count decodes with one beam; more than one beam
        asked for without `do_sample` turns sampling off."""
        changes = {name: getattr(cfg, name) for name in cfg.given_fields} if cfg is not None else {}
        changes.update(overrides)
        if changes.get("do_sample") and "num_beams" not in changes:
            changes["num_beams"] = 1
        beams = changes.get("num_beams")
        if isinstance(beams, int) and beams > 1 and "do_sample" not in changes:
            changes["do_sample"] = False
        return from_mapping(GenerationConfig, {**dataclasses.asdict(self), **changes}, "generation settings")


# PET's few-shot settings (Schick & Schütze, 2021), which GLM follows on FewGLUE: `finetune --task cloze`'s defaults
CLOZE_TRAIN = dict(batch_size=16, lr=1e-5, max_steps=250, warmup_steps=25, eval_every=50, eval_batches=1000)


@dataclass
class FinetuneConfig:
    """A fine-tuning recipe: the task's input limits, the training settings and the decoding
    settings (`recipes/*.yaml` write the papers' values beside ours)."""

    task: str = "seq2seq"  # summarization | qg | qa | dialog | seq2seq
    max_source_tokens: int = ranged(512, 2)  # special tokens included
    max_target_tokens: int = ranged(128, 2)  # special tokens included
    reader: dict = field(default_factory=dict)  # options for the task reader (ctxlm.data.tasks)
    max_valid_examples: int = ranged(500, 1)  # validation loss on at most this many rows of --valid
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            lr=5e-5, warmup_steps=100, label_smoothing=0.1, eval_every=200, select_metric="valid/lm_loss"
        )
    )
    decoding: GenerationConfig = field(default_factory=GenerationConfig)
    # decode with a `ctxlm.lexicon.WordLexicon` of the training pairs: a word of several WordPiece
    # pieces only as a training pair or the source writes it (`ctxlm compare`; the demo does the same)
    lexicon: bool = False
    # train for this many passes over the training rows instead of train.max_steps (the official
    # scripts count epochs: `steps_for_epochs`); a --max-steps flag wins over it
    epochs: int | None = None

    __post_init__ = check_ranges  # values in their fields' ranges


@dataclass
class PretrainConfig:
    """Everything a pre-training run needs besides paths."""

    model: ModelConfig | None = None  # a model family's config
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig | None = None  # None: the default of the model's family (`ModelConfig.data_config`)

    def __post_init__(self):
        data_config = getattr(self.model, "data_config", None)
        if self.data is None and data_config is not None:
            self.data = data_config()


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is Any:
        return True
    if isinstance(annotation, str):
        annotation = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation, Any)
        if annotation is Any:
            return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def from_mapping(cls: type, values: dict[str, Any], source: str = "config") -> Any:
    """Build dataclass `cls` from `values`, naming `source` and the key on any error."""
    if not isinstance(values, dict):
        raise CtxlmError(f"{source}: expected a mapping of {cls.__name__} fields, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise CtxlmError(f"{source}: unknown key '{key}'{hint}")
        if not _type_ok(value, hints[key]):
            raise CtxlmError(
                f"{source}: key '{key}' must be {getattr(hints[key], '__name__', hints[key])}, got {value!r}"
            )
        if hints[key] is float and isinstance(value, int):
            value = float(value)
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except CtxlmError as error:  # a value out of range (`check_ranges`) or otherwise refused
        raise CtxlmError(f"{source}: {error}") from None


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CtxlmError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise not_utf8(path, detail=f" ({error.reason} at byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise CtxlmError(f"{path}{line}: invalid YAML ({getattr(error, 'problem', error)})") from None
    if values is None:
        raise CtxlmError(f"{path}: empty config file")
    if not isinstance(values, dict):
        raise CtxlmError(f"{path}: expected a mapping at the top level")
    return values


def recipe_path(spec: str | Path) -> Path:
    """A recipe's file: `spec` itself when it is a file, else the packaged `ctxlm/recipes/<spec>.yaml`
    (seq2seq recipes such as `gigaword`, and the NLU ones such as `glm-superglue-rte`)."""
    path = Path(spec)
    if path.is_file():
        return path
    path = RECIPES_DIR / f"{spec}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
        close = difflib.get_close_matches(str(spec), known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CtxlmError(f"unknown recipe '{spec}'{hint}; recipes: {', '.join(known)}")
    return path


def steps_for_epochs(
    train: TrainConfig, epochs: int, examples: int, source: str = "epochs", processes: int | None = None
) -> TrainConfig:
    """`train` with max_steps = `epochs` passes over `examples` rows, one optimizer step taking
    batch_size × grad_accum rows on each of `processes` (default: torchrun's WORLD_SIZE, else 1); the
    last partial step counted (the official scripts' DataLoaders keep it)."""
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise CtxlmError(f"{source}: epochs must be a whole number of at least 1, not {epochs!r}")
    processes = processes or int(os.environ.get("WORLD_SIZE", "1"))
    per_epoch = max(1, math.ceil(examples / (train.batch_size * train.grad_accum * processes)))
    return dataclasses.replace(train, max_steps=epochs * per_epoch)


def load_finetune_config(spec: str | None) -> FinetuneConfig:
    """A recipe: a name in ctxlm/recipes (e.g. `gigaword`) or a YAML file; None gives the defaults."""
    if spec is None:
        return FinetuneConfig()
    path = recipe_path(spec)
    values = read_yaml(path)
    train = values.pop("train", None) or {}
    decoding = values.pop("decoding", None) or {}
    config = from_mapping(FinetuneConfig, values, str(path))
    if config.epochs is not None and isinstance(train, dict) and "max_steps" in train:
        raise CtxlmError(f"{path}: give epochs or train: max_steps, not both")
    from_mapping(TrainConfig, train, f"{path}: train")  # names a typo in the file's own keys
    config.train = from_mapping(TrainConfig, {**dataclasses.asdict(FinetuneConfig().train), **train}, f"{path}: train")
    config.decoding = from_mapping(GenerationConfig, decoding, f"{path}: decoding")
    return config


RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


def save_json(path: str | Path, values: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


GENERATION_FILE = "generation.json"  # a model directory's decoding settings (its recipe's)


def save_generation_config(directory: str | Path, cfg: GenerationConfig) -> None:
    Path(directory, GENERATION_FILE).write_text(json.dumps(dataclasses.asdict(cfg), indent=2) + "\n", encoding="utf-8")


def load_generation_config(directory: str | Path) -> GenerationConfig | None:
    path = Path(directory) / GENERATION_FILE
    if not path.is_file():
        return None
    return from_mapping(GenerationConfig, json.loads(path.read_text(encoding="utf-8")), str(path))
