"""Kill anywhere: `ctxlm pretrain` and `ctxlm finetune` SIGKILLed once before their first
checkpoint and then ten times at random moments (half of them while a checkpoint is being
written), every start the same command with `--resume auto` (as a preempted job is restarted), end
with the same weights (and best/) as an uninterrupted run, bit for bit, and no temporaries left;
SIGTERM and SIGINT end a run with exit status 0 and a checkpoint.

The CLI runs in a forked child process (`main(argv)`, as `python -m ctxlm.cli` would) so that
each start skips the interpreter's and torch's import time."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_PALM_MODEL, wiki_slice
from ctxlm import checkpoint
from ctxlm.checkpoint import checkpoint_name, list_checkpoints
from ctxlm.cli import main
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread", "optimizer_imports")


@pytest.fixture(scope="module")
def optimizer_imports():
    """The first optimizer of a process imports torch._dynamo (seconds); do it once, before forking."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


MODEL = TINY_PALM_MODEL
TRAIN = """train:
  batch_size: 4
  lr: 1.0e-3
  warmup_steps: 2
  progress: false
  log_every: 1
  save_every: 1
  keep_checkpoints: 2
  eval_batches: 2
"""
PRETRAIN = MODEL + TRAIN + "  eval_every: 0\ndata:\n  fragment_length: 96\n  valid_fraction: 0.05\n"
RECIPE = (
    "task: summarization\nmax_source_tokens: 48\nmax_target_tokens: 16\n"
    + TRAIN
    + "  eval_every: 2\n  select_metric: valid/lm_loss\n  label_smoothing: 0.1\n"
)
KILLS = 10
AUTO = ["--resume", "auto"]  # every start of a killed run: one and the same command


SLOW_DISK = 0.25  # seconds each checkpoint's fsync takes in a start that is to be killed mid-write


def _cli(argv: list[str], slow_disk: bool) -> None:
    torch.set_num_threads(1)
    if slow_disk:  # a slow disk: every checkpoint stays a temporary for SLOW_DISK seconds, far longer
        fsync_tree = checkpoint._fsync_tree  # than the parent takes to see it and kill (2 ms polls)

        def slow_fsync_tree(path):
            time.sleep(SLOW_DISK)
            fsync_tree(path)

        checkpoint._fsync_tree = slow_fsync_tree
    sys.exit(main(argv))


def start(argv: list[str], slow_disk: bool = False) -> multiprocessing.Process:
    process = multiprocessing.get_context("fork").Process(target=_cli, args=(argv, slow_disk))
    process.start()
    return process


def finish(argv: list[str]) -> None:
    process = start(argv)
    process.join()
    assert process.exitcode == 0


def temporaries(out) -> list:
    return [
        p
        for folder in (out, out / "checkpoints")
        if folder.is_dir()
        for p in folder.iterdir()
        if p.name.startswith((".tmp-", ".old-"))
    ]


def kill_before_first_checkpoint(argv: list[str], out, setup: float, rng: random.Random) -> None:
    """Start `argv` with --resume auto in an empty folder and SIGKILL it before its first checkpoint
    is complete: within the first 60% of the uninterrupted run's set-up (`setup`), or as soon as
    that checkpoint's temporary appears."""
    process = start(argv + AUTO)
    deadline = time.monotonic() + rng.uniform(0.1, 0.6) * setup
    while process.is_alive() and time.monotonic() < deadline and not temporaries(out / "checkpoints"):
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.join()
    assert process.exitcode == -signal.SIGKILL
    assert not list_checkpoints(out)


def kill_loop(argv: list[str], out, timing: tuple[float, float], max_steps: int, rng: random.Random) -> tuple[int, int]:
    """Start `argv` with --resume auto (the same command each time) and SIGKILL it KILLS times: every
    other time while its 1st-3rd checkpoint write is under way (on a slow disk, so that the kill lands
    inside the write for certain), else at a random moment within its
    set-up and first two steps (`timing`: their durations in the uninterrupted run; a run already
    at its last checkpoint is killed within 90% of the time such a start last took, while it sets up
    or writes the final model); then
    let it finish. Returns (kills aimed at a checkpoint write, kills that hit one, aimed or not)."""
    setup, step = timing
    killed = aimed = during_write = 0
    restart = setup  # how long a start of a finished run takes (measured when one gets through)
    for _ in range(5 * KILLS):
        if killed == KILLS:
            break
        done = list_checkpoints(out)[-1:] == [out / "checkpoints" / checkpoint_name(max_steps)]
        began = time.monotonic()
        at_write, writes = killed % 2 == 1 and not done, rng.randint(1, 3)
        process = start(argv + AUTO, slow_disk=at_write)
        window = 0.9 * restart if done else setup + 2 * step
        deadline, seen = began + rng.uniform(0.0, window), set()
        while process.is_alive():
            if at_write:
                seen |= {p.name for p in temporaries(out) if f"-{process.pid}-" in p.name and "step" in p.name}
                due = len(seen) >= writes
            else:
                due = time.monotonic() >= deadline
            if due:
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.002)
        process.join()
        if process.exitcode == -signal.SIGKILL:
            killed += 1
            aimed += at_write
            during_write += any(f"-{process.pid}-" in p.name and "step" in p.name for p in temporaries(out))
        else:
            assert process.exitcode == 0
            if done:  # a finished run's start is quicker than the first run's set-up (the store is cached)
                restart = time.monotonic() - began
    assert killed == KILLS
    finish(argv + AUTO)
    return aimed, during_write


