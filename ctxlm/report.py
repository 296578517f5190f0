"""The statistics and the report of an objective comparison (`ctxlm.compare`).

- The statistics (`ctxlm.statistics`): the two-level bootstrap over seeds and examples, Holm's
  adjustment; the claims' rows and verdicts (`claim_table`, `claim_verdict`) and whether a variant
  is distinguishable from the trivial baseline (`untestable_reasons`).
- `mean_std`: mean ± sample standard deviation over seeds.
- The plots (`ctxlm.report_plots`): loss curves and scores per variant, a colour per variant.
- `Report`: headings, paragraphs, tables and images, written as Markdown and as one
  self-contained HTML file (PNGs embedded as base64).
- `package_versions`, `git_commit`: what the report was made with.
- `write_comparison_report`: all of it for `ctxlm compare`'s cells.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Sequence

import numpy as np

from .report_plots import baseline_value, interval_plot, loss_plot, pretrain_panels, variant_colours
from .statistics import (
    METHOD,
    RESAMPLES,
    TIE_TOLERANCE,
    BootstrapResult,
    SharedResamples,
    format_p,
    holm,
    two_level_bootstrap,
)

# re-exported: ctxlm.report's names from before statistics.py
from .statistics import Statistic, corpus_bleu4, corpus_pearson, corpus_perplexity, mean_score, paired_bootstrap  # noqa: F401

REFERENCE = "palm"  # every other objective is tested against it


def format_signed(value: float, digits: int = 2, tie: float = 0.0) -> str:
    """`value` with its sign and `digits` decimals; "0" within `tie` of 0 (no difference), and two
    significant digits (`+2.6e-05`) for any other value those decimals would show as 0.00."""
    if abs(value) <= tie:
        return "0"
    text = f"{value:+.{digits}f}"
    return f"{value:+.2g}" if float(text) == 0 else text


def format_difference(difference: float, ci_low: float, ci_high: float, digits: int = 2) -> str:
    """A bootstrap's "Δ [low, high]" printed so that it agrees with its p-value: a bound that is a
    tie (within `TIE_TOLERANCE`, as `paired_bootstrap` counts them) prints as 0, so the interval
    visibly includes 0, and a bound that only rounds to 0 keeps its sign and two significant digits,
    so an interval that excludes 0 (p < 1 − confidence) shows it."""
    tie = TIE_TOLERANCE * max(1.0, abs(ci_low), abs(ci_high))
    low, high = (format_signed(x, digits, tie) for x in (ci_low, ci_high))
    return f"{format_signed(difference, digits, tie)} [{low}, {high}]"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def format_mean_std(values: Sequence[float], digits: int = 2) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


# ------------------------------------------------------------------------------------ the document
@dataclass
class Report:
    """A report as blocks: ("h1" | "h2" | "p" | "pre", text), ("table", header, rows), ("img", path, alt)."""

    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append((f"h{level}", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def code(self, text: str) -> None:
        self.blocks.append(("pre", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        self.blocks.append(("table", list(header), [[str(c) for c in row] for row in rows]))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("img", Path(path), alt))

    def markdown(self) -> str:
        out = []
        for kind, *rest in self.blocks:
            if kind.startswith("h"):
                out.append("#" * int(kind[1]) + " " + rest[0])
            elif kind == "p":
                out.append(rest[0])
            elif kind == "pre":
                out.append("```\n" + rest[0] + "\n```")
            elif kind == "table":
                header, rows = rest
                cells = lambda row: "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"  # noqa: E731
                out.append("\n".join([cells(header), "|" + "---|" * len(header)] + [cells(r) for r in rows]))
            else:
                out.append(f"![{rest[1]}]({rest[0].name})")
        return "\n\n".join(out) + "\n"

    def html(self) -> str:
        out = []
        for kind, *rest in self.blocks:
            if kind.startswith("h"):
                out.append(f"<{kind}>{html.escape(rest[0])}</{kind}>")
            elif kind == "p":
                out.append(f"<p>{html.escape(rest[0])}</p>")
            elif kind == "pre":
                out.append(f"<pre>{html.escape(rest[0])}</pre>")
            elif kind == "table":
                header, rows = rest
                head = "".join(f"<th>{html.escape(c)}</th>" for c in header)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                data = base64.b64encode(rest[0].read_bytes()).decode("ascii")
                out.append(f'<img alt="{html.escape(rest[1])}" src="data:image/png;base64,{data}">')
        style = (
            "body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}pre{background:#f4f4f4;"
            "padding:.6em;white-space:pre-wrap}img{max-width:100%}"
        )
        return (
            f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ctxlm compare</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n"
        )

    def write(self, directory: str | Path, name: str = "report") -> tuple[Path, Path]:
        directory = Path(directory)
        md, page = directory / f"{name}.md", directory / f"{name}.html"
        md.write_text(self.markdown(), encoding="utf-8")
        page.write_text(self.html(), encoding="utf-8")
        return md, page


# ------------------------------------------------------------------------------------ provenance
PACKAGES = (
    "ctxlm",
    "torch",
    "transformers",
    "tokenizers",
    "numpy",
    "scipy",
    "rouge-score",
    "pycocoevalcap",
    "sacrebleu",
    "matplotlib",
)


def package_versions() -> dict[str, str]:
    """Python's and each package's version, and the device training ran on."""
    import torch

    versions = {
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.machine()})",
    }
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(start: str | Path | None = None) -> str | None:
    """The commit checked out where ctxlm's source lives, read from `.git` (worktrees and packed
    refs included); None outside a git checkout."""
    here = Path(start or Path(__file__).resolve().parent)
    for folder in (here, *here.parents):
        dot_git = folder / ".git"
        if dot_git.exists():
            break
    else:
        return None
    git_dir = dot_git
    if dot_git.is_file():  # a worktree: "gitdir: <path>"
        git_dir = (folder / dot_git.read_text(encoding="utf-8").split(":", 1)[1].strip()).resolve()
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text(encoding="utf-8").strip()).resolve()
    head = (git_dir / "HEAD").read_text(encoding="utf-8").strip()
    if not head.startswith("ref:"):
        return head
    ref = head.split(":", 1)[1].strip()
    for base in (git_dir, common):
        if (base / ref).is_file():
            return (base / ref).read_text(encoding="utf-8").strip()
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text(encoding="utf-8").splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    return None


def read_metrics(path: Path, key: str = "loss") -> list[tuple[int, float]]:
    """(step, value) of a run's metrics.jsonl rows that have `key` (the training loss by default)."""
    if not path.is_file():
        return []
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    return [(row["step"], row[key]) for row in rows if key in row]


