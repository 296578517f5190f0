"""One folder, one run, and what a run prints and leaves on disk: the output folder's lock (two
real processes; a SIGKILLed holder no longer blocks), `resume="auto"` / `--resume auto`, the
warm-up warning, the `--no-progress` lines, the resumed-from line, `--keep-checkpoints`, hard
which copies of the weights are links and which independent, and `ctxlm compare` stopped by SIGTERM (exit 0).
A tiny PALM on random pairs, as in test_robustness.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import sys
import time
import warnings

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import TINY_PALM_MODEL, wiki_slice
from test_robustness import pairs, tiny_model, train_pairs
from ctxlm.checkpoint import LOCK_NAME, RunFolderLock, latest_checkpoint, list_checkpoints
from ctxlm.cli import build_parser, main
from ctxlm.config import TrainConfig
from ctxlm.errors import CtxlmError

pytestmark = pytest.mark.usefixtures("single_thread", "optimizer_imports")


@pytest.fixture(scope="module")
def optimizer_imports():
    """The first optimizer of a process imports torch._dynamo (seconds); do it once, before forking."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


def config(**values) -> TrainConfig:
    base = dict(
        max_steps=6,
        batch_size=4,
        lr=1e-2,
        warmup_steps=1,
        log_every=1,
        eval_every=0,
        eval_batches=2,
        save_every=1,
        progress=False,
    )
    return TrainConfig(**{**base, **values})


def run(out, cfg=None, valid=False, **kwargs):
    model = tiny_model()
    return train_pairs(model, cfg or config(), out, pairs(model, 8, seed=1) if valid else None, **kwargs)


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def same_weights(a, b) -> bool:
    a, b = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def inode(path) -> int:
    return os.stat(path).st_ino


# ------------------------------------------------------------------------------------ the folder's lock
def _train_in_child(out) -> None:
    torch.set_num_threads(1)
    run(out, config(max_steps=100_000, log_every=1))


def test_a_second_run_into_a_running_runs_folder_is_refused_until_the_first_is_killed(tmp_path):
    """A real training in another process holds the folder: a second run, a resume and an
    --overwrite run are refused with one line naming its PID, and nothing is cleared or written;
    once it is SIGKILLed, `resume="auto"` continues its run."""
    out = tmp_path / "run"
    child = multiprocessing.get_context("fork").Process(target=_train_in_child, args=(out,))
    child.start()
    try:
        while child.is_alive() and len(list_checkpoints(out)) < 2:
            time.sleep(0.005)
        assert child.is_alive()
        assert (out / LOCK_NAME).read_text().strip() == str(child.pid)
        for kwargs in ({}, {"resume": True}, {"resume": "auto"}, {"overwrite": True}):
            with pytest.raises(
                CtxlmError,
                match=rf"^{re.escape(str(out))} is in use by another run "
                rf"\(PID {child.pid}\); wait for it to end",
            ):
                run(out, config(max_steps=100_000, log_every=100_000), **kwargs)
            assert len(list_checkpoints(out)) >= 2  # --overwrite cleared nothing (the child keeps 2; 3 mid-write)
            assert metrics(out)[0]["step"] == 1
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    step = int(latest_checkpoint(out).name[5:])
    result = run(out, config(max_steps=step + 1, log_every=100_000), resume="auto", allow_config_change=True)
    assert result.step == step + 1
    assert not (out / LOCK_NAME).exists()  # released (and removed) at the end
    assert [row["step"] for row in metrics(out) if "loss" in row][-2:] == [step, step + 1]


def _hold_lock(out, ready, release) -> None:
    lock = RunFolderLock(out)
    ready.set()
    release.wait(60)
    lock.release()


