"""Corpus files → documents → sentences.

A *document* is a `list[str]` of non-empty, stripped sentences. Four input formats:

- ``sentences``: the BERT pre-training convention, one sentence per line and a blank line
  between documents (e.g. ``pretrain/wikipedia/sents_*.txt``).
- ``paragraphs``: raw hard-wrapped text with blank lines between paragraphs (e.g. Gutenberg
  books). The whole file is one document; each paragraph's lines are joined with spaces and
  split into sentences with pysbd.
- ``jsonl``: one JSON object per line, one document per row. ``text_field`` (by default the
  first of `TEXT_FIELDS` a row has) holds either a
  string (split on blank lines into paragraphs, then into sentences with pysbd) or a list of
  strings (paragraphs, each split with pysbd).

- ``dataset``: Hugging Face `datasets` input (a Parquet or Arrow file, a ``save_to_disk``
  directory, ``hub:NAME``; see `ctxlm.data.hf_datasets`), one document per row, the text field as
  in ``jsonl``.

``auto`` picks ``dataset`` for those inputs and ``jsonl`` for ``.jsonl``/``.json`` files. For
anything else it looks at the first 300 non-empty lines: if more than 60% of them end with
sentence-final punctuation (``.``, ``!`` or ``?``, optionally followed by closing quotes or
brackets) the file is read as ``sentences``, otherwise as ``paragraphs``. One-sentence-a-line
files score ~100% and hard-wrapped prose ~15-35%, so the threshold sits well clear of both.

Files are read line by line, never whole. Reading happens in two steps so that the slow
part (pysbd) can run in worker processes: `iter_blocks` streams `TextBlock`s (a document's
pre-split sentences, or paragraphs still to be split) and `block_sentences` turns one block
into sentences. `iter_documents` chains both.

Bad input raises `CtxlmError` with a one-line message naming ``file:line``.
"""

from __future__ import annotations

import codecs
import functools
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

import pysbd

from ctxlm.data.json_text import check_no_surrogates, json_problem
from ctxlm.data.hf_datasets import is_dataset, open_dataset
from ctxlm.errors import CtxlmError, not_utf8, where, wide_encoding

Document = list[str]

FORMATS = ("auto", "sentences", "paragraphs", "jsonl", "dataset")
# JSONL fields tried in order when no text field is named (`paragraphs`: a list of strings).
TEXT_FIELDS = ("text", "paragraphs", "content", "document", "article")
MAX_LINE_CHARS = 1_000_000
SEGMENT_WINDOW_CHARS = 3000
CORPUS_SUFFIXES = (".txt", ".jsonl", ".parquet")
SKIPPED_NAME_PREFIXES = ("readme", "license", "licence", "manifest")

DETECT_LINES = 300
DETECT_SENTENCE_SHARE = 0.6
_SENTENCE_END = re.compile(r"""[.!?]["'”’»)\]]*$""")
_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")
# A UTF-8 character is at most 4 bytes, so a line cut at this many bytes has > MAX_LINE_CHARS.
_MAX_LINE_BYTES = 4 * (MAX_LINE_CHARS + 1)


@dataclass(frozen=True, slots=True)
class TextBlock:
    """A piece of a document as read from a file, before sentence splitting.

    ``texts`` are finished sentences when ``presplit`` is true, else paragraphs that still need
    `split_sentences`. ``starts_document`` marks the first block of a document; the blocks up
    to the next such block belong to the same document. ``end_byte`` is the file offset just
    past the block (for progress bars).
    """

    texts: tuple[str, ...]
    starts_document: bool
    presplit: bool
    end_byte: int


@functools.lru_cache(maxsize=1)
def _segmenter() -> pysbd.Segmenter:
    return pysbd.Segmenter(language="en", clean=False)


def _segment(text: str) -> list[str]:
    return [s.strip() for s in _segmenter().segment(text) if s.strip()]


