"""Checkpoint integrity (issue 34, points 4-5): every checkpoint and model directory has a manifest
(size and sha256 of each file, written last). A checkpoint whose weights were truncated, a byte
flipped or a file deleted is restored from an intact copy or passed over by `--resume`, with one
warning line naming the file, and the run still ends as the uninterrupted one; readers refuse a
damaged model directory with one line; an in-place write to the final model of a finished run
loses nothing; a reader never gets a half-written model while its run writes.
A tiny PALM on random pairs, as in test_robustness.py."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import time
import warnings

import pytest
import torch
from safetensors.torch import load_file

from test_robustness import config, pairs, tiny_model, train_pairs
from ctxlm import checkpoint as ckpt
from ctxlm.checkpoint import MANIFEST_NAME, list_checkpoints, load_model_dir, read_manifest
from ctxlm.errors import CtxlmError

pytestmark = pytest.mark.usefixtures("single_thread")


def truncate(path) -> None:
    os.truncate(path, min(1000, os.path.getsize(path) // 2))  # in place: every hard link of it sees it


def flip(path) -> None:
    with open(path, "r+b") as handle:  # in place
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))


def delete(path) -> None:
    os.unlink(path)


DAMAGE = {"truncate": truncate, "flip": flip, "delete": delete}


def run(out, cfg, valid=False, **kwargs):
    model = tiny_model()
    return train_pairs(model, cfg, out, pairs(model, 8, seed=1) if valid else None, **kwargs)


def same_weights(a, b) -> bool:
    a, b = load_file(str(a)), load_file(str(b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def resumed_with_warnings(out, cfg, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert run(out, cfg, resume=True, **kwargs).step == cfg.max_steps
    return [str(w.message) for w in caught if MANIFEST_NAME in str(w.message)]


SELECT = dict(eval_every=2, select_metric="valid/lm_loss")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """Uninterrupted 6-step runs, every checkpoint kept: "plain" (pre-training) and "select" (best/)."""
    root = tmp_path_factory.mktemp("finished")
    run(root / "plain", config(max_steps=6))
    run(root / "select", config(max_steps=6, **SELECT), valid=True)
    return root


def stopped_at_4(finished, kind: str, tmp_path):
    """A copy of the `kind` run as it stood after step 4 (its checkpoints 3 and 4)."""
    out = tmp_path / kind
    for step in (3, 4):
        name = f"checkpoints/step-{step:08d}"
        shutil.copytree(finished / kind / name, out / name)
    return out


def test_every_checkpoint_and_model_directory_has_a_manifest(finished):
    out = finished / "select"
    for directory in (out, out / "best", *list_checkpoints(out), out / "checkpoints/step-00000004/best"):
        files = read_manifest(directory)["files"]
        assert "model.safetensors" in files and "config.json" in files
        for name, entry in files.items():
            assert entry["size"] == (directory / name).stat().st_size
            assert entry["sha256"] == ckpt.file_sha256(directory / name)
    assert {"trainer_state.pt", "best/model.safetensors", "best/manifest.json"} <= set(
        read_manifest(out / "checkpoints/step-00000004")["files"]
    )


@pytest.mark.parametrize(
    "damage, name",
    [
        ("truncate", "model.safetensors"),
        ("flip", "trainer_state.pt"),
        ("delete", "model.safetensors"),
        ("delete", "trainer_state.pt"),
    ],
)
def test_pretraining_resume_passes_over_a_damaged_checkpoint(finished, tmp_path, damage, name):
    """The newest checkpoint's file damaged (no copy of it anywhere): --resume warns naming it,
    resumes from step 3 and ends with the uninterrupted run's weights."""
    out = stopped_at_4(finished, "plain", tmp_path)
    DAMAGE[damage](out / "checkpoints/step-00000004" / name)
    said = resumed_with_warnings(out, config(max_steps=6))
    assert len(said) == 1 and said[0].startswith(f"{out}/checkpoints/step-00000004/{name}: ")
    assert said[0].endswith("; resuming from an older checkpoint")
    assert same_weights(finished / "plain/model.safetensors", out / "model.safetensors")


