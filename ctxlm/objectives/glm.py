"""GLM's autoregressive blank infilling (Du et al., 2021, arXiv 2103.10360).

Pure numpy: token ids in, token ids out; randomness only from the `numpy.random.Generator` passed in.

An example has two parts:

* **Part A** - the corrupted text: every sampled span is replaced by ONE mask token ([MASK] for short
  spans, [sMASK] for the sentence-level and [gMASK] for the document-level objective). Part A is
  attended bidirectionally.
* **Part B** - the spans, in a random order, each written as `[sop] s1 .. sk` and trained to produce
  `s1 .. sk [eop]`. Part B is causal: a token sees all of Part A and the Part B tokens up to itself.

**2D positions.** `position_ids` (the first position) is the index in Part A; a Part B token takes the
position of its span's mask token. `block_position_ids` (the second) is 0 over Part A and 1, 2, ...
inside a Part B block (`[sop]` gets 1, `s1` gets 2, ...), so the model never learns a span's length
from the positions.

**Layout conventions.** Positions are 0-based indices into the Part A sequence. With `add_cls=True`
(the default, as in THUDM/GLM, whose texts all start with [CLS]) [CLS] sits at position 0 and the text
starts at 1, which reproduces the paper's Figure 2 numbering (`x1 x2 [M] x4 [M]` at 1..5). With
`add_cls=False` the text starts at 0. `add_eos=True` appends [SEP] (`tok.eos`) after the text in
Part A, as THUDM/GLM's pretraining texts end with an end token that is never masked.

Spans are half-open `(start, end)` token ranges over the text (before [CLS] is added).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ctxlm.errors import CtxlmError
from ctxlm.objectives.chunks import sentence_chunks, skipped_sentences
from ctxlm.objectives.masking import IGNORE_INDEX, example_rng

Span = tuple[int, int]

MULTITASK_MODES = ("blank", "sentence", "document")


@dataclass(frozen=True)
class GlmTokens:
    """Ids of GLM's special tokens, taken from the caller's tokenizer.

    `mask` [MASK] (short blanks), `smask` [sMASK] (sentence blanks), `gmask` [gMASK] (document /
    generation blank), `sop` / `eop` (start / end of a Part B piece), `cls` [CLS], `eos` the end token
    ([SEP]) and `pad` [PAD] (for the collator; the builders here never pad).
    """

    mask: int
    smask: int | None  # None: the vocabulary has no [sMASK] (THUDM's glm-large)
    gmask: int | None  # None: no [gMASK]; generation prompts end in [MASK] instead
    sop: int
    eop: int
    cls: int
    eos: int
    pad: int

    @property
    def blanks(self) -> tuple[int, ...]:
        """The blank ids the vocabulary has: [MASK], then [sMASK] and [gMASK] where present."""
        return tuple(i for i in (self.mask, self.smask, self.gmask) if i is not None)

    @property
    def generation_mask(self) -> int:
        """The blank a generation prompt ends in: [gMASK], or [MASK] without one (THUDM/GLM's seq2seq
        tasks use [MASK] when not run with --task-mask)."""
        return self.mask if self.gmask is None else self.gmask

    def require(self, name: str) -> int:
        """The id of blank `name` ("smask" / "gmask"), or a one-line error when the vocabulary has none."""
        value = getattr(self, name)
        if value is None:
            raise CtxlmError(f"this GLM has no [{name[0]}MASK] token ({name}_token_id is None), which this needs")
        return value


# ----------------------------------------------------------------------------------------------
# Span samplers
# ----------------------------------------------------------------------------------------------


def _draw_span_length(rng: np.random.Generator, poisson_lambda: float) -> int:
    """One span length from Poisson(lambda) conditioned on being >= 1 (zeros are redrawn)."""
    while True:
        length = int(rng.poisson(poisson_lambda))
        if length > 0:
            return length


def sample_span_lengths(
    n: int, rng: np.random.Generator, *, ratio: float = 0.15, poisson_lambda: float = 3.0
) -> list[int]:
    """Span lengths for the blank-infilling objective over a text of `n` tokens.

    Draws lengths from Poisson(`poisson_lambda`) with 0 rejected until their sum reaches
    `max(1, int(ratio * n))` (GLM's stopping rule: the last span may overshoot the target). A
    length that would no longer fit (spans need one unmasked token between them) is cut to the room
    left, and drawing stops when no room is left; this only matters for very short texts.
    """
    if n < 0:
        raise CtxlmError(f"sample_span_lengths: n must be >= 0, got {n}")
    if not 0.0 < ratio <= 1.0:
        raise CtxlmError(f"sample_span_lengths: ratio must be in (0, 1], got {ratio}")
    if not poisson_lambda > 0:
        raise CtxlmError(f"sample_span_lengths: poisson_lambda must be > 0, got {poisson_lambda}")
    target = max(1, int(ratio * n)) if n > 0 else 0
    lengths: list[int] = []
    total = 0
    while total < target:
        room = n - total - len(lengths)  # tokens left once a separating gap follows each span
        if room < 1:
            break
        length = min(_draw_span_length(rng, poisson_lambda), room)
        lengths.append(length)
        total += length
    return lengths


def place_spans(lengths: Sequence[int], n: int, rng: np.random.Generator) -> list[Span]:
    """Place spans of the given lengths, in the given left-to-right order, over `n` tokens.

    Consecutive spans are separated by at least one unmasked token (so every blank is one [MASK]
    between real tokens). With `free = n - sum(lengths) - (len(lengths) - 1)` spare tokens, the
    layout is drawn uniformly among all valid layouts ("stars and bars": `k` distinct bar positions
    among `free + k` slots).

    THUDM/GLM draws the `k` offsets independently from {0..free} and sorts them, which weights a
    layout by the number of orderings giving it (slightly favouring spread-out layouts); the range of
    layouts is the same.
    """
    k = len(lengths)
    if k == 0:
        return []
    if min(lengths) < 1:
        raise CtxlmError(f"place_spans: span lengths must be >= 1, got {list(lengths)}")
    free = n - sum(lengths) - (k - 1)
    if free < 0:
        raise CtxlmError(f"place_spans: spans of total length {sum(lengths)} do not fit in {n} tokens")
    bars = np.sort(rng.choice(free + k, size=k, replace=False))
    extra_before = bars - np.arange(k)  # non-decreasing, in [0, free]
    spans = []
    consumed = 0  # span tokens plus the mandatory gaps before span i
    for i, length in enumerate(lengths):
        start = int(extra_before[i]) + consumed
        spans.append((start, start + int(length)))
        consumed += int(length) + 1
    return spans


def sample_blank_spans(
    n: int, rng: np.random.Generator, *, ratio: float = 0.15, poisson_lambda: float = 3.0
) -> list[Span]:
    """Spans for GLM's blank-infilling objective (the NLU objective, GLM paper §2.1).

    Follows THUDM/GLM: span lengths are drawn from Poisson(lambda=3) with 0 rejected until they
    sum to `max(1, int(ratio * n))` (`sample_span_lengths`), shuffled, then placed at random
    non-overlapping positions with at least one unmasked token between spans (`place_spans`).
    Differences from the reference: the ratio is taken over the `n` text tokens (the reference
    counts its [CLS] and end token too), lengths are not capped at 39 (immaterial for lambda=3), the
    layout is uniform over valid layouts (see `place_spans`), and a too-long length is cut to fit
    rather than the whole sample dropped.

    The masked ratio is `ratio` plus the overshoot of the last span (about 15.2% for n=512); the
    mean span length is slightly above 3 (3 / (1 - e^-3) = 3.16 for Poisson truncated at 0).
    Returns sorted half-open `(start, end)` spans.
    """
    lengths = sample_span_lengths(n, rng, ratio=ratio, poisson_lambda=poisson_lambda)
    lengths = [lengths[i] for i in rng.permutation(len(lengths))]
    return place_spans(lengths, n, rng)


def _check_bounds(bounds: Sequence[Span], n: int | None, what: str) -> list[Span]:
    """Sorted `(start, end)` pairs, each non-empty, non-overlapping and inside [0, n]."""
    out = sorted((int(s), int(e)) for s, e in bounds)
    limit = n if n is not None else (out[-1][1] if out else 0)
    last_end = 0
    for start, end in out:
        if not 0 <= start < end <= limit:
            raise CtxlmError(f"{what}: span ({start}, {end}) is empty or outside [0, {limit}]")
        if start < last_end:
            raise CtxlmError(f"{what}: span ({start}, {end}) overlaps the previous one (ends at {last_end})")
        last_end = end
    return out


def sample_sentence_spans(
    sentence_bounds: Sequence[Span], rng: np.random.Generator, *, ratio: float = 0.15, n: int | None = None
) -> list[Span]:
    """Whole sentences for the sentence-level objective (GLM paper §2.2.1; each becomes one [sMASK]).

    Takes the sentences in a random order and keeps adding them until they cover at least
    `ratio * n` tokens, as THUDM/GLM does (`n` defaults to the end of the last sentence; pass the
    text length when tokens lie outside every sentence). At least one sentence is chosen whenever
    there is one. Returns the chosen sentence bounds, sorted.
    """
    bounds = _check_bounds(sentence_bounds, n, "sample_sentence_spans")
    if not bounds:
        return []
    total = n if n is not None else bounds[-1][1]
    need = ratio * total
    chosen: list[Span] = []
    covered = 0
    for i in rng.permutation(len(bounds)):
        chosen.append(bounds[i])
        covered += bounds[i][1] - bounds[i][0]
        if covered >= need:
            break
    return sorted(chosen)


def sample_document_span(
    n: int, rng: np.random.Generator, *, low: float = 0.5, high: float = 1.0, end_prob: float = 0.5
) -> list[Span]:
    """The single span of the document-level objective (GLM paper §2.2.1; it becomes [gMASK]).

    Its length is uniform over the integers in `[ceil(low * n), floor(high * n)]` (at least 1).
    With probability `end_prob` the span ends at the end of the text (the model continues a
    prefix); otherwise its start is uniform over `0..n - length`, so text may follow the [gMASK].
    That is THUDM/GLM's `ConstructBlockStrategy` "gpt" branch: with probability `gpt_infill_prob`
    (0.5 by default and in its GLM-Doc scripts) the generated part is the end of the text, else it
    is one block of the same length placed uniformly by `sample_spans` (task "generation"). THUDM/GLM
    draws one length per batch, shared by its examples; here each example draws its own. Draws: the
    length, then the coin, then the start. Returns `[(start, start + length)]`.
    """
    if n < 1:
        raise CtxlmError(f"sample_document_span: the text must have at least 1 token, got {n}")
    if not 0.0 <= low <= high <= 1.0:
        raise CtxlmError(f"sample_document_span: need 0 <= low <= high <= 1, got low={low}, high={high}")
    if not 0.0 <= end_prob <= 1.0:
        raise CtxlmError(f"sample_document_span: end_prob must be in [0, 1], got {end_prob}")
    shortest = max(1, math.ceil(low * n - 1e-9))
    longest = max(shortest, math.floor(high * n + 1e-9))
    length = int(rng.integers(shortest, longest + 1))
    start = n - length if rng.random() < end_prob else int(rng.integers(0, n - length + 1))
    return [(start, start + length)]


# ----------------------------------------------------------------------------------------------
# Building an example: Part A, Part B, labels and 2D positions
# ----------------------------------------------------------------------------------------------


def _as_ids(tokens) -> np.ndarray:
    ids = np.asarray(tokens, dtype=np.int64)
    if ids.ndim != 1:
        raise CtxlmError(f"expected a 1-D sequence of token ids, got shape {ids.shape}")
    return ids


def part_b_positions(mask_position: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """2D positions of a Part B block of `length` tokens (`[sop]` included) filling the mask at
    `mask_position`: first positions all `mask_position`, block positions `1..length`.

    A decoder filling a blank token by token uses the same numbers.
    """
    return (
        np.full(length, mask_position, dtype=np.int64),
        np.arange(1, length + 1, dtype=np.int64),
    )


def part_b_block(span_ids, mask_position: int, start_id: int, end_id: int) -> dict[str, np.ndarray]:
    """One Part B block for a span `s1..sk`: inputs `[start] s1..sk`, labels `s1..sk [end]`
    (the inputs shifted left), at `part_b_positions(mask_position, k + 1)`.
    """
    span_ids = _as_ids(span_ids)
    inputs = np.concatenate([[start_id], span_ids]).astype(np.int64)
    labels = np.concatenate([span_ids, [end_id]]).astype(np.int64)
    position_ids, block_position_ids = part_b_positions(mask_position, len(inputs))
    return {
        "input_ids": inputs,
        "labels": labels,
        "position_ids": position_ids,
        "block_position_ids": block_position_ids,
    }


def _corrupt(tokens: np.ndarray, spans: list[Span], blank_ids: list[int], *, cls: int | None, eos: int | None):
    """Part A: the text with span j replaced by the single token `blank_ids[j]`, optionally wrapped
    as `[CLS] ... [eos]`. Returns `(part_a, mask_positions)` (index of each blank in Part A)."""
    pieces: list[np.ndarray] = []
    mask_positions = []
    length = 0
    if cls is not None:
        pieces.append(np.array([cls], dtype=np.int64))
        length += 1
    last = 0
    for (start, end), blank in zip(spans, blank_ids):
        pieces.append(tokens[last:start])
        length += start - last
        mask_positions.append(length)
        pieces.append(np.array([blank], dtype=np.int64))
        length += 1
        last = end
    pieces.append(tokens[last:])
    if eos is not None:
        pieces.append(np.array([eos], dtype=np.int64))
    part_a = np.concatenate(pieces).astype(np.int64) if pieces else np.zeros(0, dtype=np.int64)
    return part_a, mask_positions


def _assemble(part_a: np.ndarray, blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate Part A (label IGNORE_INDEX, 2D positions `(i, 0)`) with the Part B blocks."""
    n_a = len(part_a)
    empty = np.zeros(0, dtype=np.int64)

    def cat(key: str, part_a_values: np.ndarray) -> np.ndarray:
        return np.concatenate([part_a_values] + [b[key] for b in blocks] + [empty]).astype(np.int64)

    return {
        "input_ids": cat("input_ids", part_a),
        "labels": cat("labels", np.full(n_a, IGNORE_INDEX, dtype=np.int64)),
        "position_ids": cat("position_ids", np.arange(n_a, dtype=np.int64)),
        "block_position_ids": cat("block_position_ids", np.zeros(n_a, dtype=np.int64)),
        "part_a_length": np.array(n_a, dtype=np.int64),
    }


def build_blank_infilling_example(
    tokens,
    spans: Sequence[Span],
    rng: np.random.Generator | None,
    tok: GlmTokens,
    *,
    mask_id: int | None = None,
    shuffle: bool = True,
    sentinel: bool = False,
    sentinel_ids: Sequence[int] | None = None,
    add_cls: bool = True,
    add_eos: bool = True,
) -> dict[str, np.ndarray]:
    """GLM's autoregressive blank-infilling example for `tokens` with the given `spans` blanked.

    * `input_ids` - Part A, the corrupted text (`[CLS]` if `add_cls`, the text with each span
      replaced by one `mask_id` token, default `tok.mask`, then `[eos]` if `add_eos`), followed by
      Part B: the spans in a random order (`shuffle=True`, drawn from `rng`; `shuffle=False` keeps
      text order, the "no span shuffling" ablation), each as `[sop] s1 .. sk`.
    * `labels` - `IGNORE_INDEX` over Part A; over each Part B block `s1 .. sk [eop]`, i.e. the block's
      inputs shifted left by one.
    * `position_ids` / `block_position_ids` - the 2D positions: index in Part A (0-based; [CLS] at 0,
      so the text starts at 1 when `add_cls`), Part B tokens at their span's mask position; 0 over
      Part A and 1..k+1 along a Part B block (`[sop]` = 1).
    * `part_a_length` - 0-d array, the number of Part A tokens (THUDM/GLM's `sep`): Part A is
      bidirectional, Part B causal (see `glm_attention_allowed`).

    `sentinel=True` is the paper's sentinel ablation (Table 6 row 7), T5-style: span j in text order
    is blanked by `sentinel_ids[j]` instead of the shared mask, and its Part B block starts with the
    same `sentinel_ids[j]` instead of `[sop]`, so each block names the blank it fills. The 2D
    positions are unchanged (THUDM/GLM's variant pairs `MASKi` with `sopi` numbered in generation
    order and moves Part B to one fixed out-of-range position).

    With `add_cls=False, add_eos=False` the paper's worked example comes out exactly, with positions
    shifted down by one (the text starts at 0).
    """
    tokens = _as_ids(tokens)
    spans = _check_bounds(spans, len(tokens), "build_blank_infilling_example")
    if sentinel:
        if sentinel_ids is None or len(sentinel_ids) < len(spans):
            have = 0 if sentinel_ids is None else len(sentinel_ids)
            raise CtxlmError(
                f"build_blank_infilling_example: sentinel=True needs one sentinel id per span "
                f"({len(spans)} spans, {have} sentinel_ids)"
            )
        blank_ids = [int(sentinel_ids[j]) for j in range(len(spans))]
        start_ids = blank_ids
    else:
        blank = tok.mask if mask_id is None else int(mask_id)
        blank_ids = [blank] * len(spans)
        start_ids = [tok.sop] * len(spans)
    part_a, mask_positions = _corrupt(
        tokens, spans, blank_ids, cls=tok.cls if add_cls else None, eos=tok.eos if add_eos else None
    )
    if shuffle and len(spans) > 1:
        if rng is None:
            raise CtxlmError("build_blank_infilling_example: shuffle=True needs an rng")
        order = rng.permutation(len(spans))
    else:
        order = np.arange(len(spans))
    blocks = [part_b_block(tokens[spans[j][0] : spans[j][1]], mask_positions[j], start_ids[j], tok.eop) for j in order]
    return _assemble(part_a, blocks)


def glm_attention_allowed(part_a_length: int, total_length: int) -> np.ndarray:
    """GLM's self-attention mask, `[query, key]`, True where the query may attend the key.

    Part A rows (queries `< part_a_length`) see all of Part A and nothing of Part B; Part B rows see
    all of Part A plus the Part B keys at or before themselves. A reference for tests and for the
    model's own mask construction; padding is the collator's business.
    """
    sep = int(part_a_length)
    if not 0 <= sep <= total_length:
        raise CtxlmError(f"glm_attention_allowed: part_a_length {sep} outside [0, {total_length}]")
    query = np.arange(total_length)[:, None]
    key = np.arange(total_length)[None, :]
    return (key < sep) | ((query >= sep) & (key <= query))


# ----------------------------------------------------------------------------------------------
# Pretraining objectives and multitask mixing
# ----------------------------------------------------------------------------------------------


def blank_example(
    tokens,
    rng: np.random.Generator,
    tok: GlmTokens,
    *,
    ratio: float = 0.15,
    poisson_lambda: float = 3.0,
    **opts,
) -> dict[str, np.ndarray]:
    """Blank-infilling objective: Poisson(3) spans covering ~15% of the text, each one [MASK].

    `opts` go to `build_blank_infilling_example` (shuffle, sentinel, add_cls, ...).
    """
    tokens = _as_ids(tokens)
    spans = sample_blank_spans(len(tokens), rng, ratio=ratio, poisson_lambda=poisson_lambda)
    return build_blank_infilling_example(tokens, spans, rng, tok, **opts)


def sentence_example(
    tokens,
    sentence_bounds: Sequence[Span],
    rng: np.random.Generator,
    tok: GlmTokens,
    *,
    ratio: float = 0.15,
    **opts,
) -> dict[str, np.ndarray]:
    """Sentence-level objective: whole sentences covering >= 15% of the text, each one [sMASK].

    `sentence_bounds` are the `(start, end)` token bounds of the sentences in `tokens`.
    """
    tokens = _as_ids(tokens)
    spans = sample_sentence_spans(sentence_bounds, rng, ratio=ratio, n=len(tokens))
    opts.setdefault("mask_id", tok.require("smask"))
    return build_blank_infilling_example(tokens, spans, rng, tok, **opts)


def document_example(
    tokens,
    rng: np.random.Generator,
    tok: GlmTokens,
    *,
    low: float = 0.5,
    high: float = 1.0,
    end_prob: float = 0.5,
    **opts,
) -> dict[str, np.ndarray]:
    """Document-level objective: one [gMASK] span covering 50-100% of the text, at the end with
    probability `end_prob`, elsewhere otherwise (`sample_document_span`, as THUDM/GLM).

    Defaults to `add_eos=False`: Part A is `[CLS] prefix [gMASK]` when the span ends the text, the
    shape of the generation prompt of `build_seq2seq_example`, and `[CLS] prefix [gMASK] suffix`
    otherwise. (THUDM/GLM's end branch puts nothing after [gMASK]; its other branch keeps the rest
    of the text after it.)
    """
    tokens = _as_ids(tokens)
    spans = sample_document_span(len(tokens), rng, low=low, high=high, end_prob=end_prob)
    opts.setdefault("mask_id", tok.require("gmask"))
    opts.setdefault("add_eos", False)
    return build_blank_infilling_example(tokens, spans, rng, tok, **opts)


def choose_multitask_mode(rng: np.random.Generator, long_mode: str = "document") -> str:
    """The objective for one training BATCH in multitask pretraining (GLM_Doc / GLM_Sent).

    "Within one training batch, we sample short spans and longer spans (document-level or
    sentence-level) with equal chances": call this once per batch, with a generator keyed by the
    batch (not by an example), and build every example of that batch with the returned mode via
    `multitask_example`. Returns "blank" or `long_mode` with probability 1/2 each.
    """
    if long_mode not in ("document", "sentence"):
        raise CtxlmError(f"choose_multitask_mode: long_mode must be 'document' or 'sentence', got {long_mode!r}")
    return "blank" if rng.random() < 0.5 else long_mode


def multitask_example(
    mode: str,
    tokens,
    rng: np.random.Generator,
    tok: GlmTokens,
    *,
    sentence_bounds: Sequence[Span] | None = None,
    **opts,
) -> dict[str, np.ndarray]:
    """Build one example with the objective `mode` ("blank", "sentence" or "document")."""
    if mode == "blank":
        return blank_example(tokens, rng, tok, **opts)
    if mode == "document":
        return document_example(tokens, rng, tok, **opts)
    if mode == "sentence":
        if sentence_bounds is None:
            raise CtxlmError("multitask_example: mode 'sentence' needs sentence_bounds")
        return sentence_example(tokens, sentence_bounds, rng, tok, **opts)
    raise CtxlmError(f"multitask_example: unknown mode {mode!r} (expected one of {MULTITASK_MODES})")


# ----------------------------------------------------------------------------------------------
# Fine-tuning layouts: generation, text infilling, cloze
# ----------------------------------------------------------------------------------------------


def build_seq2seq_example(
    source,
    target,
    tok: GlmTokens,
    *,
    mask_id: int | None = None,
    max_source: int | None = None,
    max_target: int | None = None,
) -> dict[str, np.ndarray]:
    """Conditional generation as blank infilling (GLM paper §2.3, THUDM/GLM's seq2seq tasks).

    Part A is `[CLS] source [gMASK]` (`mask_id` replaces [gMASK]); Part B is `[sop] target` with
    labels `target [eop]`. Part B sits at the mask's position with block positions 1, 2, ...

    `max_source` caps Part A's length ([CLS] and the mask included): the source is cut from its end,
    the mask is always kept. `max_target` caps Part B's length: the first `max_target` labels are
    kept (so a cut target loses its [eop]) and the inputs are `[sop]` plus the labels but the last.
    `target=None` returns Part A alone (for decoding: append `[sop]` at `mask_position`, block
    position 1, see `part_b_positions`). Also returns `mask_position` (0-d array).
    """
    source = _as_ids(source)
    mask = tok.generation_mask if mask_id is None else int(mask_id)
    if max_source is not None:
        if max_source < 2:
            raise CtxlmError(f"build_seq2seq_example: max_source must be >= 2 ([CLS] and the mask), got {max_source}")
        source = source[: max_source - 2]
    part_a = np.concatenate([[tok.cls], source, [mask]]).astype(np.int64)
    mask_position = len(part_a) - 1
    blocks = []
    if target is not None:
        block = part_b_block(target, mask_position, tok.sop, tok.eop)
        if max_target is not None:
            if max_target < 1:
                raise CtxlmError(f"build_seq2seq_example: max_target must be >= 1, got {max_target}")
            block = {key: value[:max_target] for key, value in block.items()}
        blocks.append(block)
    example = _assemble(part_a, blocks)
    example["mask_position"] = np.array(mask_position, dtype=np.int64)
    return example


def _is_blank(ids: np.ndarray, tok: GlmTokens) -> np.ndarray:
    return np.isin(ids, tok.blanks)


def build_infilling_prompt(tokens_with_blanks, tok: GlmTokens, *, add_cls: bool = True, add_eos: bool = True):
    """Part A for the text-infilling command: a text with several blanks ([MASK], [sMASK] or [gMASK]).

    Returns `input_ids` (`[CLS] text [eos]` as in pretraining), `position_ids`, `block_position_ids`
    (zeros), `part_a_length` and `mask_positions`: the Part A index of each blank, left to right.
    A decoder fills the blanks one after another: for blank i it appends `[sop]` and then its
    generated tokens at `part_b_positions(mask_positions[i], ...)` until `[eop]`; earlier filled
    blanks stay in Part B, visible to later ones.
    """
    ids = _as_ids(tokens_with_blanks)
    if not _is_blank(ids, tok).any():
        raise CtxlmError("build_infilling_prompt: the text has no [MASK]/[sMASK]/[gMASK] blank to fill")
    pieces = ([[tok.cls]] if add_cls else []) + [ids] + ([[tok.eos]] if add_eos else [])
    part_a = np.concatenate(pieces).astype(np.int64)
    example = _assemble(part_a, [])
    del example["labels"]
    example["mask_positions"] = np.flatnonzero(_is_blank(part_a, tok)).astype(np.int64)
    return example


def build_cloze_candidates(
    context_ids,
    candidate_ids_list: Sequence[Sequence[int]],
    tok: GlmTokens,
    *,
    add_cls: bool = True,
    add_eos: bool = True,
    score_eop: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Score multi-token cloze answers in one forward pass per candidate (GLM paper §2.3, App. B).

    `context_ids` holds exactly one [MASK] (`tok.mask`) where the answer goes. Every candidate gets
    the same Part A (`[CLS] context [eos]`) followed by its own Part B `[sop] c1 .. c(k-1)` with labels
    `c1 .. ck`, at the mask's position with block positions 1..k. Only the answer tokens are scored
    (as THUDM/GLM does), so

        log P(candidate | context) = sum of log p(labels[t] | inputs[: t + 1]) over labels != IGNORE_INDEX,

    which the causal Part B makes equal to decoding the answer token by token. `score_eop=True`
    also scores the closing `[eop]` (inputs `[sop] c1 .. ck`, labels `c1 .. ck [eop]`).
    Returns one example dict per candidate (keys as `build_blank_infilling_example`, plus
    `mask_position`); rows differ only in Part B.
    """
    context = _as_ids(context_ids)
    n_masks = int((context == tok.mask).sum())
    if n_masks != 1:
        raise CtxlmError(f"build_cloze_candidates: the context must hold exactly one [MASK], found {n_masks}")
    pieces = ([[tok.cls]] if add_cls else []) + [context] + ([[tok.eos]] if add_eos else [])
    part_a = np.concatenate(pieces).astype(np.int64)
    mask_position = int(np.flatnonzero(part_a == tok.mask)[0])
    examples = []
    for i, candidate in enumerate(candidate_ids_list):
        if len(candidate) == 0:
            raise CtxlmError(f"build_cloze_candidates: candidate {i} is empty")
        block = part_b_block(candidate, mask_position, tok.sop, tok.eop)
        if not score_eop:
            block = {key: value[:-1] for key, value in block.items()}
        example = _assemble(part_a, [block])
        example["mask_position"] = np.array(mask_position, dtype=np.int64)
        examples.append(example)
    return examples


# ----------------------------------------------------------------------------------------------
# Pretraining data: chunks of a token store and the Examples the training loop reads
# ----------------------------------------------------------------------------------------------

GLM_TASKS = ("blank", "sentence", "document", "multitask")


def glm_text_budget(
    max_length: int, task: str = "multitask", *, ratio: float = 0.15, long_mode: str = "document"
) -> int:
    """The most text tokens a chunk may hold so that its example, Part A and Part B together, has at
    most `max_length` tokens whatever spans are drawn.

    A text of n tokens with k blanks gives Part A = `[CLS]` + (n - masked + k) + `[SEP]` and
    Part B = masked + k (one `[sop]` per span), i.e. n + 2 + 2k tokens. Blank infilling draws at most
    `max(1, int(ratio * n))` spans (they are >= 1 token each and stop at that many tokens) and the
    sentence objective at most `max(1, ceil(ratio * n))` sentences (it stops once they cover
    `ratio * n` tokens); both bounds are reached when every span or sentence is one token. The
    document objective gives `[CLS] prefix [gMASK] suffix` + `[sop] span`: n + 3. The budget is the largest
    n whose worst case fits, over the objectives `task` uses. Every position id is then below
    `max_length` too (positions index Part A; block positions are at most a span's length + 1).
    """
    if task not in GLM_TASKS:
        raise CtxlmError(f"unknown GLM task {task!r} (choose from {', '.join(GLM_TASKS)})")
    modes = {"blank": ["blank"], "sentence": ["sentence"], "document": ["document"], "multitask": ["blank", long_mode]}[
        task
    ]

    def longest(mode: str, n: int) -> int:
        if mode == "document":
            return n + 3
        # the same float product the samplers compare with
        spans = int(ratio * n) if mode == "blank" else math.ceil(ratio * n)
        return n + 2 + 2 * max(1, spans)

    n = max_length - 3
    while n > 0 and max(longest(mode, n) for mode in modes) > max_length:
        n -= 1
    if n < 1:
        raise CtxlmError(f"GLM max_length {max_length} leaves no room for text")
    return n


class GlmExamples:
    """Index -> GLM pretraining example over chunks of a token store: what the training loop reads.

    `data.task` picks the objective: "blank" (Poisson spans, [MASK]), "sentence" (whole sentences,
    [sMASK]), "document" (one long [gMASK] span, at the end with probability `data.gmask_end_prob`)
    or "multitask" (blank infilling and
    `data.long_mode` with equal chances, drawn once per batch as the paper does: "within one training
    batch, we sample short spans and longer spans ... with equal chances"). Example `i` of epoch `e`
    is a pure function of (seed, e, i); in multitask mode `batch(indices, epoch, batch_number)`
    draws the mode from (seed, epoch, batch_number). `example(i, e)` alone (evaluation) draws the
    mode per example.

    `chunks` are `chunks.sentence_chunks` rows; they must respect `glm_text_budget(data.max_length, ...)`.
    `sentinel_ids` are needed only for `data.sentinel` (the sentinel ablation).
    """

    def __init__(
        self, store, chunks: np.ndarray, tok: GlmTokens, data, seed: int = 0, sentinel_ids: Sequence[int] | None = None
    ):
        if data.task not in GLM_TASKS:
            raise CtxlmError(f"unknown GLM task {data.task!r} (choose from {', '.join(GLM_TASKS)})")
        if data.task == "multitask" and data.long_mode not in ("document", "sentence"):
            raise CtxlmError(f"GLM long_mode must be 'document' or 'sentence', got {data.long_mode!r}")
        if data.sentinel and sentinel_ids is None:
            raise CtxlmError("GLM data.sentinel needs sentinel token ids (the tokenizer has none by default)")
        self.store, self.chunks, self.tok, self.data, self.seed = store, chunks, tok, data, seed
        self.options = dict(shuffle=data.shuffle_spans, sentinel=data.sentinel, sentinel_ids=sentinel_ids)

    def __len__(self) -> int:
        return len(self.chunks)

    def text(self, index: int) -> tuple[np.ndarray, list[Span]]:
        """The chunk's tokens and its sentences' `(start, end)` bounds within them."""
        first, count = (int(v) for v in self.chunks[index])
        offsets = np.asarray(self.store.sentence_offsets[first : first + count + 1], dtype=np.int64)
        tokens = np.asarray(self.store.tokens[offsets[0] : offsets[-1]], dtype=np.int64)
        bounds = offsets - offsets[0]
        return tokens, list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))

    def example(self, index: int, epoch: int = 0, mode: str | None = None) -> dict[str, np.ndarray]:
        if mode is None:
            mode = self.data.task
            if mode == "multitask":  # no batch to share a draw with: draw per example
                mode = choose_multitask_mode(np.random.default_rng([self.seed, epoch, index, 1]), self.data.long_mode)
        tokens, bounds = self.text(index)
        rng = example_rng(self.seed, epoch, index)
        opts = dict(self.options)
        if mode == "blank":
            opts.update(ratio=self.data.mask_ratio, poisson_lambda=self.data.poisson_lambda)
        elif mode == "sentence":
            opts.update(ratio=self.data.mask_ratio)
        else:
            opts.update(end_prob=self.data.gmask_end_prob)
        return multitask_example(mode, tokens, rng, self.tok, sentence_bounds=bounds, **opts)

    def batch_mode(self, epoch: int, batch_number: int) -> str:
        """The objective of one multitask batch, a pure function of (seed, epoch, batch_number)."""
        rng = np.random.default_rng([self.seed, epoch, batch_number, 2])
        return choose_multitask_mode(rng, self.data.long_mode)

    def batch(self, indices, epoch: int, batch_number: int) -> list[dict[str, np.ndarray]]:
        mode = self.batch_mode(epoch, batch_number) if self.data.task == "multitask" else self.data.task
        return [self.example(int(i), epoch, mode) for i in indices]


def prepare_glm_data(
    store, tok: GlmTokens, data, seed: int, max_positions: int | None = None, sentinel_ids: Sequence[int] | None = None
):
    """GLM examples of a token store, split by whole documents (`store.split_documents`).

    Returns `(train_examples, valid_examples, description)`. Chunks hold at most
    `glm_text_budget(data.max_length, ...)` tokens so that an example fits `data.max_length`, which
    must not exceed the model's `max_positions`.
    """
    if max_positions is not None and data.max_length > max_positions:
        raise CtxlmError(
            f"GLM data.max_length {data.max_length} exceeds the model's max_position_embeddings {max_positions}"
        )
    max_text = glm_text_budget(data.max_length, data.task, ratio=data.mask_ratio, long_mode=data.long_mode)
    train_docs, valid_docs = store.split_documents(data.valid_fraction, seed)
    valid_docs = valid_docs[: data.max_valid_documents]
    lengths = store.sentence_lengths
    chunks = {
        name: sentence_chunks(lengths, store.document_offsets, docs, max_text)
        for name, docs in (("train", train_docs), ("valid", valid_docs))
    }
    if len(chunks["train"]) == 0:
        raise CtxlmError(f"the corpus yields no GLM chunks of <= {max_text} tokens")
    make = lambda c: GlmExamples(store, c, tok, data, seed, sentinel_ids)  # noqa: E731
    return (
        make(chunks["train"]),
        make(chunks["valid"]),
        {
            "objective": f"glm/{data.task}" + (f"+{data.long_mode}" if data.task == "multitask" else ""),
            "max_length": data.max_length,
            "max_text": max_text,
            "train_documents": len(train_docs),
            "valid_documents": len(valid_docs),
            "train_chunks": len(chunks["train"]),
            "valid_chunks": len(chunks["valid"]),
            "skipped": skipped_sentences(
                lengths,
                store.document_offsets,
                np.concatenate([train_docs, valid_docs]),
                np.concatenate([chunks["train"], chunks["valid"]]),
                max_text,
            ),
        },
    )
