"""`ctxlm.report_plots`: a colour per variant from its family's palette, the same in every plot;
the mean and min-max band over seeds against numpy; panels split by family when crowded; the
scores bar chart, the low-resource curves, and a report that embeds every plot."""

from __future__ import annotations

import base64
import colorsys
import itertools
import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ctxlm.errors import CtxlmError
from ctxlm.objectives.variants import PRETRAIN_VARIANTS
from ctxlm.report import mean_score, write_comparison_report
from ctxlm.report_plots import (
    GREYS,
    PANEL_LINES,
    by_family,
    interval_plot,
    loss_plot,
    low_resource_plot,
    panels,
    pretrain_panels,
    pyplot,
    score_plot,
    seed_band,
    variant_colours,
)

matplotlib = pytest.importorskip("matplotlib")
from matplotlib.colors import to_rgb, to_rgba  # noqa: E402

TWELVE = [
    "palm",
    "palm-nocopy",
    "palm-noae",
    "palm-noar",
    "mass",
    "bart",
    "glm",
    "glm-noshuffle",
    "unilm",
    "unilm-ae",
    "unilm-par",
    "none",
]  # reports/compare's run


@pytest.fixture
def figures(monkeypatch):
    """The figures the plots draw, kept open (pyplot.close recorded instead) for inspection."""
    plt, kept = pyplot(), []
    close = plt.close
    monkeypatch.setattr(plt, "close", kept.append)
    yield kept
    for figure in kept:
        close(figure)


def lab(colour: str) -> np.ndarray:
    """CIELAB (D65) of an sRGB colour, from the CIE formulas."""
    rgb = np.array(to_rgb(colour))
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


# ------------------------------------------------------------------------------------ colours
def test_every_variant_has_its_own_colour_from_its_familys_hues():
    """All 18 variants in one report: 18 colours, no two closer than ΔE*ab 20; PALM's in blue-green
    hues, GLM's orange-brown, UniLMv2's purple-red."""
    colours = variant_colours(list(PRETRAIN_VARIANTS))
    assert len(set(colours.values())) == len(PRETRAIN_VARIANTS)
    closest = min(np.linalg.norm(lab(a) - lab(b)) for a, b in itertools.combinations(colours.values(), 2))
    assert closest > 20
    hues = {"palm": (75, 235), "glm": (16, 55), "unilm": (260, 375)}  # degrees; UniLMv2's wraps past red
    for name, colour in colours.items():
        hue = 360 * colorsys.rgb_to_hsv(*to_rgb(colour))[0]
        low, high = hues[PRETRAIN_VARIANTS[name].family]
        assert low <= hue <= high or low <= hue + 360 <= high, (name, colour, hue)


def test_a_variant_keeps_its_colour_whatever_else_is_plotted():
    everything = variant_colours(list(PRETRAIN_VARIANTS))
    for names in (["none", "palm"], TWELVE[::-1], ["glm-copy"], ["unilm-ar", "mystery", "palm"]):
        colours = variant_colours(names)
        assert list(colours) == names
        assert all(colours[n] == everything[n] for n in names if n in everything)
    unknown = variant_colours(["mystery", "palm", "other", "more"])
    assert [unknown[n] for n in ("mystery", "other", "more")] == list(GREYS[:3])


# ------------------------------------------------------------------------------------ mean and band
def test_the_band_is_numpys_mean_min_and_max_over_seeds_at_shared_steps():
    rng = np.random.default_rng(0)
    steps = np.arange(10, 101, 10)
    losses = rng.normal(5, 1, size=(3, len(steps)))
    band = seed_band([[list(zip(steps, seed))] for seed in losses])
    np.testing.assert_array_equal(band.steps, steps)
    np.testing.assert_allclose(band.mean, losses.mean(axis=0))
    np.testing.assert_array_equal(band.low, losses.min(axis=0))
    np.testing.assert_array_equal(band.high, losses.max(axis=0))
    assert (band.seeds == 3).all()


