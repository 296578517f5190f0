"""`ctxlm compare` on the NLU tasks ctxlm fine-tunes, where GLM's and UniLMv2's claims were made.

    from ctxlm.compare import Budget
    from ctxlm.compare_nlu import compare_nlu
    table = compare_nlu(["wiki/"], "tok/", "cloze", "superglue/RTE", "../shared/data/nlu", "runs/cloze",
                        objectives=["glm", "glm-noshuffle", "none"], budget=Budget(tokens=2_000_000))

- **cloze** (GLM's family only): FewGLUE SuperGLUE RTE, CB, COPA, BoolQ as cloze questions
  (`ctxlm.tasks.cloze.finetune_cloze`, PET's few-shot settings unless `train` overrides them),
  selected on dev32's error rate and scored on dev32 (FewGLUE has no other labelled split, so
  the score is optimistic, equally for every cell): accuracy, and CB's macro-F1.
- **classify** (UniLMv2's family only): GLUE MRPC, STS-B and SuperGLUE RTE on the [SOS] vector
  (`ctxlm.tasks.classification.finetune_classifier`, Table 9's settings unless overridden),
  selected on the dev loss (STS-B: MSE) and scored on the dev split: accuracy and F1 (MRPC),
  Pearson and Spearman (STS-B), accuracy (RTE). `eval_limit` keeps the first N dev rows for both.

Each cell pre-trains as `ctxlm.compare` does (`Comparison.pretrain_cell`, shareable through
`pretrain_dir`); `none` is a new model of the task's family. The bootstrap's metric is accuracy
(a per-example 0/100) or, for STS-B, Pearson's r recomputed from per-example (prediction, label)
rows (`ctxlm.report.corpus_pearson`). The baseline row predicts the training split's most
frequent label for every dev row (STS-B: the training mean, a constant whose correlations are
undefined: shown as 0, so a cell must correlate positively to have learned).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .checkpoint import latest_checkpoint, load_model_dir
from .compare import (Budget, Comparison, TaskScoring, check_run_options, family_configs, palm_config, run_cells,
                      start_folders)
from .config import CLOZE_TRAIN, PretrainConfig, TrainConfig
from .data.glue import get_dataset
from .data.superglue import ClozeExample, load_superglue, read_superglue, superglue_file, task_metrics, task_name
from .device import for_inference, resolve_device
from .errors import CtxlmError
from .objectives.variants import PRETRAIN_VARIANTS, Variant
from .report import corpus_pearson, mean_score
from .tokenization import TextTokenizer

NLU_TASKS = {"cloze": "glm", "classify": "unilm"}  # task → the model family whose fine-tuning it is
CLOZE_DATASETS = ("RTE", "CB", "COPA", "BoolQ")  # FewGLUE's one-answer classification tasks
DEFAULT_NLU_OBJECTIVES = {"cloze": ("glm", "glm-noshuffle", "none"),
                          "classify": ("unilm", "unilm-ae", "unilm-par", "none")}


def majority_label(labels: Sequence) -> tuple[Any, int]:
    """The most frequent label and its count (ties: the smallest label, as `str` sorts them)."""
    counts = Counter(labels)
    label = max(sorted(counts, key=str), key=counts.__getitem__)
    return label, counts[label]


def accuracy_stats(correct: Sequence[bool]) -> list[list[float]]:
    """Per-example accuracy × 100 (0 or 100), whose mean (`mean_score`) is the accuracy."""
    return [[100.0 * bool(c)] for c in correct]


class ClozeTask:
    """GLM's cloze SuperGLUE (see the module docstring)."""

    name, family, split = "cloze", "glm", "dev32"

    def __init__(self, dataset: str, data_dir: str | Path, train_overrides: Mapping, *, max_length: int | None = None,
                 score_eop: bool = False, eval_limit: int | None = None, train_limit: int | None = None):
        task = task_name(dataset)
        if task not in CLOZE_DATASETS:
            raise CtxlmError(f"compare --task cloze scores superglue/{', superglue/'.join(CLOZE_DATASETS)}; "
                             f"got {dataset}")
        if train_limit is not None:
            raise CtxlmError("--train-limit: cloze fine-tunes on FewGLUE's 32 training rows; it takes no limit")
        self.dataset, self.data_dir = f"superglue/{task}", Path(data_dir)
        self.max_length, self.score_eop = max_length, score_eop
        self.train = TrainConfig(**{**CLOZE_TRAIN, **train_overrides})
        # the training rows as in the file (COPA's are not yet mirrored): their labels give the majority
        self.train_rows = read_superglue(task, superglue_file(task, data_dir, "train"))
        self.rows = load_superglue(task, data_dir, self.split)[:eval_limit]
        self.metric_names = ("accuracy", "f1") if task == "CB" else ("accuracy",)
        self.primary, self.statistic = "accuracy", mean_score
        self.selection = (f"lowest error rate on {self.dataset} dev32, the split it is scored on: FewGLUE has no "
                          "other labelled one, so the score is optimistic, equally for every cell")

    @staticmethod
    def gold_label(row: ClozeExample):
        """A row's label: the dataset's (verbalizer tasks), or the gold choice (COPA)."""
        return row.label if row.candidate_labels is not None else row.gold[0]

    @staticmethod
    def candidate(row: ClozeExample, label) -> int:
        """The candidate a label stands for in `row`."""
        return row.candidate_labels.index(label) if row.candidate_labels is not None else int(label)

    def finetune(self, init, model_config, tokenizer, out_dir: Path, seed: int):
        from .tasks.cloze import finetune_cloze

        return finetune_cloze(init, self.dataset, self.data_dir, out_dir, dataclasses.replace(self.train, seed=seed),
                              max_length=self.max_length, model_config=model_config, tokenizer=tokenizer,
                              score_eop=self.score_eop, resume=latest_checkpoint(out_dir) is not None)

    def predict(self, model_dir: Path, batch_size: int = 8) -> list[int]:
        """The chosen candidate of each scored row, as `evaluate_cloze` picks it."""
        from .tasks.cloze import ClozeExamples, GlmClozeModel, predict_cloze

        device = resolve_device("auto")
        model, tokenizer = load_model_dir(model_dir, device=device)
        if not isinstance(model, GlmClozeModel):
            raise CtxlmError(f"{model_dir}: not a GLM cloze model")
        model = for_inference(model, device, False)
        examples = ClozeExamples(self.rows, tokenizer, model.config, model.max_length, score_eop=model.score_eop)
        return [int(np.argmax(s)) for s in predict_cloze(model, examples, batch_size=batch_size)]

    def metrics(self, predicted: Sequence[int]) -> dict[str, float]:
        from .tasks.cloze import percent

        return percent(task_metrics(self.rows, predicted))

    def example_stats(self, predicted: Sequence[int]) -> list[list[float]]:
        return accuracy_stats([p in row.gold for row, p in zip(self.rows, predicted)])

    def predicted_classes(self, predicted: Sequence[int]) -> list:
        """The label each chosen candidate stands for (COPA: the choice)."""
        return [row.candidate_labels[p] if row.candidate_labels is not None else p
                for row, p in zip(self.rows, predicted)]

    def majority(self) -> tuple[str, list[int], dict[str, float]]:
        """The majority-class baseline: (its name, its prediction for each row, its metrics)."""
        labels = [self.gold_label(row) for row in self.train_rows]
        label, count = majority_label(labels)
        predicted = [self.candidate(row, label) for row in self.rows]
        return f"majority class {label} ({count}/{len(labels)} training rows)", predicted, self.metrics(predicted)


