"""ctxlm.statistics: the two-level bootstrap against brute force, Holm against a hand-worked example,
Student's t against scipy, and the calibration the issue asks for: with a known effect of 0 and real
seed variance the false-positive rate at alpha 0.05 is near 5% (the examples-only bootstrap's is far
above), and a known effect is found."""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
import pytest

from ctxlm.errors import CtxlmError
from ctxlm import statistics
from ctxlm.statistics import (
    SharedResamples,
    corpus_bleu4,
    corpus_perplexity,
    format_p,
    holm,
    interval,
    mean_score,
    paired_bootstrap,
    resampled_differences,
    resampled_statistics,
    t_quantile,
    t_two_sided_p,
    two_level_bootstrap,
)


def exact_two_level(a: np.ndarray, b: np.ndarray, statistic=mean_score) -> np.ndarray:
    """Every two-level resample of (seeds, examples, k) arrays, equally likely: each seed draw, then
    each example draw within each drawn seed; statistic(a) − statistic(b) on the pooled rows."""
    seeds, examples = a.shape[:2]
    out = []
    for seed_draw in itertools.product(range(seeds), repeat=seeds):
        for example_draws in itertools.product(itertools.product(range(examples), repeat=examples), repeat=seeds):
            rows = [(s, i) for s, draw in zip(seed_draw, example_draws) for i in draw]
            pick = lambda x: np.array([x[s, i] for s, i in rows])[None]  # noqa: E731
            out.append(float(statistic(pick(a))[0] - statistic(pick(b))[0]))
    return np.array(out)


def test_two_level_resamples_follow_the_exact_bootstrap_distribution():
    """2 seeds × 3 examples: all 2² · (3³)² = 2,916 resamples enumerated; 20,000 random ones match
    their mean, standard deviation and distribution function within Monte Carlo error."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(1.0, 1.0, size=(2, 3, 1)), rng.normal(0.0, 1.0, size=(2, 3, 1))
    a[1] += 2.0  # a seed offset: the seed level must show in the spread
    exact = exact_two_level(a, b)
    assert len(exact) == 2916
    sampled = resampled_differences(a, b, mean_score, mean_score, 20_000, seed=0)
    assert sampled.mean() == pytest.approx(exact.mean(), abs=4 * exact.std() / np.sqrt(20_000))
    assert sampled.std() == pytest.approx(exact.std(), rel=0.03)
    for q in np.quantile(exact, [0.025, 0.25, 0.5, 0.75, 0.975]):
        assert np.mean(sampled <= q) == pytest.approx(np.mean(exact <= q), abs=0.015)
    test = two_level_bootstrap(a, b, resamples=20_000)
    assert (test.percentile_low, test.percentile_high) == pytest.approx(
        tuple(np.quantile(exact, [0.025, 0.975])), abs=0.05 * exact.std()
    )
    assert test.ci_low <= test.percentile_low and test.ci_high >= test.percentile_high  # the hull of both tests
    assert test.difference == pytest.approx(float((a - b).mean()))
    assert test.seed_differences == pytest.approx(tuple((a - b).mean(axis=(1, 2))))


def test_corpus_statistic_is_computed_on_the_pooled_drawn_rows():
    """Perplexity is exp(ΣNLL / Σtokens) over the drawn rows of every drawn seed, not a mean of per-seed values."""
    rng = np.random.default_rng(1)
    a = np.stack([rng.uniform(1, 5, (2, 3)), rng.integers(1, 4, (2, 3))], axis=-1).astype(float)
    b = np.stack([rng.uniform(1, 5, (2, 3)), rng.integers(1, 4, (2, 3))], axis=-1).astype(float)
    exact = exact_two_level(a, b, corpus_perplexity)
    sampled = resampled_differences(a, b, corpus_perplexity, corpus_perplexity, 20_000, seed=2)
    assert sampled.mean() == pytest.approx(exact.mean(), abs=4 * exact.std() / np.sqrt(20_000))
    assert two_level_bootstrap(a, b, corpus_perplexity, resamples=100).difference == pytest.approx(
        float(corpus_perplexity(a.reshape(1, 6, 2))[0] - corpus_perplexity(b.reshape(1, 6, 2))[0])
    )


def test_both_systems_share_the_draws():
    """b = a − 1 on every row: every resample's difference is exactly 1 (shared draws), so no spread, p 0."""
    a = np.random.default_rng(0).normal(size=(3, 50))
    test = two_level_bootstrap(a, a - 1, resamples=500)
    assert test.standard_error == pytest.approx(0, abs=1e-12) and test.p_value == 0
    assert (test.ci_low, test.ci_high) == pytest.approx((1, 1)) and test.seeds_agree
    same = two_level_bootstrap(a, a, resamples=500)
    assert same.p_value == 1 and same.difference == 0 and same.seeds_agree is False


