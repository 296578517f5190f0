"""The registry of downstream tasks, built like `ctxlm.families`.

A `Task` names what the rest of ctxlm looks up by a task's name: its readers, its head, how it
fine-tunes, predicts and scores, its primary metric and its trivial baseline, and (for `compare`) the
class that scores a comparison's cells. Every task is fine-tuned through one function and evaluated
through one function:

    from ctxlm.tasks import RunOptions, TaskData, evaluate, finetune
    finetune("classify", "runs/unilm", TaskData(dataset="glue/MRPC", data_dir="nlu"), "runs/mrpc",
             {"lr": 3e-5}, RunOptions(device="cpu"))
    evaluate("classify", "runs/mrpc", TaskData(data_dir="nlu"))

`train` is a `TrainConfig` (replacing the task's settings whole) or a mapping of `TrainConfig`
fields over them (the task's defaults, e.g. PET's few-shot settings for cloze, Table 9's for classify).

Tasks register lazily, as families do: functions are `"module:attribute"` strings imported on first
use, and the built-in tasks (`ctxlm/tasks/builtin.py`) register when the registry is first read.
A new task: a module that calls `register_task(Task(...))` (see docs/layout.md, "Adding a task").
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..config import check_ranges, ranged
from ..errors import CtxlmError
from ..families import resolve
from ..run_options import CorpusSpec, RunOptions  # noqa: F401  (the bundles every task takes)

Ref = Any  # a class / function, or "module:attribute"


# ------------------------------------------------------------------------------------ bundles
@dataclass(frozen=True)
class ScratchModel:
    """A new model instead of a pre-trained one (the papers' "− pre-training" baseline)."""

    # with --tokenizer: train a new model from scratch (a named config or YAML; in Python a model config; None:
    # start from `init`)
    config: Any = None
    tokenizer: Any = None  # tokenizer for --config (in Python also a TextTokenizer)


@dataclass
class TaskData:
    """What a task reads: files (seq2seq, squad) or a dataset in a data folder (cloze, classify), the
    task's recipe, limits, and the task's own options (`max_length`, `pooler`, `score_eop`,
    `doc_stride`, `source_field`, ...; the task's `options` class names them)."""

    # the training file in the task's format, or a dataset (.parquet, .arrow, save_to_disk directory, hub:NAME)
    # with --source-field/--target-field
    train: str | Path | None = None
    valid: str | Path | None = None  # the validation file (loss, best checkpoint, early stopping)
    # evaluate: the references (JSONL with field 'target', or a .txt file, one a line, for seq2seq perplexity;
    # squad: the SQuAD JSON); compare (--eval): seq2seq tasks: score this file instead of --valid
    ref: str | Path | None = None
    # cloze: superglue/<Task>; classify: glue/MRPC, glue/STS-B, superglue/RTE (evaluate: default the
    # dataset the model was fine-tuned on)
    dataset: str | None = None
    data_dir: str | Path | None = None  # cloze, classify: the NLU data folder (e.g. ../shared/data/nlu)
    # evaluate: the split scored (cloze: dev32, the default, or train; classify: dev or train); cloze
    # fine-tuning: its dev split (default dev32)
    split: str | None = None
    # the task's recipe (in Python also a `FinetuneConfig`): seq2seq: gigaword, cnndm, xsum, squad_qg, marco,
    # cornell, the papers' unilm2-xsum, unilm2-cnndm, unilm2-squad-qg, palm-cnndm, palm-gigaword, or YAML;
    # cloze/classify/squad: a YAML of their options (dataset, data_dir, max_length, epochs, ...) and train:, or
    # GLM's glm-superglue-<task> (its task: sets --task)
    recipe: Any = None
    # use only the first N training rows (compare: pairs, dialog 10000 by default; seq2seq tasks: several sizes,
    # e.g. 1000,4000,all, one comparison per size sharing the pre-training, and train_sizes.md, PALM Table 5's
    # question)
    train_limit: int | None = None
    valid_limit: int | None = None  # classify, squad: use only the first N validation rows
    # evaluate: score only the first N rows (compare, --eval-limit: the scored pairs; classify: dev rows, also those
    # it validates on; cloze: dev32 rows)
    limit: int | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """Everything ctxlm needs to know about one downstream task.

    - `family`: the model family whose fine-tuning it is (None: any family with a seq2seq layout);
    - `readers`: the function that reads its rows; `head`: its `head.json` type (None: the model's own);
    - `finetune(name, init, data, out, train, run, model) -> TrainResult`; `evaluate(name, model_dir,
      data, run) -> dict` (None: the task cannot be fine-tuned / evaluated this way);
    - `predict` and `score`: its prediction function and its metrics of predictions;
    - `primary_metric` and `baseline`: what `compare` tests and the trivial baseline it scores;
    - `comparison`: the class `compare` builds to fine-tune and score its cells (None: seq2seq
      recipes, scored by `compare.TASK_SCORING`), as `comparison(dataset, data_dir, train_overrides,
      max_length=, eval_limit=, train_limit=, **{option: value for option in comparison_options})`;
      `compare_objectives`: the pre-training variants it compares by default;
    - `needs`: the `TaskData` fields fine-tuning needs (`--task X needs --field` otherwise);
    - `scores_files`: `evaluate` without a model scores prediction files for it;
    - `nlu_recipe`: its --recipe is a YAML of `NluOptions` and `train:` (or a packaged one, e.g.
      `glm-superglue-rte`), not a seq2seq recipe; `reads_epochs`: it reads such a recipe's `epochs`.
    """

    name: str
    family: str | None
    readers: Ref
    head: str | None
    finetune: Ref
    evaluate: Ref
    predict: Ref
    score: Ref
    primary_metric: str
    baseline: str
    comparison: Ref = None
    comparison_options: tuple[str, ...] = ()
    compare_objectives: tuple[str, ...] = ("none",)
    compare_train_limit: int | None = None  # the pairs `compare` fine-tunes on by default (None: all)
    needs: tuple[str, ...] = ()
    scores_files: bool = False
    nlu_recipe: bool = False
    reads_epochs: bool = False


TASKS: dict[str, Task] = {}
BUILTIN = "ctxlm.tasks.builtin"  # registers the built-in tasks on first use
_LOADED: list[bool] = []


def register_task(task: Task) -> Task:
    """Add (or replace) a task."""
    TASKS[task.name] = task
    return task


def registered() -> dict[str, Task]:
    """Every task by name (the built-in ones first, in registration order)."""
    if not _LOADED:
        _LOADED.append(True)
        importlib.import_module(BUILTIN)
    return TASKS


def get_task(name: str | Task | None) -> Task:
    """The task registered as `name`; None is the generic `seq2seq` task (a recipe's own task)."""
    if isinstance(name, Task):
        return name
    tasks = registered()
    if (name or "seq2seq") not in tasks:
        raise CtxlmError(f"unknown task '{name}' (known: {', '.join(tasks)})")
    return tasks[name or "seq2seq"]


def seq2seq_recipe(spec):
    """A seq2seq recipe (`FinetuneConfig`, a copy) from a name, YAML file or `FinetuneConfig`; the recipe of a
    task that reads its own recipes (cloze, classify, squad: `Task.nlu_recipe`) is refused in one line."""
    from ..config import FinetuneConfig, load_finetune_config, recipe_path

    if isinstance(spec, FinetuneConfig):
        return dataclasses.replace(spec)
    if spec is not None and (task := nlu_recipe_task(spec)) is not None:
        raise CtxlmError(
            f"{recipe_path(spec)}: a recipe for --task {task} (finetune --recipe reads it), not a seq2seq recipe"
        )
    return load_finetune_config(spec)


def finetunable() -> list[str]:
    """The tasks `finetune` takes (those with a fine-tuning function)."""
    return [name for name, task in registered().items() if task.finetune is not None]


def need(task: str | None, values, *names: str) -> None:
    """Refuse a missing setting the way the command line names it: `--task X needs --name`."""
    for name in names:
        if getattr(values, name) is None:
            raise CtxlmError(f"--task {task} needs --{name.replace('_', '-')}")


# ------------------------------------------------------------------------------------ one entry point each
def finetune(
    task: str | Task | None,
    init: str | Path | None,
    data: TaskData,
    out: str | Path,
    train: Mapping | Any = None,
    run: RunOptions = RunOptions(),
    model: ScratchModel = ScratchModel(),
):
    """Fine-tune `init` (a model directory; or `model`, a new model) on `task` with `data`, into `out`.
    `train`: a `TrainConfig`, or TrainConfig fields over the task's defaults. `task` None: the recipe's
    own (an NLU recipe's `task:`, e.g. glm-superglue-rte's cloze; else a seq2seq recipe's). Returns the
    `TrainResult`.

    Args:
        task: a seq2seq task (default: the recipe's), GLM's cloze NLU, UniLMv2's classify or squad
        init: pre-trained model directory
        out: the fine-tuning run's folder
    """
    name = task.name if isinstance(task, Task) else task
    if name is None and isinstance(data.recipe, (str, Path)):
        name = nlu_recipe_task(data.recipe)  # an NLU recipe names its task; seq2seq ones keep None
    spec = get_task(name if task is None else task)
    if spec.finetune is None:
        raise CtxlmError(f"task '{spec.name}' has no fine-tuning")
    need(name, data, *spec.needs)
    if run.seed is not None:
        train = _with_seed(train, run.seed)
    return resolve(spec.finetune)(name, init, data, out, train, run, model)


def evaluate(task: str | Task | None, model: str | Path | None, data: TaskData, run: RunOptions = RunOptions()) -> dict:
    """`task`'s metrics of the model directory `model` on `data` (its `split`, first `limit` rows).

    Args:
        task: the task the model is scored on
        model: a model: perplexity of --ref (seq2seq tasks), or cloze/classify/squad scores
    """
    spec = get_task(task)
    if spec.evaluate is None:
        raise CtxlmError(f"task '{spec.name}' has no evaluation")
    return resolve(spec.evaluate)(task.name if isinstance(task, Task) else task, model, data, run)


def _with_seed(train, seed: int):
    if train is None or isinstance(train, Mapping):
        return {**(train or {}), "seed": seed}
    return dataclasses.replace(train, seed=seed)


def train_config(train, defaults: Mapping | Any = None):
    """The `TrainConfig` a task trains with: `train` itself, or its fields over `defaults` (a mapping
    of fields or a `TrainConfig`; None: TrainConfig's defaults)."""
    from ..config import TrainConfig

    if isinstance(train, TrainConfig):
        return train
    base = defaults if isinstance(defaults, TrainConfig) else TrainConfig(**(defaults or {}))
    return dataclasses.replace(base, **(train or {}))


# ------------------------------------------------------------------------------------ NLU recipes
@dataclass
class NluOptions:
    """`finetune --task cloze|classify|squad` settings: flags, or the top level of a --recipe YAML
    (whose `train:` section holds TrainConfig fields, as the seq2seq recipes)."""

    task: str | None = None
    dataset: str | None = None
    data_dir: str | None = None
    max_length: int | None = ranged(None, 8)  # tokens per input (cloze: the model's; classify 128; squad 384)
    epochs: int | None = ranged(None, 1)  # cloze: passes over the training rows instead of max_steps (GLM's scripts)
    score_eop: bool = False  # cloze: also score [eop] after multi-token answers
    pooler: bool = False  # classify: BERT's dense+tanh pooler before the classifier
    doc_stride: int = ranged(128, 1)  # squad: tokens between window starts
    max_query_length: int = ranged(64, 1)  # squad: the question is cut to this many tokens
    max_answer_length: int = ranged(30, 1)  # squad: the longest answer span predicted, in tokens

    __post_init__ = check_ranges  # flags and recipes alike


def nlu_recipe_task(spec: str | Path) -> str | None:
    """The `task:` of recipe `spec` (a YAML file or a packaged name) when it is an NLU task, else None."""
    from ..config import read_yaml, recipe_path

    task = read_yaml(recipe_path(spec)).get("task")
    return task if isinstance(task, str) and task in registered() and registered()[task].nlu_recipe else None


def nlu_options(task: str, recipe: str | None, flags: Mapping) -> tuple[NluOptions, dict]:
    """The NLU settings (`flags` that are not None over the recipe's values over the defaults) and
    the recipe's train section. The recipe is a YAML file or a packaged name (`glm-superglue-rte`)."""
    from ..config import TrainConfig, check_values, from_mapping, read_yaml, recipe_path

    values, train = {}, {}
    if recipe is not None:
        path = recipe_path(recipe)
        values = read_yaml(path)
        train = values.pop("train", None) or {}
        from_mapping(TrainConfig, train, f"{path}: train")  # names a typo or a wrong type
    options = from_mapping(NluOptions, values, str(recipe))
    if options.task not in (None, task):
        raise CtxlmError(f"{recipe}: a recipe for --task {options.task}, not {task}")
    if options.epochs is not None and (not get_task(task).reads_epochs or "max_steps" in train):
        raise CtxlmError(
            f"{recipe}: epochs is read by --task cloze without train: max_steps "
            f"(classify and squad count UniLMv2's Table 9 epochs)"
        )
    given = {
        f.name: flags.get(f.name)
        for f in dataclasses.fields(NluOptions)
        if f.name != "task" and flags.get(f.name) is not None
    }
    check_values(NluOptions, given, lambda name: "--" + name.replace("_", "-"))
    return dataclasses.replace(options, task=task, **given), train


def data_nlu_options(task: str, data: TaskData) -> tuple[NluOptions, dict]:
    """`nlu_options` of a `TaskData` (its dataset, data folder and options are the flags)."""
    return nlu_options(task, data.recipe, {"dataset": data.dataset, "data_dir": data.data_dir, **data.options})
