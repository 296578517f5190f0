"""MASS (Song et al., 2019) on the PALM encoder-decoder: a baseline of PALM's Figure 1b and Table 5.

One contiguous span of `ratio` (50%) of a segment's tokens is masked in the encoder input; the
decoder predicts exactly that span. For the segment `x` the encoder reads `[CLS] x' [SEP]` where
x' is x with the span corrupted as MASS does (80% [MASK], 10% a random token, 10% unchanged;
`masking.corrupt_positions`). Over the sequence e = `[CLS] x [SEP]` with the span e[a:b]:

    decoder_input_ids     e[a-1 : b-1]   (the span shifted right by one: the token before it first)
    decoder_position_ids  a-1 .. b-2     (each input token keeps its position in the sentence)
    labels                e[a : b]

so the decoder's other inputs — the tokens outside the span, unmasked in the encoder — are masked
in the MASS sense: the decoder never reads them, and its positions still say where the span sits.
That is microsoft/MASS's implementation (MASS-summarization `masked_dataset.py`: previous tokens
`src[masked_pos - 1]`, positions `masked_pos`, only the span fed to the decoder). The PALM decoder
takes these positions through `PalmModel.forward(decoder_position_ids=...)`; the copy head, if on,
copies from the corrupted encoder input as always. A segment is a chunk of whole sentences
(`chunks.sentence_chunks`) of at most `fragment_length − 2` tokens. Pure numpy over token ids.
"""

from __future__ import annotations

import numpy as np

from .chunks import chunk_text
from .masking import corrupt_positions, example_rng
from .palm import PalmTokens


def mass_span(n: int, rng: np.random.Generator, ratio: float = 0.5) -> tuple[int, int]:
    """The masked span `(start, end)` over a text of `n` ≥ 1 tokens: `max(1, int(ratio · n))`
    tokens (MASS-summarization's `int(len · mask_prob)`), the start uniform over `0 .. n − length`."""
    length = min(n, max(1, int(ratio * n)))
    start = int(rng.integers(0, n - length + 1))
    return start, start + length


def build_mass_example(
    text,
    span: tuple[int, int],
    tok: PalmTokens,
    rng: np.random.Generator,
    replace_pool: np.ndarray,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
) -> dict[str, np.ndarray]:
    """The MASS example of `text` with `span` (half-open, over the text) masked; module docstring."""
    ids = np.concatenate([[tok.cls], np.asarray(text, dtype=np.int64), [tok.sep]]).astype(np.int64)
    a, b = span[0] + 1, span[1] + 1  # in `ids`, after [CLS]
    inputs, _ = corrupt_positions(
        ids,
        np.arange(a, b),
        rng,
        mask_id=tok.mask,
        replace_pool=replace_pool,
        mask_frac=mask_frac,
        random_frac=random_frac,
    )
    return {
        "input_ids": inputs,
        "decoder_input_ids": ids[a - 1 : b - 1].copy(),
        "decoder_position_ids": np.arange(a - 1, b - 1, dtype=np.int64),
        "labels": ids[a:b].copy(),
    }


class MassExamples:
    """Index → MASS example over a token store's sentence chunks (what the training loop reads).
    Example `i` of epoch `e` is a pure function of (seed, e, i): span first, then its corruption."""

    def __init__(
        self, store, chunks: np.ndarray, tok: PalmTokens, *, replace_pool: np.ndarray, ratio: float = 0.5, seed: int = 0
    ):
        self.store, self.chunks, self.tok, self.replace_pool = store, chunks, tok, replace_pool
        self.ratio, self.seed = ratio, seed

    def __len__(self) -> int:
        return len(self.chunks)

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        tokens, _ = chunk_text(self.store, *self.chunks[index])
        rng = example_rng(self.seed, epoch, index)
        span = mass_span(len(tokens), rng, self.ratio)
        return build_mass_example(tokens, span, self.tok, rng, self.replace_pool)
