"""The registry of model families and pre-training objectives.

A family (PALM, GLM, UniLMv2) registers in one place (`ctxlm/families/<name>.py`) everything the
rest of the package looks up by a model config's `family`: its config dataclass (a
`ctxlm.config.ModelConfig`) and its named configs, its model class,
its task heads, its seq2seq layout, its pre-training objectives and its transformers converters.
`build_model` (checkpoint.py), `pair_example` / `prompt_example` (layouts.py) and `pretrain`
(pretraining.py) ask the registry instead of branching on the family.

An objective belongs to one family, and a family may have several (PALM: its own two-stage
objective; others such as MASS or BART's denoising run on the same model). `Objective.prepare`
turns a token store into training and held-out examples.

Classes and functions may be given as `"module:attribute"` strings, imported on first use, so that
registering a family imports nothing heavy.

A new family: one file defining its config, data config, named configs, model, objective and layout, ending in
`register(Family(...))`, plus its module name in `BUILTIN` below (or a `register` call from user
code before the CLI runs).
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..errors import CtxlmError

Ref = Any  # a class / function, or "module:attribute"


def resolve(ref: Ref):
    """The object a `"module:attribute"` string names (or `ref` itself)."""
    if not isinstance(ref, str):
        return ref
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass
class PreparedData:
    """What an objective's `prepare` returns: training and held-out examples, and what run.json records."""

    train: Any  # Examples
    valid: Any  # Examples
    description: dict[str, Any]


@dataclass(frozen=True)
class Objective:
    """A pre-training objective. `prepare(store, tokenizer, model_config, data_config, stage, seed)`
    returns a `PreparedData`; `loss_options(data_config, stage, label_smoothing)` the
    keyword arguments the model's forward takes besides the batch; `stages` the values `stage` may take
    (PALM's "mlm" and "generation"; none: the objective has one stage); `prepare_model(model, stage)`
    readies the model for a stage (None: nothing to do)."""

    name: str
    family: str
    data_config: type
    prepare: Ref
    loss_options: Ref = None
    stages: tuple[str, ...] = ()
    prepare_model: Ref = None  # function(model, stage): e.g. freeze what a stage does not train

    def options(self, data_config, stage: str, label_smoothing: float) -> dict:
        if self.loss_options is None:
            return {"label_smoothing": label_smoothing} if label_smoothing else {}
        return resolve(self.loss_options)(data_config, stage, label_smoothing)


@dataclass(frozen=True)
class Family:
    """Everything ctxlm needs to know about one model family.

    - `config`: the model config dataclass (its `family` field defaults to `name`);
    - `model`: the model class, built as `model(config)`;
    - `objectives`: its pre-training objectives (the first is the default);
    - `pair_example(cfg, source, target, max_source, max_target)` / `prompt_example(cfg, source,
      max_source)`: the seq2seq fine-tuning and decoding layouts (None: no seq2seq use);
    - `heads`: task-head models by `head.json` type, built as `cls(config, **arguments)`;
    - `named_configs`: `--config` names (name → config fields) added to `NAMED_CONFIGS`;
    - `from_hf`: transformers `model_type` → `function(hf_model, **options) -> (model, report)`;
    - `to_hf`: `function(model, tokenizer, out_dir, **options) -> report` (None: no export);
    - `train_defaults`: pre-training optimiser settings (`TrainConfig` fields among
      `OPTIMIZER_FIELDS`) that `pretrain` and `compare` use where the user set none;
    - `shape_train_defaults(model_config) -> dict`: those of `train_defaults` that differ for a model
      of that shape (None: none do), e.g. a lower peak rate for a deep post-LN model;
    - `objective_flags`: `ctxlm pretrain` flag (its dest) → the field of the objective's data config
      it sets (`pretrain(objective_options=...)`), e.g. GLM's `--glm-task` → `task`;
    - `config_flags`: `ctxlm pretrain` flags (dests) that change a config of this family's data,
      applied by `apply_config_flags(data_config, {dest: value given})`; with a model of another
      family they are refused with `config_flags_error`;
    - `flags`: those flags' argparse keywords (dest → keywords, e.g. `choices`). A flag naming a field of
      the default objective's data config takes its type and help from the field (its comment); the
      others give their own `action` and `help` here.
    """

    name: str
    config: type
    model: Ref
    objectives: tuple[Objective, ...] = ()
    pair_example: Ref = None
    prompt_example: Ref = None
    heads: dict[str, Ref] = field(default_factory=dict)
    named_configs: dict[str, dict] = field(default_factory=dict)
    from_hf: dict[str, Ref] = field(default_factory=dict)
    to_hf: Ref = None
    train_defaults: dict[str, Any] = field(default_factory=dict)
    shape_train_defaults: Ref = None
    objective_flags: dict[str, str] = field(default_factory=dict)
    config_flags: tuple[str, ...] = ()
    apply_config_flags: Ref = None
    config_flags_error: str = ""
    flags: dict[str, dict] = field(default_factory=dict)

    def build(self, config):
        return resolve(self.model)(config)


