"""ctxlm.report's claim rows (issue 33): Holm across a report's testable claims, the raw p beside
it, the seeds' signs, and verdicts that never read a CI spanning 0 as a refutation; a side whose
interval against the trivial baseline does not lie on the better side makes its claims not testable."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ctxlm.report import (
    CLAIM_HEADER,
    claim_rows,
    claim_table,
    claim_verdict,
    flipped,
    pretraining_gain,
    untestable_reasons,
)
from ctxlm.statistics import BootstrapResult, mean_score

SCORING = SimpleNamespace(primary="rougeL", statistic=mean_score, higher_is_better=True)


def result(difference, low, high, p, seeds=(1.0, 2.0, 3.0)) -> BootstrapResult:
    return BootstrapResult(
        difference, low, high, p, 10_000, tuple(seeds), all(d > 0 for d in seeds) or all(d < 0 for d in seeds)
    )


def test_claim_table_adjusts_p_by_holm_and_verdicts_need_the_adjusted_p_and_the_ci():
    tests = [
        ("a", result(1.5, 0.5, 2.5, 0.01), []),
        ("b", result(0.8, 0.1, 1.5, 0.04), []),
        ("c", result(0.3, -0.2, 0.8, 0.3, (0.5, -0.1, 0.4)), []),
        ("d", result(2.0, 1.0, 3.0, 0.001), ["mass is indistinguishable from the baseline"]),
    ]
    rows = claim_table(tests, higher_is_better=True)
    assert [len(r) for r in rows] == [len(CLAIM_HEADER)] * 4
    # three testable claims: 0.01·3 = 0.03, 0.04·2 = 0.08, 0.3·1 → 0.3; the untestable one is not counted
    assert [r[2] for r in rows] == ["0.030", "0.080", "0.300", "—"] and [r[3] for r in rows][:2] == ["0.010", "0.040"]
    assert [r[-1] for r in rows[:3]] == ["supports", "no detectable difference", "no detectable difference"]
    assert rows[3][-1] == "not testable at this scale (mass is indistinguishable from the baseline)"
    assert rows[0][4] == "yes (+1.00, +2.00, +3.00)" and rows[2][4].startswith("no (")
    # the case: −0.03 [−0.57, +0.54] is no detectable difference, never "does not hold"
    assert claim_verdict(result(-0.03, -0.57, 0.54, 0.88), True) == "no detectable difference"
    assert claim_verdict(result(-1.0, -2.0, -0.5, 0.01), True) == "contradicts"


def test_a_side_indistinguishable_from_the_baseline_makes_the_claim_not_testable():
    """glm-copy above the baseline in every seed's point score but inside the noise: not testable."""
    rng = np.random.default_rng(0)
    base = rng.normal(28, 8, (300, 1))
    cell = lambda name, seed, shift: {  # noqa: E731
        "objective": name,
        "seed": seed,
        "metrics": {"rougeL": 0.0},
        "example_stats": (base + shift + rng.normal(0, 2, (300, 1))).tolist(),
        "stages": [],
    }
    cells = [cell("palm", s, 4.0) for s in range(3)] + [cell("glm-copy", s, 0.1) for s in range(3)]
    baseline = {"name": "lead-8 words", "metrics": {"rougeL": 28.0}, "example_stats": base.tolist()}
    assert untestable_reasons(cells[:3], baseline, SCORING, 500) == []
    reasons = untestable_reasons(cells[3:], baseline, SCORING, 500)
    assert reasons and reasons[0].startswith("glm-copy is indistinguishable from the baseline (rougeL")
    (row,) = [r for r in claim_rows(cells, baseline, SCORING, "summarization", 500) if "glm-copy" in r[0]]
    assert row[-1].startswith("not testable at this scale (glm-copy is indistinguishable") and row[2] == "—"


def test_palm_against_none_is_the_test_of_none_minus_palm_turned_round():
    test = BootstrapResult(-1.0, -1.6, -0.4, 0.01, 1000, (-0.8, -1.2, -1.0), True, 0.1, "two-level", -1.5, -0.5, 0.004)
    turned = flipped(test)
    assert (turned.difference, turned.ci_low, turned.ci_high) == (1.0, 0.4, 1.6)
    assert turned.seed_differences == (0.8, 1.2, 1.0) and (turned.percentile_low, turned.percentile_high) == (0.5, 1.5)
    rows = [
        {"objective": "palm", "did_not_learn": {}},
        {"objective": "none", "did_not_learn": {}, "bootstrap": dict(test.__dict__)},
    ]
    assert pretraining_gain(rows, SCORING) == ("+1.00 [+0.40, +1.60], p 0.010", "supports")
    assert pretraining_gain(rows, SCORING, adjusted_p=0.06) == (
        "+1.00 [+0.40, +1.60], p 0.060",
        "no detectable difference",
    )
    rows[1]["untestable"] = ["none is indistinguishable from the baseline (rougeL +0.10 [-0.20, +0.40])"]
    assert pretraining_gain(rows, SCORING)[1] == (
        "not testable at this scale (none is indistinguishable from the baseline (rougeL +0.10 [-0.20, +0.40]))"
    )
