"""Predictions for many inputs, written to a JSONL file as they are decoded, in input order, resumable.

What `ctxlm generate --input ... --output ... [--resume]` calls. Each output line is the input row
plus a `prediction` field, written as `json.dumps(row | {"prediction": text}, ensure_ascii=False)`.
`Seq2SeqPredictor.generate_stream` decodes batches sorted by source length inside windows of a
few batches and releases rows in input order; each released row is written and flushed at once,
so a crash loses at most the rows of one window.

With `resume`, the existing output is checked line by line against the input (each line must be
exactly what this module would write for that input row, with some string prediction) and
decoding continues after it. A last line cut short by a crash (no newline at its end) is dropped
from the file and decoded again; any other mismatch is an error naming the output file and line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Mapping, Sequence, TextIO

from .config import GenerationConfig
from .errors import CtxlmError, where

SORT_WINDOW = 8  # batches whose sources are sorted by length together (`Seq2SeqPredictor.generate_stream`)

PREDICTION_FIELD = "prediction"


def prediction_line(row: Mapping, prediction: str) -> str:
    """The output line (without its newline) for one input row."""
    return json.dumps({**row, PREDICTION_FIELD: prediction}, ensure_ascii=False)


def written_rows(path: str | Path, rows: Sequence[Mapping]) -> int:
    """How many leading `rows` the file `path` already holds (0 if it does not exist).

    A last line without its newline is cut off the file. Raises `CtxlmError` naming `path:line` for
    a line that is not the matching input row plus a string prediction, or one past the input's end.
    """
    path = Path(path)
    if not path.exists():
        return 0
    count, keep = 0, 0  # complete, checked lines and their bytes
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, 1):
            if not raw.endswith(b"\n"):
                break  # cut short by a crash: decoded again
            if count >= len(rows):
                raise CtxlmError(f"{where(path, number)}: the output has more rows than the input ({len(rows)})")
            _check_line(raw, rows[count], path, number)
            count, keep = count + 1, keep + len(raw)
    if path.stat().st_size > keep:
        with open(path, "r+b") as handle:
            handle.truncate(keep)
    return count


def _check_line(raw: bytes, row: Mapping, path: Path, number: int) -> None:
    at = where(path, number)
    try:
        line = raw.decode("utf-8").rstrip("\n")
        written = json.loads(line)
    except (ValueError, RecursionError):  # bad UTF-8 or JSON
        raise CtxlmError(
            f"{at}: not a JSON line this command wrote; remove the file or start without --resume"
        ) from None
    prediction = written.get(PREDICTION_FIELD) if isinstance(written, dict) else None
    if not isinstance(prediction, str) or prediction_line(row, prediction) != line:
        raise CtxlmError(
            f"{at}: does not match input row {number} plus a '{PREDICTION_FIELD}'; "
            "was the input changed? remove the file or start without --resume"
        )


def write_predictions(
    predictor,
    rows: Sequence[Mapping],
    output: str | Path | TextIO,
    cfg: GenerationConfig | None = None,
    *,
    source_field: str = "source",
    batch_size: int = 16,
    sort_window: int = SORT_WINDOW,
    resume: bool = False,
    progress: bool = False,
) -> int:
    """Decode `row[source_field]` of every row with `predictor` (a `Seq2SeqPredictor`) and write the
    rows plus predictions to `output` (a path, or an open text stream such as stdout), in input
    order, flushing after each row. With `resume` (a path only) rows already in the file are kept
    and skipped. Returns the number of rows decoded by this call."""
    texts = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get(source_field), str):
            raise CtxlmError(f"input row {index + 1}: field '{source_field}' missing or not a string")
        texts.append(row[source_field])
    if isinstance(output, (str, Path)):
        done = written_rows(output, rows) if resume else 0
        handle = open(output, "a" if resume else "w", encoding="utf-8")
    elif resume:
        raise CtxlmError("resuming needs an output file (--output)")
    else:
        done, handle = 0, output
    stream = predictor.generate_stream(texts, cfg, batch_size, sort_window=sort_window, start=done)
    bar = _progress_bar(len(rows), done) if progress else None
    try:
        for row, prediction in zip(rows[done:], stream):
            handle.write(prediction_line(row, prediction) + "\n")
            handle.flush()
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        if handle is not output:
            handle.close()
    return len(rows) - done


def _progress_bar(total: int, done: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=done, desc="generate", unit="row", file=sys.stderr)