def test_seeds_logged_at_other_steps_are_interpolated_and_early_stops_drop_out():
    """Seed a logs every 10 steps to 100, b every 5 to 100, c every 10 to 50 (stopped early): at the
    union of their steps each is np.interp of its own; past 50 the mean is of a and b."""
    rng = np.random.default_rng(1)
    a_steps, b_steps, c_steps = np.arange(10, 101, 10), np.arange(5, 101, 5), np.arange(10, 51, 10)
    a, b, c = (rng.normal(5, 1, len(s)) for s in (a_steps, b_steps, c_steps))
    band = seed_band([[list(zip(a_steps, a))], [list(zip(b_steps, b))], [list(zip(c_steps, c))]])
    grid = np.arange(5, 101, 5)
    np.testing.assert_array_equal(band.steps, grid)
    on_grid = np.stack(
        [np.interp(grid, a_steps, a, left=np.nan), b, np.interp(grid, c_steps, c, left=np.nan, right=np.nan)]
    )
    np.testing.assert_allclose(band.mean, np.nanmean(on_grid, axis=0))
    np.testing.assert_allclose(band.low, np.nanmin(on_grid, axis=0))
    np.testing.assert_allclose(band.high, np.nanmax(on_grid, axis=0))
    np.testing.assert_array_equal(band.seeds, np.isfinite(on_grid).sum(axis=0))
    assert band.seeds[0] == 1 and band.seeds[grid == 50] == 3 and (band.seeds[grid > 50] == 2).all()


def test_stages_run_in_sequence_with_a_gap_and_near_equal_ends_are_cut_to_the_first():
    """Two stages of 239/240/241 and 196 steps (a minutes budget), logged every 10 and at the last
    step: stage 1 is cut at 239 (the seeds end within one interval), stage 2 follows it after a NaN
    row, each stage's statistics numpy's over the seeds aligned on the step within the stage."""
    rng = np.random.default_rng(2)
    curves, stage1, stage2 = [], [], []
    for seed in range(3):
        steps1 = np.append(np.arange(10, 239 + seed, 10), 239 + seed)
        steps2 = np.append(np.arange(10, 196, 10), 196)
        loss1, loss2 = rng.normal(7, 1, len(steps1)), rng.normal(6, 1, len(steps2))
        curves.append([list(zip(steps1, loss1)), list(zip(steps2, loss2)) + [(197, float("nan"))]])
        stage1.append(np.interp(np.append(np.arange(10, 231, 10), 239), steps1, loss1))
        stage2.append(loss2)
    band = seed_band(curves)
    gap = np.flatnonzero(np.isnan(band.mean))
    assert len(gap) == 1 and band.seeds[gap[0]] == 0
    first, second = slice(0, gap[0]), slice(gap[0] + 1, None)
    np.testing.assert_array_equal(band.steps[first], np.append(np.arange(10, 231, 10), 239))
    np.testing.assert_array_equal(band.steps[second], 239 + np.append(np.arange(10, 196, 10), 196))
    for part, seeds in ((first, np.stack(stage1)), (second, np.stack(stage2))):
        np.testing.assert_allclose(band.mean[part], seeds.mean(axis=0))
        np.testing.assert_allclose(band.low[part], seeds.min(axis=0))
        np.testing.assert_allclose(band.high[part], seeds.max(axis=0))


