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
    offsets = np.asarray(store.sentence_offsets[int(first):int(first) + int(count) + 1], dtype=np.int64)
    tokens = np.asarray(store.tokens[offsets[0]:offsets[-1]], dtype=np.int64)
    return tokens, offsets - offsets[0]
