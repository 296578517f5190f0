"""The plots of `ctxlm compare`'s reports (matplotlib on the file-only Agg backend).

- `variant_colours`: one colour per variant, from its model family's palette (PALM blues and greens,
  GLM oranges and browns, UniLMv2 purples and reds; greys for names outside `PRETRAIN_VARIANTS`),
  so a variant has the same colour in every plot.
- `seed_band`: a variant's curve over seeds, stage by stage: the mean and the min-max band.
- `panels`: the variants of one plot, split by family into small multiples when one panel would
  hold more than `PANEL_LINES` lines.
- `loss_plot` (training loss against the step), `score_plot` (the primary metric per variant, as
  bars), `low_resource_plot` (the metric against the number of training pairs): the PNGs.
- `interval_plot` (scores as points with CIs on a fitted axis) and `pretrain_panels` (held-out
  pre-training loss per objective against tokens and FLOPs, with the unigram level): the summary's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import CtxlmError
from .objectives.variants import PRETRAIN_VARIANTS

# a family's variants take its colours in PRETRAIN_VARIANTS' order
FAMILY_PALETTES = {
    "palm": ("#1f4e9c", "#6baed6", "#1b7837", "#a6d96a", "#3b4a54", "#17becf", "#2a9d8f"),
    "glm": ("#e6550d", "#fdae6b", "#8c510a", "#d9a400"),
    "unilm": ("#6a3d9a", "#b294c7", "#d62728", "#f4a3a8", "#8b0000", "#3f007d", "#e377c2"),
}
FAMILY_NAMES = {"palm": "PALM family", "glm": "GLM family", "unilm": "UniLMv2 family"}
GREYS = ("#7f7f7f", "#404040", "#b0b0b0", "#1a1a1a", "#5c5c5c", "#969696")  # names of no known family
PANEL_LINES = 7  # more variants than this: one panel per family (a family's 7 Table 6 rows stay together)
BAND = "band: min-max over seeds"

Point = tuple[float, float]  # (step, value)
Curve = Sequence[Sequence[Point]]  # one run's stages in order, each's steps counted from its start


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend."""
    from .extras import require

    matplotlib = require("matplotlib", "report", "ctxlm compare's plots; or compare with --no-plots")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------------ colours and panels
def family_of(name: str) -> str | None:
    variant = PRETRAIN_VARIANTS.get(name)
    return variant.family if variant is not None and variant.family in FAMILY_PALETTES else None


def variant_colours(names: Sequence[str]) -> dict[str, str]:
    """name → colour: a known variant's is fixed (its place among its family's variants picks from
    the family's palette); other names take greys in the order given."""
    colours, others = {}, 0
    for name in dict.fromkeys(names):
        family = family_of(name)
        if family is None:
            colours[name], others = GREYS[others % len(GREYS)], others + 1
            continue
        siblings = [n for n, v in PRETRAIN_VARIANTS.items() if v.family == family]
        colours[name] = FAMILY_PALETTES[family][siblings.index(name) % len(FAMILY_PALETTES[family])]
    return colours


def by_family(names: Sequence[str]) -> list[tuple[str | None, list[str]]]:
    """(family, its names in the order given) for PALM, GLM, UniLMv2, then other names (None)."""
    names = list(dict.fromkeys(names))
    groups = [(family, [n for n in names if family_of(n) == family]) for family in (*FAMILY_PALETTES, None)]
    return [(family, members) for family, members in groups if members]


