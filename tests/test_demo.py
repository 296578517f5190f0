"""`make demo` (ctxlm.demo): a stage that SIGTERM stopped ends the demo instead of feeding the next."""

import json

import pytest

import ctxlm.pretraining
import ctxlm.tasks.seq2seq
from ctxlm import demo
from ctxlm.training import TrainResult
from conftest import TINY_PALM_MODEL


def tiny_demo_args(tmp_path, monkeypatch) -> list[str]:
    """The demo's flags for a 200-story corpus and the tiny PALM model, writing into tmp_path/out on
    the CPU (the token store cached under tmp_path)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "".join(f"Story {i} is about a river.\nIt flows north.\nThe town sits on it.\n\n" for i in range(200)),
        encoding="utf-8",
    )
    model = tmp_path / "model.yaml"
    model.write_text(TINY_PALM_MODEL, encoding="utf-8")
    monkeypatch.setenv("CTXLM_CACHE", str(tmp_path / "cache"))
    return ["--corpus", str(corpus), "--model", str(model), "--out", str(tmp_path / "out"), "--device", "cpu"]


def test_sigterm_in_a_stage_stops_the_demo(tmp_path, monkeypatch, capsys):
    """The training loop answers SIGTERM with a checkpoint and an `interrupted` result; the demo
    used to go on to stage 2 from that half-trained stage 1. Now it stops there (exit status 130)."""
    calls = []

    def stopped_pretraining(*args, **kwargs):
        calls.append(kwargs.get("stage"))
        return TrainResult(step=3, interrupted=True)

    def no_finetuning(*args, **kwargs):
        pytest.fail("fine-tuning started after an interrupted pre-training stage")

    monkeypatch.setattr(ctxlm.pretraining, "pretrain", stopped_pretraining)
    monkeypatch.setattr(ctxlm.tasks.seq2seq, "finetune", no_finetuning)
    code = demo.main([*tiny_demo_args(tmp_path, monkeypatch), "--vocab-size", "300"])
    assert code == 130 and calls == ["mlm"]
    assert "stopped by a signal at step 3" in capsys.readouterr().err


@pytest.mark.parametrize("flag, dropout", [([], 0.0), (["--dropout", "0.1"], 0.1)])
def test_the_demo_trains_its_models_with_its_dropout(tmp_path, monkeypatch, flag, dropout):
    """The named config's dropout is 0.1; the demo's models see each example about twice at most and
    train without it unless --dropout says otherwise (both attention and residual dropout)."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "".join(f"Story {i} is about a river.\nIt flows north.\n\n" for i in range(100)), encoding="utf-8"
    )
    monkeypatch.setenv("CTXLM_CACHE", str(tmp_path / "cache"))
    configs = []

    def first_stage_only(corpus, out, config, **kwargs):
        configs.append(config.model)
        return TrainResult(step=1, interrupted=True)

    monkeypatch.setattr(ctxlm.pretraining, "pretrain", first_stage_only)
    code = demo.main(
        ["--corpus", str(corpus), "--vocab-size", "300", "--out", str(tmp_path / "out"), "--device", "cpu", *flag]
    )
    assert code == 130 and len(configs) == 1
    assert (configs[0].dropout, configs[0].attention_dropout, configs[0].d_model) == (dropout, dropout, 128)


@pytest.mark.slow
def test_the_demo_runs_end_to_end_at_a_tiny_size(tmp_path, monkeypatch, capsys):
    """`make demo`'s whole path (tokenizer, both pre-training stages, Table 1 continuations, Gigaword
    fine-tuning of the pre-trained and the scratch model, decoding, ROUGE beside lead-8) with a tiny
    model and a few steps each: the wiring `make demo` runs at palm-mini size, without its 18 minutes."""
    gigaword = tmp_path / "gigaword"
    gigaword.mkdir()
    for name, count in (("train.jsonl", 24), ("valid.jsonl", 6)):
        rows = (
            json.dumps(
                {"document": f"the river {i} flows north past the town on monday .", "summary": f"river {i} flows"}
            )
            for i in range(count)
        )
        (gigaword / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    steps = ["--mlm-steps", "2", "--generation-steps", "2", "--finetune-steps", "2", "--batch-size", "4"]
    code = demo.main(
        [
            *tiny_demo_args(tmp_path, monkeypatch),
            *("--vocab-size", "200", "--fragment-length", "40", "--gigaword", str(gigaword), "--eval-pairs", "4"),
            *steps,
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    for line in (
        "[1/5] tokenizer",
        "[2/5] stage 1",
        "[3/5] stage 2",
        "[4/5] pre-training results",
        "Table 1, example 2",
        "Gigaword validation (4 pairs)",
        "pre-trained (PALM)",
        "from scratch",
        "the article's first 8 words",
    ):
        assert line in printed
    assert (tmp_path / "out" / "stage2-generation" / "metrics.jsonl").is_file()
    assert (tmp_path / "out" / "gigaword-scratch").is_dir() and "done in" in printed
