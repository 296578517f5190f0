"""Compare pre-training objectives on one downstream task, under one budget, over several seeds.

    from ctxlm.compare import Budget, ComparisonSpec, compare
    from ctxlm.tasks import TaskData
    table = compare(["wiki.txt"], "tok/", "gigaword", TaskData(train="train.jsonl", valid="valid.jsonl"),
                    "runs/compare", ComparisonSpec(Budget(flops="palm:4000000"), objectives=("palm", "mass", "none")))

For each cell (objective, seed) it pre-trains the variant (`objectives/variants.py`) on the corpus,
fine-tunes it with the task's recipe, decodes and scores the evaluation file, and writes the
cell's `result.json` (atomically); then it writes `report.md` and `report.html` (`ctxlm.report`).
`compare_nlu` does the same for the registered tasks that name a `comparison` class (GLM's cloze
SuperGLUE, UniLMv2's classification, a user's task) through `Comparison`'s fine-tuning and scoring
hooks; see "Tasks with a comparison class" below.

- Matched size: PALM-family variants use the given config; GLM and UniLMv2 get the width and
  depth whose total parameter count is closest to it (`matched_model_config`).
- Each family's optimiser: the given config's train settings are PALM's; GLM and UniLMv2 pre-train
  with their family's optimiser defaults (`Family.train_defaults`: lr, warm-up, Adam β and ε, weight
  decay) and the given config's other settings. A cell with a run whose held-out loss stayed at the
  unigram level (`ctxlm.learning_check`) lists it in `result.json` under `not_learning`, and its
  summary line says "did not learn (loss at unigram level)".
- Matched budget: every pre-training stage of a variant gets an equal share. A token budget runs
  each stage until the tokens the loop has counted (non-padding `input_ids` and
  `decoder_input_ids`) reach its share. A FLOP budget does the same with the stage's training
  FLOPs: its FLOPs per counted token are measured once on a few real steps of its own data
  (`ctxlm.flop_count`, kept in `budget/`) and scaled by the tokens; F can be given as the FLOPs a
  variant trains on some tokens ("palm:4000000", counted before the first cell). The training
  loop has no clock, so a minutes budget is turned into steps: a few steps are timed on the real
  model and data (`seconds_per_step`, once per objective, kept in `budget/`). Tokens seen are
  counted exactly by replaying the data stream; every cell records the FLOPs, tokens and seconds
  of each stage and of its fine-tuning.
- Equal tuning: with an lr grid each variant's fine-tuning peak lr is the grid's value with the
  lowest held-out loss on the selection file (seed 0, the largest size), chosen once and kept
  (`Comparison.finetune_lr`).
- Resumable: a finished cell is never redone; inside a cell, finished stages are kept and an
  interrupted stage or fine-tuning continues from its newest checkpoint (the loop's resume). The
  inputs are checked first; `settings.json` is written as the run starts, and a rerun with other
  settings is refused (naming what changed) once the folder holds work (`check_settings`).
- Shared pre-training: with `pretrain_dir`, each (objective, seed)'s stages live in
  `pretrain_dir/<objective>-seed<k>/` (and the budget's timings in `pretrain_dir/budget/`), so
  comparisons of several tasks on one corpus and budget pre-train each cell once; the folder
  records its corpus, budget, model config and vocabulary and, once it holds work, refuses other ones.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from .checkpoint import CHECKPOINTS_DIR, build_model, latest_checkpoint, load_model_dir, read_head, read_model_config
from .config import CLOZE_TRAIN, FinetuneConfig, PretrainConfig, TrainConfig
from .config_loading import default_data_config, load_pretrain_config, model_config_from_dict
from .data.glue import get_dataset
from .data.store import TokenStore
from .data.superglue import ClozeExample, load_superglue, read_superglue, superglue_file, task_metrics, task_name
from .data.tasks import Pair
from .device import for_inference, resolve_device
from .errors import CtxlmError
from .tasks import ScratchModel, TaskData, get_task, registered, resolve, seq2seq_recipe
from .tasks.seq2seq import finetune, read_pairs
from .layouts import pair_example, pair_limits
from .metrics import compute_metrics, lead_words, ptb_tokens
from .families import REFERENCE_FAMILY, get_objective, train_defaults
from .flop_count import flops_per_token
from .learning_check import held_out_losses, margin, not_learning_in, still_not_learning, unigram_entropy
from .objectives.variants import PRETRAIN_VARIANTS, Stage, Variant
from .predict import Seq2SeqPredictor
from .pretraining import model_config_for_tokenizer, prepare_data, pretrain
from .run_options import CorpusSpec, RunOptions
from .report import (
    Statistic,
    corpus_bleu4,
    corpus_pearson,
    corpus_perplexity,
    counted_not_learning,
    earlier_stages_not_learning,
    mean_score,
)
from .tokenization import TextTokenizer
from .training import BatchStream, autocast, build_optimizer, collate

DEFAULT_OBJECTIVES = ("palm", "palm-nocopy", "palm-noae", "mass", "bart", "glm", "unilm", "none")
TOKEN_KEYS = ("input_ids", "decoder_input_ids")  # what the training loop counts as tokens


# ------------------------------------------------------------------------------------ matched sizes
def parameter_count(model_config) -> int:
    """Parameters of the model a config builds (shared weights once), built on the meta device."""
    with torch.device("meta"):
        model = build_model(model_config)
    return sum(p.numel() for p in model.parameters())


def _widths(width: int, step: int) -> list[int]:
    """width + k·step for k = 0, −1, 1, −2, 2, …: nearest first, within [width/2, 2·width]."""
    offsets = sorted(range(-(width // 2) // step, (width // step) + 1), key=lambda k: (abs(k), k))
    return [width + k * step for k in offsets if width + k * step >= max(step, width // 2)]


def matched_model_config(family: str, reference, tolerance: float = 0.02):
    """A `family` (glm or unilm) config with about as many parameters as the `reference` (PALM)
    config: its heads, FFN ratio, vocabulary, positions and dropout; the depth that best matches at
    PALM's width, else at the nearest width (a multiple of the head count) that comes within
    `tolerance` (relative), else the closest found."""
    target = parameter_count(reference)
    heads = reference.encoder_attention_heads
    ffn_ratio = reference.encoder_ffn_dim / reference.d_model
    shared = dict(
        family=family,
        vocab_size=reference.vocab_size,
        num_heads=heads,
        max_position_embeddings=reference.max_position_embeddings,
        dropout=reference.dropout,
        attention_dropout=reference.attention_dropout,
    )

    def config(width: int, layers: int):
        return model_config_from_dict(
            {**shared, "d_model": width, "ffn_dim": round(ffn_ratio * width), "num_layers": layers}
        )

    best, best_error = None, float("inf")
    for width in _widths(reference.d_model, heads):
        one, two = parameter_count(config(width, 1)), parameter_count(config(width, 2))
        layers = max(1, round((target - one) / (two - one)) + 1)  # the count is linear in depth
        candidate = config(width, layers)
        error = abs(parameter_count(candidate) - target) / target
        if error < best_error:
            best, best_error = candidate, error
        if best_error <= tolerance:
            break
    return best


def family_configs(families: Sequence[str], palm: PretrainConfig, tokenizer: TextTokenizer) -> dict:
    """The pre-training config of each model family: PALM's as given (sized for the tokenizer);
    GLM and UniLMv2 size-matched to it, their examples as long as PALM's fragments, their optimiser
    settings their family's defaults (`ctxlm.families.train_defaults`), the others PALM's."""
    palm = dataclasses.replace(palm, model=model_config_for_tokenizer(palm.model, tokenizer))
    configs = {}
    for family in families:
        if family == palm.model.family:
            configs[family] = palm
            continue
        data = default_data_config(family)(
            max_length=palm.data.fragment_length,
            valid_fraction=palm.data.valid_fraction,
            max_valid_documents=palm.data.max_valid_documents,
        )
        model = model_config_for_tokenizer(matched_model_config(family, palm.model), tokenizer)
        # the given train settings are PALM's; the others pre-train with their family's optimiser defaults
        train = dataclasses.replace(palm.train, **train_defaults(family, model))
        configs[family] = PretrainConfig(model=model, train=train, data=data)
    return configs


# ------------------------------------------------------------------------------------ budgets
@dataclass(frozen=True)
class Budget:
    """The pre-training budget of every objective: wall-clock minutes, tokens or training FLOPs (one
    of them). `flops` is a number, or "VARIANT:TOKENS", the FLOPs that variant's stages train on that
    many tokens (e.g. "palm:4000000"; counted once, before the first cell: `Comparison.flop_budget`)."""

    minutes: float | None = None  # pre-training wall time per objective
    tokens: int | None = None  # pre-training tokens per objective
    # pre-training FLOPs per objective (matmuls and attention, forward and backward, as benchmarks count them): a
    # number, or VARIANT:TOKENS, the FLOPs that variant trains on that many tokens (e.g. palm:4000000)
    flops: float | str | None = None

    def __post_init__(self):
        given = [
            (unit, value)
            for unit, value in (("minutes", self.minutes), ("tokens", self.tokens), ("flops", self.flops))
            if value is not None
        ]
        if len(given) != 1:
            raise CtxlmError("give one pre-training budget: minutes, tokens or flops")
        unit, value = given[0]
        if isinstance(value, str):
            self.reference  # noqa: B018  (names a bad VARIANT:TOKENS)
        elif not value > 0:  # NaN too
            raise CtxlmError(f"the pre-training budget must be > 0 (--budget-{unit}), got {value}")

    @property
    def reference(self) -> tuple[str, int] | None:
        """(variant, tokens) of a FLOP budget given as "VARIANT:TOKENS", else None."""
        if not isinstance(self.flops, str):
            return None
        name, _, tokens = self.flops.partition(":")
        variant = PRETRAIN_VARIANTS.get(name.strip())
        if variant is None or not variant.stages or not tokens.strip().isdigit() or int(tokens) < 1:
            pretrained = ", ".join(n for n, v in PRETRAIN_VARIANTS.items() if v.stages)
            raise CtxlmError(
                f"--budget-flops: a number or VARIANT:TOKENS (the FLOPs a variant trains on that "
                f"many tokens, e.g. palm:4000000; variants: {pretrained}), got '{self.flops}'"
            )
        return name.strip(), int(tokens)


FLOP_STEPS = 4  # training steps measured for a stage's FLOPs per token


def measured_flops_per_token(model_config, examples, train, pad_id: int, steps: int = FLOP_STEPS) -> float:
    """Training FLOPs (forward and backward, `ctxlm.flop_count`) per token the training loop counts,
    over the first `steps` optimizer steps of the run's own data stream, on a new model of
    `model_config` (in float32 on the CPU: the count does not depend on the precision or device)."""
    torch.manual_seed(train.seed)
    model = build_model(model_config)
    stream = BatchStream(examples, train.batch_size, train.seed)
    batches = (stream.batch(micro, pad_id)[1] for micro in range(steps * train.grad_accum))
    return flops_per_token(model, batches, TOKEN_KEYS, pad_id)


def step_tokens(examples, train, pad_id: int):
    """Tokens of each optimizer step of a run, as the training loop counts them (a pure function of
    the seed, so replaying the stream gives the run's exact numbers)."""
    stream = BatchStream(examples, train.batch_size, train.seed)
    micro = 0
    while True:
        total = 0
        for _ in range(train.grad_accum):
            _, batch = stream.batch(micro, pad_id)
            total += sum(int(batch[k].ne(pad_id).sum()) for k in TOKEN_KEYS if k in batch)
            micro += 1
        yield total


def steps_for_tokens(examples, train, pad_id: int, budget: int) -> tuple[int, int]:
    """(steps, tokens): the fewest steps whose tokens reach `budget`."""
    stream, steps, tokens = step_tokens(examples, train, pad_id), 0, 0
    while tokens < budget:
        steps, tokens = steps + 1, tokens + next(stream)
    return steps, tokens


def tokens_in_steps(examples, train, pad_id: int, steps: int) -> int:
    stream = step_tokens(examples, train, pad_id)
    return sum(next(stream) for _ in range(steps))


def seconds_per_step(model_config, examples, train, pad_id: int, steps: int = 3) -> float:
    """Wall time of one optimizer step (forward, backward, AdamW) of a new model on the training
    loop's device, timed over `steps` steps after one warm-up step."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(train.seed)
    model = build_model(model_config).to(device).train()
    optimizer = build_optimizer(model, train)
    stream = BatchStream(examples, train.batch_size, train.seed)
    micro, started = 0, 0.0
    for step in range(steps + 1):
        if step == 1:
            if device.type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
        for _ in range(train.grad_accum):
            _, batch = stream.batch(micro, pad_id)
            micro += 1
            with autocast(device, train.bf16):
                loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
            (loss / train.grad_accum).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


# ------------------------------------------------------------------------------------ task scoring
def rouge_l_per_example(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[list[float]]:
    """ROUGE-L F1 × 100 of each prediction (rouge-score, stemmed, best reference): `metrics.rouge`'s
    per-example terms."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [[100 * scorer.score_multi(list(refs), p)["rougeL"].fmeasure] for p, refs in zip(predictions, references)]


def bleu_statistics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> list[list[float]]:
    """Per-example BLEU sufficient statistics as pycocoevalcap's Bleu(4) collects them (its
    `cook_refs` / `cook_test`, "closest" reference length) on the texts' `ptb_tokens`, as `coco_qg`
    scores them: hypothesis length, reference length, then n-gram guesses and clipped matches for
    n = 1..4 (`corpus_bleu4` turns sums into BLEU-4)."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    rows = []
    for prediction, refs in zip(predictions, references):
        cooked = cook_test(ptb_tokens(prediction), cook_refs([ptb_tokens(r) for r in refs]))
        reflen = min((abs(n - cooked["testlen"]), n) for n in cooked["reflen"])[1]
        rows.append([cooked["testlen"], reflen, *cooked["guess"], *cooked["correct"]])
    return rows


@dataclass(frozen=True)
class TaskScoring:
    """How a task family is scored: the table's metrics, the one the bootstrap tests (`primary`,
    from per-example statistics and `statistic`), and the simple baseline's rule."""

    metrics: tuple[str, ...]  # `compute_metrics` names; () = perplexity only, no decoding
    primary: str
    statistic: Statistic
    higher_is_better: bool
    example_stats: Callable[[Sequence[str], Sequence[Sequence[str]]], list[list[float]]] | None = None
    baseline: Callable[[str], str] | None = None
    baseline_name: str = ""

    @property
    def decodes(self) -> bool:
        return bool(self.metrics)