class ClassifyTask:
    """UniLMv2's classification and regression (see the module docstring)."""

    name, family, split = "classify", "unilm", "dev"

    def __init__(self, dataset: str, data_dir: str | Path, train_overrides: Mapping, *, max_length: int | None = None,
                 pooler: bool = False, eval_limit: int | None = None, train_limit: int | None = None):
        from .tasks.classification import DEFAULT_MAX_LENGTH, glue_train_config

        self.spec = get_dataset(dataset)
        self.dataset, self.data_dir = self.spec.name, Path(data_dir)
        self.max_length, self.pooler = max_length or DEFAULT_MAX_LENGTH, pooler
        self.eval_limit, self.train_limit = eval_limit, train_limit
        self.regression = self.spec.num_labels == 1
        self.train_rows = self.spec.read(data_dir, "train")[:train_limit]
        self.rows = self.spec.read(data_dir, self.split)[:eval_limit]
        self.train = glue_train_config(len(self.train_rows), len(self.rows), self.regression, train_overrides)
        self.metric_names = self.spec.metrics
        self.primary, self.statistic = ("pearson", corpus_pearson) if self.regression else ("accuracy", mean_score)
        rows = f"the first {eval_limit} rows of " if eval_limit else ""
        self.selection = (f"lowest dev {'MSE' if self.regression else 'loss'} on {rows}{self.dataset} dev, the rows "
                          "it is scored on")

    def finetune(self, init, model_config, tokenizer, out_dir: Path, seed: int):
        from .tasks.classification import finetune_classifier

        return finetune_classifier(init, self.dataset, self.data_dir, out_dir,
                                   dataclasses.replace(self.train, seed=seed), max_length=self.max_length,
                                   pooler=self.pooler, model_config=model_config, tokenizer=tokenizer,
                                   train_limit=self.train_limit, valid_limit=self.eval_limit,
                                   resume=latest_checkpoint(out_dir) is not None)

    def predict(self, model_dir: Path, batch_size: int = 32) -> list:
        """Each scored row's class (or score, STS-B), as `evaluate_classifier` predicts it."""
        from .models.unilm import UnilmClassifier
        from .tasks.classification import TASK_FILE, PairExamples, predict

        device = resolve_device("auto")
        model, tokenizer = load_model_dir(model_dir, device=device)
        if not isinstance(model, UnilmClassifier):
            raise CtxlmError(f"{model_dir}: not a UniLMv2 classifier")
        model = for_inference(model, device, False)
        max_length = json.loads((Path(model_dir) / TASK_FILE).read_text(encoding="utf-8"))["max_length"]
        examples = PairExamples(model.config, tokenizer, self.rows, max_length, self.regression)
        values = predict(model, examples, batch_size)
        return [float(v) for v in values] if self.regression else [int(v) for v in values]

    def metrics(self, predicted: Sequence) -> dict[str, float]:
        from .tasks.classification import glue_metrics

        return glue_metrics(self.spec, predicted, [row.label for row in self.rows])

    def example_stats(self, predicted: Sequence) -> list[list[float]]:
        if self.regression:  # (prediction, label): `corpus_pearson` recomputes r from resampled rows
            return [[float(p), float(row.label)] for row, p in zip(self.rows, predicted)]
        return accuracy_stats([p == row.label for row, p in zip(self.rows, predicted)])

    def predicted_classes(self, predicted: Sequence) -> list:
        """Each prediction's class name (regression: none; a constant score has no correlation)."""
        if self.regression:
            return []
        return [self.spec.label_names[p] if self.spec.label_names else p for p in predicted]

    def majority(self) -> tuple[str, list, dict[str, float]]:
        """The trivial baseline: (its name, its prediction for each row, its metrics)."""
        labels = [row.label for row in self.train_rows]
        if self.regression:
            mean = float(np.mean(labels))
            return (f"training mean {mean:.2f} (a constant: its correlations are undefined, shown as 0)",
                    [mean] * len(self.rows), {name: 0.0 for name in self.metric_names})
        label, count = majority_label(labels)
        predicted = [label] * len(self.rows)
        name = self.spec.label_names[label] if self.spec.label_names else label
        return f"majority class {name} ({count}/{len(labels)} training rows)", predicted, self.metrics(predicted)