# ------------------------------------------------------------------------------------ panels
def test_crowded_plots_split_by_family_into_panels_of_at_most_the_limit():
    assert panels(["palm", "none", "glm"]) == [("", ["palm", "none", "glm"])]
    assert panels(TWELVE) == [
        ("PALM family", ["palm", "palm-nocopy", "palm-noae", "palm-noar", "mass", "bart", "none"]),
        ("GLM family", ["glm", "glm-noshuffle"]),
        ("UniLMv2 family", ["unilm", "unilm-ae", "unilm-par"]),
    ]
    split = panels(list(PRETRAIN_VARIANTS) + ["mystery"], limit=3)
    assert [title for title, _ in split] == [
        "PALM family (1/3)",
        "PALM family (2/3)",
        "PALM family (3/3)",
        "GLM family (1/2)",
        "GLM family (2/2)",
        "UniLMv2 family (1/3)",
        "UniLMv2 family (2/3)",
        "UniLMv2 family (3/3)",
        "other",
    ]
    assert [len(names) for _, names in split] == [2, 2, 3, 2, 2, 2, 2, 3, 1]
    for count in range(1, len(PRETRAIN_VARIANTS) + 1):
        names = list(PRETRAIN_VARIANTS)[:count]
        shown = panels(names)
        assert sorted(n for _, members in shown for n in members) == sorted(names)
        assert max(len(members) for _, members in shown) <= PANEL_LINES
        assert all(len({PRETRAIN_VARIANTS[n].family for n in members}) == 1 for _, members in shown) or len(shown) == 1
    assert by_family(["unilm", "x", "glm", "palm"]) == [
        ("palm", ["palm"]),
        ("glm", ["glm"]),
        ("unilm", ["unilm"]),
        (None, ["x"]),
    ]