# ------------------------------------------------------------------------------------ the comparison's report
def results_table(
    cells: list[dict], baseline: dict | None, scoring, resamples: int, reference_name: str = REFERENCE
) -> list[dict]:
    """One row per objective (in order): parameters, tokens seen, wall times, each metric's values
    over seeds, and the paired bootstrap against `reference_name` (PALM) on the primary metric;
    then the baseline."""
    objectives = list(dict.fromkeys(c["objective"] for c in cells))
    by_objective = {o: sorted((c for c in cells if c["objective"] == o), key=lambda c: c["seed"]) for o in objectives}
    reference = by_objective.get(reference_name)
    shared = shared_resamples(cells, baseline, scoring, resamples)
    rows = []
    for objective, group in by_objective.items():
        row = {
            "objective": objective,
            "family": group[0]["family"],
            "parameters": group[0]["parameters"],
            "seeds": [c["seed"] for c in group],
            "tokens_seen": [c["tokens_seen"] for c in group],
            "pretrain_seconds": [c["pretrain_seconds"] for c in group],
            "finetune_seconds": [c["finetune_seconds"] for c in group],
            "metrics": {m: [c["metrics"][m] for c in group] for m in group[0]["metrics"]},
            "bootstrap": None,
            "did_not_learn": {
                c["seed"]: reason
                for c in group
                if (reason := did_not_learn(c, baseline, scoring.primary, scoring.higher_is_better)) is not None
            },
            "untestable": untestable_reasons(group, baseline, scoring, resamples, shared),
        }
        if reference is not None and objective != reference_name:
            seeds = sorted(set(row["seeds"]) & {c["seed"] for c in reference})
            pick = lambda cells: [c["example_stats"] for c in cells if c["seed"] in seeds]  # noqa: E731
            if seeds:
                row["bootstrap"] = dataclasses.asdict(
                    two_level_bootstrap(pick(group), pick(reference), scoring.statistic, resamples=resamples)
                )
        rows.append(row)
    if baseline is not None:
        rows.append(
            {"objective": f"baseline: {baseline['name']}", "metrics": {m: [v] for m, v in baseline["metrics"].items()}}
        )
    return rows


def _table_rows(rows: list[dict], metrics: list[str], primary: str, reference: str = REFERENCE) -> list[list[str]]:
    """The results table's rows; a Δ between objectives either of which did not learn (`untestable`:
    indistinguishable from the baseline, or a run at the unigram level; in older tables a cell's
    `did_not_learn`) reads "not testable at this scale" (the bootstrap stays in table.json)."""
    out = []
    stuck = {row["objective"] for row in rows if row.get("untestable", row.get("did_not_learn"))}
    for row in rows:
        values = [format_mean_std(row["metrics"][m]) if m in row["metrics"] else "—" for m in metrics]
        if "parameters" not in row:  # the baseline
            out.append([row["objective"], "—", "—", *values, "—", "—"])
            continue
        test = row["bootstrap"]
        if test is None:
            difference, p = ("reference" if row["objective"] == reference else "—"), "—"
        elif stuck & {row["objective"], reference}:
            difference, p = "not testable at this scale", "—"
        else:
            difference = format_difference(test["difference"], test["ci_low"], test["ci_high"])
            p = format_p(test["p_value"], test.get("resamples", RESAMPLES))
        out.append(
            [row["objective"], f"{row['parameters']:,}", f"{np.mean(row['tokens_seen']):,.0f}", *values, difference, p]
        )
    return out


