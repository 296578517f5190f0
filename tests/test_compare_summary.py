"""reports/compare/summarize.py: `export` turns a work folder (run.sh's layout, the contract's
result.json keys) into small compressed files, and the summary is recomputed from those files alone,
the same bytes every time; its verdicts follow issue 33's rules. The regeneration of the committed
report from the committed data runs once reports/compare/data exists (skipped before the run)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from ctxlm import statistics

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("compare_summarize", ROOT / "reports/compare/summarize.py")
summarize = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = summarize  # dataclasses look their module up there
SPEC.loader.exec_module(summarize)

VARIANTS = {"palm": 6.0, "bart": 0.0, "mass": -7.5, "none": -2.0}  # effects on ROUGE over a 30-point base
EXAMPLES, SEEDS = 40, 3


def cell(rng, task: str, objective: str, seed: int, pairs: int, view: str, capped: bool) -> dict:
    effect = VARIANTS[objective]
    if task == "gigaword":
        stats = np.clip(rng.normal(30 + effect + rng.normal(0, 0.3), 6, (EXAMPLES, 1)), 0, 100)
    else:  # dialog: (NLL sum, tokens); lower perplexity is better, so the effect lowers the NLL
        tokens = rng.integers(5, 15, (EXAMPLES, 1))
        stats = np.hstack([tokens * (4.0 - effect / 20 + rng.normal(0, 0.3, (EXAMPLES, 1))), tokens])
    stages = [
        {
            "stage": f"{k + 1}-{objective}",
            "steps": 10,
            "flops": 10**12,
            "curve": [[s, 1000 * s, 7 - s / 5 + rng.normal(0, 0.05)] for s in range(1, 11)],
            "unigram_level": 6.5,
            "entropy": 6.5,
            "dir": "/machine/path",
        }
        for k in range(2 if objective == "palm" else (0 if objective == "none" else 1))
    ]
    metric = float(stats.mean()) if task == "gigaword" else float(np.exp(stats[:, 0].sum() / stats[:, 1].sum()))
    return {
        "objective": objective,
        "seed": seed,
        "family": "palm",
        "parameters": 1000,
        "stages": stages,
        "tokens_seen": 10_000 * len(stages),
        "pretrain_seconds": 10.0,
        "pretrain_flops": 2 * 10**12,
        "finetune_steps": 300 if capped else 120,
        "finetune_best_step": 300 if capped else 80,
        "finetune_seconds": 5.0,
        "score_seconds": 1.0,
        "finetune_flops": 10**11,
        "finetune_tokens": 5000,
        "finetune_lr": 3e-4,
        "finetune_step_cap": 300,
        "finetune_stopped_early": not capped,
        "finetune_curve": [
            [s, 5 - s / 100 - effect / 10 + rng.normal(0, 0.05)] for s in range(20, 301 if capped else 121, 20)
        ],
        "finetune_unigram_level": 6.0,
        "train_pairs": pairs,
        "budget_view": view,
        "metrics": {("rougeL" if task == "gigaword" else "perplexity"): metric},
        "example_stats": stats.tolist(),
        "predictions": ["x"] * EXAMPLES,
    }


def work_folder(root: Path) -> Path:
    """run.sh's layout: two tasks, two sizes each at matched FLOPs, the largest again at matched tokens."""
    rng = np.random.default_rng(0)
    sizes = {"gigaword": (1000, 4000), "cornell": (1000, 4000)}
    for task, kind in (("gigaword", "summarization"), ("cornell", "dialog")):
        for folder, view, pairs_list in ((task, "flops", sizes[task]), (f"{task}-tokens", "tokens", sizes[task][-1:])):
            for pairs in pairs_list:
                size_dir = root / folder / f"train-{pairs}"
                for objective in VARIANTS:
                    for seed in range(SEEDS):
                        path = size_dir / "cells" / f"{objective}-{seed}" / "result.json"
                        path.parent.mkdir(parents=True)
                        capped = objective == "bart" and seed == 0
                        path.write_text(json.dumps(cell(rng, task, objective, seed, pairs, view, capped)))
                if task == "gigaword":
                    base = np.clip(rng.normal(23.0, 6, (EXAMPLES, 1)), 0, 100)  # mass's level: indistinguishable
                else:
                    tokens = rng.integers(5, 15, (EXAMPLES, 1))
                    base = np.hstack([tokens * 4.4, tokens])
                (size_dir / "baseline.json").write_text(
                    json.dumps(
                        {
                            "name": "lead-8 words" if task == "gigaword" else "unigram",
                            "metrics": {},
                            "predictions": None,
                            "example_stats": base.tolist(),
                        }
                    )
                )
                (size_dir / "settings.json").write_text(
                    json.dumps({"recipe": {"task": kind}, "train_limit": pairs, "budget": {"flops": 10**12}})
                )
        for objective in VARIANTS:
            path = root / "lr" / task / f"{objective}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                json.dumps(
                    {
                        "grid": [1e-4, 3e-4, 1e-3],
                        "chosen": 3e-4,
                        "train_pairs": sizes[task][-1],
                        "seed": 0,
                        "selection_loss": {"0.0001": 3.2, "0.0003": 3.1, "0.001": 3.3},
                    }
                )
            )
    return root


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    data = root / "data"
    files = summarize.export(work_folder(root / "work"), data)
    return data, files, root