def test_a_baseline_of_one_seed_is_paired_with_every_seed_and_one_system_has_an_interval():
    rng = np.random.default_rng(2)
    a, baseline = rng.normal(30, 5, (3, 40)), rng.normal(28, 5, (1, 40))
    test = two_level_bootstrap(a, baseline, resamples=2000)
    assert test.seed_differences == pytest.approx(tuple(a.mean(axis=1) - baseline.mean()))
    alone = interval(a, resamples=2000)
    assert alone.estimate == pytest.approx(a.mean()) and alone.ci_low < a.mean() < alone.ci_high
    assert alone.seeds == 3
    with pytest.raises(CtxlmError, match="differ"):
        two_level_bootstrap(a, rng.normal(size=(2, 40)))
    with pytest.raises(CtxlmError, match="shape"):
        two_level_bootstrap(np.zeros(3))


def test_systems_resampled_once_give_the_pairwise_tests():
    """SharedResamples draws once for every system: a test between two of them is the pairwise
    two-level bootstrap's (the same draws when one chunk holds them all), a baseline of one seed included."""
    rng = np.random.default_rng(3)
    systems = {
        "palm": rng.normal(31, 5, (3, 30)),
        "bart": rng.normal(30, 5, (3, 30)),
        "baseline": rng.normal(28, 5, (1, 30)),
    }
    shared = SharedResamples(systems, resamples=300)
    numbers = lambda r: [float(v) for v in np.hstack([x for x in dataclasses.astuple(r) if not isinstance(x, str)])]  # noqa: E731
    same = lambda x, y: numbers(x) == pytest.approx(numbers(y), rel=1e-12)  # noqa: E731
    assert same(shared.test("palm", "bart"), two_level_bootstrap(systems["palm"], systems["bart"], resamples=300))
    assert same(
        shared.test("bart", "baseline"), two_level_bootstrap(systems["bart"], systems["baseline"], resamples=300)
    )
    assert shared.test("palm").difference == pytest.approx(systems["palm"].mean())


@pytest.mark.parametrize("statistic", [mean_score, corpus_perplexity, corpus_bleu4])
def test_sums_of_draw_counts_give_the_gathered_rows_statistics(statistic, monkeypatch):
    """The fast path (each resample's column sums as draw counts × rows) equals gathering the rows."""
    rng = np.random.default_rng(4)
    systems = [(rng.integers(1, 9, (3, 25, 10)).astype(float), statistic) for _ in range(3)]
    fast = resampled_statistics(systems, 200, seed=1)
    monkeypatch.setattr(statistics, "FROM_SUMS", {})
    np.testing.assert_allclose(fast, resampled_statistics(systems, 200, seed=1), rtol=1e-12)


def test_student_t_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 30):
        for t in (0.0, 0.4, 1.7, 4.3, 12.0):
            assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), abs=1e-12)
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)
    assert t_two_sided_p(1.96, np.inf) == pytest.approx(2 * stats.norm.sf(1.96), abs=1e-12)


def test_holm_against_a_hand_worked_example():
    """p 0.01, 0.04, 0.03, 0.005 (m = 4): sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06,
    0.04·1 = 0.04 → 0.06 (monotone). None is a claim not tested: it stays None and does not count."""
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.01, None, 0.04, 0.03, 0.005])[1] is None
    assert holm([0.01, None, 0.04, 0.03, 0.005])[0] == pytest.approx(0.03)
    assert holm([0.6, 0.9]) == [1.0, 1.0] and holm([]) == []
    # the case: p 0.034 as the smallest of eight claims fails at 0.05 once adjusted
    assert holm([0.034] + [0.5] * 7)[0] == pytest.approx(0.272)


