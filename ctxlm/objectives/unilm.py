"""UniLMv2's pseudo-masked language model (Bao et al., 2020), as pure functions over token ids.

Numpy in, numpy out; randomness only from the `numpy.random.Generator` passed in (see
`masking.example_rng`). Section, equation, figure and table numbers refer to the paper
(/work/shared/papers/unilmv2.md). UniLMv2's pre-training code was never published; the
fine-tuning layout follows microsoft/unilm's `s2s-ft` (`BertForSequenceToSequenceWithPseudoMask`).

Pre-training example (§3.2, Figure 4), for x1..x6 with x2, x4, x5 masked and factorization
order 4, 5 -> 2 (Table 1's last row), built bare (no [SOS]/[EOS]):

    tokens     x1 [M] x3 [M] [M] x6 | [P] [P] x4 x5 | [P] x2
    positions   0  1  2  3   4   5  |  3   4   3  4  |  1   1
    (the paper counts positions from 1: 1 2 3 4 5 6 | 4 5 4 5 | 2 2; we count from 0)

* The *in-place part* is the input with the masked positions corrupted for autoencoding
  (80% [M], 10% random, 10% kept, §4.1). Its length is `num_original`.
* Then, step by step in factorization order, the *appended part*: for each step the pseudo
  masks [P] of its positions, followed by the original tokens of its positions. Each appended
  token takes the position id (and segment) of the token it stands for (§3.2: "we insert a [P]
  token with the same position embedding of the corresponding token").

Which of [P]s or originals comes first inside a step, and whether steps are interleaved, changes
nothing the model computes: position embeddings (and relative-position buckets) come from the
position ids, and who-sees-whom from the attention mask, never from the index in the array (§3.2:
"no matter where a token appears in the input sequence, the position of the token is only
determined by its position embedding"). We put [P]s first within a step, the reading of Figure 4
we were given (the figure itself is an image our copy of the paper lacks).

Self-attention mask (§3.2, Figure 5; `pseudo_mask_attention`). True = the query row may attend
the key column. Every token carries a *step*: 0 for the in-place part, i >= 1 for the appended
tokens of the i-th factorization step.

* Everyone may attend the in-place part (Figure 5: "Both conventional masks [M] and given context
  (x1, x3, x6) can be attended by all the tokens"), except a masked position that does not hold
  [M] (see below).
* In-place tokens attend only the in-place part: every appended original is predicted in some
  step >= 1, i.e. "in the future" of the in-place part (implicit leakage, §3.2; this also keeps the
  AE predictions at [M] conditioned on x\\M only, eq. 3).
* A [P] of step i attends the originals of steps < i and the [P]s of step i (itself included):
  never its own original (explicit leakage) nor those of later steps (implicit leakage). Its
  context is exactly x_{\\M>=i} plus placeholders, eq. (4)-(5).
* An original of step i attends the originals of steps <= i (its own step included) and no [P]:
  "for each token, we mask the attentions to the tokens that are predicted in the future
  factorization steps".

The paper's text does not spell out [P]-to-[P] or original-to-[P] attention; the rules above give
each [P] exactly the conditioning sets §3.2 lists ("only x1, x3, x6 and the pseudo masks of x4,
x5"; then "x1, x3, x4, x5, x6 and the pseudo mask of x2"). They are also the rules of s2s-ft's
span-aware pseudo-mask fine-tuning mask (target tokens of span s see spans <= s; a [P] of span s
sees true tokens of spans < s and the [P]s of span s), with the in-place part in the role of the
source.

BERT's 80/10/10 in place (§4.1) and the mask. 10% of the masked positions keep their own token in
place and 10% hold a random one. With Figure 5's rules as written ("[M] ... can be attended by all
the tokens") a [P] would read such a position directly, or through any in-place token that
attended it: about 10% of the PAR predictions (10.1% measured over 120k [P]s) could attend the very
token they predict, against §3.2 ("[P] are not allowed to attend to the content of themselves")
and eq. (5) (step i conditions on x_{\\M>=i} only). So a masked position whose in-place content
is not [M] takes the step of its factorization step, like an appended original: in-place tokens of
step 0 (context and [M]s) attend step-0 in-place tokens only; an in-place token of step t attends
the in-place tokens of steps <= t (itself included, so the AE prediction there still sees its kept
or random token); a [P] of step i attends in-place tokens of steps < i only, an original of step i
those of steps <= i. Steps never decrease along an attention edge, so nothing leaks over any
number of layers. With every masked position [M] (`mask_frac=1.0`) the mask is exactly Figure 5.
The price: an AE prediction at an [M] does not see the 20% kept/random positions elsewhere (it sees
the context and every [M]). UniLMv2's pre-training code is unpublished; microsoft/unilm's s2s-ft
fine-tuning corrupts the [P] inputs themselves (`keep_prob` / `random_prob`) but never lets a [P]
attend a target token of its own or a later step, the invariant kept here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ctxlm.errors import CtxlmError
from ctxlm.objectives.masking import IGNORE_INDEX, corrupt_positions

OBJECTIVES = ("ae+par", "ae", "par", "ae+ar", "ar")  # Table 6's pre-training objectives


@dataclass(frozen=True)
class UnilmTokens:
    """Special token ids. `replace_pool`: the non-special ids used for the 10% random replacement."""

    sos: int  # [SOS] = [CLS]
    eos: int  # [EOS] = [SEP]
    mask: int  # [MASK] = [M], the conventional mask (autoencoding)
    pseudo: int  # [Pseudo] = [P], the pseudo mask (partially autoregressive)
    pad: int
    replace_pool: np.ndarray = field(repr=False, compare=False)


# --------------------------------------------------------------------------- Algorithm 1


def blockwise_masking(
    n: int,
    rng: np.random.Generator,
    *,
    ratio: float = 0.15,
    block_prob: float = 0.4,
    min_block: int = 2,
    max_block: int = 6,
    maskable: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Algorithm 1 (Blockwise Masking): the masked positions, one array per factorization step.

    Repeat: sample a start p uniformly from 0..n-1; draw l = randint(min_block, max_block) if
    rand() < block_prob else 1 (drawn before and independently of the overlap check); if
    positions p..p+l-1 are all inside the sequence, maskable and not yet masked, append them as one
    step M_i. Until sum |M_i| >= ratio * (number of maskable positions) — `n` when `maskable` is
    None; excluding [SOS]/[EOS] matches "15% of the original tokens" (§3.1.2) and `bert_mask`.

    A proposal that runs past the end (p + l > n) is rejected, like an overlapping one: Algorithm 1
    only masks x_p..x_{p+l-1} when those tokens exist. Rejection (of overlaps and overruns) pulls the
    share of block steps below block_prob: about 37% at n=512. The last accepted step can overshoot
    the target: about 15.3% masked at n=512, 17% at n=64.

    Returns the steps in order of acceptance, each an ascending int64 array of contiguous positions.
    That order is not a uniformly random factorization order (see `factorization_order`).
    """
    if not 0.0 < ratio <= 1.0:
        raise CtxlmError(f"blockwise masking ratio must be in (0, 1], got {ratio}")
    if not 0.0 <= block_prob <= 1.0:
        raise CtxlmError(f"blockwise masking block_prob must be in [0, 1], got {block_prob}")
    if not 1 <= min_block <= max_block:
        raise CtxlmError(f"blockwise masking needs 1 <= min_block <= max_block, got {min_block}, {max_block}")
    free = np.ones(n, dtype=bool) if maskable is None else np.array(maskable, dtype=bool)
    if free.shape != (n,):
        raise CtxlmError(f"maskable must have shape ({n},), got {free.shape}")
    target = ratio * int(free.sum())  # every maskable position is reachable by a single: terminates
    steps: list[np.ndarray] = []
    total = 0
    while total < target:
        p = int(rng.integers(0, n))
        length = int(rng.integers(min_block, max_block + 1)) if rng.random() < block_prob else 1
        if p + length > n or not free[p : p + length].all():
            continue
        free[p : p + length] = False
        steps.append(np.arange(p, p + length, dtype=np.int64))
        total += length
    return steps


