"""Hugging Face `datasets` inputs, read as rows wherever ctxlm reads JSON Lines rows (corpora, task
files, `generate --input`, reference files):

- a Parquet file (`*.parquet`), read in batches with pyarrow;
- an Arrow file (`*.arrow`, as `save_to_disk` and the datasets cache write them);
- a `save_to_disk` directory (a `Dataset`, or a `DatasetDict`: its "train" split, another with
  `DIR:SPLIT`);
- a hub dataset `hub:NAME`, `hub:NAME:SPLIT` or `hub:NAME#CONFIG:SPLIT` (split "train" by default),
  fetched by `datasets.load_dataset` (needs network, or the datasets cache).

Rows are dicts; a row's place in messages is `SOURCE row N` (N from 1). Everything here needs the
`data` extra (`pip install 'ctxlm[data]'`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import CtxlmError
from ..extras import require

HUB_PREFIX = "hub:"
FILE_SUFFIXES = (".parquet", ".arrow")
SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what save_to_disk writes
BATCH_ROWS = 1000


def _split_suffix(source: str) -> tuple[str, str | None]:
    """`PATH:SPLIT` → (PATH, SPLIT) when PATH is a save_to_disk directory."""
    head, _, split = source.rpartition(":")
    if head and split and _is_saved_dir(Path(head)):
        return head, split
    return source, None


def _is_saved_dir(path: Path) -> bool:
    return path.is_dir() and any((path / marker).is_file() for marker in SAVED_MARKERS)


def is_dataset(source: str | Path) -> bool:
    """True for the inputs this module reads (see the module docstring)."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return True
    path = Path(_split_suffix(text)[0])
    return _is_saved_dir(path) or (path.suffix.lower() in FILE_SUFFIXES and path.is_file())


@dataclass
class DatasetSource:
    """An opened dataset input: its rows in batches, row count, bytes on disk and a fingerprint
    that changes when its content does (for the token store's cache key)."""

    name: str
    num_rows: int
    size: int
    fingerprint: str
    _batches: object  # () -> iterator of column dicts

    def rows(self) -> Iterator[tuple[str, dict]]:
        """`("SOURCE row N", row)` for every row."""
        number = 0
        for columns in self._batches():
            names = list(columns)
            for values in zip(*(columns[name] for name in names)):
                number += 1
                yield f"{self.name} row {number}", dict(zip(names, values))


def _files_fingerprint(files: list[Path]) -> tuple[int, str]:
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(files)]
    digest = hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:24]
    return sum(size for _, size, _ in stats), digest


def _dataset_batches(dataset):
    return lambda: (batch for batch in dataset.iter(batch_size=BATCH_ROWS))


def open_dataset(source: str | Path) -> DatasetSource:
    """Open a dataset input (see `is_dataset`)."""
    text = str(source)
    datasets = require("datasets", extra="data", purpose=f"reading {text}")
    if text.startswith(HUB_PREFIX):
        return _open_hub(datasets, text)
    text, split = _split_suffix(text)
    path = Path(text)
    if path.suffix.lower() == ".parquet":
        parquet = require("pyarrow.parquet", extra="data", purpose=f"reading {path}")
        try:
            meta = parquet.ParquetFile(path).metadata
        except Exception as error:  # pyarrow raises ArrowInvalid and OSError subclasses
            raise CtxlmError(f"{path}: not a readable Parquet file ({error})") from None
        size, digest = _files_fingerprint([path])

        def batches():
            return (batch.to_pydict() for batch in parquet.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS))

        return DatasetSource(str(path), meta.num_rows, size, digest, batches)
    try:
        if path.is_dir():
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = _pick_split(dataset, split, str(path))
        else:
            dataset = datasets.Dataset.from_file(str(path))
    except (OSError, ValueError, FileNotFoundError) as error:
        raise CtxlmError(f"{path}: cannot read as a dataset ({str(error).splitlines()[0]})") from None
    size, digest = _files_fingerprint([f for f in (path.rglob("*") if path.is_dir() else [path]) if f.is_file()])
    return DatasetSource(
        f"{path}:{split}" if split else str(path),
        dataset.num_rows,
        size,
        f"{digest}:{split}",
        _dataset_batches(dataset),
    )


def _pick_split(splits, split: str | None, name: str):
    if split is None:
        split = "train" if "train" in splits else (next(iter(splits)) if len(splits) == 1 else None)
    if split not in splits:
        raise CtxlmError(f"{name}: no split '{split}' (splits: {', '.join(splits)}; choose one as {name}:SPLIT)")
    return splits[split]


def _open_hub(datasets, source: str) -> DatasetSource:
    spec = source[len(HUB_PREFIX) :]
    name, _, split = spec.partition(":")
    name, _, config = name.partition("#")
    try:
        dataset = datasets.load_dataset(name, config or None, split=split or "train")
    except Exception as error:  # offline, unknown dataset, bad split: datasets raises many kinds
        first = (str(error).splitlines() or [type(error).__name__])[0]
        if "reach" in first or type(error).__name__ in ("ConnectionError", "LocalEntryNotFoundError"):
            raise CtxlmError(
                f"{source}: the Hugging Face hub cannot be reached (no network?) and the dataset is "
                "not in the datasets cache; save it with save_to_disk elsewhere and pass the "
                "directory"
            ) from None
        raise CtxlmError(f"{source}: cannot load ({first})") from None
    return DatasetSource(
        source, dataset.num_rows, 0, f"{name}#{config}:{split}:{dataset._fingerprint}", _dataset_batches(dataset)
    )


def dataset_rows(source: str | Path) -> Iterator[tuple[str, dict]]:
    """`("SOURCE row N", row)` for each row of a dataset input."""
    yield from open_dataset(source).rows()