def test_holm_matches_statsmodels_when_installed():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = np.random.default_rng(0).uniform(0, 0.2, 12)
    assert holm(list(p)) == pytest.approx(list(multitest.multipletests(p, method="holm")[1]))


def test_p_below_what_the_resamples_resolve_prints_as_less_than_one_over_b():
    assert format_p(0.0) == "< 0.0001" and format_p(0.00003) == "< 0.0001"
    assert format_p(0.0, 1000) == "< 0.001" and format_p(0.034) == "0.034" and format_p(0.00042) == "0.0004"
    assert format_p(None) == "—"


def simulate(
    rng: np.random.Generator,
    runs: int,
    effect: float,
    seeds: int = 3,
    examples: int = 100,
    seed_sd: float = 0.5,
    noise_sd: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example scores of two systems in `runs` independent experiments: an example difficulty
    shared by both (so pairing matters), a seed offset per system and seed from N(0, seed_sd²), and
    per-example noise; system a is better by `effect`."""
    difficulty = rng.normal(30, 10, (runs, 1, examples))
    offsets = rng.normal(0, seed_sd, (2, runs, seeds, 1))
    noise = rng.normal(0, noise_sd, (2, runs, seeds, examples))
    return difficulty + effect + offsets[0] + noise[0], difficulty + offsets[1] + noise[1]


def rejection_rates(a: np.ndarray, b: np.ndarray, resamples: int) -> dict[str, float]:
    two_level = [two_level_bootstrap(x, y, resamples=resamples, seed=i) for i, (x, y) in enumerate(zip(a, b))]
    for t in two_level:  # the verdict's two readings agree: p < 0.05 exactly when the interval excludes 0
        assert (t.p_value < 0.05) == (not t.ci_low <= 0 <= t.ci_high) or abs(t.p_value - 0.05) < 0.01, t
    return {
        "used (bootstrap and seed t)": np.mean([t.p_value < 0.05 for t in two_level]),
        "two-level percentile alone": np.mean([t.percentile_p < 0.05 for t in two_level]),
        "examples only": np.mean(
            [paired_bootstrap(x, y, resamples=resamples, seed=i).p_value < 0.05 for i, (x, y) in enumerate(zip(a, b))]
        ),
    }


def test_false_positive_rate_is_near_alpha_with_seed_variance():
    """The issue's calibration: 400 simulated comparisons with effect 0, 3 seeds × 100 examples,
    seed sd 0.5 (the spread of PALM's seeds on Gigaword) and per-example noise sd 3; B = 1,000 per
    comparison (not 10,000, to keep the test at a few seconds). The test the reports use rejects
    about 5% (a 99.9% binomial interval around 5% for 400 runs is about 2%-9%; asserted 1.5%-10%);
    the examples-only paired bootstrap rejects far more (it sees no seed variance), and so does the
    two-level bootstrap's percentile interval alone (3 seeds: near [lowest, highest seed])."""
    a, b = simulate(np.random.default_rng(33), runs=400, effect=0.0)
    rates = rejection_rates(a, b, resamples=1000)
    print("false-positive rates at alpha 0.05:", rates)
    assert 0.015 <= rates["used (bootstrap and seed t)"] <= 0.10, rates
    assert rates["examples only"] >= 0.25, rates
    assert rates["two-level percentile alone"] >= 0.09, rates


def test_power_with_a_known_effect():
    """The same simulation with a = b + 2 (about 3 standard errors of the seed-level difference):
    the two-level test finds it in most runs."""
    a, b = simulate(np.random.default_rng(34), runs=200, effect=2.0)
    rates = rejection_rates(a, b, resamples=1000)
    print("power at alpha 0.05, effect 2:", rates)
    assert rates["used (bootstrap and seed t)"] >= 0.5, rates


def test_ten_thousand_resamples_of_three_seeds_by_two_thousand_examples_are_fast():
    rng = np.random.default_rng(0)
    a, b = rng.normal(30, 10, (3, 2000)), rng.normal(29, 10, (3, 2000))
    start = time.perf_counter()
    test = two_level_bootstrap(a, b)
    elapsed = time.perf_counter() - start
    print(f"10,000 two-level resamples of 3 × 2,000: {elapsed:.2f} s")
    assert test.resamples == 10_000 and elapsed < 20  # ~0.5 s here; generous for a loaded 2-core machine
