"""UniLMv2 extractive question answering on SQuAD 1.1 (§4.2, Table 2; Table 9's hyperparameters).

"The input is concatenated as [SOS] Question [EOS] Passage [EOS]. We add a classification layer on
the pre-trained PMLM, which predicts whether each token is the start or end position of an answer
span" (§4.2): `UnilmQuestionAnswering`. What the paper leaves out follows BERT's run_squad.py:

* Windows. The question is cut to `max_query_length` tokens (64); a passage too long for
  `max_length` (384) is read in overlapping windows whose starts are `doc_stride` (128) tokens
  apart, the last one ending at the passage's end, so every passage token is in some window.
* Labels. The answer's character span (`answer_start`, `len(text)`, surrounding whitespace
  dropped) maps to the first token ending after its start and the last token starting before its
  end, by the tokenizer's character offsets. A training window that does not hold the whole answer
  points start and end at [SOS] (index 0), BERT's convention for SQuAD 1.1 too: the model learns
  low passage scores where the answer is absent, which makes scores of different windows
  comparable. So [SOS] is in the answer mask of every window; it is never predicted.
* Inference. In every window, the best span i ≤ j < i + `max_answer_length` (30) of passage tokens
  maximizing start[i] + end[j], where token i must have its maximal context in that window (BERT's
  `_check_is_max_context`: min(left, right) context + 0.01 · window length); the best over the
  question's windows wins, and its text is the original context between the tokens' character
  offsets.
* Scores: the official SQuAD v1.1 evaluate-v1.1.py, exact match and token F1 after normalization
  (lowercase, no punctuation, no articles a/an/the, single spaces), max over the gold answers,
  averaged over questions, ×100.

Table 9 (SQuAD column): batch 32, learning rate 2e-5, linear schedule, 10% warm-up, weight decay
0.01, 4 epochs. The dev set's validation loss uses each question's first answer.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import build_model, load_model_dir, read_model_config, resume_checkpoint
from .classification import epochs_train_config, load_backbone, tokens_of
from ..config import TrainConfig
from ..families.unilm import UnilmConfig
from ..device import for_inference, resolve_device
from ..errors import CtxlmError, not_utf8
from ..metrics import squad_exact_match, squad_f1
from ..models.unilm import UnilmQuestionAnswering
from ..tokenization import TextTokenizer
from ..training import TrainingInputs, TrainResult, collate, distributed_context, train
from . import RunOptions, ScratchModel, TaskData

SETTINGS_FILE = "qa.json"  # the window settings, beside the fine-tuned model


@dataclass(frozen=True)
class QaSettings:
    """BERT's run_squad.py defaults (the paper gives none but Table 9's)."""

    max_length: int = 384  # [SOS] question [EOS] window [EOS]
    doc_stride: int = 128  # tokens between the starts of consecutive windows
    max_query_length: int = 64
    max_answer_length: int = 30  # tokens, at inference

    def __post_init__(self):
        if min(self.doc_stride, self.max_query_length, self.max_answer_length) < 1:
            raise CtxlmError("doc_stride, max_query_length and max_answer_length must be positive")
        if self.max_length - self.max_query_length - 3 < 1:
            raise CtxlmError(
                f"max_length {self.max_length} leaves no room for the passage next to a "
                f"{self.max_query_length}-token question and 3 special tokens"
            )


# ------------------------------------------------------------------------------ SQuAD 1.1 JSON
@dataclass(frozen=True)
class SquadQuestion:
    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]  # (text, answer_start) pairs; the first one trains


def _field(obj, key: str, kind: type, file, path: str):
    """`obj[key]` of type `kind` (`path` = obj's JSON path), else a CtxlmError naming file and path."""
    if not isinstance(obj, dict):
        raise CtxlmError(f"{file}: {path or 'the document'} must be a JSON object, got {type(obj).__name__}")
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        got = "missing" if key not in obj else f"got {type(value).__name__}"
        raise CtxlmError(f"{file}: {path + '.' if path else ''}{key} must be {kind.__name__}, {got}")
    return value


def read_squad(path: str | Path) -> list[SquadQuestion]:
    """The questions of a SQuAD 1.1 JSON file ({"data": [{"paragraphs": [{"context", "qas": [{"id",
    "question", "answers": [{"text", "answer_start"}]}]}]}]}). Errors name the file and the JSON path
    (the line for invalid JSON). Every answer's `answer_start` must point at its text in the
    context; ids must be unique; unanswerable (SQuAD 2.0) questions are refused."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except OSError as error:
        raise CtxlmError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise not_utf8(path, detail=f" (byte {error.start + 1})") from None
    except json.JSONDecodeError as error:
        raise CtxlmError(f"{path}:{error.lineno}: invalid JSON ({error.msg} at column {error.colno})") from None
    questions, seen = [], set()
    for i, article in enumerate(_field(document, "data", list, path, "")):
        for j, paragraph in enumerate(_field(article, "paragraphs", list, path, f"data[{i}]")):
            at_p = f"data[{i}].paragraphs[{j}]"
            context = _field(paragraph, "context", str, path, at_p)
            for k, qa in enumerate(_field(paragraph, "qas", list, path, at_p)):
                at_q = f"{at_p}.qas[{k}]"
                qid = qa.get("id") if isinstance(qa, dict) else None
                if not (isinstance(qid, int) and not isinstance(qid, bool)):
                    qid = _field(qa, "id", str, path, at_q)
                qid = str(qid)
                if qid in seen:
                    raise CtxlmError(f"{path}: {at_q}.id: duplicate question id {qid!r}")
                seen.add(qid)
                question = _field(qa, "question", str, path, at_q)
                if not question.strip():
                    raise CtxlmError(f"{path}: {at_q}.question is empty (id {qid})")
                answers = _field(qa, "answers", list, path, at_q)
                if not answers:
                    reason = "an unanswerable (SQuAD 2.0) question" if qa.get("is_impossible") else "empty"
                    raise CtxlmError(f"{path}: {at_q}.answers is {reason} (id {qid}); SQuAD 1.1 needs answers")
                spans = []
                for a, answer in enumerate(answers):
                    at_a = f"{at_q}.answers[{a}]"
                    text = _field(answer, "text", str, path, at_a)
                    start = _field(answer, "answer_start", int, path, at_a)
                    if not text.strip():
                        raise CtxlmError(f"{path}: {at_a}.text is empty (id {qid})")
                    if start < 0 or context[start : start + len(text)] != text:
                        raise CtxlmError(
                            f"{path}: {at_a}.answer_start {start} does not point at {text!r} in the context (id {qid})"
                        )
                    spans.append((text, start))
                questions.append(SquadQuestion(qid, question, context, tuple(spans)))
    if not questions:
        raise CtxlmError(f"{path}: no questions")
    return questions


# ------------------------------------------------------------------------------ features
def char_span_to_tokens(offsets: np.ndarray, start: int, end: int) -> tuple[int, int] | None:
    """First token ending after `start` and last token starting before `end` (character offsets
    (n, 2), non-decreasing), or None if no token lies inside [start, end)."""
    first = int(np.searchsorted(offsets[:, 1], start, side="right"))
    last = int(np.searchsorted(offsets[:, 0], end, side="left")) - 1
    return (first, last) if first <= last else None


def window_starts(num_tokens: int, size: int, stride: int) -> list[int]:
    """Starts of the windows of `size` tokens, `min(stride, size)` apart, the last reaching the end."""
    starts, start = [0], 0
    while start + size < num_tokens:
        start += min(stride, size)
        starts.append(start)
    return starts


class QaFeatures:
    """SQuAD questions as windowed model inputs (`ctxlm.training.Examples`); one feature a window.

    `windows` rows: (question index, first passage token, end passage token (exclusive), start, end
    label in the input, 0 = [SOS] when the window lacks the answer). `answer_tokens[q]` is the
    first answer's passage token span, None when no token covers it (the tokenizer's normalizer
    dropped all its characters): `skipped` counts those questions, and with `training` they get no
    windows (BERT skips them too; all their windows would point at [SOS])."""

    def __init__(
        self,
        cfg: UnilmConfig,
        tokenizer: TextTokenizer,
        questions: Sequence[SquadQuestion],
        settings: QaSettings = QaSettings(),
        training: bool = False,
    ):
        self.tok, self.questions, self.settings = tokens_of(cfg), list(questions), settings
        self.question_ids = [
            ids[: settings.max_query_length] for ids in tokenizer.encode_batch([q.question for q in self.questions])
        ]
        contexts = list(dict.fromkeys(q.context for q in self.questions))
        encodings = tokenizer.backend.encode_batch(contexts, add_special_tokens=False)
        passages = {
            c: (np.asarray(e.ids, np.int64), np.asarray(e.offsets, np.int64).reshape(-1, 2))
            for c, e in zip(contexts, encodings)
        }
        self.passages = [passages[q.context] for q in self.questions]
        self.answer_tokens, rows, self.first_window = [], [], []
        for index, question in enumerate(self.questions):
            self.first_window.append(len(rows))
            ids, offsets = self.passages[index]
            text, start = question.answers[0]
            first = start + len(text) - len(text.lstrip())
            span = char_span_to_tokens(offsets, first, first + len(text.strip()))
            self.answer_tokens.append(span)
            if training and span is None:
                continue
            size = settings.max_length - len(self.question_ids[index]) - 3
            passage_at = len(self.question_ids[index]) + 2
            for ws in window_starts(len(ids), size, settings.doc_stride):
                we = min(ws + size, len(ids))
                inside = span is not None and ws <= span[0] and span[1] < we
                labels = (span[0] - ws + passage_at, span[1] - ws + passage_at) if inside else (0, 0)
                rows.append((index, ws, we, *labels))
        self.windows = np.asarray(rows, dtype=np.int64).reshape(-1, 5)
        self.first_window.append(len(rows))  # question q's features: first_window[q] .. first_window[q + 1]
        self.skipped = sum(span is None for span in self.answer_tokens)

    def __len__(self) -> int:
        return len(self.windows)

    def passage_start(self, feature: int) -> int:
        """Index of the window's first passage token in the input (after [SOS] question [EOS])."""
        return len(self.question_ids[self.windows[feature, 0]]) + 2

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        q, ws, we, start, end = (int(v) for v in self.windows[index])
        question, passage = self.question_ids[q], self.passages[q][0][ws:we]
        tok = self.tok
        ids = np.concatenate([[tok.sos], question, [tok.eos], passage, [tok.eos]]).astype(np.int64)
        n, passage_at = len(ids), len(question) + 2
        answer_mask = np.zeros(n, dtype=bool)
        answer_mask[0] = True  # [SOS]: the label of windows without the answer
        answer_mask[passage_at : passage_at + len(passage)] = True
        return {
            "input_ids": ids,
            "position_ids": np.arange(n, dtype=np.int64),
            "token_type_ids": (np.arange(n) >= passage_at).astype(np.int64),
            "attention_mask": np.ones(n, dtype=bool),  # bidirectional; 1-D key padding mask
            "answer_mask": answer_mask,
            "start_positions": np.asarray(start, dtype=np.int64),
            "end_positions": np.asarray(end, dtype=np.int64),
        }

    def max_context_windows(self, question: int) -> np.ndarray:
        """For each passage token of `question`, the feature index in which it has the most context."""
        features = range(self.first_window[question], self.first_window[question + 1])
        best = np.full(len(self.passages[question][0]), -1, dtype=np.int64)
        best_score = np.full(len(best), -np.inf)
        for f in features:
            _, ws, we = (int(v) for v in self.windows[f, :3])
            positions = np.arange(ws, we)
            score = np.minimum(positions - ws, we - 1 - positions) + 0.01 * (we - ws)
            better = score > best_score[ws:we]
            best[ws:we][better], best_score[ws:we][better] = f, score[better]
        return best

    def span_text(self, question: int, first: int, last: int) -> str:
        """The original context between passage tokens `first` and `last` (inclusive)."""
        offsets = self.passages[question][1]
        return self.questions[question].context[offsets[first, 0] : offsets[last, 1]]


