"""GLM's cloze-style NLU fine-tuning (Du et al., 2021, §2.3 "Finetuning GLM", Figure 3; Appendix).

A classification row becomes a blank-filling question (`ctxlm.data.superglue`: a pattern with one
[MASK] and its candidate answers). Part A is `[CLS] pattern [eos]` as in pre-training, and each
candidate is scored by GLM's own blank-infilling probability:

* **single-token answers** (verbalizer words such as "yes" / "no", when each is one token): one row
  per example, Part A followed by `[sop]` at the blank's position with block position 1. The
  hidden state of that `[sop]` is what predicts the first token of the blank in pre-training, so
  the score of candidate c is `log_softmax(output_logits(h_[sop]))[c]` - the verbalizer's logit,
  normalized over the vocabulary (the normalization is a shared constant per example, so the
  cross-entropy over candidates is the same as with raw logits, as THUDM/GLM's
  `GLMForSingleTokenCloze` computes it);
* **multi-token answers** (COPA's choices, WSC's noun phrases, ReCoRD's entities, or a verbalizer
  word that the tokenizer splits): one row per candidate, Part B `[sop] c1 .. c(k-1)` with labels
  `c1 .. ck` (`build_cloze_candidates`), and the score is the sum of the label log-probabilities,
  which the causal Part B makes equal to decoding the answer token by token - all candidates of a
  batch in one forward pass.

Fine-tuning minimizes the cross-entropy of the gold candidate under a softmax over the example's
candidate scores (§2.3, Figure 3: p(y|x) = p(v(y)|c(x)) / sum_y' p(v(y')|c(x))); with several gold
candidates (ReCoRD evaluation) the loss is -log of their summed probability.

Model selection: FewGLUE has only `train` (32 rows) and `dev32` (32 rows). `finetune_cloze` keeps
the weights with the lowest dev32 error rate (ties: the earliest), reported by the training loop
as `valid/cls_error` through the `<name>_sum` / `<name>_count` convention (the error
count over the number of scored examples); without a dev file it selects on the training loss.
Dev32 accuracy after selecting on dev32 is optimistic; PET and GLM report on the full dev set.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import load_model_dir
from ..config import TrainConfig, steps_for_epochs
from ..families.glm import GlmConfig
from ..device import for_inference, resolve_device
from ..data.superglue import MASK, ClozeExample, load_superglue, superglue_file, task_metrics, task_name
from ..errors import CtxlmError
from ..models.glm import GlmModel, glm_tokens
from ..models.pretrained import PretrainedMixin
from ..objectives.glm import build_cloze_candidates
from ..training import TrainingInputs, TrainResult, collate, train
from . import RunOptions, ScratchModel, TaskData

__all__ = [
    "GlmClozeModel",
    "ClozeExamples",
    "cloze_loss",
    "score_candidates",
    "finetune_cloze",
    "evaluate_cloze",
    "predict_cloze",
    "fit_parts",
]


# ---------------------------------------------------------------------------------------- scoring
def candidate_row_scores(
    glm: GlmModel, input_ids, position_ids, block_position_ids, part_a_length, labels
) -> torch.Tensor:
    """log P(candidate | context) of each `build_cloze_candidates` row (N,): the sum of its label
    log-probabilities, all rows in one forward pass."""
    return glm.label_log_probs(input_ids, position_ids, block_position_ids, part_a_length, labels).sum(-1)


@torch.no_grad()
def score_candidates(
    model: GlmModel, examples: Sequence[dict[str, np.ndarray]], *, batch_size: int = 32
) -> torch.Tensor:
    """log P(candidate | context) of each example of `build_cloze_candidates` (GLM §2.3 / App. B:
    multi-token cloze answers), one forward pass per batch of `batch_size` examples. Returns a
    float32 tensor (len(examples),). Call `model.eval()` first."""
    device = next(model.parameters()).device
    keys = ("input_ids", "position_ids", "block_position_ids", "part_a_length", "labels")
    scores = []
    for start in range(0, len(examples), batch_size):
        chunk = [{k: e[k] for k in keys} for e in examples[start : start + batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk, model.config.pad_token_id).items()}
        scores.append(candidate_row_scores(model, **batch))
    return torch.cat(scores) if scores else torch.zeros(0)


def cloze_loss(scores: torch.Tensor, gold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over each example's candidates: scores (B, C) with -inf at padding, gold (B, C)
    boolean. Returns (nll (B,), has_gold (B,)); nll = -log sum_{g gold} softmax(scores)_g, 0 where
    an example has no gold candidate (WSC's negative rows)."""
    has_gold = gold.any(-1)
    # a stand-in gold for gold-less rows keeps logsumexp finite (and its gradient free of NaN)
    first = torch.zeros_like(gold)
    first[:, 0] = True
    safe = torch.where(has_gold[:, None], gold, first)
    log_probs = F.log_softmax(scores.float(), dim=-1)
    nll = -torch.logsumexp(log_probs.masked_fill(~safe, float("-inf")), dim=-1)
    return torch.where(has_gold, nll, torch.zeros_like(nll)), has_gold


