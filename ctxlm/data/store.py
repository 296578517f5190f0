"""A tokenized, memory-mapped, cached corpus store.

A store directory holds:

- ``tokens.bin``: every sentence's token ids back to back (uint16 when the vocabulary has at
  most 65,535 entries, else uint32);
- ``sentence_offsets.npy``: int64, ``num_sentences + 1`` offsets into the tokens;
- ``document_offsets.npy``: int64, ``num_documents + 1`` offsets into the sentences;
- ``meta.json``: source files (path, size, mtime, detected format, counts), tokenizer hash,
  counts and `STORE_VERSION`.

`TokenStore.build` caches stores under ``<cache>/corpus/<key>/`` where the key hashes the
resolved source paths, their sizes and mtimes, the tokenizer JSON, the format, the text field
and `STORE_VERSION`; the cache root is ``cache_dir``, else ``$CTXLM_CACHE``, else
``~/.cache/ctxlm``. A build streams: blocks of text are split into sentences (pysbd in a
process pool for paragraph/JSONL input), tokenized with the Rust batch encoder and appended to
``tokens.bin``; only offsets stay in memory. It writes into a temporary sibling directory and
renames it into place, so an interrupted build never leaves a store that looks complete.

Sentences that encode to no tokens are dropped, and so are documents left without sentences
(e.g. JSONL rows without text); ``meta["skipped"]`` counts both.
"""

from __future__ import annotations

import collections
import hashlib
import json
import multiprocessing
import multiprocessing.pool
import os
import shutil
import tempfile
import time
from array import array
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm import tqdm

from ctxlm.data.corpus import (
    TextBlock,
    blocks_sentences,
    expand_corpus_paths,
    iter_blocks,
    resolve_format,
)
from ctxlm.data.hf_datasets import open_dataset
from ctxlm.errors import CtxlmError
from ctxlm.tokenization import TextTokenizer

STORE_VERSION = 1
TOKENS_FILE = "tokens.bin"
SENTENCE_OFFSETS_FILE = "sentence_offsets.npy"
DOCUMENT_OFFSETS_FILE = "document_offsets.npy"
META_FILE = "meta.json"
CHUNK_BLOCKS = 1000
CHUNK_CHARS = 256_000


def default_cache_dir() -> Path:
    """``$CTXLM_CACHE`` if set, else ``~/.cache/ctxlm``."""
    return Path(os.environ.get("CTXLM_CACHE") or Path.home() / ".cache" / "ctxlm")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies of at most 65,535 entries, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


