"""Text in, text out: a model directory plus its tokenizer, for scripts and the CLI.

    from ctxlm.predict import Seq2SeqPredictor
    from ctxlm.config import GenerationConfig
    predictor = Seq2SeqPredictor.load("runs/gigaword", device="auto", bf16=False)
    predictor.generate(["the actor bought the car in 1962 ."])  # the model's saved decoding settings
    predictor.generate(texts, GenerationConfig(num_beams=3))  # the same, but 3 beams
    predictor.generate(texts, num_beams=3, max_new_tokens=20)  # the same, 3 beams and 20 tokens
    predictor.perplexity(sources, targets)

Works for every family (PALM, GLM, UniLMv2): the input layout comes from `ctxlm.layouts`. The model
and every batch live on `device` ("auto": CUDA when available, see `ctxlm.device`); `bf16` runs
inference with bfloat16 weights.
A fine-tuned model directory may carry `generation.json` (its recipe's decoding settings), used
as the default decoding configuration; a model built in Python may carry them as its
`generation_config` (which `save_pretrained` writes). A `GenerationConfig` given to `generate`
changes only the fields its constructor was given (`GenerationConfig.with_overrides`).
"""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from .checkpoint import load_model_dir, resolve_model_dir
from .config import GenerationConfig, load_generation_config
from .device import for_inference, resolve_device
from .errors import CtxlmError
from .generation import generate
from .layouts import decoding_source_budget, pair_example, prompt_example
from .prediction_file import SORT_WINDOW, write_predictions
from .training import collate

SORT_PREFIX_CHARS = 16_384  # characters of a source tokenized to rank it by length


# the task heads that do not generate (head.json's type): what they are, and the task that scores them
SCORING_HEADS = {
    "unilm-classifier": ("a classifier", "classify"),
    "unilm-qa": ("an extractive QA model", "squad"),
    "glm-cloze": ("a cloze model", "cloze"),
}


def check_generates(model, source: str = "the model") -> None:
    """Refuse, in one line naming what to use instead, a model without the decoding protocol (a
    classifier, an extractive QA or a cloze model)."""
    if hasattr(model, "start_decoding"):
        return
    head = model.head_config().get("type") if hasattr(model, "head_config") else None
    kind, task = SCORING_HEADS.get(head, (f"a {type(model).__name__}", None))
    instead = (
        f"score it with `ctxlm evaluate --task {task} --model {source}` (Python: the task's evaluate "
        f"function in ctxlm.tasks)"
        if task
        else "give a seq2seq model (PALM, GLM or UniLMv2)"
    )
    raise CtxlmError(f"{source}: {kind} ({type(model).__name__}), which does not generate text; {instead}")


def _batches(n: int, size: int, progress: bool, desc: str):
    starts = range(0, n, size)
    if progress:
        from tqdm.auto import tqdm

        return tqdm(starts, desc=desc, unit="batch")
    return starts