TASK_SCORING: dict[str, TaskScoring] = {
    "summarization": TaskScoring(
        ("rouge1", "rouge2", "rougeL"), "rougeL", mean_score, True, rouge_l_per_example, lead_words(8), "lead-8 words"
    ),
    "qg": TaskScoring(
        ("bleu4", "meteor", "coco_rougeL"),
        "bleu4",
        corpus_bleu4,
        True,
        bleu_statistics,
        lead_words(12, " ?"),
        "first 12 words + ?",
    ),
    "dialog": TaskScoring((), "perplexity", corpus_perplexity, False),
}


def task_scoring(task: str) -> TaskScoring:
    if task not in TASK_SCORING:
        raise CtxlmError(f"compare scores {', '.join(TASK_SCORING)} tasks; the recipe's task is '{task}'")
    return TASK_SCORING[task]


def table_metrics(scoring: TaskScoring) -> list[str]:
    """The metrics scored now: METEOR only where Java runs it."""
    return [m for m in scoring.metrics if m != "meteor" or shutil.which("java")]


def score_predictions(scoring: TaskScoring, predictions: list[str], pairs: Sequence[Pair]) -> tuple[dict, list]:
    references = [list(p.references) for p in pairs]
    metrics = compute_metrics(predictions, references, table_metrics(scoring))
    return metrics, scoring.example_stats(predictions, references)


def target_labels(model_config, tokenizer: TextTokenizer, pairs: Sequence[Pair], recipe: FinetuneConfig) -> list:
    """The label ids each pair's target is scored on (`pair_example`'s labels, ignored ones left out)."""
    labels = []
    for source, target in zip(
        tokenizer.encode_batch([p.source for p in pairs]), tokenizer.encode_batch([p.target for p in pairs])
    ):
        limits = pair_limits(model_config, recipe.max_source_tokens, recipe.max_target_tokens, len(target))
        ids = np.asarray(pair_example(model_config, source, target, *limits)["labels"])
        labels.append(ids[ids >= 0])
    return labels


def unigram_nll(
    train_labels: Sequence[np.ndarray], eval_labels: Sequence[np.ndarray], vocab_size: int
) -> list[list[float]]:
    """(NLL sum, tokens) of each evaluation target under the unigram distribution of the training
    targets, add-one smoothed over the vocabulary: what a model that reads neither the source nor
    the target's own history scores (dialog's trivial baseline; `corpus_perplexity` of these)."""
    counts = np.bincount(np.concatenate(list(train_labels)), minlength=vocab_size) + 1.0
    log_p = np.log(counts / counts.sum())
    return [[float(-log_p[ids].sum()), float(len(ids))] for ids in eval_labels]


