"""UniLMv2 (Bao et al., 2020) objectives: Algorithm 1, the PMLM layout and Figure 5's mask, §3.4."""

import random

import numpy as np
import pytest

from ctxlm.families.unilm import UnilmDataConfig
from ctxlm.errors import CtxlmError
from ctxlm.objectives.masking import IGNORE_INDEX, example_rng
from ctxlm.objectives.unilm import (
    UnilmTokens,
    blockwise_masking,
    build_classification_input,
    build_pmlm_example,
    build_seq2seq_example,
    build_seq2seq_prompt,
    corrupt_positions,
    factorization_order,
    pad_example,
    prepare_unilm_data,
    pseudo_mask_attention,
    single_token_steps,
)
from ctxlm.objectives.chunks import sentence_chunks

TOK = UnilmTokens(sos=1, eos=2, mask=3, pseudo=4, pad=0, replace_pool=np.arange(10, 1000))
X = [11, 12, 13, 14, 15, 16]  # x1..x6 of Figures 1, 3-5
I = IGNORE_INDEX

# Figure 5: the self-attention mask for x1..x6, x2, x4, x5 masked, factorization 4, 5 -> 2, in the
# layout  x1 [M] x3 [M] [M] x6 | [P]4 [P]5 x4 x5 | [P]2 x2.  Row = query, column = key, 1 = may attend.
# Derived by hand from §3.2: all attend x1, x3, x6 and the [M]s; step 1 ([P]4, [P]5) conditions on
# x\{2,4,5} and its own [P]s; step 2 ([P]2) additionally on x4, x5 (Table 1: p(x2 | x\{2})).
FIGURE_5 = np.array(
    [
        # x1 M  x3 M  M  x6 P4 P5 x4 x5 P2 x2
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # x1   in-place: in-place part only
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # [M]  (x2)
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # x3
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # [M]  (x4)
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # [M]  (x5)
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # x6
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # [P] of x4, step 1: own step's [P]s, not x4/x5
        [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0],  # [P] of x5, step 1
        [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0],  # x4, step 1: originals of steps <= 1, no [P], not x2
        [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0],  # x5, step 1
        [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0],  # [P] of x2, step 2: x4, x5 and itself, not x2
        [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1],  # x2, step 2: x4, x5 and itself
    ],
    dtype=bool,
)


def closure(mask: np.ndarray) -> np.ndarray:
    """Keys reachable from each query over any number of attention hops (layers), self included."""
    reach = mask | np.eye(len(mask), dtype=bool)
    while True:
        nxt = (reach.astype(np.int32) @ reach.astype(np.int32)) > 0
        if (nxt == reach).all():
            return reach
        reach = nxt


# --------------------------------------------------------------------------- the worked example


def test_figure_5_mask():
    np.testing.assert_array_equal(pseudo_mask_attention(6, [2, 1]), FIGURE_5)


def test_figure_4_layout():
    ex = build_pmlm_example(
        X, [], np.random.default_rng(0), TOK, steps=[[3, 4], [1]], add_special_tokens=False, mask_frac=1.0
    )
    M, P = TOK.mask, TOK.pseudo
    #                                      x1  [M] x3 [M] [M] x6 | [P] [P] x4  x5 | [P] x2
    np.testing.assert_array_equal(ex["input_ids"], [11, M, 13, M, M, 16, P, P, 14, 15, P, 12])
    # Paper (1-based): 1 2 3 4 5 6 | 4 5 4 5 | 2 2
    np.testing.assert_array_equal(ex["position_ids"] + 1, [1, 2, 3, 4, 5, 6, 4, 5, 4, 5, 2, 2])
    np.testing.assert_array_equal(ex["token_type_ids"], np.zeros(12))
    np.testing.assert_array_equal(ex["ae_labels"], [I, 12, I, 14, 15, I, I, I, I, I, I, I])
    np.testing.assert_array_equal(ex["par_labels"], [I, I, I, I, I, I, 14, 15, I, I, 12, I])
    np.testing.assert_array_equal(ex["attention_mask"], FIGURE_5)
    assert ex["num_original"] == 6