class TokenStore:
    """A read-only view of a store directory (tokens memory-mapped)."""

    def __init__(
        self,
        directory: Path,
        meta: dict,
        tokens: np.ndarray,
        sentence_offsets: np.ndarray,
        document_offsets: np.ndarray,
    ):
        """Use `TokenStore.open` or `TokenStore.build`."""
        self.directory = directory
        self.meta = meta
        self.tokens = tokens
        self.sentence_offsets = sentence_offsets
        self.document_offsets = document_offsets
        self.from_cache = False  # set by `build` when it reused an existing store

    @classmethod
    def open(cls, directory: str | Path) -> TokenStore:
        """Open a store directory written by `build` (tokens and offsets memory-mapped)."""
        directory = Path(directory)
        meta_file = directory / META_FILE
        if not meta_file.is_file():
            raise CtxlmError(f"{directory}: not a token store ({META_FILE} missing)")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CtxlmError(f"{meta_file}: unreadable ({error})") from None
        if not isinstance(meta, dict) or meta.get("version") != STORE_VERSION:
            found = meta.get("version") if isinstance(meta, dict) else None
            raise CtxlmError(f"{meta_file}: store version {found!r}, expected {STORE_VERSION}; rebuild the store")
        try:
            dtype = np.dtype(meta["dtype"])
            num_tokens = int(meta["num_tokens"])
            tokens = np.memmap(directory / TOKENS_FILE, dtype=dtype, mode="r", shape=(num_tokens,))
            sentence_offsets = np.load(directory / SENTENCE_OFFSETS_FILE, mmap_mode="r")
            document_offsets = np.load(directory / DOCUMENT_OFFSETS_FILE, mmap_mode="r")
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise CtxlmError(f"{directory}: damaged token store ({error}); rebuild it") from None
        consistent = (
            sentence_offsets.ndim == 1 and document_offsets.ndim == 1
            and len(sentence_offsets) == meta.get("num_sentences", -1) + 1
            and len(document_offsets) == meta.get("num_documents", -1) + 1
            and int(sentence_offsets[-1]) == num_tokens
            and int(document_offsets[-1]) == len(sentence_offsets) - 1
            and (directory / TOKENS_FILE).stat().st_size == num_tokens * dtype.itemsize
        )  # fmt: skip
        if not consistent:
            raise CtxlmError(f"{directory}: damaged token store (sizes disagree with {META_FILE}); rebuild it")
        return cls(directory, meta, tokens, sentence_offsets, document_offsets)

    @classmethod
    def build(
        cls,
        paths: str | Path | Iterable[str | Path],
        tokenizer: TextTokenizer | str | Path,
        *,
        cache_dir: str | Path | None = None,
        format: str = "auto",
        text_field: str | None = None,
        fallback_encoding: str | None = None,
        num_workers: int | None = None,
        progress: bool = True,
    ) -> TokenStore:
        """Open the cached store for these files and tokenizer, building it first if needed.

        ``paths`` are files or directories (see `expand_corpus_paths`); ``tokenizer`` a
        `TextTokenizer` or a path to load one from. ``num_workers`` processes split sentences
        with pysbd (default: all cores; 1 splits in this process).
        """
        if not isinstance(tokenizer, TextTokenizer):
            tokenizer = TextTokenizer.load(tokenizer)
        files = expand_corpus_paths(paths)
        formats = [resolve_format(file, format, fallback_encoding) for file in files]
        sources = [_source_record(file, file_format) for file, file_format in zip(files, formats)]
        key = _cache_key(sources, tokenizer, format, text_field, fallback_encoding)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        directory = root / "corpus" / key
        if directory.exists():
            try:
                store = cls.open(directory)
            except CtxlmError:
                shutil.rmtree(directory, ignore_errors=True)  # damaged by hand: rebuild below
            else:
                store.from_cache = True
                return store
        directory.parent.mkdir(parents=True, exist_ok=True)
        workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
        with tempfile.TemporaryDirectory(
            prefix=f".{key}.", suffix=".tmp", dir=directory.parent, ignore_cleanup_errors=True
        ) as temp:
            meta = _write_store(
                Path(temp), sources, tokenizer, format, text_field, fallback_encoding, workers, progress
            )
            meta["cache_key"] = key
            (Path(temp) / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
            os.chmod(temp, 0o755)  # mkdtemp makes it private; a store is as readable as its files
            try:
                os.replace(temp, directory)  # atomic: the store appears complete or not at all
            except OSError:
                if not (directory / META_FILE).is_file():  # else a concurrent build won the race
                    raise
        return cls.open(directory)

    open_or_build = build

    @property
    def num_documents(self) -> int:
        return len(self.document_offsets) - 1

    @property
    def num_sentences(self) -> int:
        return len(self.sentence_offsets) - 1

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    @property
    def sentence_lengths(self) -> np.ndarray:
        """int64 token count of every sentence."""
        return np.diff(self.sentence_offsets)

    def sentence(self, index: int) -> np.ndarray:
        """Token ids of sentence ``index`` (a read-only memory-mapped view)."""
        if not 0 <= index < self.num_sentences:
            raise IndexError(f"sentence {index} out of range (store has {self.num_sentences})")
        return self.tokens[self.sentence_offsets[index] : self.sentence_offsets[index + 1]]

    def document_sentences(self, document: int) -> tuple[int, int]:
        """``(first_sentence, end_sentence)`` of a document (end exclusive)."""
        if not 0 <= document < self.num_documents:
            raise IndexError(f"document {document} out of range (store has {self.num_documents})")
        return int(self.document_offsets[document]), int(self.document_offsets[document + 1])

    def document(self, document: int) -> list[np.ndarray]:
        """Token ids of each sentence of a document."""
        first, end = self.document_sentences(document)
        return [self.sentence(i) for i in range(first, end)]

    def split_documents(self, valid_fraction: float, seed: int, min_valid: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Deterministic held-out split by whole documents: sorted ``(train_ids, valid_ids)``.

        Holds out ``round(valid_fraction * num_documents)`` documents, at least ``min_valid``
        (none when ``valid_fraction`` is 0), chosen by a permutation seeded with ``seed``.
        """
        if not 0 <= valid_fraction < 1:
            raise CtxlmError(f"valid_fraction must be in [0, 1), got {valid_fraction!r}")
        total = self.num_documents
        num_valid = 0 if valid_fraction == 0 else max(min_valid, round(valid_fraction * total))
        if num_valid >= total:
            raise CtxlmError(
                f"{self.directory}: corpus has {total} document(s), too few to hold out "
                f"{num_valid} for validation and keep some for training"
            )
        order = np.random.default_rng(seed).permutation(total)
        train_ids = np.sort(order[num_valid:]).astype(np.int64)
        valid_ids = np.sort(order[:num_valid]).astype(np.int64)
        return train_ids, valid_ids

    def __repr__(self) -> str:
        return (
            f"TokenStore({str(self.directory)!r}, documents={self.num_documents}, "
            f"sentences={self.num_sentences}, tokens={self.num_tokens})"
        )


def _source_record(path: Path, file_format: str) -> dict:
    if file_format == "dataset":  # its fingerprint stands for the modification time
        source = open_dataset(path)
        return {"path": str(path), "size": source.size, "mtime_ns": source.fingerprint, "format": file_format}
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "format": file_format}


def _cache_key(
    sources: list[dict], tokenizer: TextTokenizer, format: str, text_field: str | None, fallback_encoding: str | None
) -> str:
    fingerprint = {
        "version": STORE_VERSION,
        "files": [[s["path"], s["size"], s["mtime_ns"]] for s in sources],
        "tokenizer_sha256": tokenizer.content_sha256,
        "format": format,
        "text_field": text_field,
        "fallback_encoding": fallback_encoding,
    }
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:24]


def _chunks(blocks: Iterator[TextBlock]) -> Iterator[list[TextBlock]]:
    """Group blocks into lists of at most `CHUNK_BLOCKS` blocks / about `CHUNK_CHARS` characters."""
    chunk: list[TextBlock] = []
    chars = 0
    for block in blocks:
        chunk.append(block)
        chars += sum(len(text) for text in block.texts)
        if len(chunk) >= CHUNK_BLOCKS or chars >= CHUNK_CHARS:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


@contextmanager
def _sentence_pool(num_workers: int) -> Iterator[multiprocessing.pool.Pool | None]:
    """A process pool for pysbd, or None when ``num_workers`` ≤ 1."""
    if num_workers <= 1:
        yield None
        return
    # Workers only run pysbd; telling the Rust tokenizer in them so avoids its fork warning.
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        pool = context.Pool(num_workers)
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def _split_chunks(
    sources: list[dict], text_field: str | None, fallback_encoding: str | None, num_workers: int, bar: tqdm
) -> Iterator[tuple[int, list[TextBlock], list[list[str]]]]:
    """Yield ``(source_index, blocks, sentences_per_block)`` in corpus order.

    Chunks with paragraphs go to a process pool when ``num_workers`` > 1; at most
    ``2 * num_workers`` chunks are in flight, so reading stays streaming.
    """
    needs_pool = any(source["format"] != "sentences" for source in sources)
    bytes_before = np.cumsum([0] + [source["size"] for source in sources]).tolist()
    with _sentence_pool(num_workers if needs_pool else 1) as pool:
        pending: collections.deque = collections.deque()

        def finish_oldest() -> tuple[int, list[TextBlock], list[list[str]]]:
            index, blocks, result = pending.popleft()
            if isinstance(result, multiprocessing.pool.AsyncResult):
                result = result.get()
            bar.update(bytes_before[index] + blocks[-1].end_byte - bar.n)
            return index, blocks, result

        for index, source in enumerate(sources):
            for chunk in _chunks(iter_blocks(source["path"], source["format"], text_field, fallback_encoding)):
                if pool is not None and not all(block.presplit for block in chunk):
                    pending.append((index, chunk, pool.apply_async(blocks_sentences, (chunk,))))
                else:
                    pending.append((index, chunk, blocks_sentences(chunk)))
                while len(pending) > (2 * num_workers if pool is not None else 0):
                    yield finish_oldest()
        while pending:
            yield finish_oldest()


def _write_store(
    directory: Path,
    sources: list[dict],
    tokenizer: TextTokenizer,
    format: str,
    text_field: str | None,
    fallback_encoding: str | None,
    num_workers: int,
    progress: bool,
) -> dict:
    """Tokenize the sources into ``directory``; returns the metadata (without cache key)."""
    dtype = token_dtype(tokenizer.vocab_size)
    sentence_offsets = array("q", [0])
    document_offsets = array("q", [0])
    num_tokens = 0
    open_document_sentences = 0  # sentences so far in the document being read
    open_document = False  # a document has been started and not closed
    skipped = {"empty_documents": 0, "empty_sentences": 0}  # without text / encoding to no tokens
    source_index = -1
    started = time.time()

    def close_document() -> None:
        nonlocal open_document_sentences, open_document
        if open_document_sentences:
            document_offsets.append(len(sentence_offsets) - 1)
        elif open_document:
            skipped["empty_documents"] += 1
        open_document_sentences, open_document = 0, False

    total_bytes = sum(source["size"] for source in sources)
    with (
        open(directory / TOKENS_FILE, "wb") as tokens_file,
        tqdm(total=total_bytes, unit="B", unit_scale=True, disable=not progress) as bar,
    ):
        chunks = _split_chunks(sources, text_field, fallback_encoding, num_workers, bar)
        for index, blocks, sentences_per_block in chunks:
            if index != source_index:
                close_document()
                bar.set_description(Path(sources[index]["path"]).name, refresh=False)
                sources[index]["first_document"] = len(document_offsets) - 1
                sources[index]["first_sentence"] = len(sentence_offsets) - 1
                source_index = index
            flat = [sentence for sentences in sentences_per_block for sentence in sentences]
            encoded = iter(tokenizer.encode_batch(flat))
            chunk_ids: list[int] = []
            for block, sentences in zip(blocks, sentences_per_block):
                if block.starts_document:
                    close_document()
                    open_document = True
                for _ in sentences:
                    ids = next(encoded)
                    if ids:
                        chunk_ids.extend(ids)
                        num_tokens += len(ids)
                        sentence_offsets.append(num_tokens)
                        open_document_sentences += 1
                    else:
                        skipped["empty_sentences"] += 1
            np.asarray(chunk_ids, dtype=dtype).tofile(tokens_file)
            bar.set_postfix(documents=len(document_offsets) - 1, refresh=False)
        close_document()
    if num_tokens == 0:
        raise CtxlmError("corpus yields no tokens (every sentence encodes to nothing)")
    starts = [(s["first_document"], s["first_sentence"]) for s in sources]
    starts.append((len(document_offsets) - 1, len(sentence_offsets) - 1))
    for source, (first_document, first_sentence), (end_document, end_sentence) in zip(sources, starts, starts[1:]):
        source["documents"] = end_document - first_document
        source["sentences"] = end_sentence - first_sentence
    np.save(directory / SENTENCE_OFFSETS_FILE, np.frombuffer(sentence_offsets, dtype=np.int64))
    np.save(directory / DOCUMENT_OFFSETS_FILE, np.frombuffer(document_offsets, dtype=np.int64))
    return {
        "version": STORE_VERSION,
        "files": sources,
        "format": format,
        "text_field": text_field,
        "fallback_encoding": fallback_encoding,
        "tokenizer_sha256": tokenizer.content_sha256,
        "tokenizer_source": tokenizer.source,
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype.name,
        "num_documents": len(document_offsets) - 1,
        "num_sentences": len(sentence_offsets) - 1,
        "num_tokens": num_tokens,
        "skipped": skipped,
        "build_seconds": round(time.time() - started, 3),
    }