def panels(names: Sequence[str], limit: int = PANEL_LINES) -> list[tuple[str, list[str]]]:
    """(title, names) of each panel: one panel when `names` fit in `limit` lines, else one per family
    (`by_family`), a family of more than `limit` split into even chunks."""
    names = list(dict.fromkeys(names))
    if len(names) <= limit:
        return [("", names)]
    out = []
    for family, members in by_family(names):
        chunks = math.ceil(len(members) / limit)
        for i in range(chunks):
            part = members[i * len(members) // chunks : (i + 1) * len(members) // chunks]
            title = FAMILY_NAMES.get(family, "other") + (f" ({i + 1}/{chunks})" if chunks > 1 else "")
            out.append((title, part))
    return out


# ------------------------------------------------------------------------------------ mean and band over seeds
@dataclass(frozen=True)
class Band:
    """A variant's curve over seeds: at each step the mean, min and max of the seeds that ran it
    (`seeds` of them); a NaN row between stages."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    seeds: np.ndarray


def _on_grid(points: Sequence[Point], grid: np.ndarray) -> np.ndarray:
    """A run's values at `grid`, linear between its logged steps, NaN outside them."""
    steps, values = (np.asarray(v, dtype=np.float64) for v in zip(*sorted(points)))
    inside = (grid >= steps[0]) & (grid <= steps[-1])
    return np.where(inside, np.interp(grid, steps, values), np.nan)


def _stage_grid(runs: Sequence[Sequence[Point]]) -> np.ndarray:
    """The union of the runs' logged steps; cut at the earliest run's end when the runs end within
    one logging interval of each other (a minutes budget gives seeds a step more or less)."""
    grid = np.unique(np.concatenate([[s for s, _ in run] for run in runs]).astype(np.float64))
    ends = [max(s for s, _ in run) for run in runs]
    intervals = [np.median(np.diff(sorted(s for s, _ in run))) for run in runs if len(run) > 1]
    if intervals and max(ends) - min(ends) <= np.median(intervals):
        grid = grid[grid <= min(ends)]
    return grid


def seed_band(curves: Sequence[Curve]) -> Band:
    """The seeds' `curves` aligned stage by stage: a stage's steps are the union of the seeds' logged
    steps (`_stage_grid`; each seed interpolated between its own), after the earlier stages; at each
    step the mean, min and max over the seeds that logged around it (a seed that stopped early drops
    out there). Non-finite losses are left out."""
    stages = max((len(c) for c in curves), default=0)
    parts, offset = [], 0.0
    for k in range(stages):
        runs = [run for c in curves if len(c) > k and (run := [(s, v) for s, v in c[k] if math.isfinite(v)])]
        if not runs:
            continue
        grid = _stage_grid(runs)
        values = np.stack([_on_grid(run, grid) for run in runs])
        seeds = np.isfinite(values).sum(axis=0)  # ≥ 1: each grid step is some seed's logged step
        stats = np.nanmean(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0)
        if parts:  # a gap between stages
            parts.append(np.array([[offset, np.nan, np.nan, np.nan, 0]]))
        parts.append(np.column_stack([grid + offset, *stats, seeds]))
        offset += grid[-1]
    table = np.concatenate(parts) if parts else np.empty((0, 5))
    return Band(*(table[:, i] for i in range(4)), seeds=table[:, 4].astype(int))


# ------------------------------------------------------------------------------------ the plots
def baseline_value(baseline: Mapping | None, metric: str) -> float | None:
    """The trivial baseline's `metric` (`{"name", "metrics"}`, a value or a one-value list), or None."""
    if not baseline or metric not in baseline.get("metrics", {}):
        return None
    value = baseline["metrics"][metric]
    return float(value[0] if isinstance(value, (list, tuple)) else value)


def _panel_axes(plt, count: int, share_y: bool, height: float = 3.4):
    """A column of `count` panels sharing the x axis (and y when `share_y`)."""
    figure, axes = plt.subplots(
        count, 1, figsize=(10, 0.6 + height * count), dpi=100, sharex=True, sharey=share_y, squeeze=False
    )
    return figure, list(axes[:, 0])


def _seed_count_text(counts: Sequence[int]) -> str:
    counts = sorted(set(counts))
    return f"{counts[0]} seed{'s' * (counts[0] != 1)}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]} seeds"


def log_scaled(metric: str) -> bool:
    """Whether `metric` is drawn in log scale: perplexity, whose log is the loss, so that a unigram
    baseline several times the models' values leaves their differences room."""
    return metric == "perplexity"


def _log_axis(axis) -> None:
    """A log-scale axis labelled in plain numbers at 1, 2 and 5 times the powers of 10."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axis.set_minor_formatter(NullFormatter())


def _finish(plt, figure, axes, path: str | Path) -> Path:
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def loss_plot(
    curves: Mapping[str, Sequence[Curve]],
    path: str | Path,
    title: str,
    *,
    ylabel: str = "training loss",
    share_y: bool = True,
    colours: Mapping[str, str] | None = None,
) -> Path:
    """Each variant's mean loss over its seeds' curves (variant → one `Curve` per seed) with the
    min-max band, a line per variant in its colour (`colours`, default `variant_colours`); small
    multiples by family when crowded."""
    plt = pyplot()
    curves = {name: kept for name, runs in curves.items() if (kept := [run for run in runs if any(run)])}
    colours, groups = colours or variant_colours(list(curves)), panels(list(curves))
    figure, axes = _panel_axes(plt, len(groups), share_y)
    fewer = False  # some step where not every seed of a variant logged
    for ax, (panel_title, names) in zip(axes, groups):
        for name in names:
            band = seed_band(curves[name])
            full = band.seeds == len(curves[name])
            ax.plot(band.steps, np.where(full, band.mean, np.nan), color=colours[name], linewidth=1.8, label=name)
            if not full[np.isfinite(band.mean)].all():  # dotted from the last step every seed logged
                near = ~full
                near[1:] |= ~full[:-1]
                near[:-1] |= ~full[1:]
                ax.plot(
                    band.steps, np.where(near, band.mean, np.nan), color=colours[name], linewidth=1.8, linestyle=":"
                )
                fewer = True
            if len(curves[name]) > 1:
                ax.fill_between(band.steps, band.low, band.high, color=colours[name], alpha=0.15, linewidth=0)
        ax.set_title(panel_title, fontsize=10, loc="left")
        ax.set_ylabel(ylabel)
    axes[-1].set_xlabel("step")
    if not curves:
        axes[0].text(0.5, 0.5, "no losses logged", transform=axes[0].transAxes, ha="center", va="center")
        figure.suptitle(title, fontsize=11)
        return _finish(plt, figure, axes, path)
    seeds = [len(runs) for runs in curves.values()]
    figure.suptitle(
        f"{title}: mean of {_seed_count_text(seeds)}, {BAND}"
        + (";\ndotted where some seeds had stopped (the mean of those still running)" if fewer else ""),
        fontsize=11,
    )
    return _finish(plt, figure, axes, path)


def score_plot(
    scores: Mapping[str, Sequence[float]],
    path: str | Path,
    metric: str,
    *,
    baseline: Mapping | None = None,
    stuck: Mapping[str, Sequence[bool]] | None = None,
    higher_is_better: bool = True,
    colours: Mapping[str, str] | None = None,
) -> Path:
    """A horizontal bar per variant (variant → its seeds' `metric`), grouped by family, in its colour:
    the mean over seeds, whiskers from the lowest to the highest seed, each seed a dot (a cross where
    that cell did not learn, `stuck`: variant → a flag per seed; such a variant's bar is hatched),
    the trivial baseline a labelled vertical line."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    groups, stuck = by_family(list(scores)), stuck or {}
    names = [name for _, members in groups for name in members]
    colours = colours or variant_colours(names)
    figure, ax = plt.subplots(figsize=(10, 1.2 + 0.38 * len(names)), dpi=100)
    rng = np.random.default_rng(0)  # the dots' vertical jitter
    for y, name in enumerate(names):
        values = np.asarray(scores[name], dtype=np.float64)
        flags = np.asarray(stuck.get(name, [False] * len(values)), dtype=bool)
        mean = values.mean()
        # hatched in white (the edge colour, no outline) where a seed did not learn
        ax.barh(
            y,
            mean,
            height=0.7,
            color=colours[name],
            hatch="///" if flags.any() else None,
            edgecolor="white",
            linewidth=0,
        )
        ax.errorbar(mean, y, xerr=[[mean - values.min()], [values.max() - mean]], color="black", capsize=3, linewidth=1)
        jitter = y + rng.uniform(-0.18, 0.18, len(values))
        ax.scatter(values[~flags], jitter[~flags], s=22, color="white", edgecolor="black", zorder=3, linewidth=0.8)
        ax.scatter(
            values[flags], jitter[flags], s=48, color="black", edgecolor="white", marker="X", zorder=3, linewidth=0.6
        )
    handles = [
        Patch(facecolor="#bbbbbb", label="mean over seeds"),
        Line2D([], [], color="black", marker="|", markersize=8, label="lowest to highest seed"),
        Line2D([], [], color="white", marker="o", markeredgecolor="black", linestyle="", label="a seed"),
    ]
    if any(np.any(flags) for flags in stuck.values()):
        handles += [
            Line2D(
                [],
                [],
                color="black",
                marker="X",
                markeredgecolor="white",
                markersize=8,
                linestyle="",
                label="a seed that did not learn",
            ),
            Patch(
                facecolor="#bbbbbb",
                edgecolor="white",
                linewidth=0,
                hatch="///",
                label="hatched: some seed did not learn",
            ),
        ]
    for boundary in np.cumsum([len(members) for _, members in groups])[:-1]:
        ax.axhline(boundary - 0.5, color="#999999", linewidth=0.8)
    reference = baseline_value(baseline, metric)
    if reference is not None:
        ax.axvline(reference, color="black", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"{baseline['name']}: {reference:.2f}",
            (reference, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, 3),
            textcoords="offset points",
            fontsize=9,
            va="bottom",
        )
        handles.append(Line2D([], [], color="black", linestyle="--", label=f"baseline: {baseline['name']}"))
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)  # the first variant on top
    ax.set_xlabel(f"{metric} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(handles=handles, fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    figure.tight_layout()
    figure.savefig(path, bbox_inches="tight")
    plt.close(figure)
    return Path(path)


def low_resource_plot(
    points: Mapping[str, Mapping[int, Sequence[float]]],
    baseline: Mapping | None,
    path: str | Path,
    metric: str,
    *,
    colours: Mapping[str, str] | None = None,
    intervals: Mapping[str, Mapping[int, tuple[float, float, float]]] | None = None,
    baseline_by_size: Mapping[int, float] | None = None,
    log_scale: bool = False,
) -> Path:
    """`metric` against the number of training pairs (log scale; variant → {pairs: a score per
    seed}): the mean over seeds with the min-max band, or, with `intervals` (variant → {pairs:
    (estimate, low, high)}, the two-level bootstrap's), the estimate with its 95% CI band; a line per
    variant in its colour, the trivial baseline (`{"name", "metrics"}` or None) as a labelled
    horizontal line, or, with `baseline_by_size` (pairs → its value at that size: a baseline that
    counts the training pairs), a dashed line through those; small multiples by family when crowded.
    `log_scale`: the metric's axis in log scale too (perplexity, whose log is the loss: a baseline
    several times the models' values does not flatten their curves)."""
    plt = pyplot()
    for name, sizes in points.items():
        bad = [size for size in sizes if isinstance(size, bool) or not isinstance(size, (int, float)) or size <= 0]
        if bad:
            raise CtxlmError(f"low_resource_plot: {name}'s training-set size {bad[0]!r} is not a positive number")
    names = [name for name, sizes in points.items() if sizes]
    colours, groups = colours or variant_colours(names), panels(names)
    figure, axes = _panel_axes(plt, len(groups), share_y=True)
    reference, ticks = baseline_value(baseline, metric), sorted({s for n in names for s in points[n]})
    for ax, (panel_title, members) in zip(axes, groups):
        for name in members:
            sizes = sorted(points[name])
            scores = [np.asarray(points[name][s], dtype=np.float64) for s in sizes]
            if intervals is not None:
                centre, low, high = (np.array([intervals[name][s][i] for s in sizes]) for i in range(3))
            else:
                centre, low, high = (np.array([f(v) for v in scores]) for f in (np.mean, np.min, np.max))
            ax.plot(sizes, centre, color=colours[name], marker="o", markersize=4, linewidth=1.8, label=name)
            if intervals is not None or max(len(v) for v in scores) > 1:
                ax.fill_between(sizes, low, high, color=colours[name], alpha=0.15, linewidth=0)
        if baseline_by_size:
            xs = sorted(baseline_by_size)
            ax.plot(
                xs,
                [baseline_by_size[x] for x in xs],
                color="black",
                linestyle="--",
                linewidth=1.2,
                marker="x",
                label=f"baseline: {baseline['name'] if baseline else 'trivial'} (at each size)",
            )
        elif reference is not None:
            ax.axhline(
                reference,
                color="black",
                linestyle="--",
                linewidth=1.2,
                label=f"baseline: {baseline['name']} ({reference:.2f})",
            )
        ax.set_title(panel_title, fontsize=10, loc="left")
        ax.set_ylabel(f"{metric} (log scale)" if log_scale else metric)
        ax.set_xscale("log")
        if log_scale:
            ax.set_yscale("log")
            _log_axis(ax.yaxis)
    axes[-1].set_xticks(ticks, [f"{t:,.0f}" for t in ticks])
    axes[-1].minorticks_off()
    axes[-1].set_xlabel("training pairs (log scale)")
    seeds = [len(v) for n in names for v in points[n].values()] or [0]
    band = BAND if intervals is None else "band: 95% CI over seeds and examples (two-level bootstrap)"
    figure.suptitle(f"{metric} against the training pairs: {_seed_count_text(seeds)}, {band}", fontsize=11)
    return _finish(plt, figure, axes, path)


def interval_plot(
    panels_: Sequence[tuple[str, Sequence[tuple[str, float, float, float]]]],
    path: str | Path,
    metric: str,
    *,
    baseline: Mapping | None = None,
    higher_is_better: bool = True,
    colours: Mapping[str, str] | None = None,
    baselines: Sequence[float | None] | None = None,
    log_scale: bool = False,
) -> Path:
    """Scores as points with their 95% CIs: a panel per (title, [(variant, estimate, low, high)]),
    a row per variant in its colour, the trivial baseline a labelled vertical line (`baselines`:
    each panel's own value, else `baseline`'s); the x axis fitted to the intervals and the
    baselines (not from 0), shared by the panels; with `log_scale` (perplexity) fitted in log space."""
    plt = pyplot()
    names = list(dict.fromkeys(name for _, rows in panels_ for name, *_ in rows))
    colours = colours or variant_colours(names)
    figure, axes = plt.subplots(
        1,
        max(1, len(panels_)),
        figsize=(3.6 * max(1, len(panels_)) + 2, 1.2 + 0.4 * max(1, len(names))),
        dpi=100,
        sharey=True,
        sharex=True,
        squeeze=False,
    )
    axes = list(axes[0])
    reference = baseline_value(baseline, metric)
    lines = list(baselines) if baselines is not None else [reference] * len(panels_)
    edges = [v for _, rows in panels_ for _, _, low, high in rows for v in (low, high)]
    edges += [v for v in lines if v is not None]
    for ax, (title, rows), reference in zip(axes, panels_, lines):
        for name, estimate, low, high in rows:
            y = names.index(name)
            ax.errorbar(
                estimate,
                y,
                xerr=[[estimate - low], [high - estimate]],
                color=colours[name],
                marker="o",
                markersize=5,
                capsize=3,
                linewidth=1.4,
            )
        if reference is not None:
            ax.axvline(
                reference,
                color="black",
                linestyle="--",
                linewidth=1.2,
                label=f"baseline: {(baseline or {}).get('name', 'trivial')}" if ax is axes[-1] else None,
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{metric} ({'higher' if higher_is_better else 'lower'} is better{', log scale' * log_scale})")
        ax.grid(alpha=0.3, axis="x")
        if log_scale:
            ax.set_xscale("log")
            _log_axis(ax.xaxis)
    if edges:
        ends = np.log([min(edges), max(edges)]) if log_scale else np.array([min(edges), max(edges)])
        span = (ends[1] - ends[0]) or 1.0
        low, high = ends[0] - 0.08 * span, ends[1] + 0.08 * span
        axes[0].set_xlim(*(np.exp([low, high]) if log_scale else (low, high)))
    axes[0].set_yticks(range(len(names)), names)
    axes[0].set_ylim(len(names) - 0.5, -0.5)
    figure.suptitle(f"{metric}: estimate and 95% CI over seeds and examples (two-level bootstrap)", fontsize=11)
    return _finish(plt, figure, axes, path)


def pretrain_panels(
    runs: Mapping[str, Sequence[Sequence[Mapping]]],
    path: str | Path,
    *,
    flops_per_token: Mapping[str, float] | None = None,
    colours: Mapping[str, str] | None = None,
) -> Path:
    """Pre-training held-out loss, one panel per objective (each its own y axis: each objective's
    loss is its own task): objective → a run per seed, a run its stages in order, a stage a mapping
    with "curve" ([[step, tokens in the stage, loss], ...]) and "unigram_level". x is the tokens
    seen (stages in sequence); the stage's unigram level is a dashed line over its tokens; with
    `flops_per_token` (objective → training FLOPs per token) the top axis reads in FLOPs."""
    plt = pyplot()
    names = [name for name, seeds in runs.items() if any(stage.get("curve") for run in seeds for stage in run)]
    colours = colours or variant_colours(names)
    figure, axes = plt.subplots(
        max(1, len(names)), 1, figsize=(10, 0.6 + 2.6 * max(1, len(names))), dpi=100, squeeze=False
    )
    axes = list(axes[:, 0])
    for ax, name in zip(axes, names):
        levelled = False
        for k, run in enumerate(runs[name]):
            offset = 0.0
            for stage in run:
                curve = np.asarray(stage.get("curve") or np.empty((0, 3)), dtype=np.float64).reshape(-1, 3)
                if len(curve):
                    ax.plot(
                        offset + curve[:, 1],
                        curve[:, 2],
                        color=colours[name],
                        linewidth=1.4,
                        alpha=0.85,
                        label=f"{name} (a line per seed)" if k == 0 and offset == 0 else None,
                    )
                    end = offset + curve[-1, 1]
                    if stage.get("unigram_level") is not None and k == 0:
                        ax.hlines(
                            stage["unigram_level"],
                            offset,
                            end,
                            color="black",
                            linestyle="--",
                            linewidth=1,
                            label=None if levelled else "unigram level (the stage's targets)",
                        )
                        levelled = True
                    offset = end
        ax.set_title(name, fontsize=10, loc="left")
        ax.set_ylabel("held-out loss")
        ax.set_xlabel("tokens seen")
        ratio = (flops_per_token or {}).get(name)
        if ratio:
            top = ax.secondary_xaxis("top", functions=(lambda x, r=ratio: x * r, lambda f, r=ratio: f / r))
            top.set_xlabel("training FLOPs", fontsize=9)
    if not names:
        axes[0].text(0.5, 0.5, "no held-out losses recorded", transform=axes[0].transAxes, ha="center")
    figure.suptitle("pre-training held-out loss against tokens (top axis: FLOPs), one panel per objective", fontsize=11)
    return _finish(plt, figure, axes, path)