@pytest.mark.parametrize(
    "damage, name, source",
    [
        ("truncate", "best/model.safetensors", "model.safetensors"),  # step 4 is the best step: the same bytes
        ("flip", "model.safetensors", "best/model.safetensors"),
        ("delete", "best/config.json", "config.json"),
    ],
)
def test_finetuning_resume_restores_a_damaged_file_from_its_copy(finished, tmp_path, damage, name, source):
    """Under selection a file of the newest checkpoint that has an intact copy with the same sha256
    is restored from it (one line naming both); the run ends with the uninterrupted best/ and
    final weights."""
    out = stopped_at_4(finished, "select", tmp_path)
    newest = out / "checkpoints/step-00000004"
    DAMAGE[damage](newest / name)
    said = resumed_with_warnings(out, config(max_steps=6, **SELECT), valid=True)
    assert len(said) == 1 and said[0].startswith(f"{newest / name}: ")
    assert said[0].endswith(f"; restored from {newest / source}")
    for weights in ("model.safetensors", "best/model.safetensors"):
        assert same_weights(finished / "select" / weights, out / weights)


def test_finetuning_resume_passes_over_a_checkpoint_whose_trainer_state_is_damaged(finished, tmp_path):
    """Its trainer state truncated (no copy) and its best/ weights flipped: the checkpoint is passed
    over, and the run's new checkpoint 4 does not take the damaged best/ for the same best."""
    out = stopped_at_4(finished, "select", tmp_path)
    truncate(out / "checkpoints/step-00000004/trainer_state.pt")
    flip(out / "checkpoints/step-00000004/best/model.safetensors")
    said = resumed_with_warnings(out, config(max_steps=6, **SELECT), valid=True)
    assert len(said) == 1 and "step-00000004/trainer_state.pt: damaged (" in said[0]
    for weights in ("model.safetensors", "best/model.safetensors", "checkpoints/step-00000004/best/model.safetensors"):
        assert same_weights(finished / "select" / weights, out / weights)
    assert not ckpt.manifest_problems(out / "checkpoints/step-00000004")


def test_readers_refuse_a_damaged_model_directory_with_one_line(finished, tmp_path):
    """load_model_dir / from_pretrained (as generate, evaluate, convert and --init do): one line
    naming the file; verify="size" catches a truncation but not a flipped byte, "off" skips."""
    from ctxlm.models.palm import PalmModel

    model = tmp_path / "model"
    shutil.copytree(finished / "plain/checkpoints/step-00000006", model)
    load_model_dir(model)
    flip(model / "model.safetensors")
    with pytest.raises(
        CtxlmError,
        match=rf"^{model}/model.safetensors: damaged \(its sha256 differs from the one "
        rf"manifest.json records\); restore it from a copy, or pass --verify off",
    ):
        load_model_dir(model)
    with pytest.raises(CtxlmError, match="model.safetensors: damaged"):
        PalmModel.from_pretrained(model)
    load_model_dir(model, verify="size")  # a flipped byte keeps the size
    PalmModel.from_pretrained(model, verify="size")
    truncate(model / "model.safetensors")
    with pytest.raises(CtxlmError, match=r"model.safetensors: damaged \(1000 bytes, manifest.json records \d+\)"):
        load_model_dir(model, verify="size")
    delete(model / "trainer_state.pt")
    with ckpt.verification("off"), pytest.raises(CtxlmError, match="cannot read weights"):
        load_model_dir(model)  # unchecked: the damage surfaces where safetensors meets it
    legacy = tmp_path / "legacy"  # written before manifests: loads unchecked
    shutil.copytree(finished / "plain/checkpoints/step-00000005", legacy)
    (legacy / MANIFEST_NAME).unlink()
    load_model_dir(legacy)