class Seq2SeqPredictor:
    """Generation and scoring with any ctxlm model."""

    def __init__(
        self,
        model,
        tokenizer,
        device: str | torch.device | None = "auto",
        *,
        bf16: bool = False,
        max_source_tokens: int | None = None,
        generation: GenerationConfig | None = None,
        lexicon=None,
    ):
        """A predictor of `model` on `device` (`ctxlm.device`); decoding defaults to `generation`, else the
        model's own settings, else `GenerationConfig()`.

        Args:
            max_source_tokens: truncate sources to this many tokens (default: the model's positions)
        """
        if tokenizer is None:
            raise CtxlmError("the model directory has no tokenizer.json")
        check_generates(model)
        self.device = resolve_device(device)
        self.model, self.tokenizer = for_inference(model, self.device, bf16), tokenizer
        self.max_source_tokens = max_source_tokens or model.config.max_position_embeddings
        self.default_generation = generation or getattr(model, "generation_config", None) or GenerationConfig()
        accepted = inspect.signature(model.start_decoding).parameters
        self._prompt_keys = {k for k in accepted if k not in ("num_beams", "max_length")}
        self.continuation = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=self.device)
        self.continuation[[i for i in tokenizer.continuation_ids() if i < model.config.vocab_size]] = True
        self.word_start = torch.zeros(model.config.vocab_size, dtype=torch.bool, device=self.device)
        self.word_start[[i for i in tokenizer.lettered_word_start_ids() if i < model.config.vocab_size]] = True
        self.lexicon = lexicon  # a `WordLexicon`: words of several pieces only as it (or the source) has them

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = "auto", **options) -> "Seq2SeqPredictor":
        """The predictor of a model directory on `device`; `options` as `Seq2SeqPredictor`'s.

        Args:
            directory: the model directory (with its tokenizer and generation.json)
        """
        device = resolve_device(device)
        model, tokenizer = load_model_dir(directory, device=device)
        check_generates(model, str(directory))
        options.setdefault("generation", load_generation_config(resolve_model_dir(directory)))
        return cls(model, tokenizer, device, **options)

    def _collate(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in collate(examples, self.tokenizer.pad_id).items()}

    def generate(
        self,
        texts: Sequence[str],
        cfg: GenerationConfig | None = None,
        batch_size: int = 16,
        progress: bool = False,
        **overrides,
    ) -> list[str]:
        """Decode each source text with the model's decoding settings, where `cfg` (the fields its
        constructor was given) and then `overrides` (GenerationConfig fields) replace them.

        Args:
            texts: the source texts (ctxlm generate: one)
        """
        cfg = self.default_generation.with_overrides(cfg, **overrides)
        sources = self.tokenizer.encode_batch(list(texts))
        if self.lexicon is not None:
            for source in sources:
                self.lexicon.add(source)  # a source's own words may be copied
        max_source = decoding_source_budget(self.model.config, self.max_source_tokens, cfg.max_new_tokens)
        outputs: list[str] = []
        for start in _batches(len(sources), batch_size, progress, "generate"):
            batch = self._collate(
                [prompt_example(self.model.config, s, max_source) for s in sources[start : start + batch_size]]
            )
            input_ids = batch.pop("input_ids")
            mask = input_ids.ne(self.tokenizer.pad_id)  # the prompt's own layout masks are the model's business
            prompt = {k: v for k, v in batch.items() if k in self._prompt_keys and k != "attention_mask"}
            result = generate(
                self.model,
                input_ids,
                mask,
                cfg,
                continuation=self.continuation,
                word_start=self.word_start,
                lexicon=self.lexicon,
                **prompt,
            )
            outputs.extend(self.tokenizer.decode(ids) for ids in result.tokens)
        return outputs

    def generate_stream(
        self,
        texts: Sequence[str],
        cfg: GenerationConfig | None = None,
        batch_size: int = 16,
        *,
        sort_window: int = SORT_WINDOW,
        start: int = 0,
    ) -> Iterator[str]:
        """Yield the predictions of `texts[start:]` in input order, each as soon as it and all rows
        before it are decoded.

        Rows are cut into windows of `sort_window` batches at fixed offsets (multiples of
        `sort_window * batch_size`); inside a window, batches are formed longest source first, so each
        batch pads little. A window's rows come out once its batches reach them, so at most one
        window of work is in flight; `sort_window=1` keeps input order (one batch in flight).
        Because windows sit at fixed offsets and only batches holding a row before `start` are
        skipped, a run resumed at `start` decodes the same batches as an uninterrupted one.
        """
        if batch_size < 1 or sort_window < 1:
            raise CtxlmError(f"batch_size and sort_window must be at least 1, got {batch_size} and {sort_window}")
        cfg = self.default_generation.with_overrides(cfg)
        window = batch_size * sort_window
        for first in range(start - start % window, len(texts), window):
            rows = range(first, min(first + window, len(texts)))
            lengths = [
                min(len(ids), self.max_source_tokens)  # a prefix is enough to rank truncated sources
                for ids in self.tokenizer.encode_batch([texts[i][:SORT_PREFIX_CHARS] for i in rows])
            ]
            order = sorted(rows, key=lambda i: (-lengths[i - first], i))
            finished: dict[int, str] = {}
            next_row = max(first, start)
            for b in range(0, len(order), batch_size):
                batch = order[b : b + batch_size]
                if max(batch) < start:
                    continue
                predictions = self.generate([texts[i] for i in batch], cfg, batch_size=len(batch))
                finished.update((i, p) for i, p in zip(batch, predictions) if i >= start)
                while next_row in finished:
                    yield finished.pop(next_row)
                    next_row += 1

    def generate_to_file(
        self,
        rows: Sequence[Mapping | str],
        output: str | Path,
        cfg: GenerationConfig | None = None,
        *,
        source_field: str = "source",
        batch_size: int = 16,
        sort_window: int = SORT_WINDOW,
        resume: bool = False,
        progress: bool = False,
    ) -> int:
        """Write each row plus its `prediction` to the JSONL file `output`, streamed in input order
        (see `ctxlm.prediction_file.write_predictions`); returns the number of rows decoded now.

        Args:
            output: JSONL output (input rows plus 'prediction'; ctxlm generate: default stdout)
            source_field: the rows' field holding the source text (ctxlm generate: default the one the model's
                fine-tuning task reads, from its run.json: e.g. document for Gigaword; else source)
            batch_size: sources decoded together
            sort_window: batches sorted by source length together (default 8; 1: input order); the output
                keeps input order
            resume: keep the rows the output file already holds, decode the rest
        """

        rows = [{source_field: row} if isinstance(row, str) else row for row in rows]
        return write_predictions(
            self,
            rows,
            output,
            cfg,
            source_field=source_field,
            batch_size=batch_size,
            sort_window=sort_window,
            resume=resume,
            progress=progress,
        )

    @torch.no_grad()
    def perplexity(
        self,
        sources: Sequence[str],
        targets: Sequence[str],
        *,
        max_target_tokens: int = 128,
        batch_size: int = 16,
        progress: bool = False,
    ) -> float:
        """exp(mean NLL per target token) of the references, given the sources (teacher forcing)."""
        src, tgt = self.tokenizer.encode_batch(list(sources)), self.tokenizer.encode_batch(list(targets))
        nll, tokens = 0.0, 0
        for start in _batches(len(src), batch_size, progress, "score"):
            batch = self._collate(
                [
                    pair_example(self.model.config, s, t, self.max_source_tokens, max_target_tokens)
                    for s, t in zip(src[start : start + batch_size], tgt[start : start + batch_size])
                ]
            )
            out = self.model(**batch)
            nll += float(out.metrics["lm_nll_sum"])
            tokens += int(out.metrics["lm_tokens"])
        if tokens == 0:
            raise CtxlmError("no target tokens to score")
        return math.exp(nll / tokens)


