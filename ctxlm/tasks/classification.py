"""UniLMv2 NLU fine-tuning: classification and regression on the [SOS] vector (§3.4, §4.3).

"For NLU tasks, we fine-tune PMLM as a bidirectional Transformer encoder, like BERT ... the input is
[SOS] TEXT [EOS]. We use the encoding vector of [SOS] as the representation of input, and then
feed it to a randomly initialized softmax classifier" (§3.4). A sentence pair is laid out
`[SOS] A [EOS] B [EOS]` (segments 0 / 1, `build_classification_input`), cut longest-first to
`max_length` tokens like BERT's `_truncate_seq_pair`. The head is `UnilmClassifier` (cross-entropy;
MSE when `num_labels == 1`, STS-B).

`finetune_classifier` is `ctxlm finetune --task classify`: it reads a `ctxlm.data.glue` dataset,
trains with the one training loop, keeps the best weights by the dev loss (`valid/cls_loss`, or
`valid/mse` for regression; lower is better), then scores the dev split.
`evaluate_classifier` reports GLUE's metrics on a split, ×100 as the GLUE leaderboard and the
paper's Table 3 print them: MRPC accuracy and F1 of the positive (paraphrase) class, STS-B Pearson
and Spearman correlations, RTE accuracy.

Defaults follow Table 9's GLUE column at one point of its grid: batch 32, learning rate 2e-5,
linear schedule with 10% warm-up, weight decay 0.01, 10 epochs; max length 128 (BERT's GLUE
setting; the paper gives none). The metrics are `ctxlm.metrics`' (Pearson and Spearman from
scipy.stats, as GLUE's own evaluation).
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from .seq2seq import starting_model
from ..checkpoint import build_model, load_model_dir, read_head, read_model_config, resume_checkpoint
from ..config import TrainConfig
from ..families.unilm import UnilmConfig
from ..device import for_inference, resolve_device
from ..data.glue import GlueDataset, Row, get_dataset
from ..errors import CtxlmError
from ..metrics import accuracy, binary_f1, pearson, spearman
from ..models.unilm import UnilmClassifier, UnilmModel
from ..objectives.unilm import UnilmTokens, build_classification_input
from ..tokenization import TextTokenizer
from ..training import TrainingInputs, TrainResult, collate, distributed_context, train
from . import RunOptions, ScratchModel, TaskData

TASK_FILE = "classification.json"  # dataset and max_length, beside the fine-tuned model
DEFAULT_MAX_LENGTH = 128


# ------------------------------------------------------------------------------ inputs
def tokens_of(cfg: UnilmConfig) -> UnilmTokens:
    """The special ids the layout needs, from the model config (filled from its tokenizer)."""
    return UnilmTokens(
        sos=cfg.bos_token_id,
        eos=cfg.eos_token_id,
        mask=cfg.mask_token_id,
        pseudo=cfg.pseudo_token_id,
        pad=cfg.pad_token_id,
        replace_pool=np.zeros(0, np.int64),
    )


def truncate_pair(a: Sequence[int], b: Sequence[int] | None, max_length: int) -> tuple[list[int], list[int] | None]:
    """Cut `a` and `b` so that `[SOS] A [EOS] B [EOS]` has at most `max_length` tokens: one token at a
    time from the end of the longer one (`b` on ties), as BERT's `_truncate_seq_pair`."""
    a = list(a)
    b = None if b is None else list(b)
    budget = max_length - (3 if b else 2)
    if budget < (2 if b else 1):
        raise CtxlmError(f"max_length {max_length} leaves no room for the text next to the special tokens")
    while len(a) + len(b or ()) > budget:
        if b and len(b) >= len(a):
            b.pop()
        else:
            a.pop()
    return a, b


def pair_input(a: Sequence[int], b: Sequence[int] | None, tok: UnilmTokens, max_length: int) -> dict:
    """`build_classification_input` of the truncated pair, with a 1-D (key padding) attention mask:
    attention is bidirectional, so a (L, L) matrix of ones would only cost memory."""
    a, b = truncate_pair(a, b, max_length)
    example = build_classification_input(a, b, tok)
    example["attention_mask"] = np.ones(len(example["input_ids"]), dtype=bool)
    return example


class PairExamples:
    """Tokenized rows as training / evaluation examples (`ctxlm.training.Examples`)."""

    def __init__(
        self, cfg: UnilmConfig, tokenizer: TextTokenizer, rows: Sequence[Row], max_length: int, regression: bool
    ):
        self.tok, self.max_length, self.regression = tokens_of(cfg), max_length, regression
        self.a = tokenizer.encode_batch([row.text_a for row in rows])
        b = tokenizer.encode_batch([row.text_b or "" for row in rows])
        self.b = [ids if row.text_b is not None else None for ids, row in zip(b, rows)]
        self.labels = [row.label for row in rows]

    def __len__(self) -> int:
        return len(self.a)

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        example = pair_input(self.a[index], self.b[index], self.tok, self.max_length)
        example["labels"] = np.asarray(self.labels[index], dtype=np.float32 if self.regression else np.int64)
        return example