NluTask = ClozeTask | ClassifyTask


@dataclasses.dataclass
class NluComparison(Comparison):
    """A comparison whose cells fine-tune and score an NLU task (`nlu`) instead of a seq2seq recipe."""

    nlu: NluTask | None = None

    def variant(self, objective: str) -> Variant:
        variant = PRETRAIN_VARIANTS[objective]
        if objective == "none":  # no pre-training: a new model of the task's family
            return dataclasses.replace(variant, family=self.nlu.family)
        return variant

    def finetune_run(self, init, model_config, ft_dir: Path, seed: int):
        return self.nlu.finetune(init, model_config, self.tokenizer, ft_dir, seed)

    def score_cell(self, model_dir: Path) -> tuple[dict, list, list]:
        predicted = self.nlu.predict(model_dir)
        return self.nlu.metrics(predicted), self.nlu.example_stats(predicted), predicted

    def prediction_notes(self, predictions: list) -> dict:
        """`one_class`: the class a cell predicts for every scored row, when it does (it did not learn)."""
        classes = {str(c) for c in self.nlu.predicted_classes(predictions)}
        return {"one_class": classes.pop()} if len(classes) == 1 and len(predictions) > 1 else {}

    def baseline(self) -> dict:
        name, predicted, metrics = self.nlu.majority()
        return {"name": name, "metrics": metrics, "example_stats": self.nlu.example_stats(predicted),
                "predictions": predicted}


def nlu_task(task: str, dataset: str, data_dir: str | Path, train_overrides: Mapping | None = None,
             **options: Any) -> NluTask:
    """The task's reader, fine-tuning and scoring (`options`: max_length, eval_limit, train_limit, and
    cloze's score_eop or classify's pooler)."""
    if task not in NLU_TASKS:
        raise CtxlmError(f"unknown NLU task '{task}' (choose from {', '.join(NLU_TASKS)})")
    return (ClozeTask if task == "cloze" else ClassifyTask)(dataset, data_dir, dict(train_overrides or {}), **options)