def test_table_1_conditioning_sets():
    """Over any number of layers, [P] of x4/x5 sees x1 x3 x6 only; [P] of x2 also sees x4, x5."""
    reach = closure(FIGURE_5)
    originals = {8: 4, 9: 5, 11: 2}  # appended column -> which x_i it holds
    seen = {q: {x for k, x in originals.items() if reach[q, k]} for q in (6, 7, 10)}
    assert seen == {6: set(), 7: set(), 10: {4, 5}}
    assert not reach[:6, 6:].any()


# --------------------------------------------------------------------------- random examples


def random_example(seed: int, objective: str = "ae+par", **corruption):
    """A PMLM example from `example_rng` plus the factorization steps it must have used."""
    r = np.random.default_rng(1000 + seed)
    a = r.integers(10, 1000, size=int(r.integers(5, 60)))
    b = r.integers(10, 1000, size=int(r.integers(0, 40)))
    ex = build_pmlm_example(a, b, example_rng(7, 0, seed), TOK, objective=objective, **corruption)
    # Documented draw order: Algorithm 1 over non-special positions, then the factorization order.
    n = len(a) + 2 + (len(b) + 1 if len(b) else 0)
    maskable = np.ones(n, dtype=bool)
    maskable[[0, len(a) + 1, n - 1]] = False
    rng = example_rng(7, 0, seed)
    steps = factorization_order(blockwise_masking(n, rng, maskable=maskable), rng)
    original = np.concatenate([[TOK.sos], a, [TOK.eos]] + ([b, [TOK.eos]] if len(b) else []))
    types = np.r_[np.zeros(len(a) + 2), np.ones(n - len(a) - 2)]
    return ex, steps, original, types


@pytest.mark.parametrize("seed", range(25))
def test_no_leak_through_any_attention_path(seed):
    ex, steps, original, types = random_example(seed)
    n, ids, pos = ex["num_original"], ex["input_ids"], ex["position_ids"]
    assert n == len(original)
    step_of = {int(p): i for i, s in enumerate(steps) for p in s}
    appended = np.arange(n, len(ids))
    is_p = ids[appended] == TOK.pseudo
    assert is_p.sum() == (~is_p).sum() == len(step_of)
    reach = closure(ex["attention_mask"])
    orig_keys = appended[~is_p]
    for q in appended[is_p]:
        i = step_of[int(pos[q])]
        reached = {int(pos[k]) for k in orig_keys if reach[q, k]}
        assert all(step_of[p] < i for p in reached)  # no original of step >= i, over any path
        # eq. (5): step i conditions on x\M>=i, i.e. exactly the originals of the earlier steps.
        assert reached == {int(p) for s in steps[:i] for p in s}
        assert ex["par_labels"][q] == original[pos[q]]
    assert not reach[:n, n:].any()  # the in-place part never sees an appended token
    # Appended originals hold the original token, everything keeps its source's position/segment.
    np.testing.assert_array_equal(ids[orig_keys], original[pos[orig_keys]])
    np.testing.assert_array_equal(ex["token_type_ids"], types[pos])
    np.testing.assert_array_equal(pos[:n], np.arange(n))
    masked = sorted(step_of)
    np.testing.assert_array_equal(np.flatnonzero(ex["ae_labels"] != I), masked)
    np.testing.assert_array_equal(ex["ae_labels"][masked], original[masked])
    np.testing.assert_array_equal(ex["par_labels"][:n], I)
    unmasked = np.setdiff1d(np.arange(n), masked)
    np.testing.assert_array_equal(ids[unmasked], original[unmasked])