# ------------------------------------------------------------------------------ metrics
def glue_metrics(dataset: str | GlueDataset, predictions: Sequence, labels: Sequence) -> dict[str, float]:
    """The dataset's GLUE metrics (×100): accuracy, f1 (positive class), pearson, spearman."""
    spec = get_dataset(dataset) if isinstance(dataset, str) else dataset
    functions = {"accuracy": accuracy, "f1": binary_f1, "pearson": pearson, "spearman": spearman}
    return {name: 100 * functions[name](predictions, labels) for name in spec.metrics}


# ------------------------------------------------------------------------------ the model
def load_backbone(
    init: str | Path | None,
    model_config: UnilmConfig | None = None,
    tokenizer: TextTokenizer | str | Path | None = None,
) -> tuple[UnilmModel, TextTokenizer]:
    """The UniLMv2 encoder of model directory `init` (a plain model, or the backbone of a head
    model), or a new `model_config` model for `tokenizer` (the "no pre-training" baseline)."""
    if init is None and model_config is not None and getattr(model_config, "family", None) != "unilm":
        raise CtxlmError(
            f"the NLU heads are UniLMv2's: --config must be a unilm config, not {getattr(model_config, 'family', '?')}"
        )
    model, tokenizer = starting_model(None, False, init, model_config, tokenizer)
    backbone = model if isinstance(model, UnilmModel) else getattr(model, "unilm", None)
    if not isinstance(backbone, UnilmModel):
        raise CtxlmError(
            f"{init}: a {model.config.family} model; the NLU heads are UniLMv2's (§3.4): give a unilm model"
        )
    return backbone, tokenizer