def _cell_rows(
    cells: list[dict], primary: str, baseline: dict | None = None, higher_is_better: bool = True
) -> list[list[str]]:
    return [
        [
            c["objective"],
            c["seed"],
            f"{c['parameters']:,}",
            " + ".join(str(s["steps"]) for s in c["stages"]) or "0",
            f"{c['tokens_seen']:,}",
            f"{c['pretrain_seconds']:.1f}",
            _finetune_steps(c),
            f"{c['finetune_seconds']:.1f}",
            f"{c['score_seconds']:.1f}",
            f"{c['metrics'][primary]:.2f}",
            _learned(c, baseline, primary, higher_is_better),
        ]
        for c in cells
    ]


def did_not_learn(
    cell: dict, baseline: dict | None = None, primary: str | None = None, higher_is_better: bool = True
) -> str | None:
    """Why a compare cell did not learn its task, or None: its primary metric does not beat the
    task's trivial baseline (`baseline["metrics"][primary]`: a value, or a table row's one-value
    list), or some of its runs stayed at the unigram level (`not_learning`, `ctxlm.learning_check`),
    or it predicts one class for every example (`one_class`, NLU tasks). The runs that count are
    those the scored model comes out of: the last pre-training stage and the fine-tuning
    (`counted_not_learning`); an earlier stage at the unigram level that a later one leaves (PALM's
    stage 1 at a small budget) is noted (`earlier_stages_not_learning`), not counted."""
    reasons, reference = [], baseline_value(baseline, primary)
    if reference is not None and primary in cell["metrics"]:
        value = cell["metrics"][primary]
        if not (value > reference if higher_is_better else value < reference):
            reasons.append(f"{primary} {value:.2f} does not beat {baseline['name']}'s {reference:.2f}")
    runs = counted_not_learning(cell)
    if runs:
        reasons.append(f"{', '.join(runs)} at the unigram level")
    if cell.get("one_class") is not None:
        reasons.append(f"predicts {cell['one_class']} for every example")
    return "; ".join(reasons) or None


def counted_not_learning(cell: dict) -> list[str]:
    """The runs at the unigram level that a cell's scored model comes out of: its last pre-training
    stage and its fine-tuning (every run, for a cell that does not list its stages)."""
    runs = list(cell.get("not_learning") or {})
    if "stages" not in cell:
        return runs
    stages = cell["stages"]
    model = {"finetune", *([stages[-1].get("stage") or Path(stages[-1]["dir"]).name] if stages else [])}
    return [name for name in runs if name in model]


def earlier_stages_not_learning(cell: dict) -> list[str]:
    """A cell's pre-training stages at the unigram level that a later stage came after."""
    counted = counted_not_learning(cell)
    return [name for name in cell.get("not_learning") or {} if name not in counted]


@dataclass(frozen=True)
class Claim:
    """A paper's claim that variant `better` beats variant `worse`, and the compare tasks (recipe
    task kinds) it is tested on: those like the tasks it was made on."""

    text: str
    better: str
    worse: str
    tasks: tuple[str, ...]


SEQ2SEQ_TASKS = ("summarization", "qg", "dialog")
CLAIMS = (
    Claim("PALM beats MASS (PALM Tables 3, 5: Gigaword, Cornell)", "palm", "mass", SEQ2SEQ_TASKS),
    Claim("PALM beats BART (PALM Table 3: CNN/DM)", "palm", "bart", SEQ2SEQ_TASKS),
    Claim("the copy mechanism helps (PALM Table 6, CNN/DM)", "palm", "palm-nocopy", SEQ2SEQ_TASKS),
    Claim("stage 1, autoencoding, helps (PALM Table 6)", "palm", "palm-noae", SEQ2SEQ_TASKS),
    Claim("stage 2, autoregression, helps (PALM Table 6)", "palm", "palm-noar", SEQ2SEQ_TASKS),
    Claim("pre-training helps (PALM Table 6)", "palm", "none", SEQ2SEQ_TASKS),
    Claim(
        "the objective, copy head on both: PALM's beats GLM's (ctxlm's extension)", "palm", "glm-copy", SEQ2SEQ_TASKS
    ),
    Claim(
        "the objective, copy head on both: PALM's beats UniLMv2's (ctxlm's extension)",
        "palm",
        "unilm-copy",
        SEQ2SEQ_TASKS,
    ),
    Claim("the objective, no copy head: PALM's beats GLM's", "palm-nocopy", "glm", SEQ2SEQ_TASKS),
    Claim("the objective, no copy head: PALM's beats UniLMv2's", "palm-nocopy", "unilm", SEQ2SEQ_TASKS),
    Claim("UniLMv2 AE+PAR beats AE alone (UniLMv2 Table 6: SQuAD, MNLI, SST-2)", "unilm", "unilm-ae", ("classify",)),
    Claim("UniLMv2 AE+PAR beats PAR alone (UniLMv2 Table 6: SQuAD, MNLI, SST-2)", "unilm", "unilm-par", ("classify",)),
    Claim("GLM's span shuffling helps (GLM Table 6: SuperGLUE)", "glm", "glm-noshuffle", ("cloze",)),
)