def check_family(objectives: Sequence[str], task: str) -> None:
    """Refuse a variant of another family than the task's (`none` is a new model of the task's family)."""
    family = NLU_TASKS[task]
    wrong = next((o for o in objectives if o != "none" and PRETRAIN_VARIANTS[o].family != family), None)
    if wrong is not None:
        same = [name for name, variant in PRETRAIN_VARIANTS.items() if variant.family == family]
        raise CtxlmError(f"--task {task} fine-tunes {family} models: '{wrong}' is a {PRETRAIN_VARIANTS[wrong].family} "
                         f"variant (choose from {', '.join(same)}, none)")


def compare_nlu(
    corpus: Sequence[str | Path],
    tokenizer: TextTokenizer | str | Path,
    task: str,
    dataset: str,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    budget: Budget,
    objectives: Sequence[str] | None = None,
    config: PretrainConfig | str = "palm-tiny",
    seeds: int = 3,
    train: Mapping | None = None,
    finetune_steps: int | None = None,
    max_length: int | None = None,
    score_eop: bool = False,
    pooler: bool = False,
    eval_limit: int | None = None,
    train_limit: int | None = None,
    cache_dir: str | Path | None = None,
    pretrain_dir: str | Path | None = None,
    corpus_format: str = "auto",
    text_field: str | None = None,
    fallback_encoding: str | None = None,
    resamples: int = 1000,
    plots: bool = True,
    command: str | None = None,
) -> list[dict]:
    """`ctxlm.compare.compare` for `task` "cloze" (GLM variants) or "classify" (UniLMv2 variants) on
    `dataset` under `data_dir` (as `finetune --dataset --data-dir`). `train`: TrainConfig fields over
    the task's fine-tuning defaults; `finetune_steps` their max_steps. `objectives` default to the
    family's claims' variants and `none`. Returns the report's table (the baseline's row last)."""
    from .report import write_comparison_report

    if task not in NLU_TASKS:
        raise CtxlmError(f"unknown NLU task '{task}' (choose from {', '.join(NLU_TASKS)})")
    objectives = list(objectives or DEFAULT_NLU_OBJECTIVES[task])
    check_run_options(objectives, seeds, plots)
    overrides = {**(train or {}), **({"max_steps": finetune_steps} if finetune_steps is not None else {})}
    head = {"score_eop": score_eop} if task == "cloze" else {"pooler": pooler}
    options = dict(max_length=max_length, eval_limit=eval_limit, train_limit=train_limit, **head)
    nlu = nlu_task(task, dataset, data_dir, overrides, **options)  # reads the rows: fails before any run
    check_family(objectives, task)
    out_dir, config = Path(out_dir), palm_config(config)
    tokenizer = tokenizer if isinstance(tokenizer, TextTokenizer) else TextTokenizer.load(tokenizer)
    run = NluComparison(
        corpus=[str(c) for c in corpus], tokenizer=tokenizer, recipe=None, train_path=None, valid_path=None,
        eval_pairs=[], configs=family_configs([nlu.family], config, tokenizer), budget=budget, out_dir=out_dir,
        scoring=TaskScoring(nlu.metric_names, nlu.primary, nlu.statistic, True), train_limit=train_limit,
        cache_dir=Path(cache_dir) if cache_dir else out_dir / "store",
        pretrain_dir=Path(pretrain_dir) if pretrain_dir else None,
        reading=dict(corpus_format=corpus_format, text_field=text_field, fallback_encoding=fallback_encoding), nlu=nlu)
    recipe = {"task": task, "dataset": nlu.dataset, "data_dir": str(data_dir), **options,
              "train": dataclasses.asdict(nlu.train)}
    settings = {"corpus": run.corpus, "budget": dataclasses.asdict(budget), "recipe": recipe,
                "config": dataclasses.asdict(config), "train": f"{nlu.dataset} train",
                "valid": f"{nlu.dataset} {nlu.split}", "eval": f"{nlu.dataset} {nlu.split}", "eval_limit": eval_limit,
                "train_limit": train_limit, "vocab_size": tokenizer.vocab_size, "reading": run.reading,
                "reference": nlu.family, "selection": nlu.selection}
    start_folders(out_dir, pretrain_dir, settings)
    cells = run_cells(run, objectives, seeds)
    command = command or "(called from Python: ctxlm.compare_nlu.compare_nlu)"
    return write_comparison_report(out_dir, cells, run.baseline(), run.scoring, settings, resamples=resamples,
                                   plots=plots, command=command)
