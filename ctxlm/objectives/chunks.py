"""Non-overlapping chunks of whole sentences: how GLM, UniLMv2, MASS and BART cut documents into examples.

(PALM's overlapping windows, a source and a target each of whole sentences, are in `palm.py`.)
"""

from __future__ import annotations

import numpy as np


def sentence_chunks(sentence_lengths: np.ndarray, document_offsets: np.ndarray, documents, budget: int) -> np.ndarray:
    """Cut each document into consecutive, non-overlapping chunks of whole sentences of at most
    `budget` tokens, greedily (a chunk takes sentences until the next would not fit). A sentence
    longer than `budget` fits no chunk: it is skipped and ends the chunk before it.

    Document d spans sentences `document_offsets[d]:document_offsets[d+1]`. Returns int64 rows
    `(first_sentence, num_sentences)`.
    """
    lengths = np.asarray(sentence_lengths, dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(lengths)])
    rows = []
    for d in np.asarray(documents, dtype=np.int64):
        s, end = int(document_offsets[d]), int(document_offsets[d + 1])
        while s < end:
            if lengths[s] > budget:
                s += 1
                continue
            # the last sentence boundary e with cum[e] - cum[s] <= budget (>= s + 1 here)
            e = min(int(np.searchsorted(cum, cum[s] + budget, side="right")) - 1, end)
            rows.append((s, e - s))
            s = e
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


def chunk_text(store, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of sentences `first .. first + count − 1` of a token store, and the sentence
    boundaries within them (`count + 1` offsets, 0 first)."""
    offsets = np.asarray(store.sentence_offsets[int(first) : int(first) + int(count) + 1], dtype=np.int64)
    tokens = np.asarray(store.tokens[offsets[0] : offsets[-1]], dtype=np.int64)
    return tokens, offsets - offsets[0]


def skipped_sentences(
    sentence_lengths: np.ndarray, document_offsets: np.ndarray, documents, spans, budget: int
) -> dict[str, int]:
    """What a set of examples leaves out of `documents`: `long_sentences`, the sentences longer than
    `budget` tokens, and `sentences_in_no_example`, those no span covers (the long ones, and any
    others the windows cannot reach). `spans` are rows `(first_sentence, num_sentences)`."""
    docs = np.asarray(documents, dtype=np.int64)
    offsets = np.asarray(document_offsets, dtype=np.int64)
    starts, ends = offsets[docs], offsets[docs + 1]
    long = np.concatenate([[0], np.cumsum(np.asarray(sentence_lengths) > budget)])
    return {
        "long_sentences": int((long[ends] - long[starts]).sum()),
        "sentences_in_no_example": int((ends - starts).sum()) - _covered(np.asarray(spans, np.int64)),
    }


def _covered(spans: np.ndarray) -> int:
    """How many sentences the union of `(first, count)` spans holds."""
    if len(spans) == 0:
        return 0
    order = np.argsort(spans[:, 0], kind="stable")
    firsts, ends = spans[order, 0], spans[order, 0] + spans[order, 1]
    reached = np.concatenate([[firsts[0]], np.maximum.accumulate(ends)[:-1]])  # end of the union so far
    return int(np.clip(ends - np.maximum(firsts, reached), 0, None).sum())
