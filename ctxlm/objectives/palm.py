"""PALM pre-training examples (Bi et al., 2020, §2.2 and §3.1). Pure numpy over token ids.

A fragment of at most L tokens is cut from a document as whole consecutive sentences: the source
(encoder input) is as many sentences as fit in 80%·L, the target (decoder output) the following
sentences up to the remaining 20%·L. Windows slide with a stride of one sentence: every sentence
that can start a fragment starts one (the paper's "sliding window with the stride of one sentence").

Budgets include the special tokens, so tensors never exceed the limits: the encoder input
`[CLS] source [SEP]` has at most `source_max = floor(ratio·L)` tokens, and the decoder input
`[CLS] target` and labels `target [SEP]` at most `target_max = L − source_max` each.
A window needs at least one whole source sentence and one whole target sentence; a sentence that
alone exceeds its budget cannot start (or follow) a window and is skipped by the windows around it.

Stage 1 masks the encoder input with BERT's 80/10/10 corruption (`masking.bert_mask`); stage 2
trains the decoder on the continuation (eq. 1).

Stage 2 with an added encoder MLM loss ("generation+mlm") runs the encoder once, on the masked
source, and gives the copy head the ORIGINAL source as `copy_source_ids`: eq. (6) sums the copy
attention over the positions l whose token x_l is y_t, and x_l is the source word, not the [MASK]
or random token the encoder was shown. The encoder state at a masked position is trained (by the
MLM term) to stand for exactly that word, so copying it is consistent; without `copy_source_ids`
the copy head could copy [MASK] and random replacements and never the masked words. (Running the
encoder twice, clean for the decoder and masked for the MLM head, would also do, at twice the
encoder cost; the decoder here reads a 15%-corrupted source, a denoising signal as in MASS/BART.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .masking import bert_mask, example_rng


@dataclass(frozen=True)
class PalmTokens:
    cls: int  # encoder start and decoder start ([CLS])
    sep: int  # encoder end and target end ([SEP])
    mask: int
    decoder_start: int


def fragment_budgets(fragment_length: int, source_ratio: float) -> tuple[int, int]:
    """(source_max, target_max) in tokens, special tokens included."""
    source_max = int(fragment_length * source_ratio)
    target_max = fragment_length - source_max
    if source_max < 3 or target_max < 2:
        raise ValueError(f"fragment_length {fragment_length} with ratio {source_ratio} leaves no room for text")
    return source_max, target_max


def palm_windows(
    sentence_lengths: np.ndarray, document_offsets: np.ndarray, documents: np.ndarray, source_max: int, target_max: int
) -> np.ndarray:
    """All fragments of the given documents: an int64 array of rows (first_sentence, n_source, n_target).

    `sentence_lengths[i]` is sentence i's token count; document d spans sentences
    `document_offsets[d]:document_offsets[d+1]`. One window starts at each sentence.
    """
    src_text, tgt_text = source_max - 2, target_max - 1  # room left by [CLS] ... [SEP] and [SEP]
    cum = np.concatenate([[0], np.cumsum(sentence_lengths, dtype=np.int64)])
    rows = []
    for d in np.asarray(documents, dtype=np.int64):
        first, end = int(document_offsets[d]), int(document_offsets[d + 1])
        if end - first < 2:
            continue
        starts = np.arange(first, end - 1)
        # the most sentences from each start whose tokens fit the source budget, leaving ≥1 after
        n_src = np.searchsorted(cum, cum[starts] + src_text, side="right") - 1 - starts
        n_src = np.minimum(n_src, end - 1 - starts)
        t0 = starts + n_src
        n_tgt = np.searchsorted(cum, cum[t0] + tgt_text, side="right") - 1 - t0
        n_tgt = np.minimum(n_tgt, end - t0)
        keep = (n_src >= 1) & (n_tgt >= 1)
        rows.append(np.stack([starts[keep], n_src[keep], n_tgt[keep]], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 3), dtype=np.int64)


def build_palm_example(source: np.ndarray, target: np.ndarray, tok: PalmTokens) -> dict[str, np.ndarray]:
    """Stage 2 / fine-tuning: encoder `[CLS] x [SEP]`, decoder `[start] y`, labels `y [SEP]`."""
    return {
        "input_ids": np.concatenate([[tok.cls], source, [tok.sep]]).astype(np.int64),
        "decoder_input_ids": np.concatenate([[tok.decoder_start], target]).astype(np.int64),
        "labels": np.concatenate([target, [tok.sep]]).astype(np.int64),
    }


def build_mlm_example(
    source: np.ndarray, tok: PalmTokens, rng: np.random.Generator, replace_pool: np.ndarray, probability: float = 0.15
) -> dict[str, np.ndarray]:
    """Stage 1: BERT-masked `[CLS] x [SEP]` (specials never masked) and the MLM labels."""
    ids = np.concatenate([[tok.cls], source, [tok.sep]]).astype(np.int64)
    maskable = np.ones(len(ids), dtype=bool)
    maskable[[0, -1]] = False
    inputs, labels = bert_mask(
        ids, rng, mask_id=tok.mask, replace_pool=replace_pool, maskable=maskable, prob=probability
    )
    return {"input_ids": inputs, "mlm_labels": labels}


class PalmExamples:
    """Index → example over a token store's windows: what the training loop iterates.

    `stage` is "mlm" (encoder MLM on the source), "generation" (continuation), or
    "generation+mlm" (continuation with a BERT-masked encoder input and MLM labels too).
    Example `i` of epoch `e` is a pure function of (seed, e, i).
    """

    def __init__(
        self,
        store,
        windows: np.ndarray,
        tok: PalmTokens,
        stage: str,
        *,
        replace_pool: np.ndarray,
        mlm_probability: float = 0.15,
        seed: int = 0,
    ):
        if stage not in ("mlm", "generation", "generation+mlm"):
            raise ValueError(f"unknown PALM stage '{stage}'")
        self.store, self.windows, self.tok, self.stage = store, windows, tok, stage
        self.replace_pool, self.mlm_probability, self.seed = replace_pool, mlm_probability, seed

    def __len__(self) -> int:
        return len(self.windows)

    def fragment(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        first, n_src, n_tgt = (int(v) for v in self.windows[index])
        offsets = self.store.sentence_offsets
        tokens = self.store.tokens
        source = np.asarray(tokens[offsets[first] : offsets[first + n_src]], dtype=np.int64)
        target = np.asarray(tokens[offsets[first + n_src] : offsets[first + n_src + n_tgt]], dtype=np.int64)
        return source, target

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]:
        source, target = self.fragment(index)
        if self.stage == "generation":
            return build_palm_example(source, target, self.tok)
        masked = build_mlm_example(
            source, self.tok, example_rng(self.seed, epoch, index), self.replace_pool, self.mlm_probability
        )
        if self.stage == "mlm":
            return masked
        example = build_palm_example(source, target, self.tok)
        example["copy_source_ids"] = example["input_ids"]  # eq. (6) copies the original words
        example.update(masked)  # the encoder sees the masked source
        return example