def epochs_train_config(
    num_train: int, num_valid: int, epochs: int, select_metric: str | None, overrides: Mapping | None = None
) -> TrainConfig:
    """Table 9's settings (batch 32, lr 2e-5, 10% warm-up, weight decay 0.01) for `epochs` epochs of
    `num_train` examples, validated once an epoch on all `num_valid` dev examples, keeping the
    weights with the lowest `select_metric`; `overrides` (TrainConfig fields) win, and warm-up stays
    10% of an overridden `max_steps`."""
    overrides = dict(overrides or {})
    batch_size = overrides.get("batch_size", 32)
    steps_per_epoch = max(1, num_train // (batch_size * overrides.get("grad_accum", 1)))
    max_steps = overrides.get("max_steps", epochs * steps_per_epoch)
    values = dict(
        batch_size=batch_size,
        lr=2e-5,
        weight_decay=0.01,
        max_steps=max_steps,
        warmup_steps=max(1, round(0.1 * max_steps)),
        eval_every=steps_per_epoch,
        eval_batches=max(1, math.ceil(num_valid / batch_size)),
        log_every=min(50, steps_per_epoch),
        select_metric=select_metric if num_valid else None,
    )
    values.update(overrides)
    return TrainConfig(**values)


def glue_train_config(
    num_train: int, num_valid: int, regression: bool, overrides: Mapping | None = None
) -> TrainConfig:
    """Table 9's GLUE settings: 10 epochs, selecting on the dev loss (regression: the dev MSE)."""
    return epochs_train_config(num_train, num_valid, 10, "valid/mse" if regression else "valid/cls_loss", overrides)


# ------------------------------------------------------------------------------ fine-tuning
def finetune_classifier(
    init: str | Path | None,
    data: TaskData,
    out_dir: str | Path,
    train_config: TrainConfig | None = None,
    *,
    train_overrides: Mapping | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    pooler: bool = False,
    run: RunOptions = RunOptions(),
    scratch: ScratchModel = ScratchModel(),
) -> TrainResult:
    """Fine-tune UniLMv2 model directory `init` (or `scratch`, a new model of its config and tokenizer)
    on `data.dataset`'s train split (in `data.data_dir`); validate, select and finally score on its
    dev split. `train_config` replaces the Table 9 defaults (`glue_train_config`) whole;
    `train_overrides` changes some of them. The first `data.train_limit` / `data.valid_limit` rows
    only, when given. The result's `final_metrics` gain `dev/<metric>` (also written to
    `out_dir/eval_dev.json`). `run`: how the run starts and where (`RunOptions`: resume, overwrite,
    allow_config_change, device)."""
    spec, data_dir = get_dataset(data.dataset), data.data_dir
    out_dir = Path(out_dir)
    checkpoint = resume_checkpoint(out_dir, run.resume)
    if checkpoint is not None:  # the weights come from the checkpoint (train(resume=True))
        backbone = build_model(read_model_config(checkpoint))
        tokenizer = TextTokenizer.load(checkpoint)
        pooler = (read_head(checkpoint) or {}).get("pooler", pooler)
    else:
        backbone, tokenizer = load_backbone(init, scratch.config, scratch.tokenizer)
    max_length = min(max_length, backbone.config.max_position_embeddings)

    train_rows = spec.read(data_dir, "train")[: data.train_limit]
    valid_rows = spec.read(data_dir, "dev")[: data.valid_limit]
    regression = spec.num_labels == 1
    train_examples = PairExamples(backbone.config, tokenizer, train_rows, max_length, regression)
    valid_examples = PairExamples(backbone.config, tokenizer, valid_rows, max_length, regression)
    cfg = train_config or glue_train_config(len(train_rows), len(valid_rows), regression, train_overrides)
    if train_config is not None and train_overrides:
        cfg = dataclasses.replace(train_config, **train_overrides)

    torch.manual_seed(cfg.seed)  # the head's initialization
    model = UnilmClassifier(backbone, spec.num_labels, pooler=pooler)
    task = {
        "dataset": spec.name,
        "max_length": max_length,
        "num_labels": spec.num_labels,
        "label_names": list(spec.label_names),
    }
    run_info = {
        "task": "classify",
        **task,
        "init": str(init) if init else None,
        "data_dir": str(data_dir),
        "train_examples": len(train_rows),
        "valid_examples": len(valid_rows),
    }
    result = train(
        model,
        TrainingInputs(train_examples, tokenizer.pad_id, valid_examples),
        cfg,
        out_dir,
        tokenizer=tokenizer,
        run_info=run_info,
        side_files={TASK_FILE: task},
        run=run,
    )
    if distributed_context()[0] == 0:
        scores = score_rows(model, tokenizer, spec, valid_rows, max_length, batch_size=cfg.batch_size)
        (out_dir / "eval_dev.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        result.final_metrics.update({f"dev/{k}": v for k, v in scores.items()})
    return result


# ------------------------------------------------------------------------------ evaluation
@torch.no_grad()
def predict(model: UnilmClassifier, examples: PairExamples, batch_size: int = 32) -> np.ndarray:
    """Class indices (classification) or scores (regression), one per example, in order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(examples), batch_size):
        batch = collate(
            [examples.example(i) for i in range(start, min(len(examples), start + batch_size))], examples.tok.pad
        )
        batch.pop("labels")
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        outputs.append(logits[:, 0] if model.num_labels == 1 else logits.argmax(-1))
    model.train(was_training)
    return torch.cat(outputs).float().cpu().numpy()


def score_rows(
    model: UnilmClassifier,
    tokenizer: TextTokenizer,
    spec: GlueDataset,
    rows: Sequence[Row],
    max_length: int,
    batch_size: int = 32,
) -> dict[str, float]:
    examples = PairExamples(model.config, tokenizer, rows, max_length, spec.num_labels == 1)
    return glue_metrics(spec, predict(model, examples, batch_size), [row.label for row in rows])


def evaluate_classifier(
    model_dir: str | Path,
    dataset: str | None,
    data_dir: str | Path,
    split: str = "dev",
    *,
    batch_size: int = 32,
    limit: int | None = None,
    max_length: int | None = None,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
) -> dict[str, float]:
    """GLUE metrics (×100) of a fine-tuned classifier on `dataset`'s `split` (dataset and max
    length default to those it was fine-tuned with, from classification.json; another dataset is
    scored with a warning). `device` and `bf16`: see `ctxlm.device`."""
    task_file = Path(model_dir) / TASK_FILE
    task = json.loads(task_file.read_text(encoding="utf-8")) if task_file.is_file() else {}
    dataset = dataset or task.get("dataset")
    if dataset is None:
        raise CtxlmError(f"{model_dir}: no {TASK_FILE}; give --dataset")
    spec = get_dataset(dataset)
    device = resolve_device(device)
    model, tokenizer = load_model_dir(model_dir, device=device)
    model = for_inference(model, device, bf16)
    if not isinstance(model, UnilmClassifier):
        raise CtxlmError(
            f"{model_dir}: not a classifier (no unilm-classifier head.json); fine-tune one with --task classify"
        )
    if model.num_labels != spec.num_labels:
        raise CtxlmError(f"{model_dir}: a {model.num_labels}-label head, but {spec.name} has {spec.num_labels}")
    if task.get("dataset") not in (None, spec.name):
        warnings.warn(f"{model_dir}: fine-tuned on {task['dataset']}, scored on {spec.name}")
    if tokenizer is None:
        raise CtxlmError(f"{model_dir}: the model directory has no tokenizer.json")
    max_length = max_length or task.get("max_length", DEFAULT_MAX_LENGTH)
    rows = spec.read(data_dir, split)[:limit]
    return score_rows(model, tokenizer, spec, rows, max_length, batch_size)
