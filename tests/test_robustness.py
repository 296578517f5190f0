"""The training loop and its checkpoints under failure: non-finite steps, output folders that hold
another run, settings that changed between save and resume, a full disk, signals, unsafe or
mismatched checkpoint files; and the fixed validation sample. A tiny PALM on random pairs."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import ctxlm.checkpoint
import ctxlm.training
from ctxlm.checkpoint import (
    BEST_DIR,
    TRAINER_STATE_NAME,
    build_model,
    latest_checkpoint,
    list_checkpoints,
    load_model_dir,
    load_trainer_state,
    read_manifest,
    write_manifest,
)
from ctxlm.config import TrainConfig
from ctxlm.config_loading import named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.tasks.seq2seq import PairExamples
from ctxlm.run_options import RunOptions
from ctxlm.training import TrainingInputs, TrainingRun, evaluate, train, validation_sample

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = 60


def tiny_model(**overrides):
    torch.manual_seed(0)
    values = dict(
        vocab_size=VOCAB,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
    )
    config = named_model_config("palm-tiny", **{**values, **overrides})
    return build_model(config)


def pairs(model, n=48, seed=0):
    rng = np.random.default_rng(seed)
    sources = [rng.integers(10, VOCAB, rng.integers(4, 12)).tolist() for _ in range(n)]
    targets = [rng.integers(10, VOCAB, rng.integers(2, 6)).tolist() for _ in range(n)]
    return PairExamples(model.config, sources, targets, 16, 8)


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
        keep_checkpoints=0,
        progress=False,
    )
    return TrainConfig(**{**base, **values})


RUN_FIELDS = {f.name for f in dataclasses.fields(RunOptions)}


def train_pairs(model, cfg, out, valid=None, **kwargs):
    """`train` on `pairs(model)` (pad id 0; `valid` held out); RunOptions' fields among `kwargs` go in `run`."""
    run_options = RunOptions(**{name: kwargs.pop(name) for name in list(kwargs) if name in RUN_FIELDS})
    return train(model, TrainingInputs(pairs(model), 0, valid), cfg, out, run=run_options, **kwargs)


def run(out, cfg=None, model=None, **kwargs):
    model = model or tiny_model()
    return train_pairs(model, cfg or config(), out, **kwargs)


def weights(path):
    return load_file(str(path / "model.safetensors"))


def same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def cut_after(out, step):
    """The run as if killed after saving checkpoint `step`."""
    for path in list_checkpoints(out):
        if int(path.name[5:]) > step:
            shutil.rmtree(path)


def poison(model, bad_calls):
    """The model's loss becomes NaN on the forward calls numbered in `bad_calls` (1-based)."""
    forward, calls = model.forward, [0]

    def poisoned(**batch):
        out = forward(**batch)
        calls[0] += 1
        if calls[0] in bad_calls and model.training:
            out = dataclasses.replace(
                out, loss=out.loss * float("nan"), loss_sums={k: v * float("nan") for k, v in out.loss_sums.items()}
            )
        return out

    model.forward = poisoned
    return model


# ------------------------------------------------------------------------------- non-finite steps
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_nonfinite_steps_are_skipped_and_counted(tmp_path, bf16):
    """NaN losses at steps 2 and 3 of 6: those updates are skipped (steps 1-3 end with the same
    weights and optimizer), metrics.jsonl counts them, and the run finishes with finite weights."""
    result = run(tmp_path / "run", config(bf16=bf16), poison(tiny_model(), {2, 3}))
    assert result.step == 6
    ckpt = tmp_path / "run/checkpoints"
    assert same(weights(ckpt / "step-00000001"), weights(ckpt / "step-00000003"))
    assert not same(weights(ckpt / "step-00000003"), weights(ckpt / "step-00000004"))
    adam = load_trainer_state(ckpt / "step-00000003")["optimizer"]["state"][0]["step"]
    assert float(adam) == 1.0
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["skipped_steps"] for r in rows if "lr" in r] == [0, 1, 2, 2, 2, 2]
    assert "loss" not in rows[1] and all(v.isfinite().all() for v in weights(tmp_path / "run").values())


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_too_many_nonfinite_steps_stop_without_a_poisoned_checkpoint(tmp_path, bf16):
    """From step 3 on every loss is NaN: with max_nonfinite_steps 3 the run stops at step 5 with
    one line; every checkpoint left (keep 2) holds the step-2 weights, no final model is written."""
    model = poison(tiny_model(), set(range(3, 100)))
    with pytest.raises(CtxlmError, match=r"^step 5: loss or gradient norm not finite for 3 steps in a row"):
        run(tmp_path / "run", config(bf16=bf16, keep_checkpoints=2, max_nonfinite_steps=3), model)
    kept = list_checkpoints(tmp_path / "run")
    assert [p.name for p in kept] == ["step-00000003", "step-00000004"]
    run(tmp_path / "two", config(bf16=bf16, max_steps=2))
    reference = weights(tmp_path / "two")
    assert all(same(weights(p), reference) for p in kept)
    assert not (tmp_path / "run/model.safetensors").exists()