def shortened(reasons: Sequence[str], shown: int = 2) -> list[str]:
    """The first `shown` reasons, then how many more there are."""
    return list(reasons[:shown]) + ([f"{len(reasons) - shown} more"] if len(reasons) > shown else [])


def by_objective(cells: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for cell in sorted(cells, key=lambda c: c["seed"]):
        out.setdefault(cell["objective"], []).append(cell)
    return out


def shared_resamples(cells: list[dict], baseline: dict | None, scoring, resamples: int) -> SharedResamples | None:
    """Every variant of `cells` and the baseline ("baseline") resampled once, the same draws for all
    (`ctxlm.statistics.SharedResamples`); None unless every variant ran the same seeds."""
    groups = by_objective(cells)
    if not groups or len({tuple(c["seed"] for c in group) for group in groups.values()}) != 1:
        return None
    systems = {name: [c["example_stats"] for c in group] for name, group in groups.items()}
    if baseline and baseline.get("example_stats") is not None:
        systems["baseline"] = [baseline["example_stats"]]
    return SharedResamples(systems, scoring.statistic, resamples=resamples)


def against_baseline(
    group: list[dict], baseline: dict | None, scoring, resamples: int, shared: SharedResamples | None = None
) -> BootstrapResult | None:
    """The two-level bootstrap of a variant's cells (its seeds) minus the trivial baseline (one
    system, paired with every seed) on the primary metric (from `shared` when it holds both); None
    without the baseline's per-example rows."""
    if not baseline or baseline.get("example_stats") is None or not group:
        return None
    if shared is not None and {group[0]["objective"], "baseline"} <= set(shared.names):
        return shared.test(group[0]["objective"], "baseline")
    return two_level_bootstrap(
        [c["example_stats"] for c in group], [baseline["example_stats"]], scoring.statistic, resamples=resamples
    )


def beats_baseline(test: BootstrapResult, higher_is_better: bool) -> bool:
    """The interval of (variant − baseline), over seeds and examples, lies on the better side of 0."""
    return test.ci_low > 0 if higher_is_better else test.ci_high < 0


def baseline_relation(test: BootstrapResult, higher_is_better: bool) -> str:
    """ "beats", "is worse than" (the interval on the worse side of 0) or "is indistinguishable from"."""
    if beats_baseline(test, higher_is_better):
        return "beats"
    return "is worse than" if beats_baseline(test, not higher_is_better) else "is indistinguishable from"


def untestable_reasons(
    group: list[dict], baseline: dict | None, scoring, resamples: int, shared: SharedResamples | None = None
) -> list[str]:
    """Why a variant's side of a claim is not evidence: it is indistinguishable from the trivial
    baseline (`against_baseline`'s interval not on the better side of 0; with a baseline that has no
    per-example rows, a cell's point score not beating it), or a run its cells' models come out of
    stayed at the unigram level, or a cell predicts one class."""
    reasons = []
    test = against_baseline(group, baseline, scoring, resamples, shared)
    if test is not None and not beats_baseline(test, scoring.higher_is_better):
        reasons.append(
            f"{group[0]['objective']} {baseline_relation(test, scoring.higher_is_better)} the baseline "
            f"({scoring.primary} {format_difference(test.difference, test.ci_low, test.ci_high)})"
        )
    for cell in group:
        point = did_not_learn(cell, baseline if test is None else None, scoring.primary, scoring.higher_is_better)
        if point:
            reasons.append(f"{cell['objective']} seed {cell['seed']}: {point}")
    return reasons


def claim_tests(
    cells: list[dict], baseline: dict | None, scoring, task: str, resamples: int, shared: SharedResamples | None = None
) -> list[tuple[Claim, BootstrapResult, list[str]]]:
    """(claim, two-level bootstrap of better minus worse on the seeds both ran, reasons it is not
    testable) of each claim (`CLAIMS`) made on `task` whose two variants have cells on a common seed;
    from `shared` (`shared_resamples`, when every variant ran the same seeds) without resampling again."""
    groups, out = by_objective(cells), []
    for claim in CLAIMS:
        if task not in claim.tasks:
            continue
        seeds = {c["seed"] for c in groups.get(claim.better, [])} & {c["seed"] for c in groups.get(claim.worse, [])}
        if not seeds:
            continue
        better, worse = ([c for c in groups[name] if c["seed"] in seeds] for name in (claim.better, claim.worse))
        if shared is not None and {claim.better, claim.worse} <= set(shared.names):
            test = shared.test(claim.better, claim.worse)
        else:
            test = two_level_bootstrap(
                [c["example_stats"] for c in better],
                [c["example_stats"] for c in worse],
                scoring.statistic,
                resamples=resamples,
            )
        untestable = [
            r for side in (better, worse) for r in untestable_reasons(side, baseline, scoring, resamples, shared)
        ]
        out.append((claim, test, untestable))
    return out


CLAIM_HEADER = ("claim", "Δ [95% CI]", "p (Holm)", "p (raw)", "seeds agree in sign", "verdict")


def claim_table(
    tests: list[tuple[str, BootstrapResult, list[str]]],
    higher_is_better: bool,
    adjusted: Sequence[float | None] | None = None,
) -> list[list[str]]:
    """Rows (`CLAIM_HEADER`) of (label, test, reasons not testable): Holm-adjusted p across the
    testable claims (one family: the report's) unless `adjusted` gives each test's p adjusted over a
    larger family, the raw p, the per-seed signs and the verdict."""
    if adjusted is None:
        adjusted = holm([None if untestable else test.p_value for _, test, untestable in tests])
    rows = []
    for (label, test, untestable), p in zip(tests, adjusted):
        seeds = ", ".join(format_signed(d, 2) for d in test.seed_differences)
        agree = f"{'yes' if test.seeds_agree else 'no'} ({seeds})"
        rows.append(
            [
                label,
                format_difference(test.difference, test.ci_low, test.ci_high),
                format_p(p, test.resamples),
                format_p(test.p_value, test.resamples),
                agree,
                claim_verdict(test, higher_is_better, shortened(untestable), p),
            ]
        )
    return rows


def claim_rows(cells: list[dict], baseline: dict | None, scoring, task: str, resamples: int) -> list[list[str]]:
    """`CLAIM_HEADER` rows of each claim tested on `task` (`claim_tests`, Holm across them)."""
    shared = shared_resamples(cells, baseline, scoring, resamples)
    return claim_table(
        [
            (f"{claim.text}: {claim.better} vs {claim.worse}", test, untestable)
            for claim, test, untestable in claim_tests(cells, baseline, scoring, task, resamples, shared)
        ],
        scoring.higher_is_better,
    )


def claim_verdict(
    test: BootstrapResult, higher_is_better: bool, untestable: Sequence[str] = (), adjusted_p: float | None = None
) -> str:
    """A test of "better minus worse" read as a claim's verdict: "not testable at this scale" when a
    side is indistinguishable from the baseline or did not learn (`untestable`: the reasons); no
    difference below the tables' two decimals; "supports" / "contradicts" only when the (Holm-adjusted,
    `adjusted_p`) p is below 0.05 AND the interval excludes 0; otherwise "no detectable difference"
    (never "does not hold": an interval spanning 0 refutes nothing)."""
    if untestable:
        return "not testable at this scale (" + "; ".join(untestable) + ")"
    if abs(test.difference) < 0.005:  # below the table's precision (BLEU-4 of 1e-5 is no score)
        return "no difference at two decimals"
    p = test.p_value if adjusted_p is None else adjusted_p
    if p >= 0.05 or test.ci_low <= 0 <= test.ci_high:
        return "no detectable difference"
    return "supports" if (test.difference > 0) == higher_is_better else "contradicts"


def _finetune_steps(cell: dict) -> str:
    """The fine-tuning steps run, and the step whose weights were kept (best validation loss)."""
    best = cell.get("finetune_best_step")
    return f"{cell['finetune_steps']} (best {best})" if best is not None else str(cell["finetune_steps"])


def _learned(cell: dict, baseline: dict | None, primary: str, higher_is_better: bool) -> str:
    reason, earlier = did_not_learn(cell, baseline, primary, higher_is_better), earlier_stages_not_learning(cell)
    note = f" ({', '.join(earlier)} at the unigram level)" if earlier else ""
    return ("yes" if reason is None else f"no: {reason}") + note


def write_comparison_report(
    out_dir: Path,
    cells: list[dict],
    baseline: dict | None,
    scoring,
    settings: dict,
    *,
    resamples: int = 1000,
    plots: bool = True,
    command: str | None = None,
) -> list[dict]:
    """`report.md`, `report.html` (and `table.json`, the loss plots) of a comparison's cells."""
    out_dir = Path(out_dir)
    reference, task = settings.get("reference", REFERENCE), settings["recipe"]["task"]
    rows = results_table(cells, baseline, scoring, resamples, reference)
    (out_dir / "table.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    metrics = list(cells[0]["metrics"])
    primary, better = scoring.primary, "higher" if scoring.higher_is_better else "lower"
    report = Report()
    report.heading(f"Pre-training objectives on {task} {settings['recipe'].get('dataset') or ''}".rstrip(), 1)
    report.code(command or "(called from Python: ctxlm.compare.compare)")
    report.paragraph(
        f"ctxlm commit {git_commit() or 'unknown (not a git checkout)'}. Pre-training budget "
        f"{_budget_text(settings['budget'])} per objective, shared equally by its stages; corpus "
        f"{', '.join(settings['corpus'])}. Fine-tuning: the recipe's settings on {settings['train']} "
        f"(up to {settings['recipe']['train']['max_steps']} steps, "
        f"{settings.get('selection') or 'best validation loss on ' + settings['valid']}); scored on "
        f"{len(cells[0]['example_stats'])} examples of "
        f"{settings['eval']}."
    )
    report.heading("Results")
    report.table(
        ["objective", "parameters", "tokens seen", *metrics, f"Δ {primary} vs {reference} [95% CI]", "p"],
        _table_rows(rows, metrics, primary, reference),
    )
    report.paragraph(
        f"Mean ± sample standard deviation over seeds ({better} {primary} is better). Δ and p: "
        f"{primary} against {reference} over the seeds both ran, {resamples:,} two-level resamples "
        f"(seeds, then examples within each seed, the same draws for both objectives). {METHOD} "
        "A bound of 0 is a tie (resamples on which the two objectives score the same), so that "
        "interval includes 0."
    )
    if "meteor" not in metrics and "bleu4" in metrics:
        report.paragraph("METEOR is left out: it needs Java, which is not installed here.")
    claims = claim_rows(cells, baseline, scoring, task, resamples)
    if claims:
        report.heading("The papers' claims on this task")
        report.table([CLAIM_HEADER[0], f"Δ {primary} [95% CI]", *CLAIM_HEADER[2:]], claims)
        report.paragraph(
            f"The first variant minus the second ({resamples:,} two-level resamples, seeds paired), for "
            "each claim made on this kind of task whose two variants ran; p adjusted by Holm-Bonferroni "
            "across this table's testable claims. \"not testable at this scale\": a side's interval "
            "against the trivial baseline (over seeds and examples) does not lie on the better side of "
            '0 ("indistinguishable from the baseline"), or a cell did not learn (column "learned" '
            "below); supports / contradicts: adjusted p < 0.05 and the interval excludes 0, in the "
            'claim\'s / the other direction; otherwise "no detectable difference".'
        )
    colours = variant_colours([c["objective"] for c in cells])
    if plots:
        report.image(
            _score_plot(out_dir, cells, baseline, scoring, colours, resamples),
            f"{primary} per objective, 95% CIs over seeds and examples",
        )
    report.heading("Cells")
    report.table(
        [
            "objective",
            "seed",
            "parameters",
            "pre-training steps",
            "tokens seen",
            "pre-training s",
            "fine-tuning steps (best)",
            "fine-tuning s",
            "scoring s",
            primary,
            "learned",
        ],
        _cell_rows(cells, primary, baseline, scoring.higher_is_better),
    )
    report.paragraph(
        "Tokens seen are the non-padding input (and decoder input) tokens the training loop "
        "counts, counted exactly by replaying each stage's data stream. Wall times count the run "
        "that finished each stage (an interrupted and resumed one counts its last part only). "
        'Learned: "no" when the cell does not beat the task\'s trivial baseline on '
        f"{primary}, or names the runs its model comes out of (the last pre-training stage, the "
        "fine-tuning) whose held-out loss was still at the unigram entropy of their targets from 30% of "
        "the run on (`ctxlm.learning_check`); a difference involving such a cell is not evidence about "
        "the objectives. An earlier stage at that level, which a later stage then left, is named in "
        "brackets and does not count."
    )
    if plots:
        report.heading("Loss curves")
        held_out = any(stage.get("curve") for c in cells for stage in c["stages"])
        if held_out:  # the cells record their held-out curves (issue 33): a panel per objective, x in tokens
            title = "pre-training held-out loss"
            report.image(
                pretrain_panels(
                    {o: [c["stages"] for c in group] for o, group in by_objective(cells).items()},
                    out_dir / "pretrain_loss.png",
                    flops_per_token=_flops_per_token(cells),
                    colours=colours,
                ),
                title,
            )
        else:
            title = "pre-training loss (stages in sequence)"
            report.image(
                loss_plot(
                    _pretrain_curves(out_dir, cells),
                    out_dir / "pretrain_loss.png",
                    title,
                    share_y=False,
                    colours=colours,
                ),
                title,
            )
        title = "fine-tuning held-out loss (the split that selects the checkpoint)"
        report.image(
            loss_plot(
                _finetune_curves(out_dir, cells),
                out_dir / "finetune_loss.png",
                title,
                ylabel="held-out loss",
                colours=colours,
            ),
            title,
        )
        report.paragraph(
            (
                "Pre-training: each objective's held-out loss against the tokens seen (top axis: "
                "training FLOPs), a line per seed, its stages in sequence, the dashed line the unigram "
                "level of the stage's targets; a panel per objective (each loss is its own task). "
                if held_out
                else "Pre-training: each objective's training loss averaged over its seeds, stages in "
                "sequence with a gap between them, panels not sharing a y axis. "
            )
            + "Fine-tuning: the held-out loss on the selection split averaged over the seeds (at "
            "the union of their validation steps, each seed interpolated between its own; a seed "
            "that stopped early drops out there), the band the lowest to the highest seed. An "
            "objective has one colour in every plot, from its family's palette (PALM blues and "
            "greens, GLM oranges, UniLMv2 purples and reds)."
        )
    report.heading("Environment")
    report.table(["package", "version"], list(package_versions().items()))
    report.write(out_dir)
    return rows


def _budget_text(budget: dict) -> str:
    if budget.get("minutes") is not None:
        return f"{budget['minutes']:g} minutes (turned into steps by timing a few steps of each stage; see budget/)"
    if budget.get("flops") is not None:  # a number, or VARIANT:TOKENS (F counted in budget/flops.json)
        flops = budget["flops"]
        return (
            f"{flops:.3g} training FLOPs"
            if not isinstance(flops, str)
            else f"training FLOPs of {flops.replace(':', ' at ')} tokens (F in budget/flops.json)"
        )
    return f"{budget['tokens']:,} tokens"


def _cell_dir(out_dir: Path, cell: dict) -> Path:
    return out_dir / "cells" / f"{cell['objective']}-seed{cell['seed']}"


def _pretrain_curves(out_dir: Path, cells: list[dict]) -> dict[str, list[list[list[tuple[int, float]]]]]:
    """objective → a curve per seed: each pre-training stage's (step in the stage, loss)."""
    curves: dict[str, list] = {}
    for cell in cells:
        stages = [
            read_metrics(
                Path(stage.get("dir") or _cell_dir(out_dir, cell) / "pretrain" / stage["stage"]) / "metrics.jsonl"
            )
            for stage in cell["stages"]
        ]
        if any(stages):
            curves.setdefault(cell["objective"], []).append(stages)
    return curves


def read_held_out(path: Path) -> list[tuple[int, float]]:
    """(step, held-out loss) of a run's metrics.jsonl validation rows (`valid/...loss`, the first such key)."""
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for row in rows:
        keys = sorted(k for k in row if k.startswith("valid/") and k.endswith("loss"))
        if keys:
            out.append((row["step"], row[keys[0]]))
    return out


def _finetune_curves(out_dir: Path, cells: list[dict]) -> dict[str, list[list[list[tuple[int, float]]]]]:
    """objective → a curve per seed: the fine-tuning's held-out (selection split) loss by step, one
    stage: the cell's `finetune_curve`, else its metrics.jsonl validation rows."""
    curves: dict[str, list] = {}
    for cell in cells:
        curve = [(int(s), float(v)) for s, v in cell.get("finetune_curve") or []] or read_held_out(
            _cell_dir(out_dir, cell) / "finetune" / "metrics.jsonl"
        )
        curves.setdefault(cell["objective"], []).append([curve])
    return curves


def _flops_per_token(cells: list[dict]) -> dict[str, float]:
    """objective → its pre-training FLOPs per token (mean over its cells that count both)."""
    ratios: dict[str, list[float]] = {}
    for cell in cells:
        if cell.get("pretrain_flops") and cell.get("tokens_seen"):
            ratios.setdefault(cell["objective"], []).append(cell["pretrain_flops"] / cell["tokens_seen"])
    return {o: float(np.mean(r)) for o, r in ratios.items()}


def _score_plot(
    out_dir: Path, cells: list[dict], baseline: dict | None, scoring, colours: dict[str, str], resamples: int
) -> Path:
    """`scores.png`: the primary metric per objective as a point with its 95% CI over seeds and examples
    (two-level bootstrap), the baseline a line, on an axis fitted to the data."""
    shared = shared_resamples(cells, baseline, scoring, resamples)
    rows = []
    for objective, group in by_objective(cells).items():
        test = (
            shared.test(objective)
            if shared is not None
            else two_level_bootstrap([c["example_stats"] for c in group], None, scoring.statistic, resamples=resamples)
        )
        rows.append((objective, test.difference, test.ci_low, test.ci_high))
    return interval_plot(
        [("", rows)],
        out_dir / "scores.png",
        scoring.primary,
        baseline=baseline,
        higher_is_better=scoring.higher_is_better,
        colours=colours,
    )


# ------------------------------------------------------------------------------------ training-set sizes
def flipped(test: BootstrapResult) -> BootstrapResult:
    """The test of b − a from that of a − b."""
    negative = lambda x: None if x is None else -x  # noqa: E731
    return dataclasses.replace(
        test,
        difference=-test.difference,
        ci_low=-test.ci_high,
        ci_high=-test.ci_low,
        seed_differences=tuple(-d for d in test.seed_differences),
        percentile_low=negative(test.percentile_high),
        percentile_high=negative(test.percentile_low),
    )


def pretraining_test(rows: list[dict]) -> tuple[BootstrapResult | None, list[str]]:
    """One size's "palm minus none" from its results table (the test of none minus palm, turned
    round), and the reasons it is not testable (a cell of either that did not learn)."""
    by_objective = {row["objective"]: row for row in rows}
    palm, none = by_objective.get(REFERENCE), by_objective.get("none")
    if palm is None or none is None or none.get("bootstrap") is None:
        return None, []
    test = flipped(
        BootstrapResult(
            **{**none["bootstrap"], "seed_differences": tuple(none["bootstrap"].get("seed_differences") or ())}
        )
    )
    return test, [
        reason
        for row in (palm, none)
        for reason in row.get(
            "untestable",
            [f"{row['objective']} seed {seed}: {why}" for seed, why in (row.get("did_not_learn") or {}).items()],
        )
    ]


def pretraining_gain(rows: list[dict], scoring, adjusted_p: float | None = None) -> tuple[str, str]:
    """One size's "palm vs none": the difference with its interval and p (the Holm-adjusted p across
    the sizes when given), and the verdict on "pre-training helps"."""
    test, untestable = pretraining_test(rows)
    if test is None:
        return "—", "—"
    verdict = claim_verdict(test, scoring.higher_is_better, shortened(untestable), adjusted_p)
    shown = format_p(test.p_value if adjusted_p is None else adjusted_p, test.resamples)
    return f"{format_difference(test.difference, test.ci_low, test.ci_high)}, p {shown}", verdict


def write_train_size_report(
    out_dir: Path,
    tables: dict[str, list[dict]],
    sizes: dict[str, int],
    scoring,
    *,
    plots: bool = True,
    command: str | None = None,
) -> None:
    """`train_sizes.md` / `.html` of `compare_train_sizes`: each variant's primary metric (mean ± std
    over seeds) at each training-set size, the baseline, PALM against no pre-training at each size,
    and the plot of the metric against the size."""
    primary, names = scoring.primary, list(tables)
    objectives = list(
        dict.fromkeys(row["objective"] for rows in tables.values() for row in rows if "parameters" in row)
    )
    cell = {name: {row["objective"]: row for row in rows} for name, rows in tables.items()}
    report = Report()
    report.heading(f"Pre-training as labelled data shrinks: {primary}", 1)
    report.code(command or "(called from Python: ctxlm.compare.compare_train_sizes)")
    report.paragraph(
        "One `ctxlm compare` per training-set size (`train-<size>/`, each with its full report), "
        "every size fine-tuning the same pre-trained cells on the first pairs of the training file. "
        f"Mean ± std over seeds ({'higher' if scoring.higher_is_better else 'lower'} is better); a "
        "cell that did not learn is marked *."
    )
    rows = []
    for objective in objectives:
        values = []
        for name in names:
            row = cell[name].get(objective)
            values.append(
                "—"
                if row is None
                else format_mean_std(row["metrics"][primary]) + (" *" if row.get("did_not_learn") else "")
            )
        rows.append([objective, *values])
    baselines = [next((row for row in tables[name] if "parameters" not in row), None) for name in names]
    if baselines[0] is not None:  # each size's own (dialog's unigram baseline counts that size's pairs)
        rows.append([baselines[0]["objective"], *(f"{b['metrics'][primary][0]:.2f}" for b in baselines)])
    report.table(["variant", *(f"{sizes[name]:,} pairs" for name in names)], rows)
    report.heading(f"{REFERENCE} vs none (pre-training helps?)")
    report.table(
        ["training pairs", f"Δ {primary} [95% CI], p (Holm across the sizes)", "verdict"],
        [
            [f"{sizes[name]:,}", *pretraining_gain(tables[name], scoring, p)]
            for name, p in zip(
                names,
                holm(
                    [
                        test.p_value if test is not None and not untestable else None
                        for test, untestable in map(pretraining_test, tables.values())
                    ]
                ),
            )
        ],
    )
    if plots:
        from .report_plots import log_scaled, low_resource_plot

        points = {
            objective: {
                sizes[name]: cell[name][objective]["metrics"][primary] for name in names if objective in cell[name]
            }
            for objective in objectives
        }
        baseline = baselines[0]  # one line: the first size's (the same rule at every size)
        line = (
            None
            if baseline is None
            else {"name": baseline["objective"].removeprefix("baseline: "), "metrics": baseline["metrics"]}
        )
        title = f"{primary} against the training pairs"
        path = low_resource_plot(points, line, out_dir / "train_sizes.png", primary, log_scale=log_scaled(primary))
        report.image(path, title)
    report.write(out_dir, "train_sizes")