def test_the_lock_is_the_operating_systems_and_goes_with_its_holder(tmp_path):
    """A process holding the lock blocks a new lock (naming it), in another process and in this
    one; released, or SIGKILLed (the file stays behind), it no longer blocks."""
    out = tmp_path / "run"
    out.mkdir()
    context = multiprocessing.get_context("fork")
    for end in ("release", "kill"):
        ready, release = context.Event(), context.Event()
        holder = context.Process(target=_hold_lock, args=(out, ready, release))
        holder.start()
        assert ready.wait(60)
        with pytest.raises(CtxlmError, match=rf"in use by another run \(PID {holder.pid}\)"):
            RunFolderLock(out)
        if end == "release":
            release.set()
        else:
            os.kill(holder.pid, signal.SIGKILL)
        holder.join()
        assert (out / LOCK_NAME).exists() == (end == "kill")
        lock = RunFolderLock(out)  # free again
        assert (out / LOCK_NAME).read_text() == f"{os.getpid()}\n"
        with pytest.raises(CtxlmError, match=rf"in use by another run \(PID {os.getpid()}\)"):
            RunFolderLock(out)  # flock locks conflict within one process too
        lock.release()


def test_a_run_that_fails_releases_the_lock(tmp_path):
    out = tmp_path / "run"
    run(out, config(max_steps=2))
    with pytest.raises(CtxlmError, match="continue it with --resume"):
        run(out, config(max_steps=2))
    with pytest.raises(CtxlmError, match="train config 'batch_size'"):
        run(out, config(max_steps=2, batch_size=2), resume=True)
    assert not (out / LOCK_NAME).exists()
    RunFolderLock(out).release()


# ------------------------------------------------------------------------------------ --resume auto
def test_resume_auto_starts_new_runs_and_continues_stopped_ones_exactly(tmp_path, capsys):
    """`resume="auto"`: a new folder trains as a new run does; a folder whose run stopped after
    checkpoint 3 continues it, says so in one line, and ends with the uninterrupted weights."""
    run(tmp_path / "full", config(keep_checkpoints=0))
    assert run(tmp_path / "auto", config(), resume="auto").step == 6
    assert same_weights(tmp_path / "full", tmp_path / "auto")
    assert "resumed" not in capsys.readouterr().err

    stopped = tmp_path / "stopped"
    stopped.mkdir()
    shutil.copytree(tmp_path / "full/checkpoints/step-00000003", stopped / "checkpoints/step-00000003")
    assert run(stopped, config(), resume="auto").step == 6
    assert same_weights(tmp_path / "full", stopped)
    resumed = [line for line in capsys.readouterr().err.splitlines() if "resumed" in line]
    assert resumed == [f"resumed from {stopped}/checkpoints/step-00000003 at step 3 of 6"]


def test_resume_values_flags_and_errors(tmp_path, capsys):
    parse = build_parser().parse_args
    base = ["pretrain", "--corpus", "c.txt", "--out", "o"]
    assert [parse(base + extra).resume for extra in ([], ["--resume"], ["--resume", "auto"])] == [False, True, "auto"]
    assert parse(base + ["--resume", "--max-steps", "3"]).resume is True
    with pytest.raises(SystemExit) as exit_info:
        parse(base + ["--resume", "always"])
    assert exit_info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ctxlm pretrain: error")]
    assert errors in (
        [
            "ctxlm pretrain: error: argument --resume: invalid choice: 'always' (choose from 'auto') "
            "(see ctxlm pretrain --help)"
        ],
        [
            "ctxlm pretrain: error: argument --resume: invalid choice: 'always' (choose from auto) "
            "(see ctxlm pretrain --help)"
        ],
    )
    with pytest.raises(CtxlmError, match=r"^resume must be True, False or 'auto', not 'yes'$"):
        run(tmp_path / "a", resume="yes")
    with pytest.raises(CtxlmError, match=r"--resume given but there is no checkpoint .* \(--resume auto starts"):
        run(tmp_path / "b", resume=True)
    assert not (tmp_path / "b").exists()  # refused before anything is made
    with pytest.raises(CtxlmError, match="give --resume or --overwrite, not both"):
        run(tmp_path / "c", resume="auto", overwrite=True)