@torch.no_grad()
def example_nll(predictor: Seq2SeqPredictor, pairs: Sequence[Pair], recipe: FinetuneConfig) -> list[list[float]]:
    """(NLL sum, target tokens) of each reference given its source, as `Seq2SeqPredictor.perplexity`
    scores them (its value is `corpus_perplexity` of these)."""
    model, tokenizer = predictor.model, predictor.tokenizer
    sources = tokenizer.encode_batch([p.source for p in pairs])
    targets = tokenizer.encode_batch([p.target for p in pairs])
    stats = []
    for source, target in zip(sources, targets):
        limits = pair_limits(model.config, recipe.max_source_tokens, recipe.max_target_tokens, len(target))
        example = pair_example(model.config, source, target, *limits)
        batch = {k: v.to(predictor.device) for k, v in collate([example], tokenizer.pad_id).items()}
        metrics = model(**batch).metrics
        stats.append([float(metrics["lm_nll_sum"]), float(metrics["lm_tokens"])])
    return stats


def score_model(
    scoring: TaskScoring,
    model_dir: Path,
    pairs: Sequence[Pair],
    recipe: FinetuneConfig,
    batch_size: int = 32,
    lexicon_texts: Sequence[str] = (),
) -> tuple[dict, list, list[str] | None]:
    """(metrics, per-example statistics, predictions or None) of a fine-tuned model; with
    `recipe.lexicon`, decoded with a new `WordLexicon` of `lexicon_texts` (the training pairs)."""
    from .lexicon import WordLexicon

    device = "cuda" if torch.cuda.is_available() else "cpu"
    predictor = Seq2SeqPredictor.load(model_dir, device=device, max_source_tokens=recipe.max_source_tokens)
    if recipe.lexicon and scoring.decodes:  # new for each model: decoding adds each source's words to it
        predictor.lexicon = WordLexicon.from_texts(predictor.tokenizer, lexicon_texts)
    if not scoring.decodes:
        stats = example_nll(predictor, pairs, recipe)
        return {scoring.primary: float(corpus_perplexity(np.asarray(stats)))}, stats, None
    predictions = predictor.generate([p.source for p in pairs], recipe.decoding, batch_size=batch_size)
    return (*score_predictions(scoring, predictions, pairs), predictions)


# ------------------------------------------------------------------------------------ files
def write_json_atomic(path: Path, values: Any) -> None:
    """Write `path` whole or not at all; processes writing the same file at once (parallel cells
    recording their comparison's settings) each use their own temporary file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(values, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def stage_dir_name(index: int, stage: Stage) -> str:
    """As `pretraining.pretrain_variant` names its stage folders."""
    return f"{index}-{stage.objective}" + (f"-{stage.stage}" if get_objective(stage.objective).stages else "")


def metrics_rows(run_dir: Path) -> list[dict]:
    """The rows of a run's metrics.jsonl (a half-written last line, as a killed run leaves it, skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def heldout_loss(row: dict, key: str | None = None) -> float | None:
    """A validation row's held-out loss: `key`'s value, or the lowest of its objectives' losses (the
    one the learning check compares with the unigram entropy); None for a row of no validation."""
    if key is not None:
        return float(row[key]) if isinstance(row.get(key), (int, float)) else None
    losses = held_out_losses(row)
    return min(losses.values()) if losses else None


def unigram_level(run_dir: Path, examples) -> dict[str, float]:
    """A run's unigram entropy H of its training targets (the learning check's, from metrics.jsonl;
    counted from `examples` where no validation was checked) and its unigram level H − margin(H),
    the held-out loss a run must go below to count as learning (`ctxlm.learning_check`)."""
    known = [row["valid/unigram_entropy"] for row in metrics_rows(run_dir) if "valid/unigram_entropy" in row]
    entropy = float(known[-1]) if known else unigram_entropy(examples)[0]
    return {"entropy": entropy, "unigram_level": entropy - margin(entropy)}


def heldout_curve(run_dir: Path, key: str | None = None) -> list[tuple[int, float]]:
    """(step, held-out loss) of each validation in a run's metrics.jsonl (`heldout_loss`)."""
    return [(row["step"], loss) for row in metrics_rows(run_dir) if (loss := heldout_loss(row, key)) is not None]


def learning_curve(run_dir: Path, examples, train, pad_id: int) -> dict:
    """A pre-training stage's `curve`, [[step, tokens seen, held-out loss], ...] of its validations,
    and its `entropy` and `unigram_level` (`unigram_level`)."""
    rows = heldout_curve(run_dir)
    last = max((step for step, _ in rows), default=0)
    seen = [0, *itertools.accumulate(itertools.islice(step_tokens(examples, train, pad_id), last))]
    return {"curve": [[step, seen[step], loss] for step, loss in rows], **unigram_level(run_dir, examples)}


DONE = "compare-done.json"  # written into a stage or fine-tuning folder once it finished