# ------------------------------------------------------------------------------ the inputs of `ctxlm generate`
def model_run_info(model: Path) -> dict:
    """The run.json of the run that wrote a model directory (the directory itself, its best/ or one
    of its checkpoints), or {}."""
    from .checkpoint import BEST_DIR, CHECKPOINTS_DIR

    run = model
    if model.name == BEST_DIR:
        run = model.parent
    elif model.parent.name == CHECKPOINTS_DIR:
        run = model.parent.parent
    path = run / "run.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CtxlmError(f"{path}: unreadable ({error}); give --source-field") from None
    return info if isinstance(info, dict) else {}


def model_source_field(model: str, input_path: str) -> str:
    """generate's default --source-field: the model's fine-tuning recipe's reader source_field, else
    the first of its task's source fields (summarization: document, article, source) that the
    input's first row has, else the task's first; "source" for a model without a seq2seq run.json."""
    from .data.tasks import jsonl_rows, task_source_fields

    info = model_run_info(Path(model))
    reader = (info.get("recipe") or {}).get("reader") or {}
    if reader.get("source_field"):
        return reader["source_field"]
    fields = task_source_fields(info.get("task"))
    _, first = next(iter(jsonl_rows(input_path)), (None, {}))
    return next((field for field in fields if field in first), fields[0])


def read_sources(path: Path, field: str) -> list[dict]:
    """The rows of a file of sources, each with a string `field`.

    Args:
        path: JSONL (or a dataset: .parquet, .arrow, save_to_disk directory, hub:NAME) with a source field per row
    """
    from .data.tasks import jsonl_rows, row_fields

    rows = []
    for at, row in jsonl_rows(path):
        if not isinstance(row.get(field), str):
            raise CtxlmError(
                f"{at}: field '{field}' missing or not a string (the row has {row_fields(row)}); "
                "name the source field with --source-field"
            )
        rows.append(row)
    if not rows:
        raise CtxlmError(f"{path}: no input rows")
    return rows