def test_export_writes_small_compressed_files_without_machine_paths(exported):
    data, files, _ = exported
    assert sorted(p.name for p in data.iterdir()) == sorted(summarize.FILES)
    assert sum(p.stat().st_size for p in files) < 200_000
    loaded = summarize.load(data)
    cells = [r for r in loaded.records if r["kind"] == "cell"]
    assert len(cells) == 2 * 3 * len(VARIANTS) * SEEDS  # two tasks × (two sizes + the tokens view)
    assert "/machine/path" not in json.dumps(loaded.records) and "predictions" not in cells[0]
    assert loaded.lr["gigaword"]["palm"]["chosen"] == 3e-4
    assert loaded.scoring("cornell").higher_is_better is False
    assert len(cells[0]["example_stats"]) == EXAMPLES
    # re-exporting gives the same bytes (gzip mtime 0, sorted keys)
    again = summarize.export(exported[2] / "work", exported[2] / "again")
    assert [p.read_bytes() for p in files] == [p.read_bytes() for p in again]


def test_summary_is_recomputed_the_same_from_the_data_alone(exported):
    data, _, root = exported
    drawn = summarize.summarize(data, root / "one", resamples=400).read_text(encoding="utf-8")
    first = summarize.summarize(data, root / "two", resamples=400, draw=False).read_text(encoding="utf-8")
    second = summarize.summarize(data, root / "three", resamples=400, draw=False).read_text(encoding="utf-8")
    assert first == second  # the bootstrap's seed is fixed: the same bytes every time
    assert [line for line in drawn.splitlines() if line and not line.startswith("![")] == [
        line for line in first.splitlines() if line
    ]  # the plots add their image lines, nothing else
    html = (root / "one" / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 8  # four plots per task
    for name in (
        "gigaword-pretrain",
        "gigaword-scores",
        "gigaword-finetune",
        "gigaword-low-resource",
        "cornell-low-resource",
    ):
        assert (root / "one" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def rows(markdown: str, start: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split(" | ")]
        for line in markdown.splitlines()
        if line.startswith(f"| {start}")
    ]


def test_verdicts_follow_the_issues_rules(exported):
    data, _, root = exported
    markdown = summarize.summarize(data, root / "verdicts", resamples=400, draw=False).read_text(encoding="utf-8")
    assert "holds" not in markdown and "does not hold" not in markdown
    claims = rows(markdown, "1,000 pairs: ") + rows(markdown, "4,000 pairs: ")
    assert claims and all(len(row) == 6 for row in claims)
    for label, difference, adjusted, raw, agree, verdict in claims:
        if not adjusted.startswith("<") and not raw.startswith("<") and adjusted != "—":
            assert float(adjusted) >= float(raw)  # Holm never lowers a p
        low, high = (float(x) for x in re.search(r"\[(\S+), (\S+)\]", difference).groups())
        if low <= 0 <= high:
            assert verdict in ("no detectable difference", "no difference at two decimals") or verdict.startswith(
                "not testable"
            ), (label, verdict)
        if ": palm vs mass" in label:  # mass is at the baseline's level: its claims are not testable
            assert re.match(
                r"not testable at this scale \(mass is (indistinguishable from|worse than) the baseline", verdict
            ), verdict
    gigaword = markdown.split("## Cornell")[0]
    verdicts = {}
    for row in rows(gigaword, "4,000 pairs: "):  # the first table: matched FLOPs
        verdicts.setdefault(row[0], row[-1])
    assert verdicts["4,000 pairs: pre-training helps (PALM Table 6): palm vs none"] == "supports"
    assert "≈ baseline" in gigaword or "< baseline" in gigaword
    assert "PALM Table 5's direction at each size" in gigaword
    assert "equal budget, not converged" in gigaword
    assert "| 1,000 | palm | 120, 120, 120 | 80, 80, 80 | 300 |" in gigaword
    assert "matched tokens (second view)" in gigaword
    assert rows(gigaword, "palm | 0 | 1-palm: ") and "| none | 0 | — |" in gigaword  # the learning check
    assert rows(markdown, "gigaword | palm | 0.0001: 3.200, 0.0003: 3.100, 0.001: 3.300 | 0.0003 | 4,000 | 0 |  |")


def test_holm_counts_every_claim_of_both_tasks_in_a_view(exported):
    """PLAN.md registers one Holm family per view: every claim of both tasks at every size, testable
    or not. The smallest raw p of the family is multiplied by the whole family's size m."""
    data = summarize.load(exported[0])
    for view in ("flops", "tokens"):
        family = summarize.claim_tests_of_view(data, view, 400)
        tests = [(task, i, test) for task, listed in family.items() for i, (_, test, _) in enumerate(listed)]
        assert set(family) == {"gigaword", "cornell"}
        m = len(tests)
        assert m == {"flops": 12, "tokens": 6}[view]  # 3 claims x 2 sizes x 2 tasks; 3 x 1 x 2
        task, i, smallest = min(tests, key=lambda t: t[2].p_value)
        row = summarize.claim_rows_of_view(data, view, 400)[task][i]
        assert row[2] == statistics.format_p(min(1.0, m * smallest.p_value), 400)


def test_the_tokens_view_takes_none_from_the_flops_view(tmp_path):
    """run.sh runs `none` once: it pre-trains nothing, so its cells are the same at either budget. The
    tokens-matched view takes them from the FLOPs view at its size, and tests palm vs none as PLAN.md
    registers (its 10 tokens-matched claims)."""
    work = work_folder(tmp_path / "work")
    for task in ("gigaword", "cornell"):
        for folder in (work / f"{task}-tokens" / "train-4000" / "cells").glob("none-*"):
            shutil.rmtree(folder)
    data = summarize.load(summarize.export(work, tmp_path / "data")[0].parent)
    tokens = data.cells("gigaword", "tokens", 4000)
    none = [r for r in tokens if r["objective"] == "none"]
    assert [r["id"] for r in none] == [f"gigaword/flops/4000/none/{seed}" for seed in range(SEEDS)]
    assert len(tokens) == len(VARIANTS) * SEEDS
    family = summarize.claim_tests_of_view(data, "tokens", 200)
    labels = [label for tests in family.values() for label, _, _ in tests]
    assert sum(label.endswith(": palm vs none") for label in labels) == 2 and len(labels) == 6
    assert not [r for r in data.cells("gigaword", "flops", 1000) if r["view"] != "flops"]  # the FLOPs view is its own


def test_departures_are_read_from_the_run_log(exported, tmp_path):
    data, _, root = exported
    log = tmp_path / "run-log.md"
    log.write_text(
        "# log\n\n| a | b |\n\nDepartures so far:\n- one cell at a time,\n  on a shared machine.\n- a pause.\n",
        encoding="utf-8",
    )
    markdown = summarize.summarize(data, root / "departures", resamples=200, draw=False, run_log=log).read_text(
        encoding="utf-8"
    )
    tail = markdown.split("## Where the run departed from PLAN.md")[1]
    assert "- one cell at a time, on a shared machine.\n\n- a pause." in tail
    assert summarize.departures(tmp_path / "missing.md") == []


def test_no_data_folder_is_a_one_line_error(tmp_path, capsys):
    assert summarize.main(["--data", str(tmp_path / "none")]) == 1
    assert "no cells.json.gz" in capsys.readouterr().err
    assert summarize.main(["export", str(tmp_path)]) == 1


def test_the_committed_report_is_regenerated_from_the_committed_data(tmp_path):
    data = ROOT / "reports/compare/data"
    if not (data / "cells.json.gz").is_file():
        pytest.skip("reports/compare/data is not committed yet (the run has not happened)")
    regenerated = summarize.summarize(data, tmp_path)
    assert regenerated.read_text(encoding="utf-8") == (ROOT / "reports/compare/summary.md").read_text(encoding="utf-8")


def test_an_lr_chosen_at_the_grids_edge_is_flagged():
    grid = [3e-4, 1e-3, 3e-3]
    assert summarize.grid_edge(3e-3, grid) == "the grid's largest: the best may lie beyond"
    assert summarize.grid_edge(3e-4, grid) == "the grid's smallest: the best may lie beyond"
    assert summarize.grid_edge(1e-3, grid) == "" and summarize.grid_edge(None, grid) == ""