# x1..x6 with x2, x4, x5 masked (steps 4, 5 -> 2) and all three KEPT in place (BERT's 10%): the in-place
# copies of x4, x5 take step 1 and that of x2 step 2, so no [P] of their step or an earlier one reads them.
KEPT_IN_PLACE = np.array(
    [
        # x1 x2 x3 x4 x5 x6 P4 P5 x4 x5 P2 x2
        [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0],  # x1   step-0 in-place tokens: step-0 in-place part only
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # x2   in place, step 2: in-place tokens of steps <= 2
        [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0],  # x3
        [1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # x4   in place, step 1
        [1, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # x5   in place, step 1
        [1, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0],  # x6
        [1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0],  # [P] of x4, step 1: never x4/x5 in place
        [1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0],  # [P] of x5
        [1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0],  # x4, step 1
        [1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 0],  # x5, step 1
        [1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0],  # [P] of x2, step 2: x4, x5 (either copy), never x2
        [1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1],  # x2, step 2
    ],
    dtype=bool,
)


def test_kept_tokens_in_place_are_hidden_from_their_own_and_earlier_steps():
    ex = build_pmlm_example(
        X,
        [],
        np.random.default_rng(0),
        TOK,
        steps=[[3, 4], [1]],
        add_special_tokens=False,
        mask_frac=0.0,
        random_frac=0.0,
    )
    np.testing.assert_array_equal(ex["input_ids"][:6], X)  # all three kept
    np.testing.assert_array_equal(ex["ae_labels"][:6], [I, 12, I, 14, 15, I])  # still AE-predicted
    np.testing.assert_array_equal(ex["attention_mask"], KEPT_IN_PLACE)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("corruption", [dict(mask_frac=0.0, random_frac=0.5), dict()])  # kept + random; 80/10/10
def test_no_par_prediction_reaches_a_masked_position_in_place(seed, corruption):
    """§3.2 / eq. (5) whatever the in-place content: over any path, a [P] of step i reaches no in-place
    position masked at step >= i unless it holds [M]; with `mask_frac=0` it reaches exactly the
    in-place copies of the earlier steps."""
    ex, steps, original, _ = random_example(seed, **corruption)
    n, ids, pos = ex["num_original"], ex["input_ids"], ex["position_ids"]
    step_of = {int(p): i for i, s in enumerate(steps) for p in s}
    reach = closure(ex["attention_mask"])
    for q in np.flatnonzero(ids[n:] == TOK.pseudo) + n:
        i = step_of[int(pos[q])]
        leaking = [p for p, s in step_of.items() if s >= i and ids[p] != TOK.mask]
        assert not reach[q, leaking].any()
        if corruption:
            assert {p for p in step_of if reach[q, p]} == {p for p, s in step_of.items() if s < i}
    assert not reach[:n, n:].any()
    masked = sorted(step_of)
    np.testing.assert_array_equal(ex["ae_labels"][masked], original[masked])
    if corruption:
        assert (ids[masked] != TOK.mask).all()


def test_determinism():
    a, b = np.arange(100, 180), np.arange(300, 350)
    one = build_pmlm_example(a, b, example_rng(1, 2, 3), TOK)
    two = build_pmlm_example(a, b, example_rng(1, 2, 3), TOK)
    other = build_pmlm_example(a, b, example_rng(1, 2, 4), TOK)
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    assert not np.array_equal(one["input_ids"][:131], other["input_ids"][:131])


# --------------------------------------------------------------------------- Algorithm 1


def algorithm_1(n: int, r: random.Random) -> list[list[int]]:
    """Independent transcription of Algorithm 1 (no numpy), rejecting blocks that overrun the end."""
    masked, steps = set(), []
    while sum(len(s) for s in steps) < 0.15 * n:
        p = r.randrange(n)
        length = r.randint(2, 6) if r.random() < 0.4 else 1
        span = list(range(p, p + length))
        if p + length <= n and not masked.intersection(span):
            masked.update(span)
            steps.append(span)
    return steps


def summary(samples, n):
    ratio = np.mean([sum(len(s) for s in steps) / n for steps in samples])
    blocks = np.mean([len(s) > 1 for steps in samples for s in steps])
    return ratio, blocks


@pytest.mark.parametrize("n, count, ref_ratio, ref_blocks", [(512, 1200, 0.1525, 0.371), (64, 8000, 0.1732, 0.358)])
def test_blockwise_masking_statistics(n, count, ref_ratio, ref_blocks):
    rng = np.random.default_rng(0)
    ours = [blockwise_masking(n, rng) for _ in range(count)]
    r = random.Random(0)
    ref = [algorithm_1(n, r) for _ in range(count)]
    for steps in ours:
        flat = np.concatenate(steps)
        assert len(np.unique(flat)) == len(flat)  # no overlaps
        assert flat.min() >= 0 and flat.max() < n
        assert all((np.diff(s) == 1).all() and 1 <= len(s) <= 6 for s in steps)  # contiguous blocks
        assert len(flat) >= 0.15 * n > len(flat) - len(steps[-1])  # stops at the first crossing
    ratio, blocks = summary(ours, n)
    sim_ratio, sim_blocks = summary(ref, n)
    assert abs(ratio - sim_ratio) < 0.002 and abs(ratio - ref_ratio) < 0.002
    assert abs(blocks - sim_blocks) < 0.015 and abs(blocks - ref_blocks) < 0.015
    assert blocks < 0.4  # rejection of overlapping/overrunning proposals favours singles


class ScriptedRng:
    """Plays back Algorithm 1's draws: integers() gives p then l, random() the block coin."""

    def __init__(self, draws):
        self.draws = list(draws)

    def integers(self, low, high):
        value = self.draws.pop(0)
        assert low <= value < high
        return value

    def random(self):
        return self.draws.pop(0)


def test_blockwise_masking_follows_algorithm_1_step_by_step():
    # n=10: the target is 0.15 * 10 = 1.5 masked tokens.
    draws = [
        8,
        0.1,
        4,  # p=8, block of 4: runs past the end (8..11) -> rejected
        2,
        0.9,  # p=2, single -> accepted: M_1 = {2}
        2,
        0.3,
        2,  # p=2, block of 2: overlaps M_1 -> rejected (length drawn before the check)
        5,
        0.39,
        2,  # p=5, block of 2 -> accepted: M_2 = {5, 6}; 3 >= 1.5, stop
    ]
    rng = ScriptedRng(draws)
    steps = blockwise_masking(10, rng)
    assert [s.tolist() for s in steps] == [[2], [5, 6]] and rng.draws == []
    # The target counts maskable positions only: 0.15 * 4 = 0.6 -> one single suffices.
    maskable = np.zeros(10, dtype=bool)
    maskable[4:8] = True
    rng = ScriptedRng([1, 0.9, 5, 0.9])  # p=1 is not maskable -> rejected; p=5 accepted
    assert [s.tolist() for s in blockwise_masking(10, rng, maskable=maskable)] == [[5]]


def test_blockwise_masking_respects_maskable():
    maskable = np.zeros(100, dtype=bool)
    maskable[20:60] = True
    rng = np.random.default_rng(3)
    for _ in range(200):
        flat = np.concatenate(blockwise_masking(100, rng, maskable=maskable))
        assert maskable[flat].all() and len(flat) >= 0.15 * 40
    assert blockwise_masking(10, rng, maskable=np.zeros(10, dtype=bool)) == []
    with pytest.raises(CtxlmError):
        blockwise_masking(10, rng, ratio=1.5)


def test_factorization_order_is_uniform():
    """Acceptance order puts blocks last ~2/3 of the time; the shuffled order does not."""
    rng = np.random.default_rng(5)
    last_accepted, last_shuffled, share = [], [], []
    for _ in range(4000):
        steps = blockwise_masking(64, rng)
        order = factorization_order(steps, rng)
        assert sorted(map(tuple, order)) == sorted(map(tuple, steps))
        last_accepted.append(len(steps[-1]) > 1)
        last_shuffled.append(len(order[-1]) > 1)
        share.append(np.mean([len(s) > 1 for s in steps]))
    assert np.mean(last_accepted) > np.mean(share) + 0.2
    assert abs(np.mean(last_shuffled) - np.mean(share)) < 0.025


# --------------------------------------------------------------------------- AE corruption


def test_80_10_10_corruption():
    rng = np.random.default_rng(11)
    ids = rng.integers(10, 1000, size=100_000)
    everywhere = np.arange(len(ids))
    inputs, labels = corrupt_positions(ids, everywhere, rng, mask_id=TOK.mask, replace_pool=TOK.replace_pool)
    np.testing.assert_array_equal(labels, ids)
    is_mask = inputs == TOK.mask
    is_random = ~is_mask & (inputs != ids)
    kept = inputs == ids
    assert abs(is_mask.mean() - 0.8) < 0.01
    assert abs(is_random.mean() - 0.1 * (1 - 1 / 990)) < 0.01  # a random draw can hit the original
    assert abs(kept.mean() - 0.1) < 0.01
    assert np.isin(inputs[is_random], TOK.replace_pool).all()
    some = np.array([5, 17, 99])
    inputs, labels = corrupt_positions(ids, some, rng, mask_id=TOK.mask, replace_pool=TOK.replace_pool)
    np.testing.assert_array_equal(np.flatnonzero(labels != I), some)
    np.testing.assert_array_equal(np.delete(inputs, some), np.delete(ids, some))


# --------------------------------------------------------------------------- Table 6 ablations


def test_ablation_ae_only():
    ex = build_pmlm_example(
        X,
        [],
        np.random.default_rng(0),
        TOK,
        objective="ae",
        steps=[[3, 4], [1]],
        add_special_tokens=False,
        mask_frac=1.0,
    )
    np.testing.assert_array_equal(ex["input_ids"], [11, 3, 13, 3, 3, 16])
    np.testing.assert_array_equal(ex["ae_labels"], [I, 12, I, 14, 15, I])
    np.testing.assert_array_equal(ex["par_labels"], [I] * 6)
    assert ex["attention_mask"].all() and ex["attention_mask"].shape == (6, 6)


def test_ablation_par_only():
    full = build_pmlm_example(X, [], np.random.default_rng(0), TOK, steps=[[3, 4], [1]], add_special_tokens=False)
    par = build_pmlm_example(
        X, [], np.random.default_rng(0), TOK, objective="par", steps=[[3, 4], [1]], add_special_tokens=False
    )
    for key in ("input_ids", "position_ids", "token_type_ids", "attention_mask", "par_labels"):
        np.testing.assert_array_equal(par[key], full[key])
    np.testing.assert_array_equal(par["ae_labels"], [I] * 12)


@pytest.mark.parametrize("objective", ["ar", "ae+ar"])
def test_ablation_autoregressive(objective):
    ex = build_pmlm_example(
        X,
        [],
        np.random.default_rng(0),
        TOK,
        objective=objective,
        steps=[[3, 4], [1]],
        add_special_tokens=False,
        mask_frac=1.0,
    )
    P = TOK.pseudo
    # Steps 4 -> 5 -> 2: the block {4, 5} split left to right in its place.
    np.testing.assert_array_equal(ex["input_ids"][6:], [P, 14, P, 15, P, 12])
    np.testing.assert_array_equal(ex["position_ids"][6:] + 1, [4, 4, 5, 5, 2, 2])
    np.testing.assert_array_equal(ex["attention_mask"], pseudo_mask_attention(6, [1, 1, 1]))
    reach = closure(ex["attention_mask"])
    # columns: 6 [P]4, 7 x4, 8 [P]5, 9 x5, 10 [P]2, 11 x2
    assert not reach[6, 7:].any() and reach[8, 7] and not reach[8, 9:].any()
    assert reach[10, [7, 9]].all() and not reach[10, 11]
    expected_ae = [I, 12, I, 14, 15, I] if objective == "ae+ar" else [I] * 6
    np.testing.assert_array_equal(ex["ae_labels"][:6], expected_ae)
    split = single_token_steps([np.array([7, 8, 9]), np.array([2])])
    assert [s.tolist() for s in split] == [[7], [8], [9], [2]]


def test_bad_arguments():
    with pytest.raises(CtxlmError):
        build_pmlm_example(X, [], np.random.default_rng(0), TOK, objective="xlnet")
    with pytest.raises(CtxlmError):
        build_pmlm_example(X, [], np.random.default_rng(0), TOK, steps=[[1, 2], [2]])
    with pytest.raises(CtxlmError):
        build_pmlm_example(X, [], np.random.default_rng(0), TOK, steps=[[6]], add_special_tokens=False)


# --------------------------------------------------------------------------- §3.4 fine-tuning


def test_seq2seq_layout_and_mask():
    src, tgt = [21, 22, 23], [31, 32, 33, 34]
    ex = build_seq2seq_example(src, tgt, TOK)
    P = TOK.pseudo
    np.testing.assert_array_equal(ex["input_ids"], [1, 21, 22, 23, 2, 31, 32, 33, 34, 2, P, P, P, P, P])
    np.testing.assert_array_equal(ex["position_ids"], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(ex["token_type_ids"], [0] * 5 + [1] * 10)
    np.testing.assert_array_equal(ex["labels"], [I] * 10 + [31, 32, 33, 34, 2])
    assert ex["num_source"] == 5 and ex["num_original"] == 10
    # Brute force over the roles: ("src", -), ("tgt", t), ("p", t).
    roles = [("src", 0)] * 5 + [("tgt", t) for t in range(5)] + [("p", t) for t in range(5)]
    L = len(roles)
    expected = np.zeros((L, L), dtype=bool)
    for q, (qk, qt) in enumerate(roles):
        for k, (kk, kt) in enumerate(roles):
            if kk == "src":
                expected[q, k] = True
            elif qk == "tgt" and kk == "tgt":
                expected[q, k] = kt <= qt
            elif qk == "p" and kk == "tgt":
                expected[q, k] = kt < qt
            elif qk == "p" and kk == "p":
                expected[q, k] = q == k
    np.testing.assert_array_equal(ex["attention_mask"], expected)
    reach = closure(ex["attention_mask"])
    for t in range(5):  # no path from the [P] of target t to target t or later
        assert not reach[10 + t, 5 + t : 10].any()


def test_seq2seq_truncation_and_prompt():
    ex = build_seq2seq_example(range(100, 120), range(200, 210), TOK, max_source=8, max_target=4)
    np.testing.assert_array_equal(ex["input_ids"][:8], [1, 100, 101, 102, 103, 104, 105, 2])
    np.testing.assert_array_equal(ex["input_ids"][8:12], [200, 201, 202, 203])  # cut: no [EOS]
    assert len(ex["input_ids"]) == 16
    whole = build_seq2seq_example(range(100, 120), range(200, 203), TOK, max_source=8, max_target=4)
    np.testing.assert_array_equal(whole["input_ids"][8:12], [200, 201, 202, 2])  # fits: ends in [EOS]
    prompt = build_seq2seq_prompt(range(100, 120), TOK, max_source=8)
    for key in ("input_ids", "position_ids", "token_type_ids"):
        np.testing.assert_array_equal(prompt[key], ex[key][:8])
    np.testing.assert_array_equal(prompt["attention_mask"], ex["attention_mask"][:8, :8])
    assert prompt["num_source"] == 8


def test_classification_input_and_padding():
    ex = build_classification_input([21, 22], [31], TOK)
    np.testing.assert_array_equal(ex["input_ids"], [1, 21, 22, 2, 31, 2])
    np.testing.assert_array_equal(ex["token_type_ids"], [0, 0, 0, 0, 1, 1])
    single = build_classification_input([21, 22], None, TOK)
    np.testing.assert_array_equal(single["input_ids"], [1, 21, 22, 2])
    padded = pad_example(build_seq2seq_example([21], [31], TOK), 9, TOK)
    np.testing.assert_array_equal(padded["input_ids"], [1, 21, 2, 31, 2, 4, 4, TOK.pad, TOK.pad])
    np.testing.assert_array_equal(padded["labels"], [I] * 5 + [31, 2, I, I])
    assert not padded["attention_mask"][:7, 7:].any() and padded["attention_mask"][7:, 7:].diagonal().all()


# --------------------------------------------------------------------------- pre-training data


class FakeStore:
    """The parts of `TokenStore` the examples read: sentences as token arrays, grouped in documents."""

    def __init__(self, documents: list[list[list[int]]]):
        sentences = [s for doc in documents for s in doc]
        self.tokens = np.concatenate([np.asarray(s, dtype=np.uint16) for s in sentences])
        self.sentence_offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])]).astype(np.int64)
        self.document_offsets = np.concatenate([[0], np.cumsum([len(d) for d in documents])]).astype(np.int64)
        self.sentence_lengths = np.diff(self.sentence_offsets)

    def split_documents(self, valid_fraction, seed):
        order = np.random.default_rng(seed).permutation(len(self.document_offsets) - 1)
        k = max(1, round(valid_fraction * len(order)))
        return np.sort(order[k:]), np.sort(order[:k])


