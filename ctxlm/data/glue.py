"""GLUE / SuperGLUE sentence-pair datasets → `Row(text_a, text_b, label)` lists (UniLMv2 §4.3,
Table 8), for `ctxlm.tasks.classification`.

Staged files (under `--data-dir`, e.g. ../shared/data/nlu):

| dataset         | file(s)                                  | label                                 |
| --------------- | ---------------------------------------- | ------------------------------------- |
| `glue/MRPC`     | glue/MRPC/msr_paraphrase_train.txt       | Quality 0/1 (1 = paraphrase)          |
| `glue/STS-B`    | glue/STS-B/sts-{train,dev}.tsv           | similarity score, a float in [0, 5]   |
| `superglue/RTE` | superglue/RTE/{train,dev32}.jsonl        | entailment → 0, not_entailment → 1    |

* MRPC: Microsoft's TSV with a header row (`Quality  #1 ID  #2 ID  #1 String  #2 String`, a UTF-8
  byte-order mark allowed). Only the train file is staged, so the dev split is held out of it
  deterministically: the `MRPC_DEV_SIZE` = 408 rows (GLUE's dev size, Table 8) whose
  SHA-256("#1 String\\t#2 String") is smallest form "dev", the other 3,668 "train". The choice
  depends on the rows' text only (not on file order, numpy or Python versions); it is NOT GLUE's
  official dev set (GLUE picks its 408 by dev_ids.tsv, which is not staged), so dev numbers are
  comparable among our runs, not with published MRPC dev scores.
* STS-B: the STS Benchmark's own files (not GLUE's re-packaging). The readme lists "genre filename
  year score sentence1 sentence2", but the staged files carry one more column: genre, filename,
  year, pair id, score, sentence1, sentence2, then optional license/source columns (ignored).
* RTE: FewGLUE's SuperGLUE RTE (32 training and 32 "dev32" rows), JSON Lines with `premise`,
  `hypothesis`, `label` ("entailment" | "not_entailment"; SuperGLUE/GLUE order: entailment = 0).

TSV fields are split on tabs only, with no quoting (MRPC strings contain `"`). Problems raise
`CtxlmError` naming file:line and the field.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

from ctxlm.data.tasks import jsonl_rows
from ctxlm.errors import CtxlmError, not_utf8, where

MRPC_DEV_SIZE = 408  # GLUE's MRPC dev size (Table 8: 3.7k/408/1.7k)
MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
RTE_LABELS = ("entailment", "not_entailment")


class Row(NamedTuple):
    text_a: str
    text_b: str | None  # None: a single-sentence task
    label: int | float  # class index, or a float score (regression)


# ------------------------------------------------------------------------------ file readers
def _tsv_lines(path: str | Path) -> Iterator[tuple[str, list[str]]]:
    """("file:line", fields) per non-blank line, split on tabs (no quoting; a leading UTF-8
    byte-order mark is dropped)."""
    try:
        handle = open(path, "rb")
    except OSError as error:
        raise CtxlmError(f"{path}: cannot open ({error.strerror})") from None
    with handle:
        for lineno, raw in enumerate(handle, 1):
            at = where(path, lineno)
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                raise not_utf8(path, at, f" (byte {error.start + 1})") from None
            if line.strip():
                yield at, line.split("\t")


def _text(value: str, at: str, name: str) -> str:
    if not value.strip():
        raise CtxlmError(f"{at}: field '{name}' is empty")
    return value


def read_mrpc(path: str | Path) -> list[Row]:
    """All rows of msr_paraphrase_{train,test}.txt: (#1 String, #2 String, Quality)."""
    rows, header_seen = [], False
    for at, fields in _tsv_lines(path):
        if not header_seen:
            if fields != MRPC_HEADER:
                raise CtxlmError(f"{at}: expected the MRPC header {' / '.join(MRPC_HEADER)}, got {fields[:5]}")
            header_seen = True
            continue
        if len(fields) != len(MRPC_HEADER):
            raise CtxlmError(f"{at}: expected {len(MRPC_HEADER)} tab-separated fields, got {len(fields)}")
        if fields[0] not in ("0", "1"):
            raise CtxlmError(f"{at}: field 'Quality' must be 0 or 1, got {fields[0]!r}")
        rows.append(Row(_text(fields[3], at, "#1 String"), _text(fields[4], at, "#2 String"), int(fields[0])))
    if not header_seen:
        raise CtxlmError(f"{path}: empty file (expected the MRPC header)")
    return rows


def read_sts(path: str | Path) -> list[Row]:
    """sts-{train,dev,test}.tsv: (sentence1, sentence2, score in [0, 5])."""
    rows = []
    for at, fields in _tsv_lines(path):
        if len(fields) < 7:
            raise CtxlmError(
                f"{at}: expected at least 7 tab-separated fields (genre, filename, year, id, "
                f"score, sentence1, sentence2), got {len(fields)}"
            )
        try:
            score = float(fields[4])
        except ValueError:
            raise CtxlmError(f"{at}: field 'score' (column 5) must be a number, got {fields[4]!r}") from None
        if not (math.isfinite(score) and 0.0 <= score <= 5.0):
            raise CtxlmError(f"{at}: field 'score' (column 5) must lie in [0, 5], got {fields[4]!r}")
        rows.append(Row(_text(fields[5], at, "sentence1"), _text(fields[6], at, "sentence2"), score))
    return rows


def read_rte(path: str | Path) -> list[Row]:
    """SuperGLUE RTE JSON Lines: (premise, hypothesis, entailment → 0 / not_entailment → 1)."""
    rows = []
    for at, obj in jsonl_rows(path):
        texts = []
        for name in ("premise", "hypothesis"):
            value = obj.get(name)
            if not isinstance(value, str):
                raise CtxlmError(f"{at}: field '{name}' must be a string, got {type(value).__name__}")
            texts.append(_text(value, at, name))
        label = obj.get("label")
        if label not in RTE_LABELS:
            raise CtxlmError(f"{at}: field 'label' must be one of {', '.join(RTE_LABELS)}, got {label!r}")
        rows.append(Row(texts[0], texts[1], RTE_LABELS.index(label)))
    return rows


# ------------------------------------------------------------------------------ splits
def _split_key(row: Row) -> bytes:
    return hashlib.sha256(f"{row.text_a}\t{row.text_b}".encode("utf-8")).digest()


def holdout_split(rows: list[Row], size: int, split: str) -> list[Row]:
    """The `size` rows with the smallest SHA-256 of their text ("dev") or the others ("train"),
    each in file order."""
    if size >= len(rows):
        raise CtxlmError(f"cannot hold out {size} dev rows from {len(rows)}")
    dev = set(sorted(range(len(rows)), key=lambda i: _split_key(rows[i]))[:size])
    return [row for i, row in enumerate(rows) if (i in dev) == (split == "dev")]


# ------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class GlueDataset:
    """A dataset's files per split (relative to the data directory), reader and evaluation."""

    name: str
    files: dict[str, str]
    reader: Callable[[Path], list[Row]]
    num_labels: int  # 1 = regression
    metrics: tuple[str, ...]  # the keys `ctxlm.tasks.classification.glue_metrics` returns, GLUE's order
    label_names: tuple[str, ...] = ()
    holdout: int = 0  # > 0: "train" and "dev" both come from one file, split by `holdout_split`
    notes: str = field(default="", compare=False)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def path(self, data_dir: str | Path, split: str) -> Path:
        if split not in self.files:
            raise CtxlmError(f"{self.name} has no split '{split}' (splits: {', '.join(self.files)})")
        return Path(data_dir) / self.files[split]

    def read(self, data_dir: str | Path, split: str) -> list[Row]:
        path = self.path(data_dir, split)
        if not path.is_file():
            raise CtxlmError(f"{path}: file not found ({self.name} {split}; is --data-dir right?)")
        rows = self.reader(path)
        if self.holdout:
            rows = holdout_split(rows, self.holdout, split)
        if not rows:
            raise CtxlmError(f"{path}: no rows")
        return rows


DATASETS: dict[str, GlueDataset] = {
    "glue/MRPC": GlueDataset(
        "glue/MRPC",
        {"train": "glue/MRPC/msr_paraphrase_train.txt", "dev": "glue/MRPC/msr_paraphrase_train.txt"},
        read_mrpc,
        2,
        ("accuracy", "f1"),
        ("not_paraphrase", "paraphrase"),
        holdout=MRPC_DEV_SIZE,
        notes="dev = 408 rows held out of the train file by SHA-256 of the text",
    ),
    "glue/STS-B": GlueDataset(
        "glue/STS-B",
        {"train": "glue/STS-B/sts-train.tsv", "dev": "glue/STS-B/sts-dev.tsv"},
        read_sts,
        1,
        ("pearson", "spearman"),
    ),
    "superglue/RTE": GlueDataset(
        "superglue/RTE",
        {"train": "superglue/RTE/train.jsonl", "dev": "superglue/RTE/dev32.jsonl"},
        read_rte,
        2,
        ("accuracy",),
        RTE_LABELS,
        notes="FewGLUE: 32 train / 32 dev rows",
    ),
}


def get_dataset(name: str) -> GlueDataset:
    if name not in DATASETS:
        raise CtxlmError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def read_split(name: str, data_dir: str | Path, split: str) -> list[Row]:
    """The rows of dataset `name`'s `split` ("train" or "dev") under `data_dir`."""
    return get_dataset(name).read(data_dir, split)