def test_a_run_folder_with_checkpoints_only_says_which_it_reads_and_passes_over_damaged_ones(finished, tmp_path):
    out = stopped_at_4(finished, "plain", tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model_dir(out)
        delete(out / "checkpoints/step-00000004/config.json")
        load_model_dir(out)
    assert [str(w.message) for w in caught] == [
        f"{out}: it holds no final model yet; using its newest intact checkpoint, step-00000004",
        f"{out}/checkpoints/step-00000004/config.json: missing (manifest.json lists it); passed over",
        f"{out}: it holds no final model yet; using its newest intact checkpoint, step-00000003",
    ]


# ------------------------------------------------------------------------------------ readers and writers
def _train_slowly(out, max_steps, resume) -> None:
    """A run whose every directory write takes SLOW seconds more (a slow disk), one checkpoint kept."""
    torch.set_num_threads(1)
    fsync_tree = ckpt._fsync_tree

    def slow_fsync_tree(path):
        time.sleep(SLOW)
        fsync_tree(path)

    ckpt._fsync_tree = slow_fsync_tree
    run(out, config(max_steps=max_steps, keep_checkpoints=1, log_every=100), resume=resume, allow_config_change=resume)


SLOW = 0.3


def test_a_reader_never_gets_a_half_written_model_while_its_run_writes(tmp_path, monkeypatch):
    """A slow writer (each write SLOW s, one checkpoint kept: the one being read is deleted as the
    next is written) and a reader that takes 0.1 s to read the weights: every read, during the run
    and while a resumed run rewrites the final model, loads a model whose files match a manifest."""
    out = tmp_path / "run"
    read_weights = ckpt.read_weights

    def slow_read_weights(*args, **kwargs):
        time.sleep(0.1)
        return read_weights(*args, **kwargs)

    monkeypatch.setattr(ckpt, "read_weights", slow_read_weights)
    context = multiprocessing.get_context("fork")
    reads = 0
    for max_steps, resume in ((8, False), (12, True)):
        writer = context.Process(target=_train_slowly, args=(out, max_steps, resume))
        writer.start()
        while writer.is_alive() and not list_checkpoints(out):
            time.sleep(0.005)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "using its newest intact checkpoint"
            while writer.is_alive():
                load_model_dir(out, with_tokenizer=False)
                reads += 1
        writer.join()
        assert writer.exitcode == 0
    assert reads >= 10
    assert same_weights(out / "model.safetensors", out / "checkpoints/step-00000012/model.safetensors")


# ------------------------------------------------------------------------------------ no file loses the run
def test_an_in_place_write_to_any_weights_file_of_a_finished_run_loses_nothing(finished, tmp_path, capsys):
    """`truncate -s 1000` on the final model, on best/ and on the checkpoints' best/ (each a file
    some others link to): readers of the damaged directory get one line, the other copies still
    load, and `--resume` restores what was damaged; the run ends with its own best weights."""
    out = tmp_path / "select"  # not a copy of `finished`: copies keep no hard links
    run(out, config(max_steps=6, keep_checkpoints=2, **SELECT), valid=True)
    best_bytes = (out / "best/model.safetensors").read_bytes()
    newest = list_checkpoints(out)[-1]

    os.truncate(out / "model.safetensors", 1000)
    with pytest.raises(CtxlmError, match=rf"^{out}/model.safetensors: damaged \(1000 bytes"):
        load_model_dir(out)
    load_model_dir(out / "best")
    said = resumed_with_warnings(out, config(max_steps=6, keep_checkpoints=2, **SELECT), valid=True)
    assert said == []  # the checkpoints and best/ are untouched; the final model is copied again
    assert (out / "model.safetensors").read_bytes() == best_bytes

    os.truncate(out / "best/model.safetensors", 1000)
    load_model_dir(out)
    assert resumed_with_warnings(out, config(max_steps=6, keep_checkpoints=2, **SELECT), valid=True) == []
    assert (out / "best/model.safetensors").read_bytes() == best_bytes  # restored from the checkpoint's best/

    os.truncate(newest / "best/model.safetensors", 1000)
    said = resumed_with_warnings(out, config(max_steps=6, keep_checkpoints=2, **SELECT), valid=True)
    assert said[0] == (
        f"{newest}/best/model.safetensors: damaged (1000 bytes, manifest.json records "
        f"{len(best_bytes)}); restored from {out}/model.safetensors"
    )
    assert all(line.endswith(f"; restored from {out}/model.safetensors") for line in said)
    assert len(said) == 1 + (newest.name == "step-00000006")  # at the best step its weights link to its best/
    for path in (out / "model.safetensors", out / "best/model.safetensors", newest / "best/model.safetensors"):
        assert path.read_bytes() == best_bytes


# ------------------------------------------------------------------------------------ FSDP (DCP) checkpoints
@pytest.mark.slow
def test_fsdp_resume_passes_over_a_checkpoint_with_damaged_dcp_files(tmp_path):
    """2 gloo processes (tests/fsdp_damage_worker.py): a truncated or flipped DCP shard, or its
    deleted `.metadata`, in the newest checkpoint: rank 0 warns once naming it, both ranks resume
    from the checkpoint before and end with the uninterrupted run's weights."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{tests.parent}{os.pathsep}{tests}"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(tests / "fsdp_damage_worker.py"),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    for damage, name in (("truncate", "__0_0.distcp"), ("flip", "__1_0.distcp"), ("delete", ".metadata")):
        said = results[damage]["warnings"]
        assert len(said) == 1 and said[0].startswith(f"{tmp_path}/{damage}/checkpoints/step-00000003/dcp/{name}: ")
        assert said[0].endswith("; resuming from an older checkpoint")
        assert results[damage]["same"]


# ------------------------------------------------------------------------------------ the command line
def test_cli_a_truncated_final_model_of_a_finetuning_run_is_recovered(data_dir, tmp_path, capsys):
    """The issue's case: `truncate -s 1000 RUN/model.safetensors` on a finished `ctxlm finetune`
    run: `generate` and `convert` of RUN are one line naming the file, `generate --model RUN/best` works,
    `finetune ... --resume` restores the final model; `--verify off` skips the check, and a folder
    holding only checkpoints says which one `generate` uses."""
    from conftest import TINY_PALM_MODEL
    from test_kill_anywhere import RECIPE

    from ctxlm.cli import main
    from ctxlm.tokenization import train_tokenizer

    gigaword = data_dir / "summarization/gigaword"
    for name, n in (("train", 40), ("valid", 8)):
        lines = (gigaword / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_tokenizer([tmp_path / "train.jsonl"], 400, tmp_path / "tok", text_field="document")
    (tmp_path / "tiny.yaml").write_text(TINY_PALM_MODEL, encoding="utf-8")
    (tmp_path / "recipe.yaml").write_text(RECIPE, encoding="utf-8")
    out = tmp_path / "run"
    finetune = [
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
        "4",
        "--out",
        str(out),
    ]
    generate = ["generate", "--text", "the cat sat on the mat", "--max-length", "3", "--beam", "1"]
    assert main(finetune) == 0
    best = (out / "best/model.safetensors").read_bytes()
    capsys.readouterr()

    os.truncate(out / "model.safetensors", 1000)  # truncate -s 1000 RUN/model.safetensors
    assert main([*generate, "--model", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {out}/model.safetensors: damaged (1000 bytes, manifest.json")
    assert main([*generate, "--model", str(out), "--verify", "size"]) == 2
    assert main(["convert", "--to-hf", str(out), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"error: {out}/model.safetensors: damaged (") for line in err)
    assert main([*generate, "--model", str(out), "--verify", "off"]) == 2
    assert "cannot read weights" in capsys.readouterr().err  # unchecked: safetensors meets the damage
    assert main([*generate, "--model", str(out / "best")]) == 0
    assert main([*finetune, "--resume"]) == 0
    assert (out / "model.safetensors").read_bytes() == best
    assert main([*generate, "--model", str(out)]) == 0

    only = tmp_path / "only-checkpoints"
    shutil.copytree(out / "checkpoints", only / "checkpoints")
    with pytest.warns(UserWarning) as said:  # the CLI prints it as one line, "warning: ..." (plain_warnings)
        assert main([*generate, "--model", str(only)]) == 0
    assert [str(w.message) for w in said] == [
        f"{only}: it holds no final model yet; using its newest intact checkpoint, step-00000004"
    ]
