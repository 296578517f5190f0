"""Every table, verdict and plot of reports/compare, recomputed offline from committed scores.

    python reports/compare/summarize.py export reports/compare/work   # WORK (run.sh's) → reports/compare/data/
    python reports/compare/summarize.py                               # reports/compare/data → summary.md, report.html,
                                                                      # and the PNGs, in reports/compare/

`export` reads run.sh's work folder (WORK/<task>/train-<N>/cells/*/result.json and baseline.json, the
tokens-matched view WORK/<task>-tokens/..., WORK/lr/<task>/<objective>.json, the settings.json files)
and writes reports/compare/data/ (gzip, mtime 0):

- cells.json.gz: a record per cell and per baseline ("kind": "cell" | "baseline", "id", "task",
  "view": "flops" | "tokens", "train_pairs", and the cell's result.json without its per-example rows
  and predictions: metrics, learning-check records (not_learning, each stage's unigram_level and
  entropy), held-out curves (each stage's "curve", "finetune_curve"), FLOPs, tokens, wall times, the
  fine-tuning lr, step cap and whether it stopped early);
- scores.json.gz: id → the per-example statistics the primary metric is computed from, rounded to
  4 decimals (ROUGE points, NLL sums; counts stay integers);
- lr.json.gz: the fine-tuning lr selection records (task → objective → record);
- settings.json.gz: each compare folder's settings.json (folder → settings), and each task's
  scoring ("tasks": task → primary metric, direction, statistic, task kind).

With no arguments it recomputes from reports/compare/data alone (numpy, matplotlib; no models, no
network): per task and size, every variant's primary metric with its 95% CI over seeds and examples
(`ctxlm.statistics.interval`) and whether it beats the trivial baseline; the papers' claims at
matched FLOPs (two-level bootstrap, Holm across a task's claims in one view), PALM Table 5's direction (palm vs
mass, palm vs none) at each size, the tokens-matched view second; the lr selection; convergence
("equal budget, not converged" where cells hit the step cap); and the plots. The bootstrap's seed is
fixed, so the Markdown is the same byte for byte on every run (tests/test_compare_summary.py).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctxlm import statistics
from ctxlm.errors import CtxlmError
from ctxlm.report import (CLAIM_HEADER, Report, against_baseline, baseline_relation, by_objective, claim_table,
                          claim_tests, counted_not_learning, shared_resamples)
from ctxlm.report_plots import (interval_plot, log_scaled, loss_plot, low_resource_plot, pretrain_panels,
                                 variant_colours)

HERE = Path(__file__).resolve().parent
DATA, OUT = HERE / "data", HERE
TASK_NAMES = {"gigaword": "Gigaword", "cornell": "Cornell Movie-Dialogs", "squad_qg": "SQuAD QG"}
TASK_KINDS = {"gigaword": "summarization", "cornell": "dialog", "squad_qg": "qg"}  # without a settings.json
DIGITS = 4
NO_PRETRAINING = "none"  # the variant without pre-training (ctxlm.objectives.variants)
FILES = ("cells.json.gz", "scores.json.gz", "lr.json.gz", "settings.json.gz")


# ------------------------------------------------------------------------------------ export
def write_gz(path: Path, value) -> None:
    """JSON, gzip-compressed with mtime 0 (the same bytes for the same value)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as out:
        out.write(text)


def read_gz(path: Path):
    try:
        return json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    except (OSError, ValueError) as error:
        raise CtxlmError(f"{path}: not a gzip-compressed JSON file ({error})") from None


def rounded(rows) -> list:
    """Per-example rows with floats rounded to `DIGITS` decimals and whole numbers as integers."""
    out = []
    for row in np.asarray(rows, dtype=np.float64).reshape(len(rows), -1):
        out.append([int(v) if float(v).is_integer() else round(float(v), DIGITS) for v in row])
    return out


