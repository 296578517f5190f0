"""The statistics of an objective comparison (pure numpy: no torch, no models).

A score of a pre-trained-then-fine-tuned model varies with the seed (the pre-training's and the
fine-tuning's randomness) and with the evaluation examples. A test that resamples examples only
treats the seeds a cell happened to draw as the only ones there are: with seed variance, its
false-positive rate is far above its alpha (`tests/test_statistics.py` measures it). So:

- Statistics (`Statistic`): a corpus score from per-example rows of shape (..., examples, k):
  `mean_score`, `corpus_perplexity` ((NLL sum, tokens) rows), `corpus_bleu4` (n-gram counts),
  `corpus_pearson` ((prediction, label) rows).
- `two_level_bootstrap`: resample seeds with replacement, then examples with replacement within each
  drawn seed; the SAME draws (seed and example indices) for both systems, so the difference is
  paired; the statistic is computed per system on the pooled drawn rows of each resample. A claim
  needs its percentile interval AND Student's t over the per-seed differences (S − 1 degrees of
  freedom) to exclude 0: with 3 seeds the bootstrap alone rejects too often (see `METHOD`).
- `interval`: one system's score with its two-level interval (`two_level_bootstrap` against nothing).
- `holm`: Holm-Bonferroni adjusted p-values across a report's claims.
- `paired_bootstrap`: the old examples-only paired bootstrap (Koehn 2004), kept for one-seed use and
  for the calibration test that shows why it is not enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import CtxlmError

# statistic(x): x has shape (..., examples, k) → shape (...): a score from per-example statistics
Statistic = Callable[[np.ndarray], np.ndarray]

RESAMPLES = 10_000
TIE_TOLERANCE = 1e-9  # relative: a smaller |Δ| is floating-point noise (scores summed in another order), a tie
CHUNK_VALUES = 1 << 22  # gathered values per chunk of resamples (32 MiB of float64): bounds the memory
METHOD = (
    "Two tests must both reject, and the interval is the hull of their two intervals (an intersection-union "
    "test: its false-positive rate is at most the smaller of theirs). (1) The two-level bootstrap: seeds drawn "
    "with replacement, then examples within each drawn seed, the same draws for both systems, the statistic on "
    "the pooled drawn rows; its 2.5-97.5 percentiles and p = 2 x the smaller share of resampled differences on "
    "either side of 0. (2) Student's t over the per-seed differences, S-1 degrees of freedom. With 3 seeds the "
    "bootstrap alone is not calibrated: its percentile interval is nearly [lowest seed, highest seed] when the "
    "seeds vary more than the examples, so it excludes 0 whenever the seeds agree in sign (1 time in 4 with no "
    "effect), and it counts the example noise twice when they vary less; the seed t test is exact for normal "
    "per-seed differences, which already hold each seed's example noise. tests/test_statistics.py measures the "
    "false-positive rates. With one seed the seed variance is unknown: examples only, and the row says so."
)


# ------------------------------------------------------------------------------------ statistics
def mean_score(x: np.ndarray) -> np.ndarray:
    """The mean of a per-example score (column 0), e.g. ROUGE."""
    return x[..., 0].mean(axis=-1)


def corpus_perplexity(x: np.ndarray) -> np.ndarray:
    """exp(Σ NLL / Σ tokens) of per-example (NLL sum, target tokens) columns."""
    return np.exp(x[..., 0].sum(axis=-1) / x[..., 1].sum(axis=-1))


def corpus_bleu4(x: np.ndarray) -> np.ndarray:
    """Corpus BLEU-4 × 100 from per-example (hypothesis length, reference length, 4 n-gram guesses,
    4 clipped matches), with pycocoevalcap's smoothing constants (its Bleu(4) to the last digit)."""
    return _bleu4_of_totals(x.sum(axis=-2))


