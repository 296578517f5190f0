import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CTXLM_SHARED", ROOT.parent / "shared"))
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The project's shared data (../shared/data); the suite needs it and fails without it."""
    assert DATA.is_dir(), f"shared data not found at {DATA} (set CTXLM_SHARED)"
    return DATA


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread is fastest, and avoids spin-waiting on a busy shared core.
    Modules of tiny-model tests opt in with `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def wiki_slice(out: Path, lines: int) -> Path:
    """The first `lines` lines (closed at a document end) of the shared Wikipedia sentences."""
    kept = []
    with open(DATA / "pretrain/wikipedia/sents_000.txt", encoding="utf-8") as handle:
        for line in handle:
            kept.append(line)
            if len(kept) >= lines and not line.strip():
                break
    out.write_text("".join(kept), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def pretrained_palm(tmp_path_factory):
    """palm-tiny after 150 steps of PALM stage 2 on a Wikipedia slice (≈2,000 fragments, L = 160),
    shared by the pre-training and fine-tuning tests; with its held-out loss before and after."""
    import torch

    from ctxlm.checkpoint import build_model
    from ctxlm.config import PretrainConfig, TrainConfig
    from ctxlm.families.palm import PalmDataConfig
    from ctxlm.config_loading import named_model_config
    from ctxlm.data.store import TokenStore
    from ctxlm.families.palm_data import prepare_palm_data
    from ctxlm.pretraining import model_config_for_tokenizer, pretrain
    from ctxlm.run_options import CorpusSpec
    from ctxlm.tokenization import train_tokenizer
    from ctxlm.training import evaluate

    root = tmp_path_factory.mktemp("pretrained_palm")
    path = wiki_slice(root / "wiki.txt", 8000)
    # 4,000 trained pieces and <unk>, as before `vocab_size` counted <unk> (3,999 pieces: a drop of 0.99 nats)
    tokenizer = train_tokenizer(path, 4001, root / "tok")
    config = PretrainConfig(
        model=named_model_config("palm-tiny", max_position_embeddings=256),
        train=TrainConfig(
            max_steps=150,
            batch_size=8,
            lr=1e-3,
            warmup_steps=30,
            eval_every=0,
            eval_batches=8,
            progress=False,
            save_every=0,
            bf16=True,
        ),
        data=PalmDataConfig(fragment_length=160, valid_fraction=0.05),
    )
    store = TokenStore.build([path], tokenizer, cache_dir=root / "cache", progress=False)
    heldout = prepare_palm_data(store, tokenizer, config.data, "generation", config.train.seed).valid
    torch.manual_seed(0)
    untrained = build_model(model_config_for_tokenizer(config.model, tokenizer))
    before = evaluate(untrained, heldout, 8, tokenizer.pad_id, max_batches=8)["lm_loss"]
    result = pretrain(
        CorpusSpec((path,), cache_dir=root / "cache"), root / "model", config, stage="generation", tokenizer=tokenizer
    )
    return {
        "dir": root / "model",
        "tokenizer": tokenizer,
        "config": config,
        "before": before,
        "after": result.final_metrics["valid/lm_loss"],
    }


# The `model:` section of a pre-training YAML for a PALM small enough for subprocess tests.
TINY_PALM_MODEL = """model:
  base: palm-tiny
  d_model: 32
  encoder_layers: 1
  decoder_layers: 1
  encoder_attention_heads: 2
  decoder_attention_heads: 2
  encoder_ffn_dim: 64
  decoder_ffn_dim: 64
  max_position_embeddings: 128
"""


# A stage-2 PALM run of a few steps without dropout (test_distributed.py, test_distributed_faults.py).
TWO_PROCESS_PALM = (
    TINY_PALM_MODEL
    + """  dropout: 0.0
  attention_dropout: 0.0
train:
  batch_size: 4
  warmup_steps: 1
  lr: 0.001
  progress: false
  eval_every: 0
  log_every: 1
"""
)


def run_cli(capsys, *args) -> tuple[int, str]:
    """`ctxlm ARGS`: (exit status, the one `error:` line, or "" when it succeeded)."""
    from ctxlm.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as done:  # argparse's usage errors
        code = done.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in (out + err).splitlines() if "error:" in line]
    assert len(errors) == (code != 0), errors
    return code, errors[0] if errors else ""
