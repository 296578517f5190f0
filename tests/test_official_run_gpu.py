"""reports/official/run-gpu.sh (fine-tune a unilm2 release on SQuAD QG, generate, score) runs end to
end on the CPU at a tiny size: the release is the tiny release-format checkpoint of the UniLMv2
parity fixture, the data a slice of ../shared/data/qg/squad_du2017."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_official_unilm import write_release

ROOT = Path(__file__).resolve().parents[1]


def slice_rows(source: Path, target: Path, n: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(source.read_text(encoding="utf-8").splitlines()[:n]) + "\n", encoding="utf-8")


@pytest.mark.slow
def test_official_unilm_gpu_script_runs_at_a_tiny_size_on_the_cpu(data_dir, tmp_path):
    """The script's conversion (`ctxlm convert --from-official`), disjoint selection and scored rows, and the
    fine-tuning's size: MAX_STEPS and BATCH x GRAD_ACCUM, with the packaged recipe or without it."""
    release = write_release(tmp_path / "unilm2-tiny-uncased", "rel32")
    data = tmp_path / "data"
    for split, rows in (("train", 16), ("valid", 30)):
        slice_rows(data_dir / "qg/squad_du2017" / f"{split}.jsonl", data / "qg/squad_du2017" / f"{split}.jsonl", rows)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        **os.environ,
        "CTXLM_DATA": str(data),
        "WORK": str(work),
        "REPORTS": str(out),
        "CTXLM": f"{sys.executable} -m ctxlm",
        "PYTHON": sys.executable,
        "MAX_STEPS": "2",
        "BATCH": "4",
        "EVAL_EVERY": "2",
        "SELECT_ROWS": "6",
        "EVAL_ROWS": "5",
        "BEAM": "1",
        "MAX_NEW": "4",
        "DECODE_BATCH": "4",
        "DEVICE": "cpu",
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(
        ["sh", str(ROOT / "reports/official/run-gpu.sh"), str(release)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    select = [json.loads(line) for line in (work / "select.jsonl").read_text().splitlines()]
    scored = [json.loads(line) for line in (work / "scored.jsonl").read_text().splitlines()]
    assert len(select) == 6 and 0 < len(scored) <= 5
    assert not {json.dumps(r, sort_keys=True) for r in select} & {json.dumps(r, sort_keys=True) for r in scored}
    assert not {r["sentence"] for r in select} & {r["sentence"] for r in scored}
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["question"] for p in predictions] == [r["question"] for r in scored]
    scores = json.loads((out / "scores.json").read_text())
    assert set(scores["unilm2"]) == set(scores["first_words"]) >= {"rouge1", "rougeL"}
    assert scores["scored_rows"] == len(scored) and scores["max_steps"] == 2
    assert json.loads((out / "conversion.json").read_text())["notes"][0] == "format unilm-release"
    assert (out / "scores.md").read_text().count("\n") == 4
    # the script's size wins over the recipe's (the packaged unilm2-squad-qg counts 16 epochs of 8 x 6)
    recipe = json.loads((work / "ft/run.json").read_text())["recipe"]
    assert (recipe["train"]["max_steps"], recipe["train"]["batch_size"], recipe["train"]["grad_accum"]) == (2, 4, 1)
    assert recipe.get("epochs") is None and recipe["train"]["lr"] == 2e-5 and recipe["decoding"]["num_beams"] == 8
    packaged = (ROOT / "ctxlm/recipes/unilm2-squad-qg.yaml").is_file()
    assert scores["recipe"] == ("unilm2-squad-qg" if packaged else str(work / "unilm2-squad-qg.yaml"))
