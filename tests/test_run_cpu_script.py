"""reports/compare/run.sh, the CPU comparison of issue 33, runs end to end in its phases at a tiny
size (two variants, one seed, two sizes a task, cells as two parallel processes): F counted before
any cell, the lrs chosen once on the selection slice (disjoint from every training size) and kept,
the FLOP-matched grid, T and the tokens-matched view, then the reports and the summary hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import wiki_slice
from test_run_gpu_script import TINY_MODEL, TINY_TRAIN, slice_rows

ROOT = Path(__file__).resolve().parents[1]
PHASES = (
    "pretrain",
    "lr-gigaword",
    "lr-cornell",
    "gigaword-large",
    "gigaword-small",
    "cornell-large",
    "cornell-small",
    "tokens-pretrain",
    "tokens-gigaword",
    "tokens-cornell",
    "report",
)


def tiny_setup(data_dir: Path, tmp_path: Path) -> dict:
    data = tmp_path / "data"
    (data / "pretrain/wikipedia").mkdir(parents=True)
    wiki_slice(data / "pretrain/wikipedia/sents.txt", 1500)
    for task in ("summarization/gigaword", "dialog/cornell"):
        for split, rows in (("train", 40), ("valid", 6)):
            slice_rows(data_dir / task / f"{split}.jsonl", data / task / f"{split}.jsonl", rows)
    config = yaml.safe_load((ROOT / "reports/compare/palm-mini.yaml").read_text(encoding="utf-8"))
    config.update(model=TINY_MODEL, train={**config["train"], "batch_size": 4}, data={"fragment_length": 96})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (tmp_path / "recipes").mkdir()
    for name in ("gigaword", "cornell"):
        recipe = yaml.safe_load((ROOT / "reports/compare/recipes" / f"{name}.yaml").read_text(encoding="utf-8"))
        recipe.update(
            train={**recipe["train"], **TINY_TRAIN},
            decoding={**recipe["decoding"], "num_beams": 1, "max_new_tokens": 6},
        )
        (tmp_path / "recipes" / f"{name}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return {
        **os.environ,
        "CTXLM_DATA": str(data),
        "WORK": str(tmp_path / "work"),
        "REPORTS": str(tmp_path / "out"),
        "CTXLM": f"{sys.executable} -m ctxlm",
        "PYTHON": sys.executable,
        "CONFIG": str(tmp_path / "config.yaml"),
        "RECIPES": str(tmp_path / "recipes"),
        "FLOPS": "palm:1500",
        "SEEDS": "1",
        "PARALLEL": "2",
        "VOCAB": "1000",
        "LR_GRID": "1e-3,3e-3",
        "SELECTION": "8",
        "OBJECTIVES": "palm,none",
        "GIGAWORD_SIZES": "16,24",
        "CORNELL_SIZES": "16,24",
    }


@pytest.mark.slow
def test_cpu_comparison_script_runs_every_phase_at_a_tiny_size(data_dir, tmp_path):
    env = tiny_setup(data_dir, tmp_path)
    for phase in PHASES:
        done = subprocess.run(
            ["sh", str(ROOT / "reports/compare/run.sh"), phase], env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, phase + done.stdout[-3000:] + done.stderr[-3000:]
    work, out = tmp_path / "work", tmp_path / "out"
    flops = json.loads((work / "pretrain/budget/flops.json").read_text())
    assert flops["reference"] == "palm:1500" and flops["flops"] > 0
    for task, train in (("gigaword", "summarization/gigaword"), ("cornell", "dialog/cornell")):
        rows = (tmp_path / "data" / train / "train.jsonl").read_text(encoding="utf-8").splitlines()
        selection = (work / f"{task}-select.jsonl").read_text(encoding="utf-8").splitlines()
        assert selection == rows[-8:] and len(rows) - 8 >= 24  # rows after every size's: never trained on nor scored
        for objective in ("palm", "none"):
            choice = json.loads((work / f"lr/{task}/{objective}.json").read_text())
            assert choice["grid"] == [1e-3, 3e-3] and choice["train_pairs"] == 24 and choice["seed"] == 0
            for size in (16, 24):
                for seed in (0,):
                    cell = json.loads(
                        (work / f"{task}/train-{size}/cells/{objective}-seed{seed}/result.json").read_text()
                    )
                    assert (cell["budget_view"], cell["train_pairs"], cell["finetune_lr"]) == (
                        "flops",
                        size,
                        choice["chosen"],
                    )
        assert set(json.loads((work / f"{task}/train-16/baseline.json").read_text())) == {
            "name",
            "metrics",
            "example_stats",
            "predictions",
        }
        tokens_view = json.loads((work / f"{task}-tokens/train-24/cells/palm-seed0/result.json").read_text())
        assert tokens_view["budget_view"] == "tokens" and tokens_view["tokens_seen"] >= int((work / "T").read_text())
        assert not (work / f"{task}-tokens/train-24/cells/none-seed0").exists()
        table = json.loads((out / task / "train-16/table.json").read_text())
        assert [row["objective"] for row in table][:2] == ["palm", "none"]
        assert "| variant | 16 pairs |" in (out / task / "train_sizes.md").read_text()
    palm = [json.loads((work / f"gigaword/train-24/cells/palm-seed{seed}/result.json").read_text()) for seed in (0,)]
    assert int((work / "T").read_text()) == min(cell["tokens_seen"] for cell in palm)
    # the report phase exports the scores and recomputes the summary under REPORTS, never in the checkout
    assert (out / "data/cells.json.gz").is_file() and "## Gigaword" in (out / "summary.md").read_text()
    assert "16 pairs" in (out / "summary.md").read_text() and (out / "gigaword-low-resource.png").is_file()
