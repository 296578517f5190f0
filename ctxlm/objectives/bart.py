"""BART (Lewis et al., 2020) on the PALM encoder-decoder: sentence permutation + text infilling, the
decoder reconstructing the whole original (PALM's Figure 1c baseline). Pure numpy over token ids.

For a segment (a chunk of whole sentences, `chunks.sentence_chunks`, at most `fragment_length − 2`
tokens): its sentences are shuffled (sentence permutation), then text infilling masks
`ceil(ratio · n)` tokens (30%) in spans whose lengths are drawn from Poisson(λ = 3), each span
replaced by ONE [MASK]; a 0-length span inserts a [MASK]. The encoder reads
`[CLS] corrupted [SEP]`; the decoder reads `[CLS] original` and predicts `original [SEP]` (the
unpermuted text), as PALM's stage 2 does with its continuation (`palm.build_palm_example`).

As fairseq's `DenoisingDataset` (BART's code): lengths are drawn until they cover the target and the
last is cut to hit it exactly; permutation comes before masking. Differences: tokens, not whole
words, are masked; spans never overlap (their layout is uniform over the non-overlapping ones,
0-length spans included, where fairseq draws starts independently and lets spans merge); a [MASK]
is never swapped for a random token (fairseq's `mask_random`, which the BART paper does not
describe); and 0-length spans beyond the number of masked tokens are dropped, so the corrupted text
is never longer than the original (a practical cap, almost never reached at λ = 3).
"""

from __future__ import annotations

import math

import numpy as np

from .chunks import chunk_text
from .masking import example_rng
from .palm import PalmTokens, build_palm_example

Span = tuple[int, int]


def permute_sentences(tokens: np.ndarray, bounds: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The text with its sentences (`bounds`: offsets, 0 first, len(tokens) last) in a random order."""
    order = rng.permutation(len(bounds) - 1)
    return np.concatenate([tokens[bounds[i] : bounds[i + 1]] for i in order]).astype(np.int64)


def infilling_span_lengths(
    n: int, rng: np.random.Generator, ratio: float = 0.3, poisson_lambda: float = 3.0
) -> list[int]:
    """Poisson(λ) span lengths summing to exactly `ceil(ratio · n)`, in a random order (module docstring)."""
    target = math.ceil(ratio * n - 1e-9)
    lengths: list[int] = []
    while sum(lengths) < target:
        lengths.append(int(rng.poisson(poisson_lambda)))
    if lengths:
        lengths[-1] -= sum(lengths) - target
    while len(lengths) > target:  # more spans than masked tokens: drop 0-length ones
        lengths.remove(0)
    return [lengths[i] for i in rng.permutation(len(lengths))]


def place_infilling_spans(lengths: list[int], n: int, rng: np.random.Generator) -> list[Span]:
    """Non-overlapping spans of the given lengths, in that left-to-right order, over `n` tokens, the
    layout uniform among all such layouts (stars and bars: k gaps drawn among `free + k` slots)."""
    k, free = len(lengths), n - sum(lengths)
    gaps_before = np.sort(rng.choice(free + k, size=k, replace=False)) - np.arange(k)
    starts = gaps_before + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return [(int(s), int(s) + length) for s, length in zip(starts, lengths)]


def infill(tokens: np.ndarray, spans: list[Span], mask_id: int) -> np.ndarray:
    """`tokens` with each (sorted, non-overlapping) span replaced by one `mask_id`."""
    pieces, last = [], 0
    for start, end in spans:
        pieces += [tokens[last:start], [mask_id]]
        last = end
    pieces.append(tokens[last:])
    return np.concatenate(pieces).astype(np.int64)


def build_bart_example(
    tokens,
    bounds,
    tok: PalmTokens,
    rng: np.random.Generator,
    *,
    ratio: float = 0.3,
    poisson_lambda: float = 3.0,
    permute: bool = True,
) -> dict[str, np.ndarray]:
    """The BART example of a text with sentence offsets `bounds`. Draws: permutation, lengths, layout."""
    tokens = np.asarray(tokens, dtype=np.int64)
    shuffled = permute_sentences(tokens, np.asarray(bounds), rng) if permute else tokens
    spans = place_infilling_spans(infilling_span_lengths(len(tokens), rng, ratio, poisson_lambda), len(tokens), rng)
    return build_palm_example(infill(shuffled, spans, tok.mask), tokens, tok)


class BartExamples:
    """Index → BART example over a token store's sentence chunks; example `i` of epoch `e` is a pure
    function of (seed, e, i)."""

    def __init__(
        self,
        store,
        chunks: np.ndarray,
        tok: PalmTokens,
        *,
        ratio: float = 0.3,
        poisson_lambda: float = 3.0,
        permute: bool = True,
        seed: int = 0,
    ):
        self.store, self.chunks, self.tok, self.seed = store, chunks, tok, seed
        self.options = dict(ratio=ratio, poisson_lambda=poisson_lambda, permute=permute)

    def __len__(self) -> int:
        return len(self.chunks)

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        tokens, bounds = chunk_text(self.store, *self.chunks[index])
        return build_bart_example(tokens, bounds, self.tok, example_rng(self.seed, epoch, index), **self.options)