def random_documents(seed: int, count: int = 12) -> list[list[list[int]]]:
    r = np.random.default_rng(seed)
    return [
        [list(r.integers(10, 1000, size=int(r.integers(1, 30)))) for _ in range(int(r.integers(1, 9)))]
        for _ in range(count)
    ]


def test_sentence_chunks_by_hand():
    lengths = np.array([3, 4, 10, 2, 2, 5])
    rows = sentence_chunks(lengths, np.array([0, 3, 6]), np.array([0, 1]), budget=7)
    # doc 0: 3+4 fit; the 10-token sentence fits no chunk. doc 1: 2+2, then 5 (2+2+5 > 7).
    np.testing.assert_array_equal(rows, [[0, 2], [3, 2], [5, 1]])
    np.testing.assert_array_equal(sentence_chunks(lengths, np.array([0, 3, 6]), np.array([1]), 7), [[3, 2], [5, 1]])


@pytest.mark.parametrize("seed", range(5))
def test_sentence_chunks_cover_every_fitting_sentence_once(seed):
    store = FakeStore(random_documents(seed))
    docs = np.arange(len(store.document_offsets) - 1)
    budget = 40
    rows = sentence_chunks(store.sentence_lengths, store.document_offsets, docs, budget)
    covered = np.concatenate([np.arange(f, f + c) for f, c in rows])
    assert len(np.unique(covered)) == len(covered)  # no sentence twice
    np.testing.assert_array_equal(np.sort(covered), np.flatnonzero(store.sentence_lengths <= budget))
    doc_of = np.searchsorted(store.document_offsets, np.arange(len(store.sentence_lengths)), side="right") - 1
    for first, count in rows:
        assert store.sentence_lengths[first : first + count].sum() <= budget
        assert len(set(doc_of[first : first + count])) == 1  # within one document, consecutive
        # greedy: the next sentence of the same document would not have fitted
        nxt = first + count
        if nxt < len(doc_of) and doc_of[nxt] == doc_of[first] and store.sentence_lengths[nxt] <= budget:
            assert store.sentence_lengths[first : nxt + 1].sum() > budget


