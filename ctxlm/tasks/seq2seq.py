"""Fine-tuning on (source, target) tasks, and decoding + scoring a validation set.

`finetune(...)` is what `ctxlm finetune` calls: it reads the task's files with the task readers
(`ctxlm.data.tasks`), lays each pair out for the model's family (`ctxlm.layouts`), and runs the one
training loop with label smoothing, validation loss, the best checkpoint and early stopping. The
recipe's decoding settings are saved beside the model (`generation.json`), so `ctxlm generate`
decodes as the recipe says unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..checkpoint import build_model, load_model_dir, resume_checkpoint
from ..config import GENERATION_FILE, FinetuneConfig, GenerationConfig, steps_for_epochs
from ..data.tasks import Pair, read_task
from ..errors import CtxlmError
from ..layouts import pair_example, pair_limits
from ..predict import Seq2SeqPredictor
from ..pretraining import model_config_for_tokenizer
from ..tokenization import TextTokenizer
from ..training import TrainingInputs, TrainResult, train
from . import RunOptions, ScratchModel


class PairExamples:
    """Tokenized (source, target) pairs as training examples for a model family."""

    def __init__(
        self, model_config, sources: list[list[int]], targets: list[list[int]], max_source: int, max_target: int
    ):
        self.config, self.sources, self.targets = model_config, sources, targets
        self.max_source, self.max_target = max_source, max_target

    def __len__(self) -> int:
        return len(self.sources)

    def limits(self, index: int) -> tuple[int, int]:
        """This pair's (source, target) limits (`layouts.pair_limits`)."""
        return pair_limits(self.config, self.max_source, self.max_target, len(self.targets[index]))

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        return pair_example(self.config, self.sources[index], self.targets[index], *self.limits(index))


def read_pairs(task: str, path: str | Path, options: dict | None = None, limit: int | None = None) -> list[Pair]:
    """The first `limit` labelled pairs of a task file (every row when `limit` is None)."""
    pairs = []
    for pair in read_task(task, path, **(options or {})):
        if pair.target is None:
            raise CtxlmError(f"{path}: row {len(pairs) + 1} has no target; fine-tuning needs labelled rows")
        pairs.append(pair)
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise CtxlmError(f"{path}: no examples")
    return pairs


def pair_examples(model_config, tokenizer: TextTokenizer, pairs: Sequence[Pair], recipe: FinetuneConfig):
    sources = tokenizer.encode_batch([p.source for p in pairs])
    targets = tokenizer.encode_batch([p.target for p in pairs])
    return PairExamples(model_config, sources, targets, recipe.max_source_tokens, recipe.max_target_tokens)


def truncation_counts(examples: PairExamples) -> dict[str, int]:
    """How many sources and targets the length limits cut (each pair's, `PairExamples.limits`):
    sources longer than the source limit − 2 (two special tokens), targets longer than the target
    limit − 1 (the end token; a cut target keeps the limit's tokens and no end token)."""
    limits = [examples.limits(i) for i in range(len(examples))]
    return {
        "examples": len(examples),
        "sources_cut": sum(len(s) > m - 2 for s, (m, _) in zip(examples.sources, limits)),
        "targets_cut": sum(len(t) >= m for t, (_, m) in zip(examples.targets, limits)),
    }


def report_truncation(name: str, counts: dict[str, int], recipe: FinetuneConfig) -> None:
    """One warning line when the limits cut anything (the counts also go to run.json)."""
    if counts["sources_cut"] or counts["targets_cut"]:
        warnings.warn(
            f"{name}: {counts['sources_cut']:,} of {counts['examples']:,} sources cut to "
            f"max_source_tokens {recipe.max_source_tokens} (GLM, UniLMv2: or what the target's positions "
            f"leave), {counts['targets_cut']:,} targets cut to "
            f"max_target_tokens {recipe.max_target_tokens} (counts in run.json under 'truncated')",
            stacklevel=2,
        )


