"""Summarise the three comparisons of reports/compare/run.sh into reports/compare/summary.md: one
headline table (every objective's mean ± std over seeds on each task), and the papers' claims as
paired bootstraps between the two variants each claim names (ctxlm.report.paired_bootstrap over
the cells' per-example statistics, seeds paired, 1000 resamples).

    python reports/compare/summarize.py reports/compare/work reports/compare/summary.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ctxlm.compare import TASK_SCORING
from ctxlm.config import load_finetune_config
from ctxlm.report import claim_verdict, did_not_learn, format_difference, format_mean_std, paired_bootstrap

TASKS = {"gigaword": ("Gigaword", ["rouge1", "rouge2", "rougeL"]),
         "squad_qg": ("SQuAD QG", ["bleu4", "meteor", "coco_rougeL"]),
         "cornell": ("Cornell 10K", ["perplexity"])}
CLAIMS = [  # (claim, better, worse): the paper says `better` beats `worse`
    ("PALM beats MASS (PALM Tables 3, 5: Gigaword, Cornell)", "palm", "mass"),
    ("PALM beats BART (PALM Table 3: CNN/DM)", "palm", "bart"),
    ("the copy mechanism helps (PALM Table 6, CNN/DM)", "palm", "palm-nocopy"),
    ("stage 1, autoencoding, helps (PALM Table 6)", "palm", "palm-noae"),
    ("stage 2, autoregression, helps (PALM Table 6)", "palm", "palm-noar"),
    ("pre-training helps (PALM Table 6)", "palm", "none"),
    ("UniLMv2 AE+PAR beats AE alone (UniLMv2 Table 6: SQuAD, MNLI, SST-2)", "unilm", "unilm-ae"),
    ("UniLMv2 AE+PAR beats PAR alone (UniLMv2 Table 6)", "unilm", "unilm-par"),
    ("GLM's span shuffling helps (GLM Table 6 row 6: SuperGLUE)", "glm", "glm-noshuffle"),
]


def cells(task_dir: Path) -> dict[str, list[dict]]:
    by_objective: dict[str, list[dict]] = {}
    for path in sorted(task_dir.glob("cells/*/result.json")):
        cell = json.loads(path.read_text(encoding="utf-8"))
        by_objective.setdefault(cell["objective"], []).append(cell)
    return {o: sorted(group, key=lambda c: c["seed"]) for o, group in by_objective.items()}


def main(work: Path, out: Path) -> None:
    results, scorings, baselines = {}, {}, {}
    for task in TASKS:
        results[task] = cells(work / task)
        scorings[task] = TASK_SCORING[load_finetune_config(str(Path(__file__).parent / "recipes" / f"{task}.yaml")).task]
        table = json.loads((work / task / "table.json").read_text(encoding="utf-8"))
        row = next((row for row in table if row["objective"].startswith("baseline")), None)
        baselines[task] = None if row is None else {"name": row["objective"].removeprefix("baseline: "),
                                                    "metrics": row["metrics"]}
    objectives = list(dict.fromkeys(row["objective"] for task in TASKS  # the comparisons' order
                                    for row in json.loads((work / task / "table.json").read_text(encoding="utf-8"))
                                    if "parameters" in row))
    header = ["objective"] + [f"{TASKS[t][0]} {m}" for t in TASKS for m in TASKS[t][1]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for objective in objectives:
        values = [format_mean_std([c["metrics"][m] for c in results[t].get(objective, [])])
                  if results[t].get(objective) else "—" for t in TASKS for m in TASKS[t][1]]
        lines.append(f"| {objective} | " + " | ".join(values) + " |")
    baseline = [f"{baselines[t]['metrics'][m][0]:.2f}" if baselines[t] else "—" for t in TASKS for m in TASKS[t][1]]
    lines.append("| baseline (lead-8 words; first 12 words + ?) | " + " | ".join(baseline) + " |")

    claims = ["| claim | " + " | ".join(f"{TASKS[t][0]} {scorings[t].primary}: difference [95% CI], p"
                                         for t in TASKS) + " |", "|" + "---|" * (len(TASKS) + 1)]
    for claim, better, worse in CLAIMS:
        row = []
        for task in TASKS:
            a, b = results[task].get(better, []), results[task].get(worse, [])
            seeds = sorted({c["seed"] for c in a} & {c["seed"] for c in b})
            if not seeds:
                row.append("—")
                continue
            a, b = [c for c in a if c["seed"] in seeds], [c for c in b if c["seed"] in seeds]
            scoring = scorings[task]
            test = paired_bootstrap([c["example_stats"] for c in a], [c["example_stats"] for c in b],
                                    scoring.statistic, resamples=1000)
            untestable = [f"{c['objective']} seed {c['seed']}: {reason}" for c in a + b
                          if (reason := did_not_learn(c, baselines[task], scoring.primary,
                                                      scoring.higher_is_better)) is not None]
            verdict = claim_verdict(test, scoring.higher_is_better, untestable[:2] + (
                [f"{len(untestable) - 2} more"] if len(untestable) > 2 else []))
            row.append(f"{format_difference(test.difference, test.ci_low, test.ci_high)}, p {test.p_value:.3f}: "
                       f"{verdict}")
        claims.append(f"| {claim}: {better} vs {worse} | " + " | ".join(row) + " |")
    out.write_text("\n".join([
        "# ctxlm compare: three tasks, one pre-training per cell", "",
        f"Generated by `python reports/compare/summarize.py {work} {out}` from the runs of "
        "`reports/compare/run.sh`. Mean ± std over seeds; Cornell is perplexity (lower is better).", "",
        *lines, "",
        "## The papers' claims", "",
        "Paired bootstrap of the first variant minus the second on each task's primary metric (seeds "
        "paired, examples resampled, 1000 resamples; for perplexity a negative difference favours the "
        "first). *not testable at this scale*: a cell of either side does not beat the task's trivial baseline "
        "or stayed at the unigram level (`ctxlm.report.did_not_learn`), so the difference is between models "
        "that did not learn. *supports* / *contradicts*: p < 0.05 in the claim's / the other direction; a difference "
        "below 0.005 (e.g. two BLEU-4 scores of 1e-5, pycocoevalcap's value when nothing matches) is none. "
        "An interval bound of 0 is a tie (resamples on which both score the same): that interval includes 0; "
        "bounds that round to 0.00 without being 0 keep two significant digits.", "",
        *claims, ""]), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
