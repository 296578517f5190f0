"""reports/compare/run-gpu.sh, the GPU grid of issue 19, runs end to end on the CPU at a tiny size:
two variants, one seed, two training-set sizes, all three tasks, cells as parallel processes; it
writes each task's reports (the sizes' reports and train_sizes.md where it has sizes). Checkpoints
are selected on rows neither trained on nor scored, and `all` (here equal to a size given) runs once
(issue 33, point 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import wiki_slice

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(
    base="palm-tiny",
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=128,
)
TINY_TRAIN = dict(
    batch_size=4,
    max_steps=4,
    bf16=True,
    eval_every=2,
    eval_batches=1,
    save_every=0,
    keep_checkpoints=1,
    progress=False,
    select_metric="valid/lm_loss",
    early_stopping_patience=1,
)


def slice_rows(source: Path, target: Path, n: int) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(source.read_text(encoding="utf-8").splitlines()[:n]) + "\n", encoding="utf-8")


def tiny_recipe(path: Path, name: str) -> None:
    """The GPU recipe `name` with the tiny training settings and one beam."""
    recipe = yaml.safe_load((ROOT / "reports/compare/gpu/recipes" / f"{name}.yaml").read_text(encoding="utf-8"))
    recipe["train"] = {**recipe["train"], **TINY_TRAIN}
    recipe["decoding"] = {**recipe["decoding"], "num_beams": 1, "max_new_tokens": 6}
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")


@pytest.mark.slow
def test_gpu_grid_script_runs_at_a_tiny_size_on_the_cpu(data_dir, tmp_path):
    data = tmp_path / "data"
    (data / "pretrain/wikipedia").mkdir(parents=True)
    wiki_slice(data / "pretrain/wikipedia/sents.txt", 1500)
    for task, n in (("summarization/gigaword", 40), ("qg/squad_du2017", 24), ("dialog/cornell", 40)):
        for split, rows in (("train", n), ("valid", 6)):
            slice_rows(data_dir / task / f"{split}.jsonl", data / task / f"{split}.jsonl", rows)
    config = yaml.safe_load((ROOT / "reports/compare/gpu/palm-tiny.yaml").read_text(encoding="utf-8"))
    config.update(model=TINY_MODEL, train={**config["train"], "batch_size": 4}, data={"fragment_length": 96})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    (tmp_path / "recipes").mkdir()
    for name in ("gigaword", "squad_qg", "cornell"):
        tiny_recipe(tmp_path / "recipes" / f"{name}.yaml", name)
    env = {
        **os.environ,
        "CTXLM_DATA": str(data),
        "WORK": str(tmp_path / "work"),
        "REPORTS": str(tmp_path / "out"),
        "CTXLM": f"{sys.executable} -m ctxlm",
        "PYTHON": sys.executable,
        "CONFIG": str(tmp_path / "config.yaml"),
        "RECIPES": str(tmp_path / "recipes"),
        "TOKENS": "1500",
        "SEEDS": "1",
        "PARALLEL": "2",
        "VOCAB": "1000",
        "SIZES": "16,all,32",
        "SELECTION": "8",
        "GIGAWORD_EVAL": "4",
        "QG_EVAL": "4",
        "CORNELL_EVAL": "4",
        "OBJECTIVES": "palm,none",
    }
    done = subprocess.run(
        ["sh", str(ROOT / "reports/compare/run-gpu.sh")], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    for task in ("gigaword", "cornell"):
        assert "| variant | 16 pairs |" in (out / task / "train_sizes.md").read_text()
        assert sorted(p.name for p in (tmp_path / "work" / task).glob("train-*")) == ["train-16", "train-32"]
        for size in ("train-16", "train-32"):
            table = json.loads((out / task / size / "table.json").read_text())
            assert [row["objective"] for row in table][:2] == ["palm", "none"]
    assert "| palm |" in (out / "squad_qg/report.md").read_text()
    for task, folder in (
        ("gigaword", "summarization/gigaword"),
        ("squad_qg", "qg/squad_du2017"),
        ("cornell", "dialog/cornell"),
    ):
        rows = (data / folder / "train.jsonl").read_text(encoding="utf-8").splitlines()
        selected = (tmp_path / "work" / f"{task}-select.jsonl").read_text(encoding="utf-8").splitlines()
        trained = (tmp_path / "work" / f"{task}-train.jsonl").read_text(encoding="utf-8").splitlines()
        assert selected == rows[-8:] and trained == rows[:-8]  # other rows of the file (SQuAD repeats some lines)
        settings = json.loads(next((tmp_path / "work" / task).glob("**/settings.json")).read_text())
        assert (settings["valid"], settings["eval"]) == (
            str(tmp_path / "work" / f"{task}-select.jsonl"),
            str(data / folder / "valid.jsonl"),
        )
    palm = json.loads((tmp_path / "work/gigaword/train-16/cells/palm-seed0/result.json").read_text())
    assert palm["finetune_best_step"] in (2, 4)  # early stopping on the validation loss picked a step
    run = json.loads((tmp_path / "work/pretrain/palm-seed0/2-palm-generation/run.json").read_text())
    assert run["train"]["bf16"] is True and run["train"]["batch_size"] == 4
