"""The training loop and PALM pre-training end to end: learning, exact resume, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import wiki_slice
from ctxlm.checkpoint import list_checkpoints, load_model_dir
from ctxlm.cli import main
from ctxlm.config import PretrainConfig, TrainConfig
from ctxlm.families.palm import PalmDataConfig
from ctxlm.config_loading import named_model_config
from ctxlm.pretraining import pretrain
from ctxlm.run_options import CorpusSpec, RunOptions
from ctxlm.data.loader import rank_micro_batches
from ctxlm.tokenization import train_tokenizer
from ctxlm.training import BatchStream, collate, linear_schedule


@pytest.fixture(scope="module")
def corpus(data_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpus")
    path = wiki_slice(root / "wiki.txt", 4000)
    train_tokenizer(path, 1000, root / "tok")
    return path, root / "tok"


def tiny_config(**train) -> PretrainConfig:
    model = named_model_config(
        "palm-tiny",
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
    )
    values = dict(
        batch_size=4,
        lr=1e-3,
        warmup_steps=2,
        log_every=2,
        eval_every=0,
        eval_batches=2,
        progress=False,
        keep_checkpoints=0,
    )
    values.update(train)
    return PretrainConfig(
        model=model, train=TrainConfig(**values), data=PalmDataConfig(fragment_length=96, valid_fraction=0.05)
    )


def test_collate_pads_each_kind_of_field():
    """Labels pad with -100, ids with the pad id, boolean matrices with False in both dimensions."""
    examples = [
        {"input_ids": np.array([5, 6, 7]), "labels": np.array([1]), "mask": np.ones((2, 2), bool)},
        {"input_ids": np.array([8]), "labels": np.array([2, 3]), "mask": np.ones((3, 3), bool)},
    ]
    batch = collate(examples, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[1, -100], [2, 3]]
    assert batch["mask"][0].tolist() == [[True, True, False], [True, True, False], [False, False, False]]


def test_linear_schedule_warms_up_then_decays_to_zero():
    """The LR factor rises linearly over the warm-up, peaks at 1 and falls linearly to 0."""
    f = linear_schedule(4, 12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0 and f(8) == 0.5 and f(12) == 0.0


def test_batch_stream_is_a_permutation_per_epoch_and_shards_by_rank():
    """Every example appears once per epoch; two ranks read disjoint halves of the same order."""

    class Numbers:
        def __len__(self):
            return 12

        def example(self, index, epoch=0):
            return {"input_ids": np.array([index])}

    one = BatchStream(Numbers(), 3, seed=1)
    seen = np.concatenate([one.indices(m)[1] for m in range(4)])
    assert sorted(seen.tolist()) == list(range(12))
    assert one.indices(4)[0] == 1  # the fifth batch opens epoch 1
    ranks = [one.indices(g)[1] for r in range(2) for g in rank_micro_batches(0, 4, r, 2)]
    assert sorted(np.concatenate(ranks).tolist()) == list(range(12))


def test_resume_continues_exactly(corpus, tmp_path):
    """N steps, stop, resume N more ⇒ the same weights as 2N uninterrupted (dropout on, 2 micro-batches a step)."""
    path, tok = corpus
    config = tiny_config(max_steps=6, save_every=3, grad_accum=2)
    full = tmp_path / "full"
    cached = CorpusSpec((path,), cache_dir=tmp_path / "cache")
    pretrain(cached, full, config, stage="generation", tokenizer=tok)
    assert [p.name for p in list_checkpoints(full)] == ["step-00000003", "step-00000006"]

    interrupted = tmp_path / "interrupted"
    interrupted.mkdir()
    shutil.copytree(full / "checkpoints/step-00000003", interrupted / "checkpoints/step-00000003")
    result = pretrain(cached, interrupted, config, stage="generation", tokenizer=tok, run=RunOptions(resume=True))
    assert result.step == 6
    a, b = load_file(str(full / "model.safetensors")), load_file(str(interrupted / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    rows = [json.loads(line) for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [4, 6]  # only what the resumed run did
    assert [r["step"] for r in rows if "valid/lm_loss" in r] == [6]


def test_stage_two_starts_from_stage_one_and_generates(corpus, tmp_path):
    """Stage 1 (MLM) then stage 2 from it, through the CLI; the model directory loads and generates."""
    path, tok = corpus
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model:\n  base: palm-tiny\n  d_model: 32\n  encoder_layers: 1\n  decoder_layers: 1\n"
        "  encoder_attention_heads: 2\n  decoder_attention_heads: 2\n  encoder_ffn_dim: 64\n"
        "  decoder_ffn_dim: 64\n  max_position_embeddings: 128\n"
        "train:\n  batch_size: 4\n  warmup_steps: 1\n  progress: false\n"
        "data:\n  fragment_length: 96\n  valid_fraction: 0.05\n",
        encoding="utf-8",
    )
    common = ["--corpus", str(path), "--max-steps", "3", "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert (
        main(
            [
                "pretrain",
                "--stage",
                "mlm",
                "--config",
                str(config),
                "--tokenizer",
                str(tok),
                "--out",
                str(tmp_path / "s1"),
                *common,
            ]
        )
        == 0
    )
    stage1 = json.loads((tmp_path / "s1/metrics.jsonl").read_text().splitlines()[-1])
    assert "valid/mlm_loss" in stage1
    assert (
        main(
            [
                "pretrain",
                "--stage",
                "generation",
                "--config",
                str(config),
                "--init",
                str(tmp_path / "s1"),
                "--out",
                str(tmp_path / "s2"),
                *common,
            ]
        )
        == 0
    )
    s1, _ = load_model_dir(tmp_path / "s1")
    s2, tokenizer = load_model_dir(tmp_path / "s2")
    assert tokenizer is not None and s2.config == s1.config
    moved = [k for k, v in s2.state_dict().items() if not torch.equal(v, s1.state_dict()[k])]
    assert any(k.startswith("decoder.") for k in moved)
    assert (
        main(
            [
                "generate",
                "--model",
                str(tmp_path / "s2"),
                "--text",
                "The river flows.",
                "--max-length",
                "5",
                "--device",
                "cpu",
                "--bf16",
            ]
        )
        == 0
    )


@pytest.mark.slow
def test_palm_tiny_pretraining_lowers_held_out_loss(pretrained_palm):
    """palm-tiny, 150 steps of stage 2 on a Wikipedia slice (≈2,000 fragments of L = 160): the
    held-out continuation loss falls by more than 1.0 nat below the untrained model's."""
    assert pretrained_palm["after"] < pretrained_palm["before"] - 1.0, pretrained_palm