def best_spans(
    features: QaFeatures,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    max_answer_length: int | None = None,
) -> dict[str, str]:
    """Question id → predicted answer text, from each feature's start / end scores over its input."""
    limit = max_answer_length or features.settings.max_answer_length
    best: dict[int, tuple[float, int, int]] = {}
    owners = {q: features.max_context_windows(q) for q in range(len(features.questions))}
    for f, (q, ws, we, _, _) in enumerate(features.windows):
        at = features.passage_start(f)
        n = int(we - ws)
        if n == 0:  # a passage of no tokens
            continue
        starts = np.asarray(start_logits[f], np.float64)[at : at + n]
        ends = np.asarray(end_logits[f], np.float64)[at : at + n]
        i, j = np.indices((n, n))
        allowed = (j >= i) & (j - i < limit) & (owners[int(q)][ws:we] == f)[:, None]
        scores = np.where(allowed, starts[:, None] + ends[None, :], -np.inf)
        flat = int(np.argmax(scores))
        score = float(scores.flat[flat])
        if score > best.get(int(q), (-np.inf,))[0]:
            best[int(q)] = (score, int(ws) + flat // n, int(ws) + flat % n)
    return {
        question.id: features.span_text(q, *best[q][1:]) if q in best else ""
        for q, question in enumerate(features.questions)
    }


@torch.no_grad()
def predict_answers(model: UnilmQuestionAnswering, features: QaFeatures, batch_size: int = 32) -> dict[str, str]:
    """Question id → predicted answer text."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    starts, ends = [], []
    for begin in range(0, len(features), batch_size):
        indices = range(begin, min(len(features), begin + batch_size))
        batch = collate([features.example(i) for i in indices], features.tok.pad)
        for label in ("start_positions", "end_positions"):
            batch.pop(label)
        logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
        starts.extend(logits[:, :, 0])  # padded: `best_spans` reads the passage positions only
        ends.extend(logits[:, :, 1])
    model.train(was_training)
    return best_spans(features, starts, ends)


# ------------------------------------------------------------------------------ SQuAD v1.1 metric
def squad_scores(predictions: Mapping[str, str], questions: Sequence[SquadQuestion]) -> dict[str, float]:
    """Exact match and F1 (×100), each the max over a question's gold answers, averaged over all
    questions (an unanswered question scores 0, as in evaluate-v1.1.py)."""
    if not questions:
        raise CtxlmError("no questions to score")
    em = f1 = 0.0
    for question in questions:
        if question.id not in predictions:
            continue
        golds = [text for text, _ in question.answers]
        em += max(squad_exact_match(predictions[question.id], g) for g in golds)
        f1 += max(squad_f1(predictions[question.id], g) for g in golds)
    return {"exact_match": 100 * em / len(questions), "f1": 100 * f1 / len(questions)}


# ------------------------------------------------------------------------------ fine-tuning
def squad_train_config(num_train: int, num_valid: int, overrides: Mapping | None = None) -> TrainConfig:
    """Table 9's SQuAD settings: 4 epochs over the windows, selecting on the dev `qa_loss`."""
    return epochs_train_config(num_train, num_valid, 4, "valid/qa_loss", overrides)


def finetune_squad(
    init: str | Path | None,
    data: TaskData,
    out_dir: str | Path,
    train_config: TrainConfig | None = None,
    *,
    train_overrides: Mapping | None = None,
    settings: QaSettings = QaSettings(),
    run: RunOptions = RunOptions(),
    scratch: ScratchModel = ScratchModel(),
) -> TrainResult:
    """Fine-tune UniLMv2 model directory `init` (or `scratch`, a new model of its config and tokenizer)
    for extractive QA on a SQuAD 1.1 train file (`data.train`); with `data.valid`, select on its loss
    and finally score it (`final_metrics` gain `dev/exact_match`, `dev/f1`; also
    `out_dir/eval_dev.json`). `data.train_limit` / `valid_limit` take the first questions of each
    file. `run`: how the run starts and where (`RunOptions`: resume, overwrite, allow_config_change,
    device)."""
    out_dir, train_file, valid_file = Path(out_dir), data.train, data.valid
    checkpoint = resume_checkpoint(out_dir, run.resume)
    if checkpoint is not None:  # the weights come from the checkpoint (train(resume=True))
        backbone, tokenizer = build_model(read_model_config(checkpoint)), TextTokenizer.load(checkpoint)
    else:
        backbone, tokenizer = load_backbone(init, scratch.config, scratch.tokenizer)
    if settings.max_length > backbone.config.max_position_embeddings:
        settings = dataclasses.replace(settings, max_length=backbone.config.max_position_embeddings)

    train_questions = read_squad(train_file)[: data.train_limit]
    train_features = QaFeatures(backbone.config, tokenizer, train_questions, settings, training=True)
    valid_questions = read_squad(valid_file)[: data.valid_limit] if valid_file is not None else []
    valid_features = QaFeatures(backbone.config, tokenizer, valid_questions, settings) if valid_questions else None
    cfg = train_config or squad_train_config(len(train_features), len(valid_features or ()), train_overrides)
    if train_config is not None and train_overrides:
        cfg = dataclasses.replace(train_config, **train_overrides)

    torch.manual_seed(cfg.seed)  # the head's initialization
    model = UnilmQuestionAnswering(backbone)
    run_info = {
        "task": "squad",
        "init": str(init) if init else None,
        "train_file": str(train_file),
        "valid_file": str(valid_file) if valid_file else None,
        "settings": dataclasses.asdict(settings),
        "train_questions": len(train_questions),
        "train_windows": len(train_features),
        "train_unmappable_answers": train_features.skipped,
    }
    result = train(
        model,
        TrainingInputs(train_features, tokenizer.pad_id, valid_features),
        cfg,
        out_dir,
        tokenizer=tokenizer,
        run_info=run_info,
        side_files={SETTINGS_FILE: dataclasses.asdict(settings)},
        run=run,
    )
    if valid_features is not None and distributed_context()[0] == 0:
        scores = squad_scores(predict_answers(model, valid_features, cfg.batch_size), valid_questions)
        (out_dir / "eval_dev.json").write_text(json.dumps(scores, indent=2) + "\n", encoding="utf-8")
        result.final_metrics.update({f"dev/{k}": v for k, v in scores.items()})
    return result


def load_settings(model_dir: str | Path) -> QaSettings:
    path = Path(model_dir) / SETTINGS_FILE
    if not path.is_file():
        return QaSettings()
    try:
        return QaSettings(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError) as error:
        raise CtxlmError(f"{path}: invalid QA settings ({error})") from None


def evaluate_squad(
    model_dir: str | Path,
    file: str | Path,
    *,
    batch_size: int = 32,
    limit: int | None = None,
    max_answer_length: int | None = None,
    predictions_out: str | Path | None = None,
    device: str | torch.device | None = "auto",
    bf16: bool = False,
) -> dict[str, float]:
    """SQuAD v1.1 exact match and F1 (×100) of a fine-tuned QA model directory on a SQuAD 1.1 JSON
    file (its first `limit` questions). `predictions_out` gets {question id: answer} as JSON (the
    official script's prediction file). `device` and `bf16`: see `ctxlm.device`.

    Args:
        predictions_out: squad: write {id: answer} JSON here
    """
    device = resolve_device(device)
    model, tokenizer = load_model_dir(model_dir, device=device)
    model = for_inference(model, device, bf16)
    if not isinstance(model, UnilmQuestionAnswering):
        raise CtxlmError(
            f"{model_dir}: not an extractive QA model (no unilm-qa head.json); fine-tune one with --task squad"
        )
    if tokenizer is None:
        raise CtxlmError(f"{model_dir}: the model directory has no tokenizer.json")
    settings = load_settings(model_dir)
    if max_answer_length is not None:
        settings = dataclasses.replace(settings, max_answer_length=max_answer_length)
    questions = read_squad(file)[:limit]
    predictions = predict_answers(model, QaFeatures(model.config, tokenizer, questions, settings), batch_size)
    if predictions_out is not None:
        Path(predictions_out).write_text(json.dumps(predictions, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return squad_scores(predictions, questions)
