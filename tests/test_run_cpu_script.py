"""reports/compare/run.sh, the committed CPU comparison of issue 19, regenerates its reports: run
end to end at a tiny size (two variants, one seed, cells as two parallel processes), it writes both
tasks' reports and summary.md, with each task's baseline row and the claims both variants allow."""

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


@pytest.mark.slow
def test_cpu_comparison_script_runs_at_a_tiny_size(data_dir, tmp_path):
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
        recipe.update(train={**recipe["train"], **TINY_TRAIN},
                      decoding={**recipe["decoding"], "num_beams": 1, "max_new_tokens": 6})
        (tmp_path / "recipes" / f"{name}.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    env = {**os.environ, "CTXLM_DATA": str(data), "WORK": str(tmp_path / "work"), "REPORTS": str(tmp_path / "out"),
           "CTXLM": f"{sys.executable} -m ctxlm", "PYTHON": sys.executable, "CONFIG": str(tmp_path / "config.yaml"),
           "RECIPES": str(tmp_path / "recipes"), "TOKENS": "1500", "SEEDS": "1", "PARALLEL": "2", "VOCAB": "1000",
           "OBJECTIVES": "palm,none", "GIGAWORD_PAIRS": "30", "CORNELL_PAIRS": "30"}
    done = subprocess.run(["sh", str(ROOT / "reports/compare/run.sh")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    gigaword = json.loads((out / "gigaword/table.json").read_text())
    cornell = json.loads((out / "cornell/table.json").read_text())
    assert [row["objective"] for row in gigaword] == ["palm", "none", "baseline: lead-8 words"]
    assert [row["objective"] for row in cornell] == ["palm", "none", "baseline: unigram of the training targets"]
    assert json.loads((tmp_path / "work/cornell/settings.json").read_text())["train_limit"] == 30
    summary = (out / "summary.md").read_text()
    assert "| palm |" in summary and "Cornell (30 pairs) perplexity" in summary
    assert "pre-training helps (PALM Table 6): palm vs none" in summary
    assert (out / "gigaword/report.html").is_file()