def split_sentences(text: str) -> list[str]:
    """Split English text into stripped, non-empty sentences with pysbd (keeps "Mr. Smith").

    pysbd's cost grows with the square of the text length, so long texts are segmented in
    windows of about `SEGMENT_WINDOW_CHARS` cut at spaces: all but the last sentence of a
    window are kept and the next window starts where that last sentence starts.
    """
    text = text.strip()
    sentences: list[str] = []
    start = 0
    while len(text) - start > SEGMENT_WINDOW_CHARS:
        cut = text.rfind(" ", start + SEGMENT_WINDOW_CHARS // 2, start + SEGMENT_WINDOW_CHARS)
        if cut < 0:
            cut = start + SEGMENT_WINDOW_CHARS
        window = text[start:cut]
        segments = _segment(window)
        last_start = window.rfind(segments[-1]) if len(segments) > 1 else -1
        if last_start <= 0:  # one sentence longer than the window: cut it at the window end
            sentences.extend(segments)
            start = cut
        else:
            sentences.extend(segments[:-1])
            start += last_start
    sentences.extend(_segment(text[start:]))
    return sentences


def block_sentences(block: TextBlock) -> list[str]:
    """The sentences of one block: its texts if pre-split, else each paragraph split by pysbd."""
    if block.presplit:
        return list(block.texts)
    return [sentence for paragraph in block.texts for sentence in split_sentences(paragraph)]


def blocks_sentences(blocks: list[TextBlock]) -> list[list[str]]:
    """`block_sentences` over a list of blocks (the unit of work for a process pool)."""
    return [block_sentences(block) for block in blocks]


def iter_lines(path: str | Path, fallback_encoding: str | None = None) -> Iterator[tuple[int, str, int]]:
    """Yield ``(line_number, text, end_byte)`` for each line of a UTF-8 file, streaming.

    A line that is not valid UTF-8 is an error, unless ``fallback_encoding`` (e.g. ``latin-1``
    for old Project Gutenberg files) is given: such lines are then decoded with it, with one
    warning per file.

    The text has its line ending (``\\n`` or ``\\r\\n``) and a leading BOM removed. Raises
    `CtxlmError` naming ``file:line`` for invalid UTF-8, NUL bytes or over-long lines, and an unknown
    ``fallback_encoding``.
    """
    if fallback_encoding is not None:
        try:
            codecs.lookup(fallback_encoding)
        except (LookupError, ValueError):  # ValueError: a NUL in the name
            raise CtxlmError(
                f"unknown fallback encoding '{fallback_encoding}' (--fallback-encoding; e.g. latin-1 or cp1252)"
            ) from None
    try:
        handle: BinaryIO = open(path, "rb")
    except OSError as error:
        raise CtxlmError(f"{path}: cannot read ({error.strerror or error})") from None
    warned: set = set()
    with handle:
        line_number = 0
        while True:
            raw = handle.readline(_MAX_LINE_BYTES)
            if not raw:
                return
            line_number += 1
            if len(raw) == _MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise CtxlmError(f"{where(path, line_number)}: line longer than {MAX_LINE_CHARS:,} characters")
            if b"\x00" in raw:
                if wide_encoding(path) is not None:
                    raise not_utf8(path, where(path, line_number))
                raise CtxlmError(f"{where(path, line_number)}: contains NUL bytes (binary file, not text)")
            text = _decode(raw, path, line_number, fallback_encoding, warned).rstrip("\r\n")
            if line_number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            if len(text) > MAX_LINE_CHARS:
                raise CtxlmError(f"{where(path, line_number)}: line longer than {MAX_LINE_CHARS:,} characters")
            yield line_number, text, handle.tell()


def _decode(
    raw: bytes, path: str | Path, line_number: int, fallback: str | None = None, warned: set | None = None
) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if fallback is not None:
            if warned is not None and not warned:
                warned.add(line_number)
                warnings.warn(
                    f"{where(path, line_number)}: not valid UTF-8; reading such lines as {fallback}", stacklevel=2
                )
            return raw.decode(fallback, errors="replace")
        column = len(raw[: error.start].decode("utf-8", errors="replace")) + 1
        raise not_utf8(
            path,
            where(path, line_number),
            f" (byte 0x{raw[error.start]:02x} at column {column}); re-encode the file as UTF-8",
        ) from None


def detect_format(path: str | Path, fallback_encoding: str | None = None) -> str:
    """The format ``auto`` resolves to for ``path`` (see the module docstring)."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".json"):
        return "jsonl"
    non_empty = 0
    sentence_like = 0
    for _, text, _ in iter_lines(path, fallback_encoding):
        text = text.strip()
        if not text:
            continue
        non_empty += 1
        sentence_like += bool(_SENTENCE_END.search(text))
        if non_empty >= DETECT_LINES:
            break
    if non_empty == 0:
        raise CtxlmError(f"{path}: empty file (no text)")
    return "sentences" if sentence_like / non_empty > DETECT_SENTENCE_SHARE else "paragraphs"


def resolve_format(path: str | Path, format: str = "auto", fallback_encoding: str | None = None) -> str:
    """``format`` checked against `FORMATS`, with ``auto`` resolved for ``path``."""
    if format not in FORMATS:
        raise CtxlmError(f"unknown corpus format {format!r} (expected one of {', '.join(FORMATS)})")
    if format in ("auto", "dataset") and is_dataset(path):
        return "dataset"
    if format == "dataset":
        raise CtxlmError(f"{path}: not a dataset input (a .parquet or .arrow file, a save_to_disk directory, hub:NAME)")
    return detect_format(path, fallback_encoding) if format == "auto" else format


def iter_blocks(
    path: str | Path,
    format: str = "auto",
    text_field: str | None = None,
    fallback_encoding: str | None = None,
) -> Iterator[TextBlock]:
    """Stream the `TextBlock`s of one corpus file (see the module docstring for formats).

    A JSONL row without text gives a block with no texts (an empty document, so that callers can
    count it). Raises `CtxlmError` if the file holds no text at all.
    """
    resolved = resolve_format(path, format, fallback_encoding)
    any_text = False
    for block in _BLOCK_READERS[resolved](path, text_field, fallback_encoding):
        any_text = any_text or bool(block.texts)
        yield block
    if not any_text:
        raise CtxlmError(f"{path}: empty file (no text)")


def _sentence_blocks(path: str | Path, text_field: str | None, fallback_encoding: str | None) -> Iterator[TextBlock]:
    sentences: list[str] = []
    chars = 0
    first = True  # the next block starts a document
    end_byte = 0
    for _, text, end_byte in iter_lines(path, fallback_encoding):
        text = text.strip()
        if text:
            sentences.append(text)
            chars += len(text)
            if chars > MAX_LINE_CHARS:  # bound memory for a huge document: continue in a new block
                yield TextBlock(tuple(sentences), first, True, end_byte)
                sentences, chars, first = [], 0, False
        else:
            if sentences:
                yield TextBlock(tuple(sentences), first, True, end_byte)
            sentences, chars, first = [], 0, True
    if sentences:
        yield TextBlock(tuple(sentences), first, True, end_byte)


def _paragraph_blocks(path: str | Path, text_field: str | None, fallback_encoding: str | None) -> Iterator[TextBlock]:
    lines: list[str] = []
    chars = 0
    first = True
    end_byte = 0
    for _, text, end_byte in iter_lines(path, fallback_encoding):
        text = text.strip()
        if text:
            lines.append(text)
            chars += len(text) + 1
        if lines and (not text or chars > MAX_LINE_CHARS):  # bound memory without blank lines
            yield TextBlock((" ".join(lines),), first, False, end_byte)
            lines, first, chars = [], False, 0
    if lines:
        yield TextBlock((" ".join(lines),), first, False, end_byte)


def _jsonl_blocks(path: str | Path, text_field: str | None, fallback_encoding: str | None) -> Iterator[TextBlock]:
    for line_number, text, end_byte in iter_lines(path, fallback_encoding):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as error:
            raise CtxlmError(f"{where(path, line_number)}: not valid JSON ({error.msg})") from None
        except (ValueError, RecursionError) as error:
            raise CtxlmError(f"{where(path, line_number)}: not valid JSON ({json_problem(error)})") from None
        check_no_surrogates(row, text, where(path, line_number))
        yield _row_block(row, where(path, line_number), text_field, end_byte)


def _dataset_blocks(path: str | Path, text_field: str | None, fallback_encoding: str | None) -> Iterator[TextBlock]:
    source = open_dataset(path)
    for number, (at, row) in enumerate(source.rows(), 1):
        yield _row_block(row, at, text_field, source.size * number // max(source.num_rows, 1))


def _row_block(row, at: str, text_field: str | None, end_byte: int) -> TextBlock:
    """One document from a JSONL or dataset row: its text field, a string or a list of strings. A
    row without text is an empty document (a block with no texts), counted by the store."""
    if not isinstance(row, dict):
        raise CtxlmError(f"{at}: row is not a JSON object (got {type(row).__name__})")
    field = text_field if text_field is not None else next((f for f in TEXT_FIELDS if f in row), None)
    if field is None:
        raise CtxlmError(
            f"{at}: no text field (looked for {', '.join(TEXT_FIELDS)}; "
            f"found {', '.join(map(str, row)) or 'none'}; pass --text-field)"
        )
    if field not in row:
        raise CtxlmError(f"{at}: field {field!r} missing")
    value = row[field]
    if isinstance(value, str):
        value = [value]
    elif not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise CtxlmError(f"{at}: field {field!r} must be a string or a list of strings")
    return TextBlock(tuple(p for item in value for p in text_paragraphs(item)), True, False, end_byte)


_BLOCK_READERS = {
    "sentences": _sentence_blocks,
    "paragraphs": _paragraph_blocks,
    "jsonl": _jsonl_blocks,
    "dataset": _dataset_blocks,
}


def text_paragraphs(text: str) -> list[str]:
    """Split text on blank lines into paragraphs, each with its lines joined by spaces."""
    paragraphs = []
    for chunk in _BLANK_LINES.split(text):
        joined = " ".join(line.strip() for line in chunk.splitlines() if line.strip())
        if joined:
            paragraphs.append(joined)
    return paragraphs


def iter_documents(
    path: str | Path,
    format: str = "auto",
    text_field: str | None = None,
    fallback_encoding: str | None = None,
    stats: dict | None = None,
) -> Iterator[Document]:
    """Stream the documents (lists of sentences) of one corpus file; empty ones are skipped and
    counted in ``stats["empty_documents"]`` when a ``stats`` dict is given."""
    document: Document | None = None
    for block in iter_blocks(path, format, text_field, fallback_encoding):
        if block.starts_document and document is not None:
            yield from _nonempty(document, stats)
            document = None
        if document is None:
            document = []
        document.extend(block_sentences(block))
    if document is not None:
        yield from _nonempty(document, stats)


def _nonempty(document: Document, stats: dict | None) -> Iterator[Document]:
    if document:
        yield document
    elif stats is not None:
        stats["empty_documents"] = stats.get("empty_documents", 0) + 1


def expand_corpus_paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    """Files and dataset inputs as given; directories expanded recursively (sorted) to ``*.txt``,
    ``*.jsonl`` and ``*.parquet`` (a ``save_to_disk`` directory is one dataset input).

    Inside directories, README*, LICENSE* and manifest* files and hidden entries are skipped.
    Repeated files are kept once. Raises `CtxlmError` for a missing path, a directory without
    corpus files, or an empty list.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_file() or is_dataset(given):
            found.append(path)
        elif path.is_dir():
            files = sorted(
                candidate
                for candidate in path.rglob("*")
                if candidate.is_file() and _is_corpus_file(candidate.relative_to(path))
            )
            if not files:
                raise CtxlmError(f"{path}: directory holds no corpus files ({', '.join(CORPUS_SUFFIXES)})")
            found.extend(files)
        else:
            raise CtxlmError(f"{path}: corpus path not found")
    if not found:
        raise CtxlmError("no corpus paths given")
    unique: dict[Path, Path] = {}
    for path in found:
        unique.setdefault(path.resolve(), path)
    return list(unique.values())


def _is_corpus_file(relative: Path) -> bool:
    if any(part.startswith(".") for part in relative.parts):
        return False
    name = relative.name.lower()
    return relative.suffix.lower() in CORPUS_SUFFIXES and not name.startswith(SKIPPED_NAME_PREFIXES)


def read_text_lines(path: Path) -> list[str]:
    """The non-blank lines of a text file (`ctxlm infill --input`); file:line errors for bad bytes."""
    if not path.is_file():
        raise CtxlmError(f"{path}: no such file")
    lines = [text for _, text, _ in iter_lines(path) if text.strip()]  # file:line errors for bad bytes
    if not lines:
        raise CtxlmError(f"{path}: no input lines")
    return lines