def without_paths(value):
    """A record without its "dir" entries (paths of the machine that ran it)."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items() if k != "dir"}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    return value


def task_scoring(settings: dict, task: str) -> dict:
    from ctxlm.compare import TASK_SCORING  # export only: recomputing needs no models

    kind = (settings.get("recipe") or {}).get("task") or TASK_KINDS[task]
    scoring = TASK_SCORING[kind]
    return {"kind": kind, "primary": scoring.primary, "higher_is_better": scoring.higher_is_better,
            "statistic": scoring.statistic.__name__}


def export(work: Path, data: Path = DATA) -> list[Path]:
    """reports/compare/data from run.sh's work folder (see the module's docstring)."""
    records, scores, settings, tasks = [], {}, {}, {}
    folders = sorted(p for p in work.iterdir() if p.is_dir() and p.name != "lr") if work.is_dir() else []
    for folder in folders:
        task, view = folder.name.removesuffix("-tokens"), "tokens" if folder.name.endswith("-tokens") else "flops"
        for size_dir in sorted(folder.glob("train-*")):
            setting_file = size_dir / "settings.json"
            setting = json.loads(setting_file.read_text(encoding="utf-8")) if setting_file.is_file() else {}
            settings[f"{folder.name}/{size_dir.name}"] = setting
            tasks.setdefault(task, task_scoring(setting, task))
            for path in sorted(size_dir.glob("cells/*/result.json")):
                cell = json.loads(path.read_text(encoding="utf-8"))
                pairs = cell.get("train_pairs") or setting.get("train_limit") or int(size_dir.name.split("-")[1])
                key = f"{task}/{cell.get('budget_view', view)}/{pairs}/{cell['objective']}/{cell['seed']}"
                scores[key] = rounded(cell["example_stats"])
                kept = without_paths({k: v for k, v in cell.items() if k not in ("example_stats", "predictions")})
                records.append({**kept, "id": key, "kind": "cell", "task": task,
                                "view": cell.get("budget_view", view), "train_pairs": pairs})
            baseline_file = size_dir / "baseline.json"
            if baseline_file.is_file():
                baseline = json.loads(baseline_file.read_text(encoding="utf-8"))
                pairs = setting.get("train_limit") or int(size_dir.name.split("-")[1])
                key = f"{task}/{view}/{pairs}/baseline"
                scores[key] = rounded(baseline["example_stats"])
                records.append({"id": key, "kind": "baseline", "task": task, "view": view, "train_pairs": pairs,
                                "name": baseline["name"], "metrics": baseline.get("metrics")})
    if not records:
        raise CtxlmError(f"{work}: no cells (expected <task>/train-<N>/cells/*/result.json, as run.sh writes)")
    lr = {task_dir.name: {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(task_dir.glob("*.json"))}
          for task_dir in sorted((work / "lr").glob("*")) if task_dir.is_dir()}
    top = work / "settings.json"
    if top.is_file():
        settings["."] = json.loads(top.read_text(encoding="utf-8"))
    data.mkdir(parents=True, exist_ok=True)
    values = (records, scores, lr, {"folders": settings, "tasks": tasks})
    for name, value in zip(FILES, values):
        write_gz(data / name, value)
    return [data / name for name in FILES]


# ------------------------------------------------------------------------------------ loading
@dataclass
class Scoring:
    primary: str
    higher_is_better: bool
    statistic: statistics.Statistic
    kind: str


@dataclass
class Data:
    records: list[dict]
    lr: dict
    settings: dict
    resampled: dict = field(default_factory=dict)

    def shared(self, task: str, view: str, pairs: int, scoring: Scoring, resamples: int):
        """Every variant and the baseline of one task, view and size resampled once (the same draws
        for all), kept for the tables, claims and plots that test them."""
        key = (task, view, pairs, resamples)
        if key not in self.resampled:
            self.resampled[key] = shared_resamples(self.cells(task, view, pairs), self.baseline(task, view, pairs),
                                                   scoring, resamples)
        return self.resampled[key]

    def cells(self, task: str, view: str, pairs: int) -> list[dict]:
        """A view's cells at one size. `none` pre-trains nothing, so its cells are the same at either
        budget: run.sh runs them once (matched FLOPs), and the tokens-matched view takes them from
        there at its size (PLAN.md's 10 tokens-matched claims count palm vs none)."""
        found = [r for r in self.records if r["kind"] == "cell" and (r["task"], r["view"], r["train_pairs"]) ==
                 (task, view, pairs)]
        if view == "tokens" and found and not any(r["objective"] == NO_PRETRAINING for r in found):
            found += [r for r in self.cells(task, "flops", pairs) if r["objective"] == NO_PRETRAINING]
        return found

    def baseline(self, task: str, view: str, pairs: int) -> dict | None:
        return next((r for r in self.records if r["kind"] == "baseline" and (r["task"], r["view"],
                                                                              r["train_pairs"]) == (task, view, pairs)),
                    None)

    def sizes(self, task: str, view: str) -> list[int]:
        return sorted({r["train_pairs"] for r in self.records if (r["task"], r["view"]) == (task, view)})

    def tasks(self) -> list[str]:
        seen = list(dict.fromkeys(r["task"] for r in self.records))
        return sorted(seen, key=lambda t: (list(TASK_NAMES).index(t) if t in TASK_NAMES else len(TASK_NAMES), t))

    def scoring(self, task: str) -> Scoring:
        spec = self.settings["tasks"][task]
        return Scoring(spec["primary"], spec["higher_is_better"], getattr(statistics, spec["statistic"]), spec["kind"])


def load(data: Path = DATA) -> Data:
    missing = [name for name in FILES if not (data / name).is_file()]
    if missing:
        raise CtxlmError(f"{data}: no {missing[0]} (write the folder with `summarize.py export WORK` after run.sh)")
    records, scores, lr, settings = (read_gz(data / name) for name in FILES)
    for record in records:
        if record["id"] not in scores:
            raise CtxlmError(f"{data / FILES[1]}: no per-example scores for {record['id']}")
        record["example_stats"] = scores[record["id"]]
    return Data(records, lr, settings)


# ------------------------------------------------------------------------------------ tables
def baseline_score(baseline: dict, scoring: Scoring) -> float:
    """The baseline's primary metric, from its per-example rows (as the tests see it)."""
    return float(scoring.statistic(np.asarray(baseline["example_stats"], dtype=np.float64)[None])[0])


def cell_interval(group: list[dict], scoring: Scoring, resamples: int) -> statistics.Interval:
    return statistics.interval([c["example_stats"] for c in group], scoring.statistic, resamples=resamples)


def score_table(data: Data, task: str, view: str, scoring: Scoring, resamples: int):
    """Rows of variant × size (estimate [95% CI], "≈ baseline" when indistinguishable), the baseline
    row; and variant → size → (estimate, low, high) for the plots."""
    sizes, intervals, rows = data.sizes(task, view), {}, []
    variants = list(dict.fromkeys(c["objective"] for s in sizes for c in data.cells(task, view, s)))
    for variant in variants:
        row = [variant]
        for size in sizes:
            group = by_objective(data.cells(task, view, size)).get(variant)
            if not group:
                row.append("—")
                continue
            shared = data.shared(task, view, size, scoring, resamples)
            ci = shared.test(variant) if shared is not None else cell_interval(group, scoring, resamples)
            intervals.setdefault(variant, {})[size] = (ci.difference if shared is not None else ci.estimate,
                                                       ci.ci_low, ci.ci_high)
            test = against_baseline(group, data.baseline(task, view, size), scoring, resamples, shared)
            relation = None if test is None else baseline_relation(test, scoring.higher_is_better)
            mark = {"is worse than": " < baseline", "is indistinguishable from": " ≈ baseline"}.get(relation, "")
            stuck = any(counted_not_learning(c) for c in group)
            row.append(f"{intervals[variant][size][0]:.2f} [{ci.ci_low:.2f}, {ci.ci_high:.2f}]{mark}"
                       + (" (unigram level)" if stuck else ""))
        rows.append(row)
    baselines = [data.baseline(task, view, s) for s in sizes]
    if any(baselines):
        name = next(b["name"] for b in baselines if b)
        rows.append([f"baseline: {name}", *("—" if b is None else f"{baseline_score(b, scoring):.2f}"
                                            for b in baselines)])
    return [f"{size:,} pairs" for size in sizes], rows, intervals


def claim_tests_of_view(data: Data, view: str, resamples: int) -> dict[str, list[tuple[str, object, list[str]]]]:
    """task → (label, test, reasons not testable) of every claim at every size of one view."""
    family = {}
    for task in data.tasks():
        scoring, tests = data.scoring(task), []
        for size in data.sizes(task, view):
            for claim, test, untestable in claim_tests(data.cells(task, view, size), data.baseline(task, view, size),
                                                       scoring, scoring.kind, resamples,
                                                       data.shared(task, view, size, scoring, resamples)):
                tests.append((f"{size:,} pairs: {claim.text}: {claim.better} vs {claim.worse}", test, untestable))
        family[task] = tests
    return family


def claim_rows_of_view(data: Data, view: str, resamples: int) -> dict[str, list[list[str]]]:
    """task → claim rows of one view, p adjusted by Holm over the view's whole family as PLAN.md
    registers it: every claim of both tasks at every size (30 at matched FLOPs, 10 at matched tokens),
    testable or not (a claim that cannot be tested still counts in m: the stricter reading)."""
    family = claim_tests_of_view(data, view, resamples)
    adjusted = iter(statistics.holm([test.p_value for tests in family.values() for _, test, _ in tests]))
    return {task: claim_table(tests, data.scoring(task).higher_is_better, [next(adjusted) for _ in tests])
            for task, tests in family.items()}


def family_size(rows_by_task: dict[str, list]) -> int:
    return sum(len(rows) for rows in rows_by_task.values())


def convergence_rows(data: Data, task: str, view: str) -> list[list[str]]:
    rows = []
    for size in data.sizes(task, view):
        for variant, group in by_objective(data.cells(task, view, size)).items():
            capped = [c for c in group if c.get("finetune_stopped_early") is False]
            caps = sorted({c["finetune_step_cap"] for c in group if c.get("finetune_step_cap") is not None})
            steps = ", ".join(str(c.get("finetune_steps")) for c in group)
            best = ", ".join(str(c.get("finetune_best_step")) for c in group)
            status = "equal budget, not converged" if capped else "stopped early"
            rows.append([f"{size:,}", variant, steps, best, ", ".join(map(str, caps)) or "—",
                         f"{len(group) - len(capped)}/{len(group)}", status])
    return rows


def compute_rows(data: Data, task: str, view: str) -> list[list[str]]:
    sizes = data.sizes(task, view)
    rows = []
    for variant, group in by_objective(data.cells(task, view, sizes[-1])).items():
        mean = lambda key: np.mean([c.get(key) or 0 for c in group])  # noqa: E731
        rows.append([variant, f"{mean('pretrain_flops'):.3g}", f"{mean('tokens_seen'):,.0f}",
                     f"{mean('pretrain_seconds'):,.0f}", f"{mean('finetune_flops'):.3g}",
                     f"{mean('finetune_tokens'):,.0f}", f"{mean('finetune_seconds'):,.0f}",
                     ", ".join(f"{c['finetune_lr']:g}" for c in group if c.get("finetune_lr") is not None) or "—"])
    return rows


def learning_rows(data: Data, task: str, view: str) -> list[list[str]]:
    """Each cell's learning check at the largest size: every pre-training stage's last held-out loss
    against its unigram level, the fine-tuning's last against its own, and the runs the check found
    at the unigram level (`not_learning`)."""
    rows = []
    for cell in sorted(data.cells(task, view, data.sizes(task, view)[-1]), key=lambda c: (c["objective"], c["seed"])):
        stages = [f"{stage.get('stage', '?')}: {_last(stage.get('curve'))} ({_level(stage.get('unigram_level'))})"
                  for stage in cell.get("stages") or []]
        finetune = f"{_last(cell.get('finetune_curve'))} ({_level(cell.get('finetune_unigram_level'))})"
        rows.append([cell["objective"], str(cell["seed"]), "; ".join(stages) or "—", finetune,
                     ", ".join(cell.get("not_learning") or {}) or "none"])
    return rows


def _last(curve) -> str:
    return "—" if not curve else f"{float(curve[-1][-1]):.3f}"


def _level(value) -> str:
    return "level —" if value is None else f"level {float(value):.3f}"


def lr_rows(data: Data) -> list[list[str]]:
    rows = []
    for task, by_variant in data.lr.items():
        for variant, record in by_variant.items():
            losses = record.get("selection_loss") or {}
            grid = ", ".join(f"{float(lr):g}: {losses.get(str(lr), losses.get(lr, float('nan'))):.3f}"
                             for lr in record.get("grid", []))
            chosen, pairs = record.get("chosen"), record.get("train_pairs")
            rows.append([task, variant, grid, "—" if chosen is None else f"{float(chosen):g}",
                         "—" if pairs is None else f"{pairs:,}", str(record.get("seed", "—")),
                         grid_edge(chosen, record.get("grid", []))])
    return rows


def grid_edge(chosen, grid) -> str:
    """Whether the chosen lr is the grid's largest or smallest value (the best may lie beyond it)."""
    values = sorted(float(lr) for lr in grid)
    if chosen is None or len(values) < 2 or values[0] < float(chosen) < values[-1]:
        return ""
    return "the grid's " + ("largest" if float(chosen) == values[-1] else "smallest") + ": the best may lie beyond"


def departures(run_log: Path) -> list[str]:
    """The bullets under run-log.md's "Departures" line: where the run departed from PLAN.md."""
    if not run_log.is_file():
        return []
    lines = run_log.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Departures")), len(lines))
    bullets: list[str] = []
    for line in lines[start + 1:]:
        if line.startswith("- "):
            bullets.append(line[2:].strip())
        elif line.startswith("  ") and bullets:
            bullets[-1] += " " + line.strip()
        elif line.strip():
            break
    return bullets


# ------------------------------------------------------------------------------------ plots
def plots(data: Data, task: str, scoring: Scoring, intervals: dict, out: Path) -> list[tuple[Path, str]]:
    sizes = data.sizes(task, "flops")
    largest = data.cells(task, "flops", sizes[-1])
    groups, baseline = by_objective(largest), data.baseline(task, "flops", sizes[-1])
    colours = variant_colours(list(groups))
    line = None if baseline is None else {"name": baseline["name"], "metrics": {scoring.primary: baseline_score(
        baseline, scoring)}}
    at_size = {size: baseline_score(b, scoring) for size in sizes if (b := data.baseline(task, "flops", size))}
    runs = {v: [c.get("stages") or [] for c in group] for v, group in groups.items()}
    ratio = {v: np.mean([c["pretrain_flops"] / c["tokens_seen"] for c in group]) for v, group in groups.items()
             if all(c.get("pretrain_flops") and c.get("tokens_seen") for c in group)}
    finetune = {v: [[[(s, loss) for s, loss in c.get("finetune_curve") or []]] for c in group]
                for v, group in groups.items()}
    per_size = [(f"{size:,} pairs", [(v, *intervals[v][size]) for v in intervals if size in intervals[v]])
                for size in sizes]
    points = {v: {size: [c["metrics"][scoring.primary] for c in by_objective(data.cells(task, "flops", size))[v]]
                  for size in intervals[v]} for v in intervals}
    log_scale = log_scaled(scoring.primary)
    made = [(pretrain_panels(runs, out / f"{task}-pretrain.png", flops_per_token=ratio, colours=colours),
             "pre-training held-out loss per objective, with its unigram level"),
            (interval_plot(per_size, out / f"{task}-scores.png", scoring.primary, baseline=line,
                           higher_is_better=scoring.higher_is_better, colours=colours,
                           baselines=[at_size.get(size) for size in sizes], log_scale=log_scale),
             f"{scoring.primary} with 95% CIs at each size"),
            (loss_plot(finetune, out / f"{task}-finetune.png", f"fine-tuning held-out loss ({sizes[-1]:,} pairs)",
                       ylabel="held-out loss", colours=colours), "fine-tuning held-out loss"),
            (low_resource_plot(points, line, out / f"{task}-low-resource.png", scoring.primary, colours=colours,
                               intervals=intervals, baseline_by_size=at_size, log_scale=log_scale),
             f"{scoring.primary} against the training pairs")]
    return made


# ------------------------------------------------------------------------------------ the summary
def summarize(data_dir: Path = DATA, out: Path = OUT, resamples: int = statistics.RESAMPLES,
              draw: bool = True, run_log: Path = HERE / "run-log.md") -> Path:
    """summary.md and report.html (and the PNGs) in `out`, from `data_dir` alone (and the
    departures `run_log` lists)."""
    data = load(data_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Report()
    report.heading("ctxlm compare: pre-training objectives, recomputed from reports/compare/data", 1)
    report.paragraph(f"Generated by `python reports/compare/summarize.py` from {', '.join(FILES)} alone. Each "
                     f"interval and test: {resamples:,} two-level resamples (seeds, then examples within each "
                     f"drawn seed, the same draws for the systems compared; bootstrap seed 0). {statistics.METHOD}")
    rows_by_view = {view: claim_rows_of_view(data, view, resamples) for view in ("flops", "tokens")}
    for task in data.tasks():
        scoring = data.scoring(task)
        direction = "higher" if scoring.higher_is_better else "lower"
        report.heading(f"{TASK_NAMES.get(task, task)} ({scoring.primary}, {direction} is better)")
        intervals = {}
        for view, title in (("flops", "matched training FLOPs"), ("tokens", "matched tokens (second view)")):
            if not data.sizes(task, view):
                continue
            header, rows, found = score_table(data, task, view, scoring, resamples)
            intervals = intervals or found
            report.heading(f"{scoring.primary} per variant, {title}", 3)
            report.table(["variant", *header], rows)
            report.paragraph("Estimate [95% CI] over seeds and examples. \"≈ baseline\": the interval of (variant − "
                             "baseline), over seeds and examples, spans 0 (\"< baseline\": it lies on the worse "
                             "side): the variant does not beat the trivial baseline, and every claim it is part of "
                             "is not testable at this scale."
                             + (f" `{NO_PRETRAINING}` pre-trains nothing: its cells are the matched-FLOPs view's at "
                                "this size." if view == "tokens" else ""))
            rows = rows_by_view[view][task]
            report.heading(f"The papers' claims, {title}", 3)
            report.table([CLAIM_HEADER[0], f"Δ {scoring.primary} [95% CI]", *CLAIM_HEADER[2:]], rows)
            report.paragraph(f"The first variant minus the second over the seeds both ran; p adjusted by Holm-Bonferroni "
                             f"across the {family_size(rows_by_view[view])} claims of this view (both tasks, every size, "
                             "testable or not, as PLAN.md registers). \"supports\" / "
                             "\"contradicts\": adjusted p < 0.05 and the interval excludes 0; otherwise \"no "
                             "detectable difference\"; \"not testable at this scale\": a side does not beat the "
                             "baseline or a run it comes out of stayed at the unigram level.")
            table5 = [row for row in rows if row[0].endswith((": palm vs mass", ": palm vs none"))]
            if table5 and view == "flops":
                report.heading("PALM Table 5's direction at each size (palm vs mass, palm vs none)", 3)
                report.table([CLAIM_HEADER[0], f"Δ {scoring.primary} [95% CI]", *CLAIM_HEADER[2:]], table5)
            report.heading(f"Convergence, {title}", 3)
            report.table(["pairs", "variant", "fine-tuning steps", "best step", "step cap", "stopped early",
                          "status"], convergence_rows(data, task, view))
            report.heading(f"Learning check at the largest size, {title}", 3)
            report.table(["variant", "seed", "pre-training stages: last held-out loss (unigram level)",
                          "fine-tuning: last held-out loss (unigram level)", "runs at the unigram level"],
                         learning_rows(data, task, view))
            report.heading(f"Compute at the largest size, {title}", 3)
            report.table(["variant", "pre-training FLOPs", "pre-training tokens", "pre-training s",
                          "fine-tuning FLOPs", "fine-tuning tokens", "fine-tuning s", "fine-tuning lr"],
                         compute_rows(data, task, view))
        if draw and intervals:
            for path, alt in plots(data, task, scoring, intervals, out):
                report.image(path, alt)
    lr = lr_rows(data)
    if lr:
        report.heading("Fine-tuning lr selection (one seed, the largest size, the selection split)")
        report.table(["task", "variant", "lr: best held-out loss", "chosen", "pairs", "seed", "note"], lr)
    report.heading("Where the run departed from PLAN.md")
    listed = departures(run_log)
    report.paragraph(f"From {run_log.name}, which logs every phase as it ran." if listed else
                     f"None logged ({run_log.name}).")
    for departure in listed:
        report.paragraph(f"- {departure}")
    summary = out / "summary.md"
    summary.write_text(report.markdown(), encoding="utf-8")
    if draw:
        (out / "report.html").write_text(report.html(), encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["export"]:
            parser = argparse.ArgumentParser(prog="summarize.py export")
            parser.add_argument("work", type=Path)
            parser.add_argument("--data", type=Path, default=DATA)
            args = parser.parse_args(argv[1:])
            for path in export(args.work, args.data):
                print(f"wrote {path} ({path.stat().st_size:,} bytes)")
            return 0
        if len(argv) == 2 and not argv[0].startswith("-"):  # the old form: summarize.py WORK OUT.md
            export(Path(argv[0]), DATA)
            argv = ["--out", str(Path(argv[1]).parent)]
        parser = argparse.ArgumentParser(prog="summarize.py", description=__doc__.split("\n\n")[0])
        parser.add_argument("--data", type=Path, default=DATA)
        parser.add_argument("--out", type=Path, default=OUT)
        parser.add_argument("--resamples", type=int, default=statistics.RESAMPLES)
        args = parser.parse_args(argv)
        print(f"wrote {summarize(args.data, args.out, args.resamples)}")
        return 0
    except CtxlmError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