@pytest.mark.filterwarnings("ignore:Seems like:UserWarning")  # the test's own optimizer.step
def test_weights_that_turn_non_finite_are_not_saved(tmp_path):
    """The second update leaves a NaN weight (the loss and gradients were finite): the step-2 save
    is refused with one line and the step-1 checkpoint stays the newest."""
    model = tiny_model()
    training = TrainingRun(model, TrainingInputs(pairs(model), 0), config(), tmp_path / "run")
    update, updates = training.optimizer.step, [0]

    def update_then_break(*args, **kwargs):
        update(*args, **kwargs)
        updates[0] += 1
        if updates[0] == 2:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = float("nan")

    training.optimizer.step = update_then_break
    with pytest.raises(CtxlmError, match=r"^step 2: the weights are not finite; not saving them"):
        training.run()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000001"]


# ------------------------------------------------------------------------------- output folders
def test_a_new_run_refuses_a_folder_with_checkpoints_and_overwrite_clears_it(tmp_path):
    out = tmp_path / "run"
    run(out, config(max_steps=4))
    with pytest.raises(
        CtxlmError,
        match=r"holds a run's checkpoints \(step-00000004\); continue it with --resume "
        r"or start over with --overwrite "
        r"\(in Python: resume=True or overwrite=True\)$",
    ):
        run(out, config(max_steps=2))
    run(out, config(max_steps=2, lr=1e-3), overwrite=True)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000001", "step-00000002"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert same(weights(out), weights(out / "checkpoints/step-00000002"))


CHANGES = [  # (TrainConfig change, the key named, allowed with allow_config_change)
    ({"batch_size": 2}, "batch_size", False),
    ({"seed": 1}, "seed", False),
    ({"grad_accum": 2}, "grad_accum", False),
    ({"warmup_steps": 3}, "warmup_steps", False),
    ({"lr": 5e-3}, "lr", True),
    ({"max_steps": 8}, "max_steps", True),
]


@pytest.mark.parametrize("change, key, allowed", CHANGES, ids=[c[1] for c in CHANGES])
def test_resume_refuses_settings_that_change_data_order_or_schedule(tmp_path, change, key, allowed):
    out = tmp_path / "run"
    run(out, config())
    cut_after(out, 3)
    changed = config(**change)
    hint = r" \(or pass --allow-config-change\)" if allowed else ""
    with pytest.raises(
        CtxlmError,
        match=rf"step-00000003: train config '{key}' was .*, now .*; resume with the "
        rf"saved value{hint} or start over",
    ):
        run(out, changed, resume=True)
    if allowed:
        result = run(out, changed, resume=True, allow_config_change=True)
        assert result.step == changed.max_steps
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        factor = ctxlm.training.linear_schedule(changed.warmup_steps, changed.max_steps)
        assert rows[3]["step"] == 4 and rows[3]["lr"] == pytest.approx(changed.lr * factor(4))


def test_resume_may_change_logging_and_saving(tmp_path):
    out = tmp_path / "run"
    run(out, config())
    cut_after(out, 3)
    assert run(out, config(log_every=2, save_every=2, eval_batches=1, keep_checkpoints=1), resume=True).step == 6


def test_resume_refuses_another_model_config_objective_or_world_size(tmp_path):
    out = tmp_path / "run"
    run(out, run_info={"objective": "palm", "stage": "generation"})
    cut_after(out, 2)
    with pytest.raises(CtxlmError, match=r"step-00000002: model config dropout is 0.1, the config says 0.0"):
        run(out, model=tiny_model(dropout=0.0), resume=True)
    with pytest.raises(CtxlmError, match=r"step-00000002: the run's stage was 'generation', now 'mlm'"):
        run(out, resume=True, run_info={"objective": "palm", "stage": "mlm"})
    state_path = latest_checkpoint(out) / TRAINER_STATE_NAME
    state = torch.load(state_path, weights_only=True)
    torch.save({**state, "world_size": 2}, state_path)
    write_manifest(state_path.parent)  # as a run of 2 processes wrote it
    with pytest.raises(CtxlmError, match=r"world size 2 × grad_accum 1, now 1 × 1; resume with grad_accum 2"):
        run(out, resume=True)