@dataclass
class ClozeOutput:
    loss: torch.Tensor
    metrics: dict[str, torch.Tensor]  # cls_nll_sum, cls_tokens, cls_error_sum, cls_error_count
    scores: torch.Tensor  # (B, C), -inf at padding
    loss_sums: dict[str, torch.Tensor]  # {"cls": summed NLL} (see `models.losses.batch_loss`)


class GlmClozeModel(PretrainedMixin, nn.Module):
    """A GLM scoring cloze candidates (see the module docstring). `cfg_or_model` is a `GlmConfig`
    (a new backbone) or a `GlmModel`. `task`, `max_length` (tokens of a row, Part B included) and
    `score_eop` (also score the closing [eop] of multi-token answers) are saved in `head.json`."""

    def __init__(
        self,
        cfg_or_model: GlmConfig | GlmModel,
        *,
        task: str | None = None,
        max_length: int | None = None,
        score_eop: bool = False,
    ):
        super().__init__()
        if isinstance(cfg_or_model, GlmModel):
            self.glm = cfg_or_model
        elif isinstance(cfg_or_model, GlmConfig):
            self.glm = GlmModel(cfg_or_model)
        else:
            raise CtxlmError(f"cloze fine-tuning needs a GLM model, got {type(cfg_or_model).__name__}")
        self.config = self.glm.config
        self.task = task
        self.max_length = int(max_length or self.config.max_position_embeddings)
        if self.max_length > self.config.max_position_embeddings:
            raise CtxlmError(
                f"cloze max_length {self.max_length} exceeds the model's max_position_embeddings "
                f"{self.config.max_position_embeddings}"
            )
        self.score_eop = bool(score_eop)

    def head_config(self) -> dict:
        return {"type": "glm-cloze", "task": self.task, "max_length": self.max_length, "score_eop": self.score_eop}

    def candidate_scores(
        self,
        input_ids,
        position_ids,
        block_position_ids,
        part_a_length,
        candidate_mask,
        labels=None,
        candidate_ids=None,
    ) -> torch.Tensor:
        """Scores (B, C) of a collated `ClozeExamples` batch: rows (B, R, T), R = 1 with
        `candidate_ids` (single-token answers) or R = C with `labels` (one row per candidate)."""
        b, r, t = input_ids.shape
        flat = [x.reshape(b * r, t) for x in (input_ids, position_ids, block_position_ids)]
        if candidate_ids is not None:
            if r != 1:
                raise CtxlmError(f"single-token cloze batches have one row per example, got {r}")
            hidden = self.glm.hidden_states(*flat, part_a_length.reshape(b))
            sop = hidden[torch.arange(b, device=hidden.device), part_a_length.reshape(b)]  # [sop] follows Part A
            log_probs = F.log_softmax(self.glm.output_logits(sop).float(), dim=-1)
            scores = log_probs.gather(1, candidate_ids)
        else:
            keep = candidate_mask.reshape(b * r)
            rows = candidate_row_scores(
                self.glm, *(x[keep] for x in flat), part_a_length.reshape(b * r)[keep], labels.reshape(b * r, t)[keep]
            )
            scores = rows.new_zeros(b * r).masked_scatter(keep, rows).view(b, r)
        return scores.masked_fill(~candidate_mask, float("-inf"))

    def target_counts(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scored examples of a batch (those with a gold candidate), as `forward`'s `cls_tokens`."""
        return {"cls": batch["gold"].any(-1).sum()}

    def forward(
        self,
        input_ids,
        position_ids,
        block_position_ids,
        part_a_length,
        candidate_mask,
        gold,
        labels=None,
        candidate_ids=None,
        **ignored,
    ) -> ClozeOutput:
        scores = self.candidate_scores(
            input_ids, position_ids, block_position_ids, part_a_length, candidate_mask, labels, candidate_ids
        )
        nll, has_gold = cloze_loss(scores, gold)
        count = has_gold.sum()
        wrong = (~gold.gather(1, scores.argmax(-1, keepdim=True)).squeeze(1)) & has_gold
        metrics = {
            "cls_nll_sum": nll.sum().detach(),
            "cls_tokens": count.detach(),
            "cls_error_sum": wrong.sum().float(),
            "cls_error_count": count.detach(),
        }
        return ClozeOutput(
            loss=nll.sum() / count.clamp(min=1), metrics=metrics, scores=scores.detach(), loss_sums={"cls": nll.sum()}
        )


# ---------------------------------------------------------------------------------------- data
def fit_parts(parts: list[tuple[list[int], bool]], budget: int, source: str = "") -> list[int]:
    """Concatenate tokenized pattern parts into at most `budget` tokens by cutting tokens from the
    end of the longest shortenable part, one at a time (PET/GLM cut shortenable text only; taking
    the longest first cuts the passage before the question). The blank is never shortenable."""
    parts = [(list(ids), shortenable) for ids, shortenable in parts]
    excess = sum(len(ids) for ids, _ in parts) - budget
    while excess > 0:
        lengths = [len(ids) if shortenable else 0 for ids, shortenable in parts]
        longest = int(np.argmax(lengths))
        if lengths[longest] == 0:
            raise CtxlmError(
                f"{source}: the pattern's fixed text and the longest answer do not fit in the "
                f"cloze max_length ({excess} tokens too many)"
            )
        cut = min(excess, max(1, lengths[longest] - sorted(lengths)[-2]))
        parts[longest] = (parts[longest][0][:-cut], True)
        excess -= cut
    return [token for ids, _ in parts for token in ids]


class ClozeExamples:
    """Tokenized cloze examples as the training loop reads them: example i is all its candidate
    rows, padded to one length (collate pads across examples), plus `candidate_mask` and `gold`.

    `single_token` (default: every example has a verbalizer and every verbalizer word is one
    token) picks the one-row layout with `candidate_ids`; otherwise each candidate has its row.
    Candidates are encoded with a leading space, as THUDM/GLM does (it matters for byte-level
    BPE vocabularies, not for WordPiece). Rows hold at most `max_length` tokens: shortenable
    pattern parts are cut (`fit_parts`) to leave room for [CLS], [eos] and the longest Part B.
    """

    def __init__(
        self,
        examples: Sequence[ClozeExample],
        tokenizer,
        config: GlmConfig,
        max_length: int,
        *,
        single_token: bool | None = None,
        score_eop: bool = False,
    ):
        self.examples, self.tok, self.score_eop = list(examples), glm_tokens(config), score_eop
        self.pad = config.pad_token_id
        candidates = [[tokenizer.encode(" " + c) for c in e.candidates] for e in self.examples]
        for e, ids in zip(self.examples, candidates):
            if not ids or any(len(c) == 0 for c in ids):
                raise CtxlmError(f"{e.source}: a candidate answer of {e.candidates} has no tokens")
        if single_token is None:
            single_token = all(e.candidate_labels is not None for e in self.examples) and all(
                len(c) == 1 for ids in candidates for c in ids
            )
        self.single_token = single_token
        self.candidates = candidates
        self.contexts = []
        for e, ids in zip(self.examples, candidates):
            part_b = 1 if single_token else max(map(len, ids)) + int(score_eop)  # [sop] c1..c(k-1) (+ ck)
            parts = [
                ([self.tok.mask] if text == MASK else tokenizer.encode(text), shortenable)
                for text, shortenable in e.parts
            ]
            self.contexts.append(fit_parts(parts, max_length - 2 - part_b, e.source))  # [CLS], [eos]

    def __len__(self) -> int:
        return len(self.examples)

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        candidates, count = self.candidates[index], len(self.candidates[index])
        gold = np.zeros(count, dtype=bool)
        gold[list(self.examples[index].gold)] = True
        out = {"candidate_mask": np.ones(count, dtype=bool), "gold": gold}
        if self.single_token:
            rows = build_cloze_candidates(self.contexts[index], [candidates[0]], self.tok)
            out["candidate_ids"] = np.array([c[0] for c in candidates], dtype=np.int64)
            keys = ("input_ids", "position_ids", "block_position_ids")
        else:
            rows = build_cloze_candidates(self.contexts[index], candidates, self.tok, score_eop=self.score_eop)
            keys = ("input_ids", "position_ids", "block_position_ids", "labels")
        width = max(len(row["input_ids"]) for row in rows)
        for key in keys:
            fill = -100 if key == "labels" else self.pad
            out[key] = np.full((len(rows), width), fill, dtype=np.int64)
            for i, row in enumerate(rows):
                out[key][i, : len(row[key])] = row[key]
        out["part_a_length"] = np.array([int(row["part_a_length"]) for row in rows], dtype=np.int64)
        return out


@torch.no_grad()
def predict_cloze(model: GlmClozeModel, examples: ClozeExamples, *, batch_size: int = 8) -> list[np.ndarray]:
    """The candidate scores of every example (a float32 array per example)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(examples), batch_size):
        items = [examples.example(i) for i in range(start, min(len(examples), start + batch_size))]
        batch = {k: v.to(device) for k, v in collate(items, examples.pad).items()}
        scores = model.candidate_scores(**{k: v for k, v in batch.items() if k != "gold"}).float().cpu().numpy()
        out.extend(row[: len(item["gold"])] for row, item in zip(scores, items))
    model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------- entry points
def _as_cloze_model(model, source) -> GlmClozeModel:
    if isinstance(model, GlmClozeModel):
        return model
    if isinstance(model, GlmModel):
        return GlmClozeModel(model)
    raise CtxlmError(f"{source}: cloze tasks need a GLM model directory, got a {type(model).__name__}")


def evaluate_cloze(
    model_dir: str | Path,
    dataset: str | None,
    data_dir: str | Path,
    split: str = "dev32",
    *,
    batch_size: int = 8,
    limit: int | None = None,
    max_length: int | None = None,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
) -> dict:
    """SuperGLUE metrics (×100) of a model directory on one split (its first `limit` rows, when
    given): accuracy for every task, CB's macro-F1 (`f1`), MultiRC's `f1a` and `em`, ReCoRD's `f1`
    and `em`. A plain GLM directory is scored zero-shot; a model fine-tuned on another task (its
    head.json's `task`) is scored with a warning; `dataset` None scores the task it was fine-tuned
    on. Returns the metrics plus `examples`. `device` and `bf16`: see `ctxlm.device`."""
    device = resolve_device(device)
    model, tokenizer = load_model_dir(model_dir, device=device)
    if tokenizer is None:
        raise CtxlmError(f"{model_dir}: the model directory has no tokenizer.json")
    model = for_inference(_as_cloze_model(model, model_dir), device, bf16)
    if dataset is None:  # the task it was fine-tuned on, as classify's default
        if model.task is None:
            raise CtxlmError(
                f"{model_dir}: a GLM without a cloze task in head.json (not fine-tuned with "
                "--task cloze); give --dataset superglue/<Task>"
            )
        dataset = model.task
    if model.task is not None and model.task != task_name(dataset):
        warnings.warn(f"{model_dir}: fine-tuned on superglue/{model.task}, scored on superglue/{task_name(dataset)}")
    max_length = max_length or model.max_length
    if max_length > model.config.max_position_embeddings:
        raise CtxlmError(
            f"--max-length {max_length} exceeds the model's max_position_embeddings "
            f"{model.config.max_position_embeddings}"
        )
    rows = load_superglue(dataset, data_dir, split)[:limit]
    examples = ClozeExamples(rows, tokenizer, model.config, max_length, score_eop=model.score_eop)
    predicted = [int(np.argmax(s)) for s in predict_cloze(model, examples, batch_size=batch_size)]
    return {"examples": len(rows), **percent(task_metrics(rows, predicted))}


def percent(metrics: dict[str, float]) -> dict[str, float]:
    """Scores ×100, as SuperGLUE reports them (and `ctxlm.metrics`, GLUE's classification)."""
    return {k: 100 * v for k, v in metrics.items()}


def finetune_cloze(
    init: str | Path | None,
    data: TaskData,
    out_dir: str | Path,
    train_config: TrainConfig,
    *,
    max_length: int | None = None,
    score_eop: bool = False,
    epochs: int | None = None,
    train_split: str = "train",
    run: RunOptions = RunOptions(),
    scratch: ScratchModel = ScratchModel(),
) -> TrainResult:
    """Fine-tune a GLM on a SuperGLUE task as cloze questions with the one training loop.

    `init` is a GLM (or GLM cloze) model directory; or pass `scratch` (a model config and a tokenizer)
    to start from scratch. `data` names the dataset, its data folder and the dev split (`split`;
    default dev32). Without `train_config.select_metric`, selects on the dev split's error rate
    (`valid/cls_error`), or on the training loss when there is no dev file. At the end the
    selected model is scored on the dev split; its metrics join `final_metrics` as
    `<split>/<name>` and are written to `out_dir/eval_<split>.json`. `epochs` (THUDM/GLM's
    `--epochs`) replaces `train_config.max_steps` with that many passes over the training examples.
    `run`: how the run starts and where (`RunOptions`: resume, overwrite, allow_config_change, device).
    """
    from .seq2seq import starting_model

    out_dir, data_dir, dev_split = Path(out_dir), data.data_dir, data.split or "dev32"
    task = task_name(data.dataset)
    model, tokenizer = starting_model(out_dir, run.resume, init, scratch.config, scratch.tokenizer)
    model = _as_cloze_model(model, init or out_dir)
    model = GlmClozeModel(
        model.glm, task=task, max_length=max_length or model.max_length, score_eop=score_eop or model.score_eop
    )

    make = lambda rows: ClozeExamples(  # noqa: E731
        rows,
        tokenizer,
        model.config,
        model.max_length,
        score_eop=model.score_eop,
    )
    train_examples = make(load_superglue(task, data_dir, train_split, seed=train_config.seed))
    dev_rows = None
    if superglue_file(task, data_dir, dev_split).is_file():
        dev_rows = load_superglue(task, data_dir, dev_split)
    cfg = train_config
    if epochs is not None:
        cfg = steps_for_epochs(cfg, epochs, len(train_examples), "cloze epochs")
    if dev_rows is not None:
        valid_examples = make(dev_rows)
        if cfg.select_metric is None:
            cfg = dataclasses.replace(cfg, select_metric="valid/cls_error")
    else:
        valid_examples = train_examples  # no dev file: select on the training loss
        if cfg.select_metric is None:
            cfg = dataclasses.replace(cfg, select_metric="valid/cls_loss")
    run_info = {
        "task": f"cloze/{task}",
        "init": str(init) if init else None,
        "data_dir": str(data_dir),
        "train_examples": len(train_examples),
        "single_token": train_examples.single_token,
        "head": model.head_config(),
    }
    result = train(
        model,
        TrainingInputs(train_examples, tokenizer.pad_id, valid_examples),
        cfg,
        out_dir,
        tokenizer=tokenizer,
        run_info=run_info,
        run=run,
    )
    if dev_rows is not None:
        predicted = [int(np.argmax(s)) for s in predict_cloze(model, valid_examples, batch_size=cfg.batch_size)]
        scores = {"examples": len(dev_rows), **percent(task_metrics(dev_rows, predicted))}
        (out_dir / f"eval_{dev_split}.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        result.final_metrics.update({f"{dev_split}/{k}": v for k, v in scores.items() if isinstance(v, float)})
    return result