FAMILIES: dict[str, Family] = {}
OBJECTIVES: dict[str, Objective] = {}
HEADS: dict[str, Ref] = {}
NAMED_CONFIGS: dict[str, dict[str, Any]] = {}  # `--config` name → model config fields, `family` among them
BUILTIN = ("palm", "glm", "unilm")  # modules of ctxlm.families registered at import
REFERENCE_FAMILY = "palm"  # `compare` sizes every other family's model to this family's config


# The TrainConfig fields a family's `train_defaults` may set; the warm-up is one setting, given
# either as `warmup_steps` or as `warmup_ratio` (which wins when set).
OPTIMIZER_FIELDS = ("lr", "warmup_steps", "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps")
WARMUP_FIELDS = ("warmup_steps", "warmup_ratio")


def register(family: Family) -> Family:
    """Add (or replace) a family, its objectives, heads and named configs."""
    unknown = set(family.train_defaults) - set(OPTIMIZER_FIELDS)
    if unknown:
        raise CtxlmError(
            f"family '{family.name}': train_defaults may set {', '.join(OPTIMIZER_FIELDS)}, not '{sorted(unknown)[0]}'"
        )
    for objective in family.objectives:
        if objective.family != family.name:
            raise CtxlmError(
                f"objective '{objective.name}' names family '{objective.family}', registered under '{family.name}'"
            )
        OBJECTIVES[objective.name] = objective
    data_config = getattr(family.config, "data_config", None)  # `PretrainConfig`'s default data (ModelConfig)
    if data_config is not None and family.objectives and data_config is not family.objectives[0].data_config:
        raise CtxlmError(
            f"family '{family.name}': {family.config.__name__}.data_config is not its default "
            f"objective's ({family.objectives[0].data_config.__name__})"
        )
    FAMILIES[family.name] = family
    HEADS.update(family.heads)
    for name, values in family.named_configs.items():
        NAMED_CONFIGS[name] = {"family": family.name, **values}
    return family


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise CtxlmError(f"unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def named_model_values(name: str) -> dict[str, Any]:
    """The fields of the named model config `name` (a family's `named_configs`), `family` among them."""
    if name not in NAMED_CONFIGS:
        close = difflib.get_close_matches(name, NAMED_CONFIGS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CtxlmError(f"unknown config '{name}'{hint}; named configs: {', '.join(sorted(NAMED_CONFIGS))}")
    return NAMED_CONFIGS[name]


def get_objective(name: str) -> Objective:
    if name not in OBJECTIVES:
        raise CtxlmError(f"unknown objective '{name}' (choose from {', '.join(OBJECTIVES)})")
    return OBJECTIVES[name]


def head_class(kind: str | None):
    if kind not in HEADS:
        raise CtxlmError(f"unknown task head '{kind}' (known: {', '.join(HEADS)})")
    return resolve(HEADS[kind])


def train_defaults(family: str, model_config=None) -> dict[str, Any]:
    """Every `OPTIMIZER_FIELDS` setting a `family` pre-trains with by default: its `train_defaults`
    over `TrainConfig`'s defaults, and, given the model's config, its `shape_train_defaults` over both."""
    from ..config import TrainConfig

    spec, base = get_family(family), TrainConfig()
    values = {name: spec.train_defaults.get(name, getattr(base, name)) for name in OPTIMIZER_FIELDS}
    if model_config is not None and spec.shape_train_defaults is not None:
        values.update(resolve(spec.shape_train_defaults)(model_config))
    return values


def default_objective(family: str) -> Objective:
    objectives = get_family(family).objectives
    if not objectives:
        raise CtxlmError(f"model family '{family}' has no pre-training objective")
    return objectives[0]


def apply_family_flags(model_config, data_config, flags: Mapping[str, Any]):
    """`data_config` with each family's pre-training flags (`Family.config_flags`) among `flags`
    (flag dest → value; None and False: not given) applied; refused for a model of another family."""
    for family in FAMILIES.values():
        given = {dest: flags.get(dest) for dest in family.config_flags if flags.get(dest) not in (None, False)}
        if given and model_config.family != family.name:
            raise CtxlmError(family.config_flags_error)
        if given:
            data_config = resolve(family.apply_config_flags)(data_config, given)
    return data_config


def objective_options(flags: Mapping[str, Any], objective: str) -> dict[str, Any]:
    """The objective data-config fields the families' flags among `flags` set (`Family.objective_flags`);
    a flag of another family than `objective`'s is refused, naming it."""
    family_of, options = get_objective(objective).family, {}
    for family in FAMILIES.values():
        for dest, field_name in family.objective_flags.items():
            if flags.get(dest) is None:
                continue
            if family.name != family_of:
                raise CtxlmError(
                    f"--{dest.replace('_', '-')} ({dest}) is a {family.name} option; the objective here is {objective}"
                )
            options[field_name] = flags[dest]
    return options


for _module in BUILTIN:
    importlib.import_module(f"{__name__}.{_module}")