def starting_model(
    out_dir: str | Path,
    resume: bool,
    init: str | Path | None,
    model_config=None,
    tokenizer: TextTokenizer | str | Path | None = None,
):
    """(model, tokenizer) a fine-tuning run starts from: its newest checkpoint when resuming (the
    training loop then loads the weights), else the `init` model directory, else a new
    `model_config` model sized for `tokenizer` (training from scratch, the "− pre-training" row)."""
    checkpoint = resume_checkpoint(out_dir, resume)
    if checkpoint is not None or init is not None:
        # a resumed run's weights come with its training state (`train` loads them)
        model, saved = load_model_dir(checkpoint or init, weights=checkpoint is None)
        tokenizer = tokenizer or saved
        if tokenizer is None:
            raise CtxlmError(f"{init}: the model directory has no tokenizer.json")
    elif model_config is None or tokenizer is None:
        raise CtxlmError("give --init MODEL_DIR, or --config and --tokenizer for a model trained from scratch")
    if not isinstance(tokenizer, TextTokenizer):
        tokenizer = TextTokenizer.load(tokenizer)
    if checkpoint is None and init is None:
        model = build_model(model_config_for_tokenizer(model_config, tokenizer))
    return model, tokenizer


def finetune(
    train_path: str | Path,
    valid_path: str | Path | None,
    out_dir: str | Path,
    recipe: FinetuneConfig,
    *,
    init: str | Path | None = None,
    scratch: ScratchModel = ScratchModel(),
    train_limit: int | None = None,
    run: RunOptions = RunOptions(),
) -> TrainResult:
    """Fine-tune `init` (a model directory; or `scratch`, a new model of its config and tokenizer, the
    paper's "− pre-training" baseline) on the task's train file, selecting on the valid file. `run`:
    how the run starts and where (`RunOptions`: resume, overwrite, allow_config_change, device)."""
    out_dir = Path(out_dir)
    torch.manual_seed(recipe.train.seed)
    model, tokenizer = starting_model(out_dir, run.resume, init, scratch.config, scratch.tokenizer)

    train_pairs = read_pairs(recipe.task, train_path, recipe.reader, train_limit)
    train_examples = pair_examples(model.config, tokenizer, train_pairs, recipe)
    valid_examples = None
    if valid_path is not None:
        valid_pairs = read_pairs(recipe.task, valid_path, recipe.reader, recipe.max_valid_examples)
        valid_examples = pair_examples(model.config, tokenizer, valid_pairs, recipe)
    train_config = recipe.train
    if recipe.epochs is not None:  # the official scripts' epochs, counted over this run's training rows
        train_config = steps_for_epochs(train_config, recipe.epochs, len(train_examples), "recipe epochs")
    if valid_examples is None and train_config.select_metric is not None:
        train_config = dataclasses.replace(train_config, select_metric=None, early_stopping_patience=0)
    loss_options = {"label_smoothing": train_config.label_smoothing} if train_config.label_smoothing else {}
    run_info = {
        "task": recipe.task,
        "init": str(init) if init else None,
        "train_file": str(train_path),
        "valid_file": str(valid_path) if valid_path else None,
        "train_examples": len(train_examples),
        "recipe": dataclasses.asdict(recipe),
        "truncated": {},
    }
    for name, examples in (("train", train_examples), ("valid", valid_examples)):
        if examples is not None:
            run_info["truncated"][name] = truncation_counts(examples)
            report_truncation(name, run_info["truncated"][name], recipe)
    inputs = TrainingInputs(train_examples, tokenizer.pad_id, valid_examples, loss_options)
    return train(
        model,
        inputs,
        train_config,
        out_dir,
        tokenizer=tokenizer,
        run_info=run_info,
        side_files={GENERATION_FILE: dataclasses.asdict(recipe.decoding)},
        run=run,
    )


def decode_pairs(
    model_dir: str | Path,
    pairs: Sequence[Pair],
    decoding: GenerationConfig | None = None,
    *,
    max_source_tokens: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
) -> list[str]:
    """Predictions for the sources of `pairs` (decoding defaults to the model's generation.json)."""
    predictor = Seq2SeqPredictor.load(model_dir, device, bf16=bf16, max_source_tokens=max_source_tokens)
    return predictor.generate([p.source for p in pairs], decoding, batch_size=batch_size, progress=progress)