# ------------------------------------------------------------------------------------ the plots
def test_scores_are_bars_of_the_seed_mean_with_the_baseline_and_stuck_cells_marked(tmp_path, figures):
    rng = np.random.default_rng(3)
    scores = {name: list(rng.uniform(5, 30, 3)) for name in ["unilm", "glm", "palm", "none"]}
    stuck = {"glm": [False, True, False], "none": [True, True, True]}
    baseline = {"name": "lead-8 words", "metrics": {"rougeL": [28.22]}}
    path = score_plot(scores, tmp_path / "scores.png", "rougeL", baseline=baseline, stuck=stuck)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = figures[-1].axes[0]
    order = [label.get_text() for label in ax.get_yticklabels()]
    assert order == ["palm", "none", "glm", "unilm"]  # by family
    bars = [patch for container in ax.containers if hasattr(container, "patches") for patch in container.patches]
    colours = variant_colours(order)
    for name, bar in zip(order, bars):
        assert bar.get_width() == pytest.approx(np.mean(scores[name]))
        assert bar.get_facecolor() == pytest.approx(to_rgba(colours[name]))
        assert bool(bar.get_hatch()) == any(stuck.get(name, []))
    vertical = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(vertical) == 1 and vertical[0].get_xdata()[0] == pytest.approx(28.22)
    assert any(text.get_text() == "lead-8 words: 28.22" for text in ax.texts)
    from matplotlib.collections import PathCollection

    dots = [c for c in ax.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    crosses = sorted(x for c in dots if c.get_sizes()[0] == 48 for x, _ in c.get_offsets())  # the larger X
    assert crosses == pytest.approx(sorted([scores["glm"][1], *scores["none"]]))
    assert sum(len(c.get_offsets()) for c in dots) == 12  # a dot per seed
    score_plot(scores, tmp_path / "ppl.png", "perplexity", higher_is_better=False)  # dialog: no baseline
    ax = figures[-1].axes[0]
    assert not [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert ax.get_xlabel() == "perplexity (lower is better)"


def test_low_resource_curves_are_the_seed_mean_against_log_training_pairs(tmp_path, figures):
    rng = np.random.default_rng(4)
    sizes = [1000, 4000, 10000, 33000]
    points = {name: {size: list(rng.uniform(5, 30, 3)) for size in sizes[::-1]} for name in TWELVE}
    baseline = {"name": "lead-8 words", "metrics": {"rougeL": 28.22}}  # as Comparison.baseline gives it
    path = low_resource_plot(points, baseline, tmp_path / "low.png", "rougeL")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    figure = figures[-1]
    assert len(figure.axes) == 3 and all(ax.get_xscale() == "log" for ax in figure.axes)
    colours, seen = variant_colours(TWELVE), []
    for ax in figure.axes:
        for line in ax.get_lines():
            if line.get_label() in points:
                name = line.get_label()
                seen.append(name)
                assert line.get_color() == colours[name]
                np.testing.assert_array_equal(line.get_xdata(), sizes)
                np.testing.assert_allclose(line.get_ydata(), [np.mean(points[name][s]) for s in sizes])
        assert [line.get_ydata()[0] for line in ax.get_lines() if line.get_label().startswith("baseline")] == [28.22]
        assert len(ax.collections) == sum(line.get_label() in points for line in ax.get_lines())  # a band each
    assert sorted(seen) == sorted(TWELVE)
    with pytest.raises(CtxlmError, match="'all' is not a positive number"):
        low_resource_plot({"palm": {"all": [1.0]}}, None, tmp_path / "bad.png", "rougeL")


def test_low_resource_bands_are_the_two_level_intervals_and_the_baseline_follows_the_size(tmp_path, figures):
    points = {"palm": {1000: [30.0, 31.0, 32.0], 4000: [33.0, 34.0, 35.0]}}
    intervals = {"palm": {1000: (31.0, 29.5, 32.5), 4000: (34.0, 32.0, 36.0)}}
    low_resource_plot(
        points,
        {"name": "unigram", "metrics": {}},
        tmp_path / "low.png",
        "rougeL",
        intervals=intervals,
        baseline_by_size={1000: 20.0, 4000: 21.0},
    )
    ax = figures[-1].axes[0]
    (band,) = ax.collections
    vertices = band.get_paths()[0].vertices
    assert {29.5, 32.0, 32.5, 36.0} <= set(np.round(vertices[:, 1], 6))  # the CI, not the seeds' min-max
    baseline = next(line for line in ax.get_lines() if line.get_label().startswith("baseline"))
    np.testing.assert_array_equal(baseline.get_ydata(), [20.0, 21.0])


def test_scores_are_points_with_cis_on_an_axis_fitted_to_the_data(tmp_path, figures):
    """Issue 33: the 28-32 range where the claims live is not squashed by an axis from 0."""
    rows = [("palm", 31.0, 30.2, 31.8), ("bart", 29.5, 28.9, 30.1)]
    interval_plot(
        [("1,000 pairs", rows), ("4,000 pairs", rows)],
        tmp_path / "scores.png",
        "rougeL",
        baseline={"name": "lead-8 words", "metrics": {"rougeL": 28.2}},
        baselines=[28.2, 28.4],
    )
    axes = figures[-1].axes
    low, high = axes[0].get_xlim()
    assert 27 < low < 28.2 and 31.8 < high < 33
    assert [line.get_xdata()[0] for ax in axes for line in ax.get_lines() if line.get_linestyle() == "--"] == [
        28.2,
        28.4,
    ]  # each panel's own baseline
    caps = [c for c in axes[0].containers]
    assert len(caps) == 2  # an error bar per variant


def test_perplexity_is_drawn_in_log_scale_with_plain_number_ticks(tmp_path, figures):
    """A unigram baseline of 523 beside models at 73-220: in log scale (log perplexity is the loss) the
    models' differences keep their room; the axis is fitted in log space and labelled 100, 200, 500."""
    rows = [("palm", 73.4, 70.9, 76.1), ("none", 203.2, 184.6, 221.9)]
    interval_plot(
        [("10,000 pairs", rows)],
        tmp_path / "scores.png",
        "perplexity",
        baselines=[522.85],
        higher_is_better=False,
        log_scale=True,
    )
    ax = figures[-1].axes[0]
    low, high = ax.get_xlim()
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "perplexity (lower is better, log scale)"
    span = np.log(522.85) - np.log(70.9)
    np.testing.assert_allclose(np.log([low, high]), [np.log(70.9) - 0.08 * span, np.log(522.85) + 0.08 * span])
    figures[-1].canvas.draw()
    labels = [tick.get_text() for tick in ax.get_xticklabels() if low <= tick.get_position()[0] <= high]
    assert labels == ["100", "200", "500"]
    points = {"palm": {1000: [148.0, 149.0, 147.5], 10000: [73.9, 73.4, 73.0]}}
    low_resource_plot(
        points, None, tmp_path / "low.png", "perplexity", baseline_by_size={1000: 522.85, 10000: 336.75}, log_scale=True
    )
    ax = figures[-1].axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log" and ax.get_ylabel() == "perplexity (log scale)"


def test_pre_training_has_a_panel_per_objective_with_its_unigram_level_against_tokens_and_flops(tmp_path, figures):
    stage = {"curve": [[1, 100, 7.0], [2, 200, 6.0]], "unigram_level": 6.5}
    runs = {"palm": [[stage, stage]] * 2, "bart": [[{**stage, "unigram_level": 4.0}]]}
    pretrain_panels(runs, tmp_path / "pretrain.png", flops_per_token={"palm": 6e6})
    axes = [ax for ax in figures[-1].axes if ax.get_ylabel() == "held-out loss"]
    assert [ax.get_title(loc="left") for ax in axes] == ["palm", "bart"]
    palm = [line for line in axes[0].get_lines()]
    assert max(line.get_xdata().max() for line in palm) == 400  # the second stage after the first, in tokens
    levels = [segment[0][1] for collection in axes[1].collections for segment in collection.get_segments()]
    assert levels == [4.0]  # bart's own unigram level
    assert axes[0].get_xlabel() == "tokens seen"
    (top,) = axes[0].child_axes  # palm's FLOPs axis on top (bart gave no FLOPs per token: none)
    assert top.get_xlabel() == "training FLOPs" and not axes[1].child_axes
    figures[-1].canvas.draw()
    assert top.get_xlim() == pytest.approx(tuple(6e6 * x for x in axes[0].get_xlim()))


def test_loss_curves_are_dotted_where_a_seed_had_stopped(tmp_path, figures):
    """Three seeds logged every 10 steps, one stopped at 50: the solid line is the three seeds' mean
    to 50, the dotted one the other two's from 50 on; a single seed draws no band."""
    rng = np.random.default_rng(6)
    runs = [
        [[(s, float(v)) for s, v in zip(range(10, end + 1, 10), rng.normal(5, 1, end // 10))]] for end in (100, 100, 50)
    ]
    loss_plot({"palm": runs, "none": runs[:1]}, tmp_path / "loss.png", "fine-tuning loss")
    figure = figures[-1]
    ax = figure.axes[0]
    solid, dotted, single = [line for line in ax.get_lines()]
    assert solid.get_label() == "palm" and dotted.get_linestyle() == ":" and single.get_label() == "none"
    values = [np.array([v for _, v in run[0]]) for run in runs]
    np.testing.assert_allclose(solid.get_ydata()[:5], np.mean([v[:5] for v in values], axis=0))
    assert np.isnan(solid.get_ydata()[5:]).all() and np.isnan(dotted.get_ydata()[:4]).all()
    np.testing.assert_allclose(dotted.get_ydata()[5:], np.mean([v[5:] for v in values[:2]], axis=0))
    assert len(ax.collections) == 1  # palm's band only
    assert "dotted where some seeds had stopped" in figure.get_suptitle()


def synthetic_cells(out: Path, names: list[str], seeds: int = 2) -> list[dict]:
    """Compare cells with made-up metrics.jsonl curves (PALM two stages, others one, none none)."""
    rng, cells = np.random.default_rng(5), []
    for name, seed in itertools.product(names, range(seeds)):
        stages = {"palm": ["1-palm-mlm", "2-palm-generation"], "none": []}.get(name, [f"1-{name}"])
        cell_dir = out / "cells" / f"{name}-seed{seed}"
        runs = [(cell_dir / "pretrain" / stage, 40 + seed) for stage in stages] + [(cell_dir / "finetune", 30)]
        for run, steps in runs:
            run.mkdir(parents=True)
            rows = [
                {"step": s, "loss": float(8 * np.exp(-s / 20) + rng.normal(4, 0.1))} for s in range(5, steps + 1, 5)
            ]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        score = float(rng.uniform(20, 32))
        cells.append(
            {
                "objective": name,
                "seed": seed,
                "family": PRETRAIN_VARIANTS[name].family,
                "parameters": 100,
                "stages": [{"stage": s, "steps": 40 + seed, "tokens": 10, "seconds": 1.0} for s in stages],
                "tokens_seen": 100,
                "pretrain_seconds": 1.0,
                "finetune_steps": 30,
                "finetune_seconds": 1.0,
                "score_seconds": 1.0,
                "metrics": {"rougeL": score},
                "finetune_curve": [[s, float(5 * np.exp(-s / 20) + rng.normal(3, 0.1))] for s in range(10, 31, 10)],
                "example_stats": rng.normal(score, 3, (8, 1)).tolist(),
                "not_learning": {},
            }
        )
    return cells


def test_the_report_embeds_every_plot_and_each_variant_keeps_its_colour(tmp_path, figures):
    """12 variants × 2 seeds: scores.png and both loss plots, each in report.md and embedded in
    report.html; every variant one line (or bar) per plot, in its one colour, no panel over the limit."""
    cells = synthetic_cells(tmp_path, TWELVE)
    scoring = SimpleNamespace(primary="rougeL", statistic=mean_score, higher_is_better=True)
    settings = {
        "recipe": {"task": "summarization", "train": {"max_steps": 30}},
        "budget": {"tokens": 1000},
        "corpus": ["wiki"],
        "train": "t.jsonl",
        "valid": "v.jsonl",
        "eval": "v.jsonl",
    }
    baseline = {"name": "lead-8 words", "metrics": {"rougeL": [28.0]}}
    write_comparison_report(tmp_path, cells, baseline, scoring, settings, resamples=20)
    markdown, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert images == ["scores.png", "pretrain_loss.png", "finetune_loss.png"]
    assert page.count("data:image/png;base64,") == len(images)
    for name in images:
        assert base64.b64encode((tmp_path / name).read_bytes()).decode("ascii") in page
    colours = variant_colours(TWELVE)
    scores_figure, *loss_figures = figures
    ax = scores_figure.axes[0]  # a point with its CI per variant (issue 33), in the variant's colour
    points = [container.lines[0] for container in ax.containers]
    drawn = {label.get_text(): to_rgba(point.get_color()) for label, point in zip(ax.get_yticklabels(), points)}
    assert drawn == {name: pytest.approx(to_rgba(colours[name])) for name in TWELVE}
    ends = [x for point in points for x in point.get_xdata()] + [28.0]
    bars = [segment[:, 0] for container in ax.containers for segment in container.lines[2][0].get_segments()]
    ends += [x for bar in bars for x in bar]
    span = max(ends) - min(ends)
    assert ax.get_xlim() == pytest.approx((min(ends) - 0.08 * span, max(ends) + 0.08 * span))  # fitted, not from 0
    for figure, expected in zip(loss_figures, ([n for n in TWELVE if n != "none"], TWELVE)):
        lines = [
            (line.get_label(), line.get_color())
            for ax in figure.axes
            for line in ax.get_lines()
            if not line.get_label().startswith("_")
        ]
        assert sorted(lines) == sorted((name, colours[name]) for name in expected)
        assert (
            max(sum(not line.get_label().startswith("_") for line in ax.get_lines()) for ax in figure.axes)
            <= PANEL_LINES
        )
        assert "mean of 2 seeds, band: min-max over seeds" in figure.get_suptitle()
    palm = next(line for ax in loss_figures[0].axes for line in ax.get_lines() if line.get_label() == "palm")
    assert np.isnan(palm.get_ydata()).sum() == 1  # the gap between its two stages