# ------------------------------------------------------------------------------------ what a run prints
def test_a_warm_up_longer_than_the_run_warns_once_with_the_real_peak(tmp_path):
    """warmup_steps 100, max_steps 4, lr 1e-2: the last (largest) update's learning rate is
    1e-2 * 4/100 = 4e-4, as metrics.jsonl records it; the warning says so, once."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(tmp_path / "long", config(max_steps=4, warmup_steps=100, save_every=0))
    said = [str(w.message) for w in caught if "warmup" in str(w.message)]
    assert said == [
        "warmup_steps 100 is longer than max_steps 4: the learning rate peaks at 0.0004, not lr 0.01 "
        "(lower --warmup-steps)"
    ]
    # the lr logged at step s is the one step s + 1 uses (LambdaLR after its step)
    applied = [row["lr"] for row in metrics(tmp_path / "long") if row["step"] < 4]
    assert max(applied) == pytest.approx(4e-4) == applied[-1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(tmp_path / "short", config(max_steps=4, warmup_steps=4, save_every=0))
    assert not [w for w in caught if "warmup" in str(w.message)]


def test_without_a_bar_a_line_every_log_step_and_each_validation(tmp_path, capsys):
    """--no-progress: every log_every steps a line with step, loss, lr and tokens/s, the values of
    metrics.jsonl; every validation a line with its metrics."""
    out = tmp_path / "run"
    run(out, config(max_steps=5, log_every=2, eval_every=2, save_every=0), valid=True)
    err = capsys.readouterr().err.splitlines()
    rows = {row["step"]: row for row in metrics(out) if "loss" in row}
    assert sorted(rows) == [2, 4, 5]
    expected = [
        f"step {s}/5: loss {rows[s]['loss']:.4f}, lr {rows[s]['lr']:.3g}, {rows[s]['tokens_per_s']:,.0f} tokens/s"
        for s in (2, 4, 5)
    ]
    assert [line for line in err if "/5:" in line] == expected
    valid = {row["step"]: row for row in metrics(out) if "valid/lm_loss" in row}
    assert [line for line in err if "valid/lm_loss" in line] == [
        f"step {s}: valid/lm_loss {valid[s]['valid/lm_loss']:.4g}, valid/lm_ppl {valid[s]['valid/lm_ppl']:.4g}"
        for s in (2, 4, 5)
    ]


# ------------------------------------------------------------------------------------ what a run leaves
def test_keep_checkpoints_and_which_copies_of_the_weights_are_independent(tmp_path):
    """The flag sets keep_checkpoints (default 2). Under selection the best weights are in two
    independent files during the run (`best/`, and the checkpoints' `best/`, hard links among
    the checkpoints) and a third, the final model, at the end; a checkpoint at the best step links
    its weights to `best/`. Without selection the final model is an independent copy of the last
    checkpoint's weights. Equal bytes everywhere."""
    parse = build_parser().parse_args
    assert parse(["pretrain", "--corpus", "c", "--out", "o", "--keep-checkpoints", "1"]).keep_checkpoints == 1
    assert TrainConfig().keep_checkpoints == 2

    out = tmp_path / "select"
    result = run(out, config(max_steps=6, eval_every=2, select_metric="valid/lm_loss"), valid=True)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000005", "step-00000006"]
    best = out / "best"
    best_step = result.final_metrics["best_step"]
    saved_best = {inode(out / f"checkpoints/step-0000000{n}/best/model.safetensors") for n in (5, 6)}
    assert same_weights(out, best) and same_weights(out, out / "checkpoints/step-00000006/best")
    if best_step <= 4:  # both checkpoints hold that best: they share their best/ files
        assert len(saved_best) == 1
    assert inode(best / "model.safetensors") not in saved_best
    assert inode(out / "model.safetensors") not in saved_best | {inode(best / "model.safetensors")}
    if best_step == 6:  # the checkpoint of the best step links to its best/ (else its own weights)
        assert inode(out / "checkpoints/step-00000006/model.safetensors") in saved_best

    out = tmp_path / "last"
    run(out, config(max_steps=4, keep_checkpoints=1))
    last = out / "checkpoints/step-00000004"
    assert list_checkpoints(out) == [last]
    assert same_weights(out, last)
    assert inode(out / "model.safetensors") != inode(last / "model.safetensors")