def test_unilm_examples_layout_lengths_and_determinism():
    store = FakeStore(random_documents(0, count=30))
    data = UnilmDataConfig(max_length=48, valid_fraction=0.1)
    train, valid, info = prepare_unilm_data(store, TOK, data, seed=0, max_positions=48)
    assert len(train) == info["train_chunks"] and len(valid) == info["valid_chunks"] > 0
    train_docs, valid_docs = store.split_documents(0.1, 0)
    assert info["train_documents"] == len(train_docs) and not set(train_docs) & set(valid_docs)
    singles = 0
    for index in range(len(train)):
        ex = train.example(index, epoch=0)
        first, count = train.chunks[index]
        text = store.tokens[store.sentence_offsets[first] : store.sentence_offsets[first + count]]
        n = int((ex["position_ids"] == np.arange(len(ex["position_ids"]))).cumprod().sum())  # in-place part
        assert n <= data.max_length and ex["position_ids"].max() < data.max_length
        ids = ex["input_ids"][:n].copy()
        masked = ex["ae_labels"][:n] != I
        ids[masked] = ex["ae_labels"][:n][masked]
        eos = np.flatnonzero(ids == TOK.eos)
        assert ids[0] == TOK.sos and ids[-1] == TOK.eos and len(eos) in (1, 2)
        np.testing.assert_array_equal(np.delete(ids, [0, *eos]), text)  # whole chunk, in order
        if len(eos) == 2:  # S1 ends at a sentence boundary strictly inside the chunk
            boundary = store.sentence_offsets[first + 1 : first + count] - store.sentence_offsets[first]
            assert eos[0] - 1 in boundary
            segments = np.r_[np.zeros(eos[0] + 1), np.ones(n - eos[0] - 1)]
            np.testing.assert_array_equal(ex["token_type_ids"][:n], segments)
        else:
            assert count == 1
            singles += 1
        assert not masked[[0, *eos]].any()  # specials are never masked
    assert 0 < singles < len(train)
    one, again, later = train.example(3, 0), train.example(3, 0), train.example(3, 1)
    for key in one:
        np.testing.assert_array_equal(one[key], again[key])
    assert not np.array_equal(one["input_ids"], later["input_ids"])  # a new draw each epoch