# ------------------------------------------------------------------------------------ the run
@dataclass
class Comparison:
    """One comparison's fixed inputs (what every cell shares)."""

    corpus: list[str]
    tokenizer: TextTokenizer
    recipe: FinetuneConfig
    train_path: Path
    valid_path: Path
    eval_pairs: list[Pair]
    configs: dict  # family → PretrainConfig
    budget: Budget
    out_dir: Path
    scoring: TaskScoring
    train_limit: int | None
    cache_dir: Path
    pretrain_dir: Path | None = None  # shared pre-training (see the module's docstring)
    reading: dict = dataclasses.field(
        default_factory=lambda: dict(  # as `pretrain` takes them
            corpus_format="auto", text_field=None, fallback_encoding=None
        )
    )
    lr_grid: tuple[float, ...] = ()  # each variant's fine-tuning peak lr is chosen from these (`finetune_lr`)
    lr_dir: Path | None = None  # where the choices are kept (default out_dir/lr)
    lr_pairs: int | None = None  # the training pairs the choice fine-tunes on (default train_limit)

    def corpus_spec(self) -> CorpusSpec:
        reading = self.reading  # `pretrain`'s former names; the spec calls the format `format`
        return CorpusSpec(
            tuple(self.corpus), reading["corpus_format"], reading["text_field"], reading["fallback_encoding"]
        )

    def cell_dir(self, objective: str, seed: int) -> Path:
        return self.out_dir / "cells" / f"{objective}-seed{seed}"

    def pretrain_root(self, objective: str, seed: int) -> Path:
        if self.pretrain_dir is not None:
            return self.pretrain_dir / f"{objective}-seed{seed}"
        return self.cell_dir(objective, seed) / "pretrain"

    def stage_config(self, variant: Variant, stage: Stage, seed: int, max_steps: int) -> PretrainConfig:
        base = self.configs[variant.family]
        return dataclasses.replace(
            base,
            model=dataclasses.replace(base.model, **variant.model),
            data=dataclasses.replace(base.data, **stage.data),
            train=dataclasses.replace(base.train, seed=seed, max_steps=max_steps),
        )

    def examples(self, stage: Stage, config: PretrainConfig):
        store = TokenStore.build(
            self.corpus, self.tokenizer, cache_dir=self.cache_dir, progress=False, **self.corpus_spec().store_options()
        )
        return prepare_data(
            stage.objective, store, self.tokenizer, config.model, config.data, stage.stage, config.train.seed
        ).train

    def minutes_steps(self, objective: str) -> list[int]:
        """Steps of each stage under the minutes budget, from timed steps (kept in budget/)."""
        path = (self.pretrain_dir or self.out_dir) / "budget" / f"{objective}.json"
        if path.is_file():
            return [s["max_steps"] for s in read_json(path)["stages"]]
        variant = PRETRAIN_VARIANTS[objective]
        share = self.budget.minutes * 60 / len(variant.stages)
        stages = []
        for index, stage in enumerate(variant.stages, start=1):
            config = self.stage_config(variant, stage, 0, 1)
            seconds = seconds_per_step(config.model, self.examples(stage, config), config.train, self.tokenizer.pad_id)
            stages.append(
                {
                    "stage": stage_dir_name(index, stage),
                    "seconds_per_step": seconds,
                    "max_steps": max(1, int(share / seconds)),
                }
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"budget_seconds_per_stage": share, "stages": stages})
        return [s["max_steps"] for s in stages]

    def budget_dir(self) -> Path:
        return (self.pretrain_dir or self.out_dir) / "budget"

    def stage_flops_per_token(self, objective: str) -> list[float]:
        """Training FLOPs per counted token of each of the variant's stages, measured once on seed 0's
        data stream (`measured_flops_per_token`; kept in budget/<objective>-flops.json)."""
        path = self.budget_dir() / f"{objective}-flops.json"
        if path.is_file():
            return [s["flops_per_token"] for s in read_json(path)["stages"]]
        variant, stages = PRETRAIN_VARIANTS[objective], []
        for index, stage in enumerate(variant.stages, start=1):
            config = self.stage_config(variant, stage, 0, 1)
            per_token = measured_flops_per_token(
                config.model, self.examples(stage, config), config.train, self.tokenizer.pad_id
            )
            stages.append(
                {"stage": stage_dir_name(index, stage), "flops_per_token": per_token, "measured_steps": FLOP_STEPS}
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"stages": stages})
        return [s["flops_per_token"] for s in stages]

    def flop_budget(self) -> float | None:
        """F, the training FLOPs every variant pre-trains for under a FLOP budget (None under another):
        the number given, or the FLOPs the reference variant's stages count on its tokens (split
        equally between its stages, seed 0's data); recorded in budget/flops.json before any cell."""
        if self.budget.flops is None:
            return None
        path = self.budget_dir() / "flops.json"
        if path.is_file():
            return read_json(path)["flops"]
        record: dict[str, Any] = {"flops": float(self.budget.flops) if self.budget.reference is None else 0}
        if self.budget.reference is not None:
            name, tokens = self.budget.reference
            variant, stages = PRETRAIN_VARIANTS[name], []
            for index, (stage, per_token) in enumerate(zip(variant.stages, self.stage_flops_per_token(name)), 1):
                config = self.stage_config(variant, stage, 0, 1)
                steps, reached = steps_for_tokens(
                    self.examples(stage, config), config.train, self.tokenizer.pad_id, -(-tokens // len(variant.stages))
                )
                stages.append(
                    {
                        "stage": stage_dir_name(index, stage),
                        "steps": steps,
                        "tokens": reached,
                        "flops": round(per_token * reached),
                    }
                )
            record = {"reference": self.budget.flops, "flops": sum(s["flops"] for s in stages), "stages": stages}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
        return record["flops"]

    def stage_steps(self, objective: str, index: int, examples, train) -> tuple[int, int]:
        """(steps, tokens) of a variant's stage `index` (from 1) under the budget, each stage an equal
        share: the steps timed for the minutes, or the fewest whose tokens (FLOPs) reach the share."""
        stages, pad_id = len(PRETRAIN_VARIANTS[objective].stages), self.tokenizer.pad_id
        if self.budget.minutes is not None:
            steps = self.minutes_steps(objective)[index - 1]
            return steps, tokens_in_steps(examples, train, pad_id, steps)
        if self.budget.flops is not None:
            per_token = self.stage_flops_per_token(objective)[index - 1]
            return steps_for_tokens(examples, train, pad_id, math.ceil(self.flop_budget() / stages / per_token))
        return steps_for_tokens(examples, train, pad_id, -(-self.budget.tokens // stages))

    def pretrain_cell(self, objective: str, seed: int) -> tuple[Path | None, list[dict]]:
        """Pre-train one cell's stages (finished ones kept, an interrupted one resumed); each stage's
        record: steps, tokens, FLOPs, seconds, its held-out curve and its unigram level."""
        variant = PRETRAIN_VARIANTS[objective]
        init, stages = None, []
        for index, stage in enumerate(variant.stages, start=1):
            stage_dir = self.pretrain_root(objective, seed) / stage_dir_name(index, stage)
            done = stage_dir / DONE
            if not done.is_file():
                config = self.stage_config(variant, stage, seed, 1)
                examples = self.examples(stage, config)
                steps, tokens = self.stage_steps(objective, index, examples, config.train)
                config = self.stage_config(variant, stage, seed, steps)
                started = time.perf_counter()
                pretrain(
                    dataclasses.replace(self.corpus_spec(), cache_dir=self.cache_dir),
                    stage_dir,
                    config,
                    objective=stage.objective,
                    stage=stage.stage,
                    tokenizer=self.tokenizer,
                    init=init,
                    run=RunOptions(resume=latest_checkpoint(stage_dir) is not None),
                ).stop_if_interrupted()
                seconds = time.perf_counter() - started
                per_token = self.stage_flops_per_token(objective)[index - 1]
                write_json_atomic(
                    done,
                    {
                        "stage": stage_dir.name,
                        "steps": steps,
                        "tokens": tokens,
                        "flops": round(per_token * tokens),
                        "seconds": seconds,
                        **learning_curve(stage_dir, examples, config.train, self.tokenizer.pad_id),
                    },
                )
            stages.append({**read_json(done), "dir": str(stage_dir)})
            init = stage_dir
        return init, stages

    @functools.cached_property
    def train_pairs(self) -> list[Pair]:
        """The fine-tuning pairs (the first `train_limit`), read once: the lexicon's texts and
        dialog's unigram baseline both count them."""
        return read_pairs(self.recipe.task, self.train_path, self.recipe.reader, self.train_limit)

    def variant(self, objective: str) -> Variant:
        """The named variant a cell runs (`objectives/variants.py`)."""
        return PRETRAIN_VARIANTS[objective]

    def finetune_run(self, init: Path | None, model_config, ft_dir: Path, seed: int, lr: float | None = None):
        """Fine-tune one cell with the task's recipe (from `init`, else a new `model_config` model), at
        peak `lr` (default the recipe's)."""
        train = dataclasses.replace(self.recipe.train, seed=seed, lr=self.recipe.train.lr if lr is None else lr)
        return finetune(
            self.train_path,
            self.valid_path,
            ft_dir,
            dataclasses.replace(self.recipe, train=train),
            init=init,
            scratch=ScratchModel(model_config, self.tokenizer),
            train_limit=self.train_limit,
            run=RunOptions(resume=latest_checkpoint(ft_dir) is not None),
        )

    def finetune_lr(self, objective: str) -> float | None:
        """The fine-tuning peak lr of `objective`'s cells: without `lr_grid` the recipe's (None); with it
        the grid's value whose fine-tuning (seed 0's pre-training, seed 0, `lr_pairs` pairs) reaches
        the lowest held-out loss on the selection file (`valid_path`), chosen once and kept in
        `lr_dir/<objective>.json` for every seed and size."""
        if not self.lr_grid:
            return None
        lr_dir = self.lr_dir or self.out_dir / "lr"
        path = lr_dir / f"{objective}.json"
        if not path.is_file():
            selector = dataclasses.replace(self, train_limit=self.lr_pairs or self.train_limit)
            init, _ = self.pretrain_cell(objective, 0)
            losses = {}
            for lr in self.lr_grid:
                ft_dir = lr_dir / objective / f"lr-{lr:g}"
                selector.finetune_cell(objective, 0, init, ft_dir, lr)
                curve = [loss for _, loss in heldout_curve(ft_dir, self.recipe.train.select_metric)]
                losses[f"{lr:g}"] = min(curve) if curve else math.inf
            chosen = min(self.lr_grid, key=lambda lr: losses[f"{lr:g}"])  # ties: the first in the grid
            write_json_atomic(
                path,
                {
                    "grid": list(self.lr_grid),
                    "chosen": chosen,
                    "selection_loss": losses,
                    "train_pairs": len(selector.train_pairs),
                    "seed": 0,
                    "metric": self.recipe.train.select_metric,
                    "selection_file": str(self.valid_path),
                    "init": str(init) if init else None,
                },
            )
        return read_json(path)["chosen"]

    def score_cell(self, model_dir: Path) -> tuple[dict, list, list | None]:
        """(metrics, per-example statistics, predictions or None) of a fine-tuned cell."""
        texts = (
            [text for pair in self.train_pairs for text in (pair.source, pair.target)] if self.recipe.lexicon else ()
        )
        return score_model(self.scoring, model_dir, self.eval_pairs, self.recipe, lexicon_texts=texts)

    def prediction_notes(self, predictions: list | None) -> dict:
        """Extra `result.json` keys about a cell's predictions (none for seq2seq tasks)."""
        return {}

    def finetune_cell(self, objective: str, seed: int, init: Path | None, ft_dir: Path, lr: float | None) -> dict:
        """Fine-tune into `ft_dir` once (a finished one is read back): its steps, seconds, final
        metrics, peak lr and step cap."""
        done = ft_dir / DONE
        if not done.is_file():
            variant = self.variant(objective)
            base = self.configs[variant.family].model
            started = time.perf_counter()
            result = self.finetune_run(
                init, None if init else dataclasses.replace(base, **variant.model), ft_dir, seed, lr
            )
            result.stop_if_interrupted()
            run = read_json(ft_dir / "run.json")["train"]
            write_json_atomic(
                done,
                {
                    "steps": result.step,
                    "seconds": time.perf_counter() - started,
                    "final_metrics": result.final_metrics,
                    "lr": run["lr"],
                    "step_cap": run["max_steps"],
                },
            )
        return read_json(done)

    def link_selection_run(self, objective: str, seed: int, init: Path | None, ft_dir: Path) -> None:
        """Seed 0 from the pre-training and at the size the lr was chosen with is the chosen lr's
        selection run (the same run, not redone): `ft_dir` becomes a link to it."""
        if not self.lr_grid or seed != 0 or ft_dir.exists() or ft_dir.is_symlink():
            return
        lr_dir = self.lr_dir or self.out_dir / "lr"
        record = read_json(lr_dir / f"{objective}.json")
        if record["train_pairs"] == self.train_size() and record.get("init") == (str(init) if init else None):
            chosen = (lr_dir / objective / f"lr-{record['chosen']:g}").resolve()
            ft_dir.symlink_to(os.path.relpath(chosen, ft_dir.parent.resolve()), target_is_directory=True)

    def finetune_record(self, ft_dir: Path, seed: int, finetuned: dict) -> dict:
        """A cell's fine-tuning record: its peak lr, step cap, whether early stopping ended it, its
        held-out curve on the selection data (the loss that selects the checkpoint), and its counts."""
        select_metric = read_json(ft_dir / "run.json")["train"].get("select_metric")
        return {
            "finetune_lr": finetuned.get("lr"),
            "finetune_step_cap": finetuned.get("step_cap"),
            "finetune_stopped_early": finetuned["steps"] < finetuned.get("step_cap", finetuned["steps"]),
            "finetune_curve": [list(point) for point in heldout_curve(ft_dir, select_metric)],
            **self.finetune_counts(ft_dir, seed, finetuned["steps"]),
        }

    def finetune_counts(self, ft_dir: Path, seed: int, steps: int) -> dict:
        """A seq2seq fine-tuning's FLOPs and tokens (`ctxlm.flop_count` per token of its training
        pairs on a new model of its config, times the tokens its steps counted) and its unigram level."""
        from .tasks.seq2seq import pair_examples

        model_config, train = read_model_config(ft_dir), dataclasses.replace(self.recipe.train, seed=seed)
        examples = pair_examples(model_config, self.tokenizer, self.train_pairs, self.recipe)
        tokens = tokens_in_steps(examples, train, self.tokenizer.pad_id, steps)
        torch.manual_seed(seed)
        model = build_model(model_config, read_head(ft_dir))
        batches = (
            BatchStream(examples, train.batch_size, seed).batch(micro, self.tokenizer.pad_id)[1]
            for micro in range(FLOP_STEPS)
        )
        per_token = flops_per_token(model, batches, TOKEN_KEYS, self.tokenizer.pad_id)
        level = unigram_level(ft_dir, examples)
        return {
            "finetune_flops": round(per_token * tokens),
            "finetune_tokens": tokens,
            "finetune_unigram_level": level["unigram_level"],
            "finetune_entropy": level["entropy"],
        }

    def train_size(self) -> int:
        """The fine-tuning pairs a cell trains on."""
        return len(self.train_pairs)

    def run_cell(self, objective: str, seed: int) -> dict:
        """A cell's result: pre-training, fine-tuning, scoring (a finished cell is read back)."""
        cell_dir = self.cell_dir(objective, seed)
        result_path = cell_dir / "result.json"
        if result_path.is_file():
            return read_json(result_path)
        cell_dir.mkdir(parents=True, exist_ok=True)
        variant = self.variant(objective)
        init, stages = self.pretrain_cell(objective, seed)
        lr = self.finetune_lr(objective)
        self.link_selection_run(objective, seed, init, cell_dir / "finetune")
        finetuned = self.finetune_cell(objective, seed, init, cell_dir / "finetune", lr)
        started = time.perf_counter()
        metrics, stats, predictions = self.score_cell(cell_dir / "finetune")
        if predictions is not None:
            write_json_atomic(cell_dir / "predictions.json", predictions)
        model = dataclasses.replace(self.configs[variant.family].model, **variant.model)
        result = {
            "objective": objective,
            "seed": seed,
            "family": variant.family,
            "parameters": parameter_count(model),
            "stages": stages,
            "tokens_seen": sum(s["tokens"] for s in stages),
            "pretrain_flops": sum(s["flops"] for s in stages),
            "pretrain_seconds": sum(s["seconds"] for s in stages),
            "budget_view": self.budget_view(),
            "train_pairs": self.train_size(),
            "finetune_steps": finetuned["steps"],
            "finetune_seconds": finetuned["seconds"],
            "finetune_best_step": finetuned["final_metrics"].get("best_step"),
            "score_seconds": time.perf_counter() - started,
            "metrics": metrics,
            "example_stats": stats,
            "not_learning": runs_not_learning([Path(s["dir"]) for s in stages] + [cell_dir / "finetune"]),
            **self.finetune_record(cell_dir / "finetune", seed, finetuned),
            **self.prediction_notes(predictions),
        }
        write_json_atomic(result_path, result)
        return result

    def budget_view(self) -> str:
        """Which pre-training budget the cells match: "flops", "tokens" or "minutes"."""
        return next(unit for unit in ("flops", "tokens", "minutes") if getattr(self.budget, unit) is not None)

    def baseline(self) -> dict | None:
        """The task's simple baseline scored on the evaluation pairs: its rule's predictions, or for
        a task scored by perplexity the training targets' unigram distribution (`unigram_nll`)."""
        if not self.scoring.decodes:
            model = next(iter(self.configs.values())).model
            stats = unigram_nll(
                target_labels(model, self.tokenizer, self.train_pairs, self.recipe),
                target_labels(model, self.tokenizer, self.eval_pairs, self.recipe),
                self.tokenizer.vocab_size,
            )
            return {
                "name": "unigram of the training targets",
                "example_stats": stats,
                "predictions": None,
                "metrics": {self.scoring.primary: float(corpus_perplexity(np.asarray(stats)))},
            }
        if self.scoring.baseline is None:
            return None
        predictions = [self.scoring.baseline(p.source) for p in self.eval_pairs]
        metrics, stats = score_predictions(self.scoring, predictions, self.eval_pairs)
        return {
            "name": self.scoring.baseline_name,
            "metrics": metrics,
            "example_stats": stats,
            "predictions": predictions,
        }


SHOWN_CHANGES = 4  # the `key: old -> new` a refused rerun names


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def setting_changes(before: dict, now: dict, prefix: str = "") -> list[str]:
    """`key: old -> new` for each setting recorded in `before` that `now` changes (nested keys
    dotted); keys only one side has are left out (settings a newer version added)."""
    changes = []
    for key, old in before.items():
        if key not in now:
            continue
        new, name = now[key], f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            changes += setting_changes(old, new, f"{name}.")
        elif old != new:
            changes.append(f"{name}: {_short(old)} -> {_short(new)}")
    return changes


def holds_work(folder: Path) -> bool:
    """Whether a comparison (or shared pre-training) folder holds work a rerun keeps: a timed
    budget, a finished stage, fine-tuning or cell, or a checkpoint."""
    return folder.is_dir() and any(
        path.name in (DONE, "result.json") or path.parent.name in ("budget", CHECKPOINTS_DIR)
        for path in folder.rglob("*")
    )


NOT_LEARNING = "did not learn (loss at unigram level)"


def runs_not_learning(run_dirs: Sequence[Path]) -> dict[str, dict]:
    """Run folder name → its `not_learning` record (`ctxlm.learning_check`), for the runs whose record
    stands (not for a run that left the unigram level after the warning)."""
    records = {path.name: not_learning_in(path) for path in run_dirs}
    return {name: record for name, record in records.items() if still_not_learning(record)}


def not_learning_note(cell: dict) -> str:
    """A cell summary's note: `; did not learn (loss at unigram level): <runs>` for the runs its
    model comes out of, and the earlier stages at that level that a later one left; or nothing."""
    counted, earlier = counted_not_learning(cell), earlier_stages_not_learning(cell)
    return (f"; {NOT_LEARNING}: {', '.join(counted)}" if counted else "") + (
        f"; at the unigram level, then left by a later stage: {', '.join(earlier)}" if earlier else ""
    )


def check_settings(folder: Path, settings: dict) -> None:
    """Refuse to resume the work in `folder` with other settings than its `settings.json` records,
    naming the changed keys (a folder without work, as a failed start leaves it, takes new ones)."""
    path = folder / "settings.json"
    if not path.is_file() or not holds_work(folder):
        return
    changes = setting_changes(read_json(path), json.loads(json.dumps(settings, default=str)))
    if changes:
        keys = ", ".join(dict.fromkeys(f"'{change.split(':')[0].split('.')[0]}'" for change in changes))
        more = f"; {len(changes) - SHOWN_CHANGES} more" if len(changes) > SHOWN_CHANGES else ""
        raise CtxlmError(
            f"{folder}: the comparison there was started with another {keys} "
            f"({'; '.join(changes[:SHOWN_CHANGES])}{more}); rerun with those or use a new --out"
        )


def record_settings(folder: Path, settings: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / "settings.json", settings)


@dataclass(frozen=True)
class ComparisonSpec:
    """What a comparison runs and reports: the pre-training budget, the variants and seeds, how the
    fine-tuning is tuned, where pre-training is shared, and the report's options."""

    budget: Budget
    # comma-separated pre-training variants (objectives/variants.py; default:
    # palm,palm-nocopy,palm-noae,mass,bart,glm,unilm,none; cloze: glm,glm-noshuffle,none; classify:
    # unilm,unilm-ae,unilm-par,none; none is a new model of the task's family)
    objectives: tuple[str, ...] | None = None
    seeds: int = 3  # runs per objective (seeds 0..N-1), each pre-training and fine-tuning
    finetune_steps: int | None = None  # override the recipe's max_steps
    # seq2seq tasks: choose each variant's fine-tuning peak lr from these (e.g. 3e-4,1e-3,3e-3) by the lowest
    # held-out loss on --valid, once (seed 0, --lr-pairs pairs), then keep it for every seed and size (`finetune_lr`)
    lr_grid: tuple[float, ...] = ()
    lr_dir: str | Path | None = None  # where the chosen lrs are kept and reused (default OUT/lr)
    lr_pairs: int | None = None  # training pairs the lr is chosen on (default: the largest --train-limit)
    # pre-train each cell here, shared by comparisons of other tasks on the same corpus, budget and config
    # (default: inside each cell; see `ctxlm.compare`)
    pretrain_dir: str | Path | None = None
    cache_dir: str | Path | None = None  # token store cache (default OUT/store)
    resamples: int = 10000  # paired bootstrap resamples
    plots: bool = True  # loss plots (matplotlib)
    command: str | None = None  # the command line the report records
    # pre-train every cell (under the budget, into --pretrain-dir) and stop: no fine-tuning, scoring or report
    # (a run in phases)
    pretrain_only: bool = False


def shared_fields(
    corpus: CorpusSpec | Sequence[str | Path],
    tokenizer: TextTokenizer | str | Path,
    out_dir: Path,
    spec: ComparisonSpec,
) -> dict:
    """The `Comparison` fields every task shares: corpus, tokenizer, budget, folders, lr selection."""
    corpus = CorpusSpec.of(corpus)
    return dict(
        corpus=[str(c) for c in corpus.paths],
        tokenizer=tokenizer if isinstance(tokenizer, TextTokenizer) else TextTokenizer.load(tokenizer),
        budget=spec.budget,
        out_dir=out_dir,
        cache_dir=Path(spec.cache_dir or out_dir / "store"),
        pretrain_dir=Path(spec.pretrain_dir) if spec.pretrain_dir else None,
        reading=corpus.reading(),
        lr_grid=tuple(spec.lr_grid),
        lr_dir=Path(spec.lr_dir) if spec.lr_dir else None,
        lr_pairs=spec.lr_pairs,
    )


def run_comparison(run: Comparison, spec: ComparisonSpec, objectives: Sequence[str], settings: dict) -> list[dict]:
    """Record `settings` (refusing other ones in a folder that holds work), count a FLOP budget's F,
    run every cell and write the report; returns its table."""
    from .report import write_comparison_report

    settings = {
        "corpus": run.corpus,
        "budget": dataclasses.asdict(run.budget),
        "vocab_size": run.tokenizer.vocab_size,
        "reading": run.reading,
        **settings,
    }
    if run.lr_grid:
        settings["lr_selection"] = {"grid": list(run.lr_grid), "pairs": run.lr_pairs}
    start_folders(run.out_dir, spec.pretrain_dir, settings)
    run.flop_budget()  # F, counted and recorded before the first cell
    if spec.pretrain_only:
        for objective, seed in itertools.product(objectives, range(spec.seeds)):
            _, stages = run.pretrain_cell(objective, seed)
            print(
                f"{objective} seed {seed}: pre-trained, {sum(s['tokens'] for s in stages):,} tokens, "
                f"{sum(s['flops'] for s in stages):.3g} FLOPs",
                flush=True,
            )
        return []
    cells = run_cells(run, objectives, spec.seeds)
    baseline = run.baseline()
    write_json_atomic(run.out_dir / "baseline.json", baseline)  # as scored: a summary reads it, never recomputes
    return write_comparison_report(
        run.out_dir,
        cells,
        baseline,
        run.scoring,
        settings,
        resamples=spec.resamples,
        plots=spec.plots,
        command=spec.command,
    )


def compare(
    corpus: CorpusSpec | Sequence[str | Path],
    tokenizer: TextTokenizer | str | Path,
    recipe: FinetuneConfig | str,
    data: TaskData,
    out_dir: str | Path,
    spec: ComparisonSpec,
    *,
    config: PretrainConfig | str = "palm-tiny",
) -> list[dict]:
    """Pre-train, fine-tune and score every (objective, seed) cell, then write the report; returns
    the report's table (one row per objective, then the baseline's). `recipe` is a recipe name,
    YAML file or `FinetuneConfig` (its task picks the scoring); `data` the files: `train`, `valid`
    (selects checkpoints and lrs), `ref` (the scored file, default `valid`), `train_limit` (for
    dialog PALM's 10K pairs by default) and `limit` (the scored pairs); `config` the PALM-family
    pre-training config (named or YAML); `corpus` files or a `CorpusSpec` (read as `pretrain` does).

    Args:
        recipe: the fine-tuning recipe: gigaword, squad_qg, cornell, or YAML; or an NLU task: cloze (GLM
            variants, FewGLUE), classify (UniLMv2 variants), or a YAML of their options with task: and train: (as
            finetune's --recipe; `compare_task` sends those to `compare_nlu`)
        out_dir: the comparison's folder (rerun to resume)
        config: the PALM model and pre-training config (a named config or YAML); GLM and UniLMv2 are sized to
            its parameter count
    """
    objectives = list(spec.objectives or DEFAULT_OBJECTIVES)
    check_run_options(objectives, spec.seeds, spec.plots)
    out_dir = Path(out_dir)
    recipe = seq2seq_recipe(recipe)
    if spec.finetune_steps is not None:
        recipe = dataclasses.replace(
            recipe, train=dataclasses.replace(recipe.train, max_steps=spec.finetune_steps), epochs=None
        )  # the steps asked for win over the recipe's epochs
    scoring = task_scoring(recipe.task)
    train_limit = data.train_limit if data.train_limit is not None else get_task(recipe.task).compare_train_limit
    config = palm_config(config)
    shared = {**shared_fields(corpus, tokenizer, out_dir, spec), "lr_pairs": spec.lr_pairs or train_limit}
    eval_path = Path(data.ref or data.valid)
    families = sorted({PRETRAIN_VARIANTS[o].family for o in objectives})
    run = Comparison(
        recipe=recipe,
        train_path=Path(data.train),
        valid_path=Path(data.valid),
        eval_pairs=read_pairs(recipe.task, eval_path, recipe.reader, data.limit),
        configs=family_configs(families, config, shared["tokenizer"]),
        scoring=scoring,
        train_limit=train_limit,
        **shared,
    )
    for path in (data.train, data.valid):  # the task's fields, before any pre-training
        read_pairs(recipe.task, path, recipe.reader, 1)
    return run_comparison(
        run,
        spec,
        objectives,
        {
            "recipe": dataclasses.asdict(recipe),
            "config": dataclasses.asdict(config),
            "train": str(data.train),
            "valid": str(data.valid),
            "eval": str(eval_path),
            "eval_limit": data.limit,
            "train_limit": train_limit,
        },
    )


def check_run_options(objectives: Sequence[str], seeds: int, plots: bool) -> None:
    """Refuse unknown objectives, fewer than one seed, and plots without matplotlib, before any run."""
    from .report_plots import pyplot

    unknown = [o for o in objectives if o not in PRETRAIN_VARIANTS]
    if unknown or not objectives:
        raise CtxlmError(
            f"unknown objective '{unknown[0] if unknown else ''}' (choose from {', '.join(PRETRAIN_VARIANTS)})"
        )
    if seeds < 1:
        raise CtxlmError("--seeds must be at least 1")
    if plots:
        pyplot()  # fail now, not after the runs


def palm_config(config: PretrainConfig | str) -> PretrainConfig:
    """compare's --config (named, YAML or a `PretrainConfig`): the PALM one the others are sized to."""
    config = config if isinstance(config, PretrainConfig) else load_pretrain_config(config)
    if config.model.family != REFERENCE_FAMILY:
        raise CtxlmError(
            f"compare's --config is the PALM encoder-decoder's (the size GLM and UniLMv2 are matched "
            f"to), got a {config.model.family} config"
        )
    return config


def start_folders(out_dir: Path, pretrain_dir: str | Path | None, settings: dict) -> None:
    """Check `settings` against the comparison's folder (and the shared pre-training one), then
    record them there (`check_settings`, `record_settings`)."""
    folders = {Path(out_dir): settings}
    if pretrain_dir:
        folders[Path(pretrain_dir)] = {k: settings[k] for k in ("corpus", "reading", "budget", "config", "vocab_size")}
    for folder, values in folders.items():
        check_settings(folder, values)
    for folder, values in folders.items():  # written once the inputs are checked and the run starts
        record_settings(folder, values)


def run_cells(run: Comparison, objectives: Sequence[str], seeds: int) -> list[dict]:
    """Every (objective, seed) cell of `run`, each summarised in one printed line."""
    cells = []
    for objective in objectives:
        for seed in range(seeds):
            cell = run.run_cell(objective, seed)
            print(
                f"{objective} seed {seed}: {cell['parameters']:,} parameters, {cell['tokens_seen']:,} tokens, "
                + ", ".join(f"{k} {v:.2f}" for k, v in cell["metrics"].items())
                + not_learning_note(cell),
                flush=True,
            )
            cells.append(cell)
    return cells


def train_size_name(limit: int | None) -> str:
    return "all" if limit is None else str(limit)


def compare_train_sizes(
    corpus: CorpusSpec | Sequence[str | Path],
    tokenizer: TextTokenizer | str | Path,
    recipe: FinetuneConfig | str,
    data: TaskData,
    out_dir: str | Path,
    spec: ComparisonSpec,
    *,
    train_limits: Sequence[int | None],
    config: PretrainConfig | str = "palm-tiny",
) -> dict[str, list[dict]]:
    """PALM Table 5's question: how much pre-training helps as labelled data shrinks. One `compare`
    per training-set size (`train_limits`: numbers of pairs, None for all) in `out_dir/train-<size>/`,
    every size fine-tuning the same pre-trained cells (`spec.pretrain_dir`, default
    `out_dir/pretrain`) on the first pairs of `data.train`, with the same chosen lrs (`spec.lr_grid`:
    chosen once at the largest size, kept in `spec.lr_dir`, default `out_dir/lr`); then
    `train_sizes.md` (and a plot): each variant's primary metric against the size, and PALM against
    no pre-training at each size. Returns each size's table."""
    from .report import write_train_size_report

    out_dir = Path(out_dir)
    if not train_limits or len(set(train_limits)) != len(train_limits):
        raise CtxlmError("give distinct training-set sizes, e.g. --train-limit 1000,4000,all")
    if any(limit is not None and limit < 1 for limit in train_limits):
        raise CtxlmError("a training-set size must be at least 1 pair (or all)")
    recipe = seq2seq_recipe(recipe)
    total = len(read_pairs(recipe.task, data.train, recipe.reader))
    default = get_task(recipe.task).compare_train_limit
    sizes = {train_size_name(limit): min(limit or default or total, total) for limit in train_limits}
    spec = dataclasses.replace(
        spec,
        pretrain_dir=spec.pretrain_dir or out_dir / "pretrain",
        cache_dir=spec.cache_dir or out_dir / "store",
        lr_dir=spec.lr_dir or out_dir / "lr",
        lr_pairs=spec.lr_pairs or max(sizes.values()),
    )
    tables = {}
    for limit in train_limits:
        name = train_size_name(limit)
        print(f"training-set size {name}", flush=True)
        tables[name] = compare(
            corpus,
            tokenizer,
            recipe,
            dataclasses.replace(data, train_limit=limit),
            out_dir / f"train-{name}",
            spec,
            config=config,
        )
    write_train_size_report(out_dir, tables, sizes, task_scoring(recipe.task), plots=spec.plots, command=spec.command)
    return tables


# ------------------------------------------------------------------------------------ tasks with a comparison class
"""`ctxlm compare` on the NLU tasks ctxlm fine-tunes, where GLM's and UniLMv2's claims were made.

    from ctxlm.compare import Budget, compare_nlu
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

Each cell pre-trains as `compare` does (`Comparison.pretrain_cell`, shareable through
`pretrain_dir`); `none` is a new model of the task's family. The bootstrap's metric is accuracy
(a per-example 0/100) or, for STS-B, Pearson's r recomputed from per-example (prediction, label)
rows (`ctxlm.report.corpus_pearson`). The baseline row predicts the training split's most
frequent label for every dev row (STS-B: the training mean, a constant whose correlations are
undefined: shown as 0, so a cell must correlate positively to have learned).
"""

CLOZE_DATASETS = ("RTE", "CB", "COPA", "BoolQ")  # FewGLUE's one-answer classification tasks


def majority_label(labels: Sequence) -> tuple[Any, int]:
    """The most frequent label and its count (ties: the smallest label, as `str` sorts them)."""
    counts = Counter(labels)
    label = max(sorted(counts, key=str), key=counts.__getitem__)
    return label, counts[label]


def accuracy_stats(correct: Sequence[bool]) -> list[list[float]]:
    """Per-example accuracy × 100 (0 or 100), whose mean (`mean_score`) is the accuracy."""
    return [[100.0 * bool(c)] for c in correct]


class ClozeTask:
    """GLM's cloze SuperGLUE (see "Tasks with a comparison class" above)."""

    name, family, split = "cloze", "glm", "dev32"

    def __init__(
        self,
        dataset: str,
        data_dir: str | Path,
        train_overrides: Mapping,
        *,
        max_length: int | None = None,
        score_eop: bool = False,
        eval_limit: int | None = None,
        train_limit: int | None = None,
    ):
        task = task_name(dataset)
        if task not in CLOZE_DATASETS:
            raise CtxlmError(
                f"compare --task cloze scores superglue/{', superglue/'.join(CLOZE_DATASETS)}; got {dataset}"
            )
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
        self.selection = (
            f"lowest error rate on {self.dataset} dev32, the split it is scored on: FewGLUE has no "
            "other labelled one, so the score is optimistic, equally for every cell"
        )

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

        return finetune_cloze(
            init,
            TaskData(dataset=self.dataset, data_dir=self.data_dir),
            out_dir,
            dataclasses.replace(self.train, seed=seed),
            max_length=self.max_length,
            score_eop=self.score_eop,
            run=RunOptions(resume=latest_checkpoint(out_dir) is not None),
            scratch=ScratchModel(model_config, tokenizer),
        )

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
        return [
            row.candidate_labels[p] if row.candidate_labels is not None else p for row, p in zip(self.rows, predicted)
        ]

    def majority(self) -> tuple[str, list[int], dict[str, float]]:
        """The majority-class baseline: (its name, its prediction for each row, its metrics)."""
        labels = [self.gold_label(row) for row in self.train_rows]
        label, count = majority_label(labels)
        predicted = [self.candidate(row, label) for row in self.rows]
        return f"majority class {label} ({count}/{len(labels)} training rows)", predicted, self.metrics(predicted)


class ClassifyTask:
    """UniLMv2's classification and regression (see "Tasks with a comparison class" above)."""

    name, family, split = "classify", "unilm", "dev"

    def __init__(
        self,
        dataset: str,
        data_dir: str | Path,
        train_overrides: Mapping,
        *,
        max_length: int | None = None,
        pooler: bool = False,
        eval_limit: int | None = None,
        train_limit: int | None = None,
    ):
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
        self.selection = (
            f"lowest dev {'MSE' if self.regression else 'loss'} on {rows}{self.dataset} dev, the rows it is scored on"
        )

    def finetune(self, init, model_config, tokenizer, out_dir: Path, seed: int):
        from .tasks.classification import finetune_classifier

        rows = TaskData(
            dataset=self.dataset, data_dir=self.data_dir, train_limit=self.train_limit, valid_limit=self.eval_limit
        )
        return finetune_classifier(
            init,
            rows,
            out_dir,
            dataclasses.replace(self.train, seed=seed),
            max_length=self.max_length,
            pooler=self.pooler,
            run=RunOptions(resume=latest_checkpoint(out_dir) is not None),
            scratch=ScratchModel(model_config, tokenizer),
        )

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
            return (
                f"training mean {mean:.2f} (a constant: its correlations are undefined, shown as 0)",
                [mean] * len(self.rows),
                {name: 0.0 for name in self.metric_names},
            )
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

    def finetune_run(self, init, model_config, ft_dir: Path, seed: int, lr: float | None = None):
        if lr is not None:  # compare_nlu refuses an lr grid first
            raise CtxlmError("choosing the fine-tuning lr (--lr-grid) is for seq2seq tasks")
        return self.nlu.finetune(init, model_config, self.tokenizer, ft_dir, seed)

    def finetune_counts(self, ft_dir: Path, seed: int, steps: int) -> dict:
        return {}  # the NLU tasks' examples are built inside their fine-tuning: not counted

    def train_size(self) -> int:
        return len(self.nlu.train_rows)

    def score_cell(self, model_dir: Path) -> tuple[dict, list, list]:
        predicted = self.nlu.predict(model_dir)
        return self.nlu.metrics(predicted), self.nlu.example_stats(predicted), predicted

    def prediction_notes(self, predictions: list) -> dict:
        """`one_class`: the class a cell predicts for every scored row, when it does (it did not learn)."""
        classes = {str(c) for c in self.nlu.predicted_classes(predictions)}
        return {"one_class": classes.pop()} if len(classes) == 1 and len(predictions) > 1 else {}

    def baseline(self) -> dict:
        name, predicted, metrics = self.nlu.majority()
        return {
            "name": name,
            "metrics": metrics,
            "example_stats": self.nlu.example_stats(predicted),
            "predictions": predicted,
        }


def nlu_task(
    task: str, dataset: str, data_dir: str | Path, train_overrides: Mapping | None = None, **options: Any
) -> NluTask:
    """The task's reader, fine-tuning and scoring (`options`: max_length, eval_limit, train_limit, and
    cloze's score_eop or classify's pooler)."""
    return resolve(comparison_spec(task).comparison)(dataset, data_dir, dict(train_overrides or {}), **options)


def check_family(objectives: Sequence[str], task: str) -> None:
    """Refuse a variant of another family than the task's (`none` is a new model of the task's family)."""
    family = comparison_spec(task).family
    wrong = next((o for o in objectives if o != "none" and PRETRAIN_VARIANTS[o].family != family), None)
    if wrong is not None:
        same = [name for name, variant in PRETRAIN_VARIANTS.items() if variant.family == family]
        raise CtxlmError(
            f"--task {task} fine-tunes {family} models: '{wrong}' is a {PRETRAIN_VARIANTS[wrong].family} "
            f"variant (choose from {', '.join(same)}, none)"
        )


def compare_nlu(
    corpus: CorpusSpec | Sequence[str | Path],
    tokenizer: TextTokenizer | str | Path,
    task: str,
    data: TaskData,
    out_dir: str | Path,
    spec: ComparisonSpec,
    *,
    train: Mapping | None = None,
    config: PretrainConfig | str = "palm-tiny",
) -> list[dict]:
    """`compare` for a registered task that names a `comparison` class: "cloze" (GLM variants),
    "classify" (UniLMv2 variants) or one registered by the user (`ctxlm.tasks.register_task`), on
    `data.dataset` under `data.data_dir` (as `finetune --dataset --data-dir`), `data.train_limit`
    training rows, `data.limit` scored rows and `data.options` (max_length, and cloze's score_eop or
    classify's pooler). `train`: TrainConfig fields over the task's fine-tuning defaults
    (`spec.finetune_steps` their max_steps). `spec.objectives` default to the family's claims'
    variants and `none`. Returns the report's table (the baseline's row last)."""
    task_spec = comparison_spec(task)
    objectives = list(spec.objectives or task_spec.compare_objectives)
    check_run_options(objectives, spec.seeds, spec.plots)
    if spec.lr_grid:
        raise CtxlmError(f"--lr-grid: choosing the fine-tuning lr is for seq2seq tasks, not --task {task}")
    overrides = {**(train or {}), **({"max_steps": spec.finetune_steps} if spec.finetune_steps is not None else {})}
    head = {
        name: data.options.get(name, False) for name in ("score_eop", "pooler") if name in task_spec.comparison_options
    }
    options = dict(
        max_length=data.options.get("max_length"), eval_limit=data.limit, train_limit=data.train_limit, **head
    )
    nlu = nlu_task(task, data.dataset, data.data_dir, overrides, **options)  # reads the rows: fails before any run
    check_family(objectives, task)
    out_dir, config = Path(out_dir), palm_config(config)
    shared = shared_fields(corpus, tokenizer, out_dir, spec)
    run = NluComparison(
        recipe=None,
        train_path=None,
        valid_path=None,
        eval_pairs=[],
        configs=family_configs([nlu.family], config, shared["tokenizer"]),
        scoring=TaskScoring(nlu.metric_names, nlu.primary, nlu.statistic, True),
        train_limit=data.train_limit,
        nlu=nlu,
        **shared,
    )
    recipe = {
        "task": task,
        "dataset": nlu.dataset,
        "data_dir": str(data.data_dir),
        **options,
        "train": dataclasses.asdict(nlu.train),
    }
    spec = dataclasses.replace(spec, command=spec.command or "(called from Python: ctxlm.compare.compare_nlu)")
    return run_comparison(
        run,
        spec,
        objectives,
        {
            "recipe": recipe,
            "config": dataclasses.asdict(config),
            "train": f"{nlu.dataset} train",
            "valid": f"{nlu.dataset} {nlu.split}",
            "eval": f"{nlu.dataset} {nlu.split}",
            "eval_limit": data.limit,
            "train_limit": data.train_limit,
            "reference": nlu.family,
            "selection": nlu.selection,
        },
    )


def comparison_spec(task: str):
    """The registered task `task`, which `compare` fine-tunes and scores through its `comparison`
    class (not a seq2seq recipe)."""
    known = [name for name, spec in registered().items() if spec.comparison is not None]
    if task not in known:
        raise CtxlmError(f"unknown NLU task '{task}' (choose from {', '.join(known)})")
    return get_task(task)


def comparison_task(task: str) -> tuple[str, str | None] | None:
    """compare's --task as a registered task with a `comparison` class: (its name, None) for a name,
    (its `task:`, the file) for a YAML of its options or a packaged one by name (`glm-superglue-rte`);
    None for a seq2seq recipe."""
    from .config import RECIPES_DIR, read_yaml

    if task in registered() and get_task(task).comparison is not None:
        return task, None
    packaged = RECIPES_DIR / f"{task}.yaml"
    if Path(task).suffix in (".yaml", ".yml") and Path(task).is_file():
        named = read_yaml(task).get("task")
    elif "/" not in task and packaged.is_file():
        named = read_yaml(packaged).get("task")
    else:
        return None
    return (named, task) if named in registered() and get_task(named).comparison is not None else None


def comparison_settings(flags: Mapping):
    """compare's settings of a registered task with a comparison class (cloze, classify) and its
    recipe's train section, as `finetune` reads them, when --task names one or is a YAML for one
    (its `task:`); else (None, {}): a seq2seq recipe."""
    from .tasks import need, nlu_options

    named = comparison_task(flags["task"])
    if named is None:
        return None, {}
    nlu, train = nlu_options(named[0], named[1], flags)
    need(nlu.task, nlu, "dataset", "data_dir")
    if nlu.epochs is not None and flags.get("finetune_steps") is None:
        raise CtxlmError(
            f"{named[1]}: compare counts fine-tuning steps; give --finetune-steps (the recipe's "
            f"epochs are read by finetune)"
        )
    return nlu, train


def compare_task(
    corpus: CorpusSpec,
    tokenizer: TextTokenizer | str | Path,
    flags: Mapping,
    data: TaskData,
    out_dir: str | Path,
    spec: ComparisonSpec,
    *,
    config: PretrainConfig | str = "palm-tiny",
) -> str:
    """`ctxlm compare`: the comparison `flags["task"]` calls for (its flags as `finetune` reads them)
    over `data` — `compare_nlu` for a task with a comparison class, `compare_train_sizes` for several
    `data.options["train_limits"]`, else `compare` (only pre-training with `spec.pretrain_only`);
    returns where its report (or pre-training) is."""
    from .tasks import need

    limits, task, out_dir = data.options.get("train_limits") or [None], flags["task"], Path(out_dir)
    data = dataclasses.replace(data, train_limit=limits[0], options={})
    nlu, nlu_train = comparison_settings(flags)
    if nlu is not None:
        if data.ref is not None or len(limits) > 1:
            raise CtxlmError(
                f"--task {nlu.task} scores its dataset's dev split and takes one --train-limit; "
                "--eval and several training-set sizes are for seq2seq tasks"
            )
        options = dict(max_length=nlu.max_length, score_eop=nlu.score_eop, pooler=nlu.pooler)
        data = dataclasses.replace(data, dataset=nlu.dataset, data_dir=nlu.data_dir, options=options)
        compare_nlu(corpus, tokenizer, nlu.task, data, out_dir, spec, train=nlu_train, config=config)
        return f"report: {out_dir / 'report.md'} and report.html"
    need(task, data, "train", "valid")
    if spec.pretrain_only:
        compare(corpus, tokenizer, task, data, out_dir, spec, config=config)
        return f"pre-trained every cell in {spec.pretrain_dir or out_dir / 'cells'}"
    if len(limits) > 1:
        compare_train_sizes(corpus, tokenizer, task, data, out_dir, spec, train_limits=limits, config=config)
        return f"report: {out_dir / 'train_sizes.md'} and train_sizes.html (each size: train-<size>/report.md)"
    compare(corpus, tokenizer, task, data, out_dir, spec, config=config)
    return f"report: {out_dir / 'report.md'} and report.html"