def test_finetuning_with_selection_stores_the_best_weights_in_three_independent_files(tmp_path):
    """Selection every 2 steps, 2 checkpoints kept: by content (sha256), the best weights are in
    three inodes (best/, the checkpoints' best/ with the best step's weights, the final model),
    every other weights file (an older best in its checkpoint) in one."""
    import hashlib

    out = tmp_path / "run"
    run(out, config(max_steps=6, eval_every=2, save_every=2, select_metric="valid/lm_loss"), valid=True)
    by_content = {}
    for path in out.rglob("model.safetensors"):
        by_content.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), set()).add(inode(path))
    best = hashlib.sha256((out / "best/model.safetensors").read_bytes()).hexdigest()
    assert len(by_content.pop(best)) == 3
    assert all(len(inodes) == 1 for inodes in by_content.values())


# ------------------------------------------------------------------------------------ compare and signals
def _compare_in_child(argv) -> None:
    torch.set_num_threads(1)
    sys.exit(main(argv))


def test_compare_stopped_by_sigterm_exits_0_and_says_how_to_continue(data_dir, tmp_path, capfd):
    """SIGTERM during a comparison's pre-training: the step ends, a checkpoint is written, the
    command exits 0 with the line a stopped training run prints, and no stage is marked done."""
    from ctxlm.tokenization import train_tokenizer

    corpus = wiki_slice(tmp_path / "wiki.txt", 1200)
    train_tokenizer([corpus], 1000, tmp_path / "tok")
    for name, n in (("train", 24), ("valid", 4)):
        lines = (data_dir / "summarization/gigaword" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = yaml.safe_load(TINY_PALM_MODEL)
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                **model,
                "train": dict(
                    batch_size=4,
                    lr=1e-3,
                    warmup_steps=1,
                    eval_every=0,
                    eval_batches=1,
                    log_every=1,
                    save_every=1,
                    progress=False,
                ),
                "data": dict(fragment_length=64, valid_fraction=0.05, max_valid_documents=2),
            }
        )
    )
    (tmp_path / "recipe.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "summarization",
                "max_source_tokens": 48,
                "max_target_tokens": 16,
                "train": dict(batch_size=8, max_steps=3, progress=False),
                "decoding": dict(num_beams=1, max_new_tokens=6),
            }
        )
    )
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tmp_path / "tok"),
        "--task",
        str(tmp_path / "recipe.yaml"),
        "--train",
        str(tmp_path / "train.jsonl"),
        "--valid",
        str(tmp_path / "valid.jsonl"),
        "--objectives",
        "palm-noae",
        "--config",
        str(tmp_path / "config.yaml"),
        "--budget-tokens",
        "200000",
        "--seeds",
        "1",
        "--no-plots",
        "--resamples",
        "10",
        "--out",
        str(out),
    ]
    capfd.readouterr()
    child = multiprocessing.get_context("fork").Process(target=_compare_in_child, args=(argv,))
    child.start()
    while child.is_alive() and not list(out.glob("**/checkpoints/step-*")):
        time.sleep(0.005)
    assert child.is_alive()
    os.kill(child.pid, signal.SIGTERM)
    child.join()
    stdout = capfd.readouterr().out
    assert child.exitcode == 0
    stage = next(out.glob("**/pretrain/*"))
    step = int(latest_checkpoint(stage).name[5:])
    assert f"stopped by a signal at step {step}; checkpoint written; rerun the same command to continue" in stdout
    assert not list(out.glob("**/compare-done.json")) and not (stage / "model.safetensors").exists()


def test_side_files_are_written_only_once_the_run_holds_the_folder(tmp_path):
    """`train(side_files=...)` (a fine-tuned model's generation.json, a classifier's task file):
    refused by a folder another run holds, the run writes none of them there; in a free folder it
    writes them beside the model."""
    out = tmp_path / "run"
    out.mkdir()
    lock = RunFolderLock(out)
    try:
        with pytest.raises(CtxlmError, match="is in use by another run"):
            run(out, config(max_steps=1), side_files={"task.json": {"a": 1}})
        assert not (out / "task.json").exists()
    finally:
        lock.release()
    run(out, config(max_steps=1), side_files={"task.json": {"a": 1}})
    assert (out / "task.json").read_text(encoding="utf-8") == '{\n  "a": 1\n}\n'