def stop_with(signum: int, argv: list[str], out) -> None:
    """Send `signum` once the run (started with --resume auto) has written a checkpoint: it exits 0
    with a newer checkpoint."""
    before = list_checkpoints(out)
    process = start(argv + AUTO)
    while process.is_alive() and list_checkpoints(out) == before:
        time.sleep(0.002)
    os.kill(process.pid, signum)
    process.join()
    assert process.exitcode == 0
    assert list_checkpoints(out)[-1] != (before or [None])[-1]


def timed_run(argv: list[str], out, steps: int) -> tuple[float, float]:
    """Run to the end; (seconds until the first checkpoint, seconds per later step)."""
    began, first = time.monotonic(), None
    process = start(argv)
    while process.is_alive():
        if first is None and list_checkpoints(out):
            first = time.monotonic() - began
        time.sleep(0.005)
    process.join()
    assert process.exitcode == 0
    total = time.monotonic() - began
    first = first or total
    return first, (total - first) / (steps - 1)


def assert_same_weights(a, b) -> None:
    a, b = load_file(str(a)), load_file(str(b))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_pretraining_stopped_and_killed_ten_times_ends_bit_identical(data_dir, tmp_path, capsys):
    """A SIGKILL before the first checkpoint, SIGTERM, then SIGINT (each exits 0 with a
    checkpoint), then ten SIGKILLs; every start `--resume auto`."""
    corpus = wiki_slice(tmp_path / "wiki.txt", 1500)
    train_tokenizer(corpus, 600, tmp_path / "tok")
    (tmp_path / "tiny.yaml").write_text(PRETRAIN, encoding="utf-8")
    common = [
        "pretrain",
        "--config",
        str(tmp_path / "tiny.yaml"),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--max-steps",
        "20",
    ]
    timing = timed_run([*common, "--out", str(tmp_path / "full")], tmp_path / "full", 20)
    out = tmp_path / "killed"
    kill_before_first_checkpoint([*common, "--out", str(out)], out, timing[0], random.Random(2))
    stop_with(signal.SIGTERM, [*common, "--out", str(out)], out)
    stop_with(signal.SIGINT, [*common, "--out", str(out)], out)
    aimed, during_write = kill_loop([*common, "--out", str(out)], out, timing, 20, random.Random(0))
    assert during_write >= aimed >= 1  # every kill aimed at a write hit one (random ones may too)
    assert_same_weights(tmp_path / "full/model.safetensors", out / "model.safetensors")
    assert not temporaries(out)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000019", "step-00000020"]
    assert main([*common, "--out", str(out)]) == 2  # a new run into a run's folder
    assert "continue it with --resume or start over with --overwrite" in capsys.readouterr().err


def test_finetuning_killed_ten_times_keeps_best_and_final_weights(data_dir, tmp_path):
    """Selection on the validation loss every 2 steps: best/ and the final (best) weights match."""
    gigaword = data_dir / "summarization/gigaword"
    for name, n in (("train", 120), ("valid", 16)):
        lines = (gigaword / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_tokenizer([tmp_path / "train.jsonl"], 500, tmp_path / "tok", text_field="document")
    (tmp_path / "tiny.yaml").write_text(MODEL, encoding="utf-8")
    (tmp_path / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    common = [
        "finetune",
        "--config",
        str(tmp_path / "tiny.yaml"),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--recipe",
        str(tmp_path / "recipe.yaml"),
        "--train",
        str(tmp_path / "train.jsonl"),
        "--valid",
        str(tmp_path / "valid.jsonl"),
        "--max-steps",
        "12",
    ]
    timing = timed_run([*common, "--out", str(tmp_path / "full")], tmp_path / "full", 12)
    out = tmp_path / "killed"
    kill_before_first_checkpoint([*common, "--out", str(out)], out, timing[0], random.Random(3))
    aimed, during_write = kill_loop([*common, "--out", str(out)], out, timing, 12, random.Random(1))
    assert during_write >= aimed >= 1  # every kill aimed at a write hit one (random ones may too)
    for name in ("best/model.safetensors", "model.safetensors"):
        assert_same_weights(tmp_path / "full" / name, out / name)
    assert not temporaries(out)