def factorization_order(steps: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """A uniformly random order over the steps: the M = <M_1, ..., M_|M|> of eqs. (4)-(6).

    "We randomly sample one factorization order M for each input text" (§3.1.2). Algorithm 1's
    acceptance order is random but not uniform over orders: the step that crosses the 15% target
    is a block far more often than average (about 2/3 vs 37% at n=512, since a block is more likely
    to reach the target), and blocks are accepted more easily early on, before the sequence
    fills up. So we shuffle again. (Algorithm 1 also returns M-bar rather than M.)
    """
    return [steps[i] for i in rng.permutation(len(steps))]


def single_token_steps(steps: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The AR ablation's factorization (Table 6, "- blockwise factorization"): one token per step.

    The masked positions stay those of blockwise masking; each block becomes consecutive
    single-token steps, left to right, at the block's place in the factorization order, so a span
    is still generated left to right as in seq2seq decoding (§3.4). (Table 1's AR rows would also
    allow right-to-left inside a block; the paper does not say which its ablation used.)
    """
    return [np.array([p], dtype=np.int64) for step in steps for p in step]


# --------------------------------------------------------------------------- attention (Figure 5)


def attention_from_steps(step: np.ndarray, is_pseudo: np.ndarray, in_place: np.ndarray | None = None) -> np.ndarray:
    """The §3.2 mask from each token's step (0 = given context) and whether it is a [P].

    Returns bool [L, L], True where query row q may attend key column k:
      key of step 0 (context)                  -> every query
      query original of step s >= 0, key original of step t >= 1 -> iff t <= s
      query [P] of step s,            key original of step t >= 1 -> iff t <  s
      query [P] of step s,            key [P] of step t            -> iff t == s
      query original,                 key [P]                      -> never
    (A context query has s = 0, so it sees the context only.) With `in_place` given, an in-place
    query attends in-place keys only (the AE side never sees the appended part, eq. 3); an in-place
    token of step t >= 1 (a masked position whose in-place content is not [M]) is an "original of
    step t" for these rules.
    """
    step = np.asarray(step, dtype=np.int64)
    is_pseudo = np.asarray(is_pseudo, dtype=bool)
    q_step, k_step = step[:, None], step[None, :]
    q_pseudo, k_pseudo = is_pseudo[:, None], is_pseudo[None, :]
    key_context = (k_step == 0) & ~k_pseudo
    original_sees_original = ~q_pseudo & ~k_pseudo & (k_step <= q_step)
    pseudo_sees_original = q_pseudo & ~k_pseudo & (k_step < q_step)
    pseudo_sees_own_step = q_pseudo & k_pseudo & (k_step == q_step)
    allowed = key_context | original_sees_original | pseudo_sees_original | pseudo_sees_own_step
    if in_place is not None:
        in_place = np.asarray(in_place, dtype=bool)
        allowed &= ~in_place[:, None] | in_place[None, :]
    return allowed


def appended_roles(num_original: int, step_layout: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Step index and [P]-flag of every token of a PMLM example.

    `step_layout[i]` is |M_{i+1}|, the size of the (i+1)-th factorization step. The in-place part
    is step 0; step i contributes its |M_i| [P]s, then its |M_i| originals.
    """
    step = [np.zeros(num_original, dtype=np.int64)]
    pseudo = [np.zeros(num_original, dtype=bool)]
    for i, size in enumerate(step_layout, start=1):
        step.append(np.full(2 * size, i, dtype=np.int64))
        pseudo.append(np.repeat([True, False], size))
    return np.concatenate(step), np.concatenate(pseudo)


def pseudo_mask_attention(
    num_original: int, step_layout: Sequence[int], in_place_steps: np.ndarray | None = None
) -> np.ndarray:
    """Figure 5's self-attention mask for `num_original` in-place tokens and the given steps.

    `step_layout[i]` is the number of positions of the (i+1)-th factorization step; the layout is
    that of `build_pmlm_example` (in-place part, then per step its [P]s and its originals).
    `in_place_steps[p]` is the factorization step of in-place position p when its in-place content
    is not [M] (kept or random, BERT's 10% + 10%), 0 otherwise (context or [M]); default all 0, the
    paper's Figure 5. Returns bool [L, L], True = the query row may attend the key column. Rules:
    module docstring.
    """
    step, is_pseudo = appended_roles(num_original, step_layout)
    if in_place_steps is not None:
        step[:num_original] = in_place_steps
    in_place = np.arange(len(step)) < num_original
    return attention_from_steps(step, is_pseudo, in_place)


# --------------------------------------------------------------------------- pre-training example


def _segments(segment_a, segment_b, tok: UnilmTokens, add_special_tokens: bool):
    """`[SOS] S1 [EOS] S2 [EOS]` (or `[SOS] S1 [EOS]`) with segment ids and a maskable flag (§2.2)."""
    a = np.asarray(segment_a, dtype=np.int64)
    b = np.asarray(segment_b if segment_b is not None else [], dtype=np.int64)
    if add_special_tokens:
        parts = [([tok.sos], 0, False), (a, 0, True), ([tok.eos], 0, False)]
        if len(b):
            parts += [(b, 1, True), ([tok.eos], 1, False)]
    else:
        parts = [(a, 0, True), (b, 1, True)]
    ids = np.concatenate([np.asarray(p, dtype=np.int64) for p, _, _ in parts])
    types = np.concatenate([np.full(len(p), t, dtype=np.int64) for p, t, _ in parts])
    maskable = np.concatenate([np.full(len(p), m, dtype=bool) for p, _, m in parts])
    return ids, types, maskable


def _check_steps(steps, n: int) -> list[np.ndarray]:
    steps = [np.asarray(s, dtype=np.int64).reshape(-1) for s in steps]
    flat = np.concatenate(steps) if steps else np.zeros(0, dtype=np.int64)
    if any(len(s) == 0 for s in steps):
        raise CtxlmError("factorization steps must be non-empty")
    if len(flat) and (flat.min() < 0 or flat.max() >= n):
        raise CtxlmError(f"factorization step positions must lie in [0, {n}), got {flat.tolist()}")
    if len(np.unique(flat)) != len(flat):
        raise CtxlmError(f"factorization steps must not overlap, got {[s.tolist() for s in steps]}")
    return steps


def build_pmlm_example(
    segment_a,
    segment_b,
    rng: np.random.Generator,
    tok: UnilmTokens,
    *,
    objective: str = "ae+par",
    steps: Sequence[Sequence[int]] | None = None,
    add_special_tokens: bool = True,
    mask_frac: float = 0.8,
    random_frac: float = 0.1,
    ratio: float = 0.15,
) -> dict:
    """One pseudo-masked LM pre-training example (§3.2, Figures 4-5; loss eq. 7 = eq. 3 + eq. 6).

    In-place part: `[SOS] S1 [EOS] S2 [EOS]` (§2.2; `[SOS] S1 [EOS]` if `segment_b` is empty;
    `S1 S2` when `add_special_tokens=False`, as in the paper's x1..x6 example), masked positions
    corrupted 80/10/10. Then, per factorization step in order, its [P]s and its original tokens,
    each with the position id and segment of the token it stands for (module docstring).

    `steps`: the factorization order as positions of the in-place sequence; default: Algorithm 1
    over the non-special positions (`blockwise_masking`), shuffled (`factorization_order`).
    Randomness is drawn in that order: masking, order, then corruption.

    `objective` (Table 6): "ae+par" (UniLMv2); "ae": in-place part only with AE labels (no appended
    tokens, bidirectional); "par": all of the layout but no AE labels (the masked positions are
    still corrupted in place: the [M]s give PAR its "global masking information", §1); "ae+ar" /
    "ar": as "ae+par" / "par" with every block split into single-token steps (`single_token_steps`).

    Returns a dict of numpy arrays: `input_ids`, `position_ids` (0-based), `token_type_ids`,
    `attention_mask` (bool [L, L], True = query row may attend key column), `ae_labels` (the
    original token at the in-place masked positions, IGNORE elsewhere), `par_labels` (the original
    token at each [P], IGNORE elsewhere), and the int `num_original` (length of the in-place part).
    """
    if objective not in OBJECTIVES:
        raise CtxlmError(f"unknown UniLMv2 objective {objective!r}; expected one of {', '.join(OBJECTIVES)}")
    ids, types, maskable = _segments(segment_a, segment_b, tok, add_special_tokens)
    n = len(ids)
    if steps is None:
        steps = factorization_order(blockwise_masking(n, rng, ratio=ratio, maskable=maskable), rng)
    steps = _check_steps(steps, n)
    if objective in ("ar", "ae+ar"):
        steps = single_token_steps(steps)
    masked = np.concatenate(steps) if steps else np.zeros(0, dtype=np.int64)
    inputs, ae_labels = corrupt_positions(
        ids,
        masked,
        rng,
        mask_id=tok.mask,
        replace_pool=tok.replace_pool,
        mask_frac=mask_frac,
        random_frac=random_frac,
    )
    if not objective.startswith("ae"):
        ae_labels[:] = IGNORE_INDEX
    if objective == "ae":
        steps = []
    # A masked position whose in-place content is not [M] (kept or random) carries its step, so that
    # no [P] of that step or an earlier one reads it, directly or through the in-place part.
    in_place_steps = np.zeros(n, dtype=np.int64)
    for i, step in enumerate(steps, start=1):
        in_place_steps[step[inputs[step] != tok.mask]] = i

    # In-place part, then for each step (in factorization order) its [P]s and its originals.
    input_ids, position_ids, token_types = [inputs], [np.arange(n)], [types]
    par_labels = [np.full(n, IGNORE_INDEX)]
    for step in steps:
        input_ids += [np.full(len(step), tok.pseudo), ids[step]]
        position_ids += [step, step]
        token_types += [types[step], types[step]]
        par_labels += [ids[step], np.full(len(step), IGNORE_INDEX)]
    input_ids = np.concatenate(input_ids).astype(np.int64)
    ae_labels = np.concatenate([ae_labels, np.full(len(input_ids) - n, IGNORE_INDEX)]).astype(np.int64)
    return {
        "input_ids": input_ids,
        "position_ids": np.concatenate(position_ids).astype(np.int64),
        "token_type_ids": np.concatenate(token_types).astype(np.int64),
        "attention_mask": pseudo_mask_attention(n, [len(s) for s in steps], in_place_steps),
        "ae_labels": ae_labels,
        "par_labels": np.concatenate(par_labels).astype(np.int64),
        "num_original": n,
    }


# --------------------------------------------------------------------------- fine-tuning (§3.4)


def _target_with_end(target, limit: int | None, eos: int) -> np.ndarray:
    """`TGT [EOS]` in at most `limit` tokens; a target that does not fit keeps its first `limit`
    tokens and no [EOS] (a cut target must not teach the model to stop mid-sentence)."""
    target = np.asarray(target, dtype=np.int64)
    if limit is not None and len(target) >= limit:
        return _truncate(target, limit + 1, 1)
    return np.concatenate([target, [eos]]).astype(np.int64)


def _truncate(ids, limit: int | None, reserved: int) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    if limit is None:
        return ids
    if limit <= reserved:
        raise CtxlmError(f"length limit {limit} leaves no room next to {reserved} special token(s)")
    return ids[: limit - reserved]


def build_seq2seq_prompt(source, tok: UnilmTokens, *, max_source: int | None = None) -> dict:
    """The decoding prefix `[SOS] SRC [EOS]` (§3.4): bidirectional, segment 0, positions 0..S-1.

    `max_source` bounds the whole source part, [SOS] and [EOS] included (as s2s-ft's
    max_source_len; Table 10's "max input length"). A decoder appends target token t at position
    S + t, segment 1, attending the source and targets <= t, and predicts it from a [P] at the same
    position that attends the source, targets < t and itself (`build_seq2seq_example`).
    """
    src = np.concatenate([[tok.sos], _truncate(source, max_source, 2), [tok.eos]]).astype(np.int64)
    s = len(src)
    return {
        "input_ids": src,
        "position_ids": np.arange(s, dtype=np.int64),
        "token_type_ids": np.zeros(s, dtype=np.int64),
        "attention_mask": np.ones((s, s), dtype=bool),
        "num_source": s,
    }


def build_seq2seq_example(
    source, target, tok: UnilmTokens, *, max_source: int | None = None, max_target: int | None = None
) -> dict:
    """Sequence-to-sequence fine-tuning (§3.4): `[SOS] SRC [EOS] TGT [EOS]` then one [P] per target.

    The target part is `TGT [EOS]` ("[EOS] is used to mark the end of the target sequence"); the
    k-th [P] has the position id (and segment 1) of the k-th target token and is labelled with it.
    Attention (s2s-ft's `BertForSequenceToSequenceWithPseudoMask.create_attention_mask`): source
    tokens attend the source only (bidirectional); target t attends the source and targets <= t;
    the [P] of target t attends the source, targets < t and itself, never target t. That is the
    pre-training mask with the source as the in-place part and each target token a factorization
    step, left to right; only the layout differs (all targets, then all [P]s, as in s2s-ft).

    `max_source` / `max_target` bound `[SOS] SRC [EOS]` and `TGT [EOS]` (s2s-ft's max_source_len /
    max_target_len; Table 10: 608 + 160 = 768 for CNN/DailyMail). Returns `input_ids`,
    `position_ids`, `token_type_ids`, `attention_mask` (bool [L, L]), `labels` (target token at its
    [P], IGNORE elsewhere), `num_source` (S) and `num_original` (S + T, the length before the [P]s).
    """
    src = np.concatenate([[tok.sos], _truncate(source, max_source, 2), [tok.eos]]).astype(np.int64)
    tgt = _target_with_end(target, max_target, tok.eos)
    s, t = len(src), len(tgt)
    step = np.concatenate([np.zeros(s), np.arange(1, t + 1), np.arange(1, t + 1)]).astype(np.int64)
    is_pseudo = np.concatenate([np.zeros(s + t, dtype=bool), np.ones(t, dtype=bool)])
    tgt_pos = np.arange(s, s + t, dtype=np.int64)
    return {
        "input_ids": np.concatenate([src, tgt, np.full(t, tok.pseudo)]).astype(np.int64),
        "position_ids": np.concatenate([np.arange(s), tgt_pos, tgt_pos]).astype(np.int64),
        "token_type_ids": np.concatenate([np.zeros(s), np.ones(2 * t)]).astype(np.int64),
        "attention_mask": attention_from_steps(step, is_pseudo),
        "labels": np.concatenate([np.full(s + t, IGNORE_INDEX), tgt]).astype(np.int64),
        "num_source": s,
        "num_original": s + t,
    }


def build_classification_input(text_a, text_b, tok: UnilmTokens) -> dict:
    """NLU input (§3.4, §4.2): `[SOS] A [EOS] B [EOS]` (`[SOS] A [EOS]` if `text_b` is None/empty).

    Segment 0 for `[SOS] A [EOS]`, 1 for `B [EOS]`; bidirectional attention. The classifier reads
    the [SOS] vector.
    """
    ids, types, _ = _segments(text_a, text_b, tok, add_special_tokens=True)
    n = len(ids)
    return {
        "input_ids": ids,
        "position_ids": np.arange(n, dtype=np.int64),
        "token_type_ids": types,
        "attention_mask": np.ones((n, n), dtype=bool),
    }


def pad_example(example: dict, length: int, tok: UnilmTokens) -> dict:
    """Right-pad an example of any builder here to `length` tokens for batching.

    Ids get `tok.pad`, positions and segments 0, labels IGNORE; the attention mask grows with
    False, except that a pad query attends itself (a row with no key would give NaN softmax). No
    real token attends a pad. Integers (`num_*`) are kept.
    """
    n = len(example["input_ids"])
    if length < n:
        raise CtxlmError(f"cannot pad an example of {n} tokens to {length}")
    extra = length - n
    out = {}
    for key, value in example.items():
        if key == "attention_mask":
            mask = np.zeros((length, length), dtype=bool)
            mask[:n, :n] = value
            mask[np.arange(n, length), np.arange(n, length)] = True
            out[key] = mask
        elif isinstance(value, np.ndarray):
            fill = tok.pad if key == "input_ids" else IGNORE_INDEX if key.endswith("labels") else 0
            out[key] = np.concatenate([value, np.full(extra, fill, dtype=value.dtype)])
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- pre-training data

from ctxlm.objectives.chunks import sentence_chunks, skipped_sentences  # noqa: E402
from ctxlm.objectives.masking import example_rng  # noqa: E402


def unilm_tokens(tokenizer) -> UnilmTokens:
    """`UnilmTokens` of a `ctxlm.tokenization.TextTokenizer` ([CLS] = [SOS], [SEP] = [EOS], [P])."""
    return UnilmTokens(
        sos=tokenizer.cls_id,
        eos=tokenizer.sep_id,
        mask=tokenizer.mask_id,
        pseudo=tokenizer.special_id("[P]"),
        pad=tokenizer.pad_id,
        replace_pool=tokenizer.replace_pool,
    )


class UnilmExamples:
    """Index → PMLM example over a token store's sentence chunks: what the training loop iterates.

    Chunk `i` (`sentence_chunks` with a budget of `max_length − 3`, room for [SOS] [EOS] [EOS]) is
    split at a sentence boundary drawn uniformly from its inner boundaries into S1 and S2, giving
    `[SOS] S1 [EOS] S2 [EOS]` (§2.2, contiguous texts); a one-sentence chunk gives `[SOS] S1 [EOS]`
    (S2 empty). Then `build_pmlm_example` with the configured objective (Table 6), mask ratio and
    blockwise masking. Example `i` of epoch `e` is a pure function of (seed, e, i): its generator is
    `example_rng(seed, e, i)`, drawn for the split first, then as `build_pmlm_example` documents.

    Lengths: the in-place part has ≤ `max_length` tokens and positions 0..max_length−1; the
    appended part adds two tokens per masked position (≈ 15% masked, so the sequence grows to about
    1.3 × max_length) but reuses the in-place positions, so positions stay below `max_length`.
    """

    def __init__(self, store, chunks: np.ndarray, tok: UnilmTokens, data, seed: int = 0):
        if data.objective not in OBJECTIVES:
            raise CtxlmError(f"unknown UniLMv2 objective {data.objective!r}; expected one of {', '.join(OBJECTIVES)}")
        self.store, self.chunks, self.tok, self.data, self.seed = store, chunks, tok, data, seed

    def __len__(self) -> int:
        return len(self.chunks)

    def segments(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        first, count = (int(v) for v in self.chunks[index])
        offsets, tokens = self.store.sentence_offsets, self.store.tokens
        split = first + (int(rng.integers(1, count)) if count > 1 else count)
        a = np.asarray(tokens[offsets[first] : offsets[split]], dtype=np.int64)
        b = np.asarray(tokens[offsets[split] : offsets[first + count]], dtype=np.int64)
        return a, b

    def example(self, index: int, epoch: int = 0) -> dict:
        data = self.data
        rng = example_rng(self.seed, epoch, index)
        a, b = self.segments(index, rng)
        # build_pmlm_example's default draws (Algorithm 1, then the order), with the configured
        # block_prob / max_block, then its corruption draws.
        _, _, maskable = _segments(a, b, self.tok, add_special_tokens=True)
        blocks = blockwise_masking(
            len(maskable),
            rng,
            ratio=data.mask_ratio,
            block_prob=data.block_prob,
            min_block=min(2, data.max_block),
            max_block=data.max_block,
            maskable=maskable,
        )
        example = build_pmlm_example(
            a, b, rng, self.tok, objective=data.objective, steps=factorization_order(blocks, rng)
        )
        del example["num_original"]  # the model needs only the arrays
        return example


def prepare_unilm_data(store, tok: UnilmTokens, data, seed: int, max_positions: int | None = None):
    """UniLMv2 examples of a store, split by whole documents (`store.split_documents`, as
    `prepare_palm_data`). `data` is a `UnilmDataConfig`. Returns (train, valid, description)."""
    if data.max_length < 4:
        raise CtxlmError(f"data.max_length {data.max_length} leaves no room next to [SOS] [EOS] [EOS]")
    if max_positions is not None and data.max_length > max_positions:
        raise CtxlmError(
            f"data.max_length {data.max_length} exceeds the model's max_position_embeddings {max_positions}"
        )
    train_docs, valid_docs = store.split_documents(data.valid_fraction, seed)
    valid_docs = valid_docs[: data.max_valid_documents]
    budget = data.max_length - 3
    chunks = {
        name: sentence_chunks(store.sentence_lengths, store.document_offsets, docs, budget)
        for name, docs in (("train", train_docs), ("valid", valid_docs))
    }
    if len(chunks["train"]) == 0:
        raise CtxlmError(f"the corpus yields no UniLMv2 chunks of ≤ {budget} tokens (every sentence is longer)")
    train = UnilmExamples(store, chunks["train"], tok, data, seed)
    valid = UnilmExamples(store, chunks["valid"], tok, data, seed)
    return (
        train,
        valid,
        {
            "objective": f"unilm/{data.objective}",
            "max_length": data.max_length,
            "train_documents": len(train_docs),
            "valid_documents": len(valid_docs),
            "train_chunks": len(chunks["train"]),
            "valid_chunks": len(chunks["valid"]),
            "skipped": skipped_sentences(
                store.sentence_lengths,
                store.document_offsets,
                np.concatenate([train_docs, valid_docs]),
                np.concatenate([chunks["train"], chunks["valid"]]),
                budget,
            ),
        },
    )