def step_sizes(ex: dict) -> list[int]:
    """|M_i| of each factorization step, read off the [P] runs of the appended part."""
    is_p = (ex["input_ids"] == TOK.pseudo).astype(np.int8)
    starts = np.flatnonzero(np.diff(np.r_[0, is_p]) == 1)
    ends = np.flatnonzero(np.diff(np.r_[is_p, 0]) == -1)
    return list(ends - starts + 1)


def test_unilm_examples_use_the_configured_masking():
    store = FakeStore(random_documents(1, count=20))
    sizes = {}
    for block_prob, max_block in ((0.0, 6), (1.0, 3), (0.4, 6)):
        data = UnilmDataConfig(max_length=64, block_prob=block_prob, max_block=max_block, valid_fraction=0.1)
        train, _, _ = prepare_unilm_data(store, TOK, data, seed=0)
        sizes[block_prob] = [s for i in range(len(train)) for s in step_sizes(train.example(i))]
    assert set(sizes[0.0]) == {1}
    assert max(sizes[1.0]) == 3 and set(sizes[1.0]) <= {1, 2, 3}  # a single only where no block fits
    assert max(sizes[0.4]) > 3
    ae = prepare_unilm_data(store, TOK, UnilmDataConfig(max_length=64, objective="ae", valid_fraction=0.1), 0)[0]
    assert (ae.example(0)["input_ids"] != TOK.pseudo).all()


def test_prepare_unilm_data_errors():
    store = FakeStore(random_documents(2))
    with pytest.raises(CtxlmError, match="max_position_embeddings"):
        prepare_unilm_data(store, TOK, UnilmDataConfig(max_length=600), seed=0, max_positions=512)
    with pytest.raises(CtxlmError, match="no UniLMv2 chunks"):
        prepare_unilm_data(FakeStore([[[11, 12]], [[13, 14, 15]]]), TOK, UnilmDataConfig(max_length=4), seed=0)
    with pytest.raises(CtxlmError, match="objective"):
        prepare_unilm_data(store, TOK, UnilmDataConfig(objective="xlnet", valid_fraction=0.1), seed=0)