BAD_CORPORA = [
    ("rows.jsonl", b'{"text": "Fine."}\n{"text": "broken\n', r"rows\.jsonl:2: not valid JSON"),
    ("empty.txt", b"", r"empty\.txt: empty file"),
    ("latin1.txt", b"One sentence.\nCaf\xe9 au lait.\n", r"latin1\.txt:2: not valid UTF-8"),
]


@pytest.mark.parametrize("name, content, message", BAD_CORPORA, ids=[c[0] for c in BAD_CORPORA])
def test_bad_corpus_is_a_one_line_error_naming_file_and_line(corpus, tmp_path, capsys, name, content, message):
    """Malformed line, empty file, non-UTF-8: exit status 2 and one line on stderr naming the file (and line)."""
    _, tok = corpus
    bad = tmp_path / name
    bad.write_bytes(content)
    code = main(
        [
            "pretrain",
            "--corpus",
            str(bad),
            "--tokenizer",
            str(tok),
            "--out",
            str(tmp_path / "o"),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--max-steps",
            "1",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    import re

    assert re.search(message, err), err


def test_config_typo_names_the_key_and_keeps_finished_checkpoints(corpus, tmp_path, capsys):
    """A typo in a YAML config is one line naming file and key (with a suggestion); an existing run's
    checkpoints are untouched by the failed command."""
    path, tok = corpus
    out = tmp_path / "run"
    pretrain(
        CorpusSpec((path,), cache_dir=tmp_path / "cache"), out, tiny_config(max_steps=2, save_every=2), tokenizer=tok
    )
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: palm-tiny\ntrain:\n  lerning_rate: 0.001\n", encoding="utf-8")
    capsys.readouterr()  # the first run's progress lines
    code = main(["pretrain", "--corpus", str(path), "--config", str(bad), "--out", str(out), "--resume"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "bad.yaml: train: unknown key 'lerning_rate'" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before
    typo = main(["pretrain", "--corpus", str(path), "--config", "palm-tiyn", "--out", str(out)])
    assert typo == 2 and "unknown config 'palm-tiyn' (did you mean 'palm-tiny'?)" in capsys.readouterr().err
