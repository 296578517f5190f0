"""torchrun with two CPU processes (gloo): DDP and FSDP2 through the one training loop, against
one process reading the same micro-batches with gradient accumulation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TWO_PROCESS_PALM, wiki_slice
from ctxlm.distributed import export_model_dir
from ctxlm.tokenization import train_tokenizer

CONFIG = (
    TWO_PROCESS_PALM
    + """data:
  fragment_length: 96
  valid_fraction: 0.05
"""
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """`run(processes, *flags)` → the output directory of a 4-step PALM stage-2 run (cached)."""
    root = tmp_path_factory.mktemp("distributed")
    corpus = wiki_slice(root / "wiki.txt", 3000)
    train_tokenizer(corpus, 600, root / "tok")
    (root / "tiny.yaml").write_text(CONFIG, encoding="utf-8")
    common = [
        "pretrain",
        "--stage",
        "generation",
        "--config",
        str(root / "tiny.yaml"),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(root / "tok"),
        "--max-steps",
        "4",
        "--cache-dir",
        str(root / "cache"),
        "--save-every",
        "2",
    ]

    @cache
    def launch(processes: int, *flags: str, resume_from: Path | None = None) -> Path:
        out = root / "-".join([str(processes), *flags, "resumed" if resume_from else ""]).replace("--", "")
        if resume_from is not None:
            shutil.copytree(resume_from, out / "checkpoints" / resume_from.name)
            flags = (*flags, "--resume")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        launcher = [sys.executable]
        if processes > 1:
            launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
        done = subprocess.run(
            [*launcher, "-m", "ctxlm.cli", *common, *flags, "--out", str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return out

    return launch


def assert_same_weights(a: Path, b: Path) -> None:
    one, other = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert one.keys() == other.keys()
    for key in one:
        torch.testing.assert_close(one[key], other[key], rtol=1e-4, atol=1e-5, msg=key)


def losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 2])
def test_two_process_ddp_equals_one_process_with_gradient_accumulation(run, accumulation):
    """2 ranks × `accumulation` micro-batches of 4 (gradients synchronised on the last one) read
    the micro-batches of 1 process × 2·`accumulation`; without dropout the weights and the logged
    loss (reduced over the ranks) agree."""
    ddp = run(2, "--grad-accum", str(accumulation))
    one = run(1, "--grad-accum", str(2 * accumulation))
    assert_same_weights(ddp, one)
    assert losses(ddp) == pytest.approx(losses(one), rel=1e-5)
    halfway = load_file(str(ddp / "checkpoints/step-00000002/model.safetensors"))
    final = load_file(str(ddp / "model.safetensors"))
    assert any(not torch.equal(halfway[k], final[k]) for k in final)  # the steps did move the weights


@pytest.mark.slow
def test_fsdp_matches_one_process_and_its_checkpoint_resumes_in_one_process(run, tmp_path):
    """FSDP2 on 2 ranks: the loss curve and weights of 1 process with accumulation 2; its sharded
    (DCP) checkpoint of step 2 resumes in 1 process to the same end; it exports to one
    model.safetensors equal to the checkpoint's."""
    fsdp = run(2, "--fsdp")
    one = run(1, "--grad-accum", "2")
    assert losses(fsdp) == pytest.approx(losses(one), rel=1e-5)
    assert_same_weights(fsdp, one)
    checkpoint = fsdp / "checkpoints/step-00000002"
    assert (checkpoint / "dcp/.metadata").is_file() and len(list((checkpoint / "dcp").glob("*.distcp"))) == 2
    resumed = run(1, "--grad-accum", "2", resume_from=checkpoint)
    assert_same_weights(resumed, fsdp)
    export_model_dir(checkpoint, tmp_path / "exported")
    assert_same_weights(tmp_path / "exported", checkpoint)