# ------------------------------------------------------------------------------- best/ in the checkpoint
def test_resume_restores_the_best_weights_of_its_checkpoint(tmp_path, monkeypatch):
    """Validation losses 3, 1, 2, 0.5 at steps 2, 4, 6, 8: checkpoint 6 holds step 4's best weights.
    A folder whose best/ is step 8's (a later state) and whose newest checkpoint is 6 resumes with
    best/ = step 4's weights and best_value 1; a checkpoint before any validation removes best/."""
    values = iter([3.0, 1.0, 2.0, 0.5])
    monkeypatch.setattr(ctxlm.training, "evaluate", lambda *a, **k: {"lm_loss": next(values)})
    cfg = config(max_steps=8, eval_every=2, select_metric="valid/lm_loss")
    full = tmp_path / "full"
    model = tiny_model()
    train(model, TrainingInputs(pairs(model), 0, pairs(model, 8, seed=1)), cfg, full)
    checkpoints = full / "checkpoints"
    assert same(weights(checkpoints / "step-00000006/best"), weights(checkpoints / "step-00000004"))
    assert same(weights(full / BEST_DIR), weights(checkpoints / "step-00000008"))

    cut = tmp_path / "cut"
    shutil.copytree(checkpoints / "step-00000006", cut / "checkpoints/step-00000006")
    shutil.copytree(full / BEST_DIR, cut / BEST_DIR)
    model = tiny_model()
    resumed = TrainingRun(model, TrainingInputs(pairs(model), 0), cfg, cut, run=RunOptions(resume=True))
    resumed.close()
    assert same(weights(cut / BEST_DIR), weights(checkpoints / "step-00000004"))
    assert (resumed.progress.best_step, resumed.progress.best_value) == (4, 1.0)

    shutil.rmtree(cut / "checkpoints")
    shutil.copytree(checkpoints / "step-00000001", cut / "checkpoints/step-00000001")
    TrainingRun(model, TrainingInputs(pairs(model), 0), cfg, cut, run=RunOptions(resume=True)).close()
    assert not (cut / BEST_DIR).exists()


# ------------------------------------------------------------------------------- disk, permissions, signals
@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "disk full"), (errno.EACCES, "Permission denied")])
def test_a_failed_save_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, code, reason):
    """The trainer-state writer raises OSError at the step-3 checkpoint: a one-line CtxlmError, the
    step-2 checkpoint intact, no temporary left."""
    out = tmp_path / "run"
    save = torch.save

    def failing(obj, path, *a, **k):
        if "step-00000003" in str(path):
            raise OSError(code, os.strerror(code))
        return save(obj, path, *a, **k)

    monkeypatch.setattr(ctxlm.checkpoint.torch, "save", failing)
    with pytest.raises(
        CtxlmError,
        match=rf"checkpoints/step-00000003: cannot write \({reason}\); the previous "
        rf"copy is kept$",
    ):
        run(out, config(keep_checkpoints=1))
    monkeypatch.setattr(ctxlm.checkpoint.torch, "save", save)
    assert [p.name for p in list_checkpoints(out)] == ["step-00000002"]
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".")]
    assert run(out, config(keep_checkpoints=1), resume=True).step == 6