def _bleu4_of_totals(totals: np.ndarray) -> np.ndarray:
    small, tiny = 1e-9, 1e-15
    log_precisions = np.log((totals[..., 6:10] + tiny) / (totals[..., 2:6] + small)).mean(axis=-1)
    ratio = (totals[..., 0] + tiny) / (totals[..., 1] + small)
    brevity = np.where(ratio < 1, 1 - 1 / ratio, 0.0)
    return 100 * np.exp(log_precisions + brevity)


def corpus_pearson(x: np.ndarray) -> np.ndarray:
    """Pearson's r × 100 of per-example (prediction, label) columns (NaN where either is constant)."""
    centred = x[..., :2] - x[..., :2].mean(axis=-2, keepdims=True)
    prediction, label = centred[..., 0], centred[..., 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100 * (prediction * label).sum(axis=-1) / np.sqrt((prediction**2).sum(axis=-1) * (label**2).sum(axis=-1))


# a statistic of the rows' column sums alone: (sums (..., k), rows) → the statistic; the bootstrap
# then sums each resample's rows by a matrix product of draw counts instead of gathering them
FROM_SUMS = {
    mean_score: lambda sums, rows: sums[..., 0] / rows,
    corpus_perplexity: lambda sums, rows: np.exp(sums[..., 0] / sums[..., 1]),
    corpus_bleu4: lambda sums, rows: _bleu4_of_totals(sums),
}


# ------------------------------------------------------------------------------------ Student's t (integer df)
def t_two_sided_p(t: float, df: int | float) -> float:
    """P(|T| ≥ |t|) for Student's T with `df` degrees of freedom (a positive integer, or inf: the
    normal), by Abramowitz & Stegun 26.7.3-4's finite series (numpy only; scipy agrees)."""
    t = abs(float(t))
    if math.isinf(t):
        return 0.0
    if math.isinf(df):
        return math.erfc(t / math.sqrt(2))
    df = int(df)
    theta = math.atan(t / math.sqrt(df))
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:  # odd: (2/π)(θ + sinθ cosθ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + …))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        inside = 2 / math.pi * (theta + s * math.cos(theta) * total)
    else:  # even: sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + …)
        term, total = 1.0, 1.0
        for k in range(1, df // 2):
            term *= (2 * k - 1) / (2 * k) * c2
            total += term
        inside = s * total
    return min(1.0, max(0.0, 1.0 - inside))


def t_quantile(probability: float, df: int | float) -> float:
    """The `probability` quantile (> 0.5) of Student's t with `df` degrees of freedom, by bisection."""
    tail = 2 * (1 - probability)
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > tail:
        high *= 2
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if t_two_sided_p(middle, df) > tail else (low, middle)
    return (low + high) / 2


# ------------------------------------------------------------------------------------ the two-level bootstrap
def as_cells(x, name: str = "scores") -> np.ndarray:
    """Per-example statistics as a (seeds, examples, k) float array ((seeds, examples): one score each)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        raise CtxlmError(f"{name}: need per-example statistics of shape (seeds, examples[, k]), got {x.shape}")
    return x


def two_level_draws(rng: np.random.Generator, seeds: int, examples: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` resamples: the seeds drawn (count, seeds) and, within each drawn seed, the examples
    drawn (count, seeds, examples), all with replacement."""
    return (
        rng.integers(0, seeds, size=(count, seeds), dtype=np.int32),
        rng.integers(0, examples, size=(count, seeds, examples), dtype=np.int32),
    )


@dataclass(frozen=True)
class BootstrapResult:
    difference: float  # statistic(a) − statistic(b) on every row of the seeds both ran (pooled)
    ci_low: float  # the 95% interval of the difference (see `method`)
    ci_high: float
    p_value: float  # two-sided
    resamples: int
    seed_differences: tuple[float, ...] = ()  # statistic(a) − statistic(b) seed by seed
    seeds_agree: bool | None = None  # every seed's difference has one sign (none a tie)
    standard_error: float | None = None
    method: str = "examples"  # "two-level t" (seeds and examples), "two-level, one seed", "examples"
    percentile_low: float | None = None  # the resamples' 2.5-97.5 percentiles
    percentile_high: float | None = None
    percentile_p: float | None = None  # 2 · min(P*(Δ ≤ 0), P*(Δ ≥ 0))


def resampled_statistics(systems: Sequence[tuple[np.ndarray, Statistic]], resamples: int, seed: int) -> np.ndarray:
    """(resamples, systems): each system's statistic on each two-level resample (`two_level_draws`),
    the SAME draws for every system (one gather serves them all); `systems` are ((seeds, examples,
    k) array, statistic) of one (seeds, examples); chunks of `CHUNK_VALUES` bound the memory."""
    seeds, examples = systems[0][0].shape[:2]
    edges = np.cumsum([0] + [x.shape[-1] for x, _ in systems])
    both = np.concatenate([x for x, _ in systems], axis=-1).reshape(seeds * examples, -1)
    rng, chunk = np.random.default_rng(seed), max(1, CHUNK_VALUES // (seeds * examples * max(1, int(edges[-1]))))
    by_sums = all(statistic in FROM_SUMS for _, statistic in systems) and edges[-1] >= 3  # gathering 2 is faster
    if by_sums:  # a chunk of draw counts × the rows is a BLAS product; it bounds memory as the gather does
        chunk = max(1, min(chunk, CHUNK_VALUES // (seeds * examples)))
    out = []
    for start in range(0, resamples, chunk):
        seed_draw, example_draw = two_level_draws(rng, seeds, examples, min(chunk, resamples - start))
        flat = ((seed_draw * examples)[..., None] + example_draw).reshape(len(seed_draw), -1)  # rows of `both`
        if by_sums:
            offsets = (np.arange(len(flat)) * len(both))[:, None]
            counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * len(both))
            sums = counts.reshape(len(flat), len(both)).astype(np.float64) @ both
            values = [
                FROM_SUMS[statistic](sums[:, edges[i] : edges[i + 1]], flat.shape[1])
                for i, (_, statistic) in enumerate(systems)
            ]
        else:
            rows = np.take(both, flat, axis=0)
            values = [statistic(rows[..., edges[i] : edges[i + 1]]) for i, (_, statistic) in enumerate(systems)]
        out.append(np.stack(values, axis=-1))
    return np.concatenate(out)


def resampled_differences(
    a: np.ndarray, b: np.ndarray, statistic: Statistic, score_b: Statistic, resamples: int, seed: int
) -> np.ndarray:
    """statistic(a) − score_b(b) on each two-level resample, the same draws for both."""
    values = resampled_statistics([(a, statistic), (b, score_b)], resamples, seed)
    return values[:, 0] - values[:, 1]


def _tie(deltas: np.ndarray, observed: float) -> float:
    return TIE_TOLERANCE * max(1.0, abs(observed), float(np.max(np.abs(deltas))) if deltas.size else 0.0)


def percentile_p(deltas: np.ndarray, tie: float) -> float:
    """2 · the smaller share of resampled differences on either side of 0 (within `tie`: both sides)."""
    return min(1.0, 2 * min(float(np.mean(deltas <= tie)), float(np.mean(deltas >= -tie))))


class SharedResamples:
    """Several systems scored on the same examples and seeds (`systems`: name → (seeds, examples[, k])
    per-example statistics; a system of one seed, a baseline, is paired with every seed), resampled
    once: each system's statistic on each two-level resample, the same draws for all, so any paired
    test between two of them (`test`) costs no further resampling."""

    def __init__(self, systems, statistic: Statistic = mean_score, *, resamples: int = RESAMPLES, seed: int = 0):
        arrays = {name: as_cells(x, str(name)) for name, x in systems.items()}
        seeds = max(x.shape[0] for x in arrays.values())
        arrays = {
            name: np.broadcast_to(x, (seeds, *x.shape[1:])) if x.shape[0] == 1 else x for name, x in arrays.items()
        }
        shapes = {x.shape[:2] for x in arrays.values()}
        if len(shapes) != 1:
            raise CtxlmError(f"two-level bootstrap: the systems' (seeds, examples) differ: {sorted(shapes)}")
        self.names, self.resamples, self.seeds = list(arrays), resamples, seeds
        self.values = resampled_statistics([(x, statistic) for x in arrays.values()], resamples, seed)
        self.observed = np.array([statistic(x.reshape(1, -1, x.shape[-1]))[0] for x in arrays.values()])
        self.per_seed = np.stack([statistic(x) for x in arrays.values()], axis=-1)  # (seeds, systems)

    def test(self, a: str, b: str | None = None, confidence: float = 0.95) -> BootstrapResult:
        """statistic(a) − statistic(b) (b None: statistic(a) itself); see `METHOD`."""
        i = self.names.index(a)
        j = None if b is None else self.names.index(b)
        pick = lambda x: x[..., i] - (0 if j is None else x[..., j])  # noqa: E731
        return paired_result(
            float(pick(self.observed)), tuple(float(d) for d in pick(self.per_seed)), pick(self.values), confidence
        )


def two_level_bootstrap(
    a, b=None, statistic: Statistic = mean_score, *, resamples: int = RESAMPLES, seed: int = 0, confidence: float = 0.95
) -> BootstrapResult:
    """statistic(a) − statistic(b) over seeds and examples: `a` and `b` are (seeds, examples[, k])
    per-example statistics, seed s of `a` paired with seed s of `b` and example i with example i;
    `b` of one seed (a baseline) is paired with every seed of `a`; `b` None tests statistic(a)
    itself (one system's interval, `interval`). Each resample draws seeds, then examples within each
    drawn seed (`two_level_draws`), the same draws for both systems; see `METHOD` for the
    interval and p."""
    systems = {"a": a} if b is None else {"a": a, "b": b}
    return SharedResamples(systems, statistic, resamples=resamples, seed=seed).test(
        "a", None if b is None else "b", confidence
    )


def paired_result(
    observed: float, per_seed: tuple[float, ...], deltas: np.ndarray, confidence: float = 0.95
) -> BootstrapResult:
    """The test of a difference from its value on all rows, per seed, and on each resample (`METHOD`)."""
    tie, seeds, resamples = _tie(deltas, observed), len(per_seed), len(deltas)
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    signs = {0 if abs(d) <= tie else (1 if d > 0 else -1) for d in per_seed}
    if seeds == 1:  # the seed variance is unknown: examples only, and `method` says so
        return BootstrapResult(
            observed,
            float(low),
            float(high),
            percentile_p(deltas, tie),
            resamples,
            per_seed,
            len(signs) == 1 and 0 not in signs,
            float(deltas.std(ddof=1)),
            "examples (one seed)",
            float(low),
            float(high),
            percentile_p(deltas, tie),
        )
    t = seed_t_test(observed, per_seed, tie, confidence)
    p = max(percentile_p(deltas, tie), t[0])  # both must reject (an intersection-union test)
    return BootstrapResult(
        observed,
        min(float(low), t[1]),
        max(float(high), t[2]),
        p,
        resamples,
        per_seed,
        len(signs) == 1 and 0 not in signs,
        t[3],
        "two-level bootstrap and seed t",
        float(low),
        float(high),
        percentile_p(deltas, tie),
    )


def seed_t_test(
    observed: float, per_seed: Sequence[float], tie: float, confidence: float = 0.95
) -> tuple[float, float, float, float]:
    """(p, low, high, standard error) of the difference against Student's t with S − 1 degrees of
    freedom, the standard error the per-seed differences' sample deviation over sqrt(S)."""
    seeds = len(per_seed)
    se = float(np.std(per_seed, ddof=1)) / math.sqrt(seeds)
    if se <= tie:  # every seed the same difference
        return (1.0 if abs(observed) <= tie else 0.0), observed, observed, se
    half = t_quantile(1 - (1 - confidence) / 2, seeds - 1) * se
    return t_two_sided_p(observed / se, seeds - 1), observed - half, observed + half, se


@dataclass(frozen=True)
class Interval:
    estimate: float
    ci_low: float
    ci_high: float
    seeds: int
    resamples: int


def interval(
    a, statistic: Statistic = mean_score, *, resamples: int = RESAMPLES, seed: int = 0, confidence: float = 0.95
) -> Interval:
    """One system's statistic over its pooled seeds with its two-level interval (seeds, then
    examples within seeds; `two_level_bootstrap` with nothing subtracted)."""
    test = two_level_bootstrap(a, None, statistic, resamples=resamples, seed=seed, confidence=confidence)
    return Interval(test.difference, test.ci_low, test.ci_high, as_cells(a).shape[0], resamples)


# ------------------------------------------------------------------------------------ multiplicity
def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-Bonferroni adjusted p-values (Holm 1979), in the order given: the k-th smallest of m is
    multiplied by (m − k + 1), made monotone, capped at 1. None (a claim not tested) stays None and
    does not count in m."""
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    adjusted: list[float | None] = [None] * len(p_values)
    running, m = 0.0, len(tested)
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def format_p(p: float | None, resamples: int = RESAMPLES) -> str:
    """p with 3 significant digits at most, "< 1/B" (e.g. "< 0.0001") below what B resamples resolve."""
    if p is None:
        return "—"
    floor = 1 / resamples
    if p < floor:
        return f"< {floor:.{max(1, math.ceil(-math.log10(floor)))}f}".rstrip("0").rstrip(".")
    return f"{p:.3f}" if p >= 0.001 else f"{p:.4f}"


# ------------------------------------------------------------------------------------ examples only (one seed)
def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    statistic: Statistic = mean_score,
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    indices: np.ndarray | None = None,
) -> BootstrapResult:
    """Paired bootstrap of statistic(a) − statistic(b) over examples only (Koehn 2004), for
    per-example statistics `a` and `b` of shape (seeds, examples, k): each resample draws the
    examples with replacement (the same draw for both systems and every seed), computes the
    statistic per seed and averages over seeds. It ignores the seed variance: use
    `two_level_bootstrap` for claims. `indices` (resamples × examples) replaces the random draws.
    The p-value is the smallest α at which the (1 − α) percentile interval excludes 0 (differences
    within rounding noise of 0 are ties). Arrays of shape (seeds, examples) hold one score each."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if a.shape != b.shape or a.ndim != 3 or a.shape[1] == 0:
        raise CtxlmError(
            f"paired bootstrap needs two (seeds, examples, k) arrays of one shape, got {a.shape} and {b.shape}"
        )
    n = a.shape[1]
    if indices is None:
        indices = np.random.default_rng(seed).integers(0, n, size=(resamples, n))

    def per_seed_mean(x: np.ndarray, idx: np.ndarray, chunk: int = 64) -> np.ndarray:  # chunks bound the memory
        return np.concatenate(
            [
                np.mean([statistic(x[s][idx[i : i + chunk]]) for s in range(x.shape[0])], axis=0)
                for i in range(0, len(idx), chunk)
            ]
        )

    everything = np.arange(n)[None]
    observed = float((per_seed_mean(a, everything) - per_seed_mean(b, everything))[0])
    deltas = per_seed_mean(a, indices) - per_seed_mean(b, indices)
    tail = (1 - confidence) / 2
    low, high = np.quantile(deltas, [tail, 1 - tail])
    tie = TIE_TOLERANCE * max(1.0, float(np.max(np.abs(deltas))))  # rounding noise is no difference
    p = percentile_p(deltas, tie)
    return BootstrapResult(
        observed,
        float(low),
        float(high),
        p,
        len(indices),
        percentile_low=float(low),
        percentile_high=float(high),
        percentile_p=p,
    )
