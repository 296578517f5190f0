"""The built-in tasks: seq2seq (summarization, QG, generative QA, dialog, a generic seq2seq), GLM's
cloze NLU and text infilling, UniLMv2's classification and extractive QA.

Each task's `finetune` and `evaluate` here turn the common arguments (`TaskData`, a training config
or its fields, `RunOptions`, `ScratchModel`) into the task module's own function
(`ctxlm.tasks.seq2seq.finetune`, `cloze.finetune_cloze`, ...), imported only when called.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Mapping

from . import RunOptions, ScratchModel, Task, TaskData, data_nlu_options, need, register_task, train_config
from ..errors import CtxlmError


def _placement(run: RunOptions) -> dict:
    return dict(device=run.device, bf16=run.bf16)


def _config_and_overrides(train, recipe_train: dict):
    """(a whole TrainConfig or None, the fields over the task's defaults), as the NLU tasks take them."""
    from ..config import TrainConfig

    if isinstance(train, TrainConfig):
        return train, {}
    return None, {**recipe_train, **(train or {})}


# ------------------------------------------------------------------------------------ seq2seq
def finetune_seq2seq(name, init, data: TaskData, out, train, run: RunOptions, model: ScratchModel):
    from . import seq2seq_recipe
    from .seq2seq import finetune

    recipe = seq2seq_recipe(data.recipe)
    if name is not None:
        recipe.task = name
    recipe.reader = {
        **recipe.reader,
        **{
            f"{side}_field": data.options[f"{side}_field"]
            for side in ("source", "target")
            if data.options.get(f"{side}_field") is not None
        },
    }
    if data.options.get("skip_empty"):
        recipe.reader["skip_empty"] = True
    if train is not None and (not isinstance(train, Mapping) or "max_steps" in train):
        recipe.epochs = None  # the steps asked for win over the recipe's epochs
    recipe.train = train_config(train, recipe.train)
    return finetune(
        data.train, data.valid, out, recipe, init=init, scratch=model, train_limit=data.train_limit, run=run
    )


def evaluate_seq2seq(name, model, data: TaskData, run: RunOptions) -> dict:
    """Perplexity of the model on the reference pairs."""
    from ..predict import Seq2SeqPredictor
    from .seq2seq import read_pairs

    if name is None or data.ref is None:
        raise CtxlmError("--model scores references by perplexity; give --task and --ref")
    pairs = read_pairs(name, data.ref, {"skip_empty": True} if name == "dialog" else None, data.limit)
    predictor = Seq2SeqPredictor.load(model, **_placement(run))
    return {"perplexity": predictor.perplexity([p.source for p in pairs], [p.target for p in pairs], progress=True)}


def _seq2seq(name: str, primary: str, baseline: str, compare_train_limit: int | None = None) -> Task:
    return Task(
        name=name,
        family=None,
        readers="ctxlm.tasks.seq2seq:read_pairs",
        head=None,
        finetune=finetune_seq2seq,
        evaluate=evaluate_seq2seq,
        predict="ctxlm.tasks.seq2seq:decode_pairs",
        score="ctxlm.metrics:compute_metrics",
        primary_metric=primary,
        baseline=baseline,
        needs=("train",),
        scores_files=True,
        compare_train_limit=compare_train_limit,
    )


# ------------------------------------------------------------------------------------ cloze (GLM)
def finetune_cloze_task(name, init, data: TaskData, out, train, run: RunOptions, model: ScratchModel):
    from ..config import CLOZE_TRAIN
    from .cloze import finetune_cloze

    nlu, recipe_train = data_nlu_options(name, data)
    need(name, nlu, "dataset", "data_dir")
    whole, overrides = _config_and_overrides(train, recipe_train)
    epochs = None if whole is not None or "max_steps" in (train or {}) else nlu.epochs  # --max-steps wins
    return finetune_cloze(
        init,
        TaskData(dataset=nlu.dataset, data_dir=nlu.data_dir),
        out,
        whole or train_config(overrides, CLOZE_TRAIN),
        max_length=nlu.max_length,
        score_eop=nlu.score_eop,
        epochs=epochs,
        run=run,
        scratch=model,
    )


def _evaluate_nlu(evaluate, default_split: str, name, model, data: TaskData, run: RunOptions) -> dict:
    """`evaluate(model, dataset, data_dir, split, ...)` of an NLU task (cloze, classify) on `data`."""
    need(name, SimpleNamespace(model=model, data_dir=data.data_dir), "model", "data_dir")
    return evaluate(
        model,
        data.dataset,
        data.data_dir,
        data.split or default_split,
        limit=data.limit,
        max_length=data.options.get("max_length"),
        **_placement(run),
    )


def evaluate_cloze_task(name, model, data: TaskData, run: RunOptions) -> dict:
    from .cloze import evaluate_cloze

    return _evaluate_nlu(evaluate_cloze, "dev32", name, model, data, run)


# ------------------------------------------------------------------------------------ classify (UniLMv2)
def finetune_classify_task(name, init, data: TaskData, out, train, run: RunOptions, model: ScratchModel):
    from .classification import DEFAULT_MAX_LENGTH, finetune_classifier

    nlu, recipe_train = data_nlu_options(name, data)
    need(name, nlu, "dataset", "data_dir")
    whole, overrides = _config_and_overrides(train, recipe_train)
    rows = TaskData(
        dataset=nlu.dataset, data_dir=nlu.data_dir, train_limit=data.train_limit, valid_limit=data.valid_limit
    )
    return finetune_classifier(
        init,
        rows,
        out,
        whole,
        train_overrides=overrides,
        max_length=nlu.max_length or DEFAULT_MAX_LENGTH,
        pooler=nlu.pooler,
        run=run,
        scratch=model,
    )


def evaluate_classify_task(name, model, data: TaskData, run: RunOptions) -> dict:
    from .classification import evaluate_classifier

    return _evaluate_nlu(evaluate_classifier, "dev", name, model, data, run)


# ------------------------------------------------------------------------------------ squad (UniLMv2)
def finetune_squad_task(name, init, data: TaskData, out, train, run: RunOptions, model: ScratchModel):
    from .extractive_qa import QaSettings, finetune_squad

    nlu, recipe_train = data_nlu_options(name, data)
    need(name, data, "train")
    settings = QaSettings(
        max_length=nlu.max_length or 384,
        doc_stride=nlu.doc_stride,
        max_query_length=nlu.max_query_length,
        max_answer_length=nlu.max_answer_length,
    )
    whole, overrides = _config_and_overrides(train, recipe_train)
    files = TaskData(train=data.train, valid=data.valid, train_limit=data.train_limit, valid_limit=data.valid_limit)
    return finetune_squad(init, files, out, whole, train_overrides=overrides, settings=settings, run=run, scratch=model)


def evaluate_squad_task(name, model, data: TaskData, run: RunOptions) -> dict:
    from .extractive_qa import evaluate_squad

    need(name, SimpleNamespace(model=model, ref=data.ref), "model", "ref")
    return evaluate_squad(
        model, data.ref, limit=data.limit, predictions_out=data.options.get("predictions_out"), **_placement(run)
    )


# ------------------------------------------------------------------------------------ infilling (GLM)
def evaluate_infilling_task(name, model, data: TaskData, run: RunOptions) -> dict:
    """BLEU of the model's fills of `data.ref`'s lines, `options["mask_ratio"]` of their words masked."""
    from .infilling import evaluate_infilling

    options = data.options
    return evaluate_infilling(
        model,
        data.ref,
        mask_ratio=options.get("mask_ratio", 0.1),
        seed=options.get("seed", 0),
        limit=data.limit,
        generation_config=options.get("generation_config"),
        output=options.get("output"),
        progress=options.get("progress", False),
        **_placement(run),
    )


register_task(_seq2seq("qa", "marco_rougeL", "none"))
register_task(_seq2seq("summarization", "rougeL", "lead-8 words"))
register_task(_seq2seq("qg", "bleu4", "first 12 words + ?"))
# PALM Table 5: Cornell fine-tuned on 10K pairs, scored by perplexity
register_task(_seq2seq("dialog", "perplexity", "unigram of the training targets", compare_train_limit=10_000))
register_task(_seq2seq("seq2seq", "rougeL", "none"))

register_task(
    Task(
        name="cloze",
        family="glm",
        readers="ctxlm.data.superglue:load_superglue",
        head="glm-cloze",
        finetune=finetune_cloze_task,
        evaluate=evaluate_cloze_task,
        predict="ctxlm.tasks.cloze:predict_cloze",
        score="ctxlm.data.superglue:task_metrics",
        primary_metric="accuracy",
        baseline="majority class of the training rows",
        comparison="ctxlm.compare:ClozeTask",
        comparison_options=("score_eop",),
        compare_objectives=("glm", "glm-noshuffle", "none"),
        nlu_recipe=True,
        reads_epochs=True,
    )
)
register_task(
    Task(
        name="classify",
        family="unilm",
        readers="ctxlm.data.glue:get_dataset",
        head="unilm-classifier",
        finetune=finetune_classify_task,
        evaluate=evaluate_classify_task,
        predict="ctxlm.tasks.classification:predict",
        score="ctxlm.tasks.classification:glue_metrics",
        primary_metric="accuracy",
        baseline="majority class (STS-B: the training mean)",
        comparison="ctxlm.compare:ClassifyTask",
        comparison_options=("pooler",),
        compare_objectives=("unilm", "unilm-ae", "unilm-par", "none"),
        nlu_recipe=True,
    )
)
register_task(
    Task(
        name="squad",
        family="unilm",
        readers="ctxlm.tasks.extractive_qa:read_squad",
        head="unilm-qa",
        finetune=finetune_squad_task,
        evaluate=evaluate_squad_task,
        predict="ctxlm.tasks.extractive_qa:predict_answers",
        score="ctxlm.tasks.extractive_qa:squad_scores",
        primary_metric="f1",
        baseline="none",
        nlu_recipe=True,
    )
)
register_task(
    Task(
        name="infilling",
        family="glm",
        readers="ctxlm.data.corpus:iter_lines",
        head=None,
        finetune=None,
        evaluate=evaluate_infilling_task,
        predict="ctxlm.tasks.infilling:infill_texts",
        score="ctxlm.tasks.infilling:infill_bleu",
        primary_metric="bleu",
        baseline="none",
    )
)