def test_checkpoints_get_the_umask_permissions_and_stale_temporaries_go(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints/.tmp-step-00000009-1-abcd").mkdir(parents=True)
    (out / ".tmp-best-1-abcd").mkdir()
    previous = os.umask(0o022)
    try:
        run(out, config(max_steps=2))
    finally:
        os.umask(previous)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    assert (out / "checkpoints/step-00000002").stat().st_mode & 0o777 == 0o755
    assert (out / "checkpoints/step-00000002/model.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_signal_ends_the_run_with_a_checkpoint(tmp_path, monkeypatch):
    """SIGTERM during step 3 (sent by the model's forward): the run ends after step 3 with a
    checkpoint and `interrupted`; resuming finishes with the uninterrupted run's weights."""
    run(tmp_path / "full", config())
    model, calls = tiny_model(), [0]
    forward = model.forward

    def forward_then_signal(**batch):
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return forward(**batch)

    model.forward = forward_then_signal
    before = signal.getsignal(signal.SIGTERM)
    result = run(tmp_path / "cut", config(save_every=0), model)
    assert result.interrupted and result.step == 3
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-00000003"]
    assert not (tmp_path / "cut/model.safetensors").exists()
    assert signal.getsignal(signal.SIGTERM) == before
    assert run(tmp_path / "cut", config(save_every=0), resume=True).step == 6
    assert same(weights(tmp_path / "cut"), weights(tmp_path / "full"))


# ------------------------------------------------------------------------------- safe loading
def test_trainer_state_loads_weights_only_and_refuses_pickled_code(tmp_path):
    out = tmp_path / "run"
    run(out, config(max_steps=1))
    path = latest_checkpoint(out) / TRAINER_STATE_NAME
    assert torch.load(path, weights_only=True)["format_version"] == ctxlm.checkpoint.FORMAT_VERSION
    torch.save({"step": 1, "payload": Exploit()}, path)
    with pytest.raises(CtxlmError, match=r"trainer_state.pt: cannot read the training state"):
        load_trainer_state(latest_checkpoint(out))


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo unsafe",))


def test_a_newer_format_is_refused(tmp_path):
    out = tmp_path / "run"
    run(out, config(max_steps=1))
    checkpoint = latest_checkpoint(out)
    state = torch.load(checkpoint / TRAINER_STATE_NAME, weights_only=True)
    torch.save({**state, "format_version": 99}, checkpoint / TRAINER_STATE_NAME)
    with pytest.raises(CtxlmError, match=r"written by a newer ctxlm \(format 99; this one reads up to 1\)"):
        load_trainer_state(checkpoint)
    save_file(weights(out), str(out / "model.safetensors"), metadata={"format": "pt", "format_version": "99"})
    write_manifest(out, list(read_manifest(out)["files"]))  # as the newer ctxlm wrote them
    with pytest.raises(CtxlmError, match=r"model.safetensors: written by a newer ctxlm"):
        load_model_dir(out)


def test_weights_of_another_vocabulary_family_or_architecture_are_refused(tmp_path):
    out = tmp_path / "run"
    run(out, config(max_steps=1))
    load = ctxlm.checkpoint.load_weights_file
    with pytest.raises(CtxlmError, match=r"the checkpoint's vocab_size is 60, the config says 80"):
        load(tiny_model(vocab_size=80), out)  # the tokenizer grew
    with pytest.raises(CtxlmError, match=r"the checkpoint's decoder_layers is 1, the config says 2"):
        load(tiny_model(decoder_layers=2), out)
    glm = build_model(
        named_model_config(
            "glm-tiny", vocab_size=VOCAB, d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_position_embeddings=32
        )
    )
    with pytest.raises(CtxlmError, match=r"a palm checkpoint cannot load into a glm model"):
        load(glm, out)
    load(tiny_model(dropout=0.0), out)  # dropout is no part of the architecture


# ------------------------------------------------------------------------------- validation sample
def test_validation_scores_a_fixed_sample_spread_over_all_held_out_examples():
    """8 of 100 examples: sorted, distinct, the same every time, reaching past the first 8 (and
    covering both halves); `evaluate` scores exactly those; all of them when fewer are held out."""
    chosen = validation_sample(100, 8)
    assert chosen.tolist() == sorted(set(chosen.tolist())) and len(chosen) == 8
    assert np.array_equal(chosen, validation_sample(100, 8))
    assert chosen.min() < 50 <= chosen.max()
    assert validation_sample(5, 8).tolist() == [0, 1, 2, 3, 4]

    class Numbered:
        def __len__(self):
            return 100

        def example(self, index, epoch=0):
            return {"input_ids": np.array([index])}

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.seen = torch.nn.Parameter(torch.zeros(1)), []

        def forward(self, input_ids):
            self.seen += input_ids[:, 0].tolist()
            return type("Out", (), {"metrics": {"x_sum": torch.tensor(1.0), "x_count": torch.tensor(1)}})

    recorder = Recorder()
    evaluate(recorder, Numbered(), 4, 0, max_batches=2)
    assert recorder.seen == chosen.tolist()
