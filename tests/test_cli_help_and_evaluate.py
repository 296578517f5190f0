"""The CLI says what it will do and does what it says (issue 21): `--help` shows every default,
`evaluate` warns when a model is scored on another task's data and applies `--limit` to
`--pred/--ref`, `tokenizer train --vocab-size N` writes N tokens, `generate --limit N` decodes N
rows; classification heads report accuracy (no perplexity of a classification loss); bootstrap
intervals print consistently with their p-values."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import numpy as np
import pytest
import torch

from ctxlm.checkpoint import build_model, save_model_dir
from ctxlm.cli import build_parser, main
from ctxlm.config import GenerationConfig, TrainConfig
from ctxlm.config_loading import named_model_config
from ctxlm.metrics import compute_metrics
from ctxlm.models.glm import GlmModel
from ctxlm.models.unilm import UnilmClassifier, UnilmModel
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.report import format_difference, paired_bootstrap
from ctxlm.tasks.cloze import GlmClozeModel
from ctxlm.tokenization import TextTokenizer, train_tokenizer
from ctxlm.training import summarize_nll

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def wide(monkeypatch):
    """Help lines unwrapped (argparse wraps to $COLUMNS, also at hyphens)."""
    monkeypatch.setenv("COLUMNS", "1000")


def help_entries(raw: str) -> dict[str, str]:
    """Flag → its help text (line wrapping undone) in an argparse --help text."""
    entries, current = {}, None
    for line in raw.splitlines():
        start = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if start:
            current = [start.group(2) or ""]
            entries.update({word.rstrip(","): current for word in start.group(1).split() if word.startswith("-")})
        elif current is not None and line.startswith("   "):
            current.append(line.strip())
        else:
            current = None
    return {flag: " ".join(" ".join(parts).split()) for flag, parts in entries.items()}


def help_text(capsys, *verb: str) -> tuple[str, dict[str, str]]:
    """A verb's --help: the whole text (whitespace normalised) and its flags' help."""
    with pytest.raises(SystemExit) as done:
        main([*verb, "--help"])
    assert done.value.code == 0
    raw = capsys.readouterr().out
    return " ".join(raw.split()), help_entries(raw)


# ---------------------------------------------------------------------------------------- --help
def test_pretrain_help_shows_train_config_defaults_and_stage(capsys, wide):
    _, flags = help_text(capsys, "pretrain")
    assert "(default: 1000)" in flags["--max-steps"]
    assert "(default: generation)" in flags["--stage"]
    for f in dataclasses.fields(TrainConfig):  # every value default, from the dataclass
        if f.default is not None and not isinstance(f.default, bool):
            value = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            assert f"(default: {value}" in flags["--" + f.name.replace("_", "-")], f.name
    assert flags["--batch-size"] == "sequences per micro-batch (default: 8)"
    assert flags["--lr"].endswith("(default: 0.0001; pre-training: the model family's)")
    assert "(default: 100;" in flags["--warmup-steps"] and "(default: 200)" in flags["--eval-every"]
    assert "(default: 500)" in flags["--save-every"] and "(default: palm-tiny)" in flags["--config"]


def every_parser(parser: argparse.ArgumentParser, name: str = "ctxlm"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for verb, sub in action.choices.items():
                yield from every_parser(sub, f"{name} {verb}")


def test_every_flag_with_a_default_says_it_and_none_prints_none(wide):
    for name, parser in every_parser(build_parser()):
        raw = parser.format_help()
        assert "default: None" not in raw and "default: False" not in raw, name
        flags = help_entries(raw)
        for action in parser._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
                assert "default" in flags[action.option_strings[-1]].lower(), (name, action.option_strings)


def test_recipe_and_model_defaults_are_named(capsys, wide):
    finetune, _ = help_text(capsys, "finetune")
    assert "recipe's train: section" in finetune and "cloze: PET's few-shot settings (batch_size 16" in finetune
    _, generate = help_text(capsys, "generate")
    beam, length = GenerationConfig().num_beams, GenerationConfig().max_new_tokens
    assert generate["--beam"].endswith(f"(default: the model's generation.json, else {beam})")
    assert generate["--max-length"].endswith(f"(default: the model's generation.json, else {length})")
    assert generate["--seed"].endswith("(default: the model's generation.json, else none)")
    assert generate["--batch-size"].endswith("(default: 16)")


# ---------------------------------------------------------------------------------------- evaluate --limit
def test_evaluate_limit_applies_to_pred_and_ref(tmp_path, capsys):
    predictions = ["the cat sat", "a dog ran home", "rain fell"]
    references = ["the cat sat down", "the dog ran home", "heavy rain fell today", "extra one", "extra two"]
    (tmp_path / "pred.jsonl").write_text("".join(json.dumps({"prediction": p}) + "\n" for p in predictions))
    (tmp_path / "ref.txt").write_text("\n".join(references) + "\n")
    argv = [
        "evaluate",
        "--pred",
        str(tmp_path / "pred.jsonl"),
        "--ref",
        str(tmp_path / "ref.txt"),
        "--metrics",
        "rouge1,rougeL",
        "--output",
        str(tmp_path / "out.json"),
    ]
    assert main(argv) == 2 and "3 predictions but" in capsys.readouterr().err  # without --limit: 3 vs 5 rows
    for limit in (3, 2):
        assert main([*argv, "--limit", str(limit)]) == 0
        scores = json.loads((tmp_path / "out.json").read_text())
        assert scores == pytest.approx(compute_metrics(predictions[:limit], references[:limit], ["rouge1", "rougeL"]))
    assert scores != pytest.approx(compute_metrics(predictions, references[:3], ["rouge1", "rougeL"]))


# ---------------------------------------------------------------------------------------- tokenizer size
def test_tokenizer_train_writes_the_requested_size(data_dir, tmp_path, capsys):
    out = tmp_path / "tok"
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--corpus",
                str(data_dir / "pretrain/wikipedia/sents_000.txt"),
                "--vocab-size",
                "8000",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    tokenizer = TextTokenizer.load(out)
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    assert tokenizer.vocab_size == len(vocab) == 8000 and vocab["<unk>"] == 7999  # the marker is the last of 8000
    assert "(8,000 tokens)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def nlu_tokenizer(data_dir, tmp_path_factory):
    nlu = data_dir / "nlu"
    return train_tokenizer(
        [
            nlu / "superglue/CB/train.jsonl",
            nlu / "superglue/RTE/train.jsonl",
            nlu / "glue/MRPC/msr_paraphrase_train.txt",
        ],
        600,
        tmp_path_factory.mktemp("nlu_tok"),
        format="paragraphs",
    )


def tiny(name: str, tokenizer, **sizes):
    torch.manual_seed(0)
    return model_config_for_tokenizer(
        named_model_config(name, d_model=16, num_layers=1, num_heads=2, ffn_dim=32, **sizes), tokenizer
    )


def mismatch_warnings(record) -> list[str]:
    return [str(w.message) for w in record if "fine-tuned on" in str(w.message)]


def test_cloze_evaluate_warns_on_another_tasks_data(data_dir, nlu_tokenizer, tmp_path, recwarn):
    model = GlmClozeModel(GlmModel(tiny("glm-tiny", nlu_tokenizer, max_position_embeddings=128)), task="CB")
    save_model_dir(tmp_path / "cb", model, nlu_tokenizer)
    argv = [
        "evaluate",
        "--task",
        "cloze",
        "--model",
        str(tmp_path / "cb"),
        "--data-dir",
        str(data_dir / "nlu"),
        "--limit",
        "3",
        "--output",
        str(tmp_path / "scores.json"),
        "--device",
        "cpu",
    ]
    assert main([*argv, "--dataset", "superglue/CB"]) == 0 and not mismatch_warnings(recwarn)
    assert json.loads((tmp_path / "scores.json").read_text())["examples"] == 3  # --limit applies to cloze too
    assert main([*argv, "--dataset", "superglue/RTE"]) == 0
    (message,) = mismatch_warnings(recwarn)
    assert message == f"{tmp_path / 'cb'}: fine-tuned on superglue/CB, scored on superglue/RTE"


def test_classify_evaluate_warns_on_another_dataset(data_dir, nlu_tokenizer, tmp_path, recwarn):
    model = UnilmClassifier(UnilmModel(tiny("unilm-tiny", nlu_tokenizer)), num_labels=2)
    save_model_dir(tmp_path / "mrpc", model, nlu_tokenizer)
    (tmp_path / "mrpc/classification.json").write_text(json.dumps({"dataset": "glue/MRPC", "max_length": 64}))
    argv = [
        "evaluate",
        "--task",
        "classify",
        "--model",
        str(tmp_path / "mrpc"),
        "--data-dir",
        str(data_dir / "nlu"),
        "--limit",
        "4",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0 and main([*argv, "--dataset", "glue/MRPC"]) == 0 and not mismatch_warnings(recwarn)
    assert main([*argv, "--dataset", "superglue/RTE"]) == 0
    assert mismatch_warnings(recwarn) == [f"{tmp_path / 'mrpc'}: fine-tuned on glue/MRPC, scored on superglue/RTE"]


def test_generate_limit_decodes_the_first_rows(tmp_path, capsys):
    (tmp_path / "text.txt").write_text("the cat sat on the mat .\na dog ran home in the rain .\n" * 20)
    tokenizer = train_tokenizer(tmp_path / "text.txt", 150, min_frequency=1)
    torch.manual_seed(0)
    config = named_model_config(
        "palm-tiny",
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
    )
    model = save_model_dir(tmp_path / "model", build_model(model_config_for_tokenizer(config, tokenizer)), tokenizer)
    sources = ["the cat sat", "a dog ran", "the rain", "on the mat", "home"]
    rows = [json.dumps({"source": source, "id": i}) + "\n" for i, source in enumerate(sources)]
    (tmp_path / "in.jsonl").write_text("".join(rows))
    argv = [
        "generate",
        "--model",
        str(model),
        "--input",
        str(tmp_path / "in.jsonl"),
        "--beam",
        "2",
        "--max-length",
        "3",
        "--device",
        "cpu",
    ]
    assert main([*argv, "--output", str(tmp_path / "all.jsonl")]) == 0
    assert main([*argv, "--output", str(tmp_path / "two.jsonl"), "--limit", "2"]) == 0
    every = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    first = [json.loads(line) for line in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert len(every) == 5 and first == every[:2]


# ---------------------------------------------------------------------------------------- classification metrics
def test_classification_losses_report_no_perplexity():
    sums = {
        "cls_nll_sum": 6.0,
        "cls_tokens": 4.0,
        "cls_accuracy_sum": 3.0,
        "cls_accuracy_count": 4.0,
        "qa_nll_sum": 2.0,
        "qa_tokens": 2.0,
        "lm_nll_sum": 8.0,
        "lm_tokens": 4.0,
    }
    assert summarize_nll(sums, "valid/") == pytest.approx(
        {
            "valid/cls_loss": 1.5,
            "valid/cls_accuracy": 0.75,
            "valid/qa_loss": 1.0,
            "valid/lm_loss": 2.0,
            "valid/lm_ppl": float(np.exp(2.0)),
        }
    )


def test_classify_run_logs_accuracy_not_perplexity(data_dir, nlu_tokenizer, tmp_path):
    """finetune --task classify validates every step (one epoch of 32 rows, batch 32); the weights kept
    (lowest valid/cls_loss) score dev accuracy ×100 = that validation's cls_accuracy."""
    model_dir = tmp_path / "base"
    save_model_dir(model_dir, UnilmModel(tiny("unilm-tiny", nlu_tokenizer)), nlu_tokenizer)
    assert (
        main(
            [
                "finetune",
                "--task",
                "classify",
                "--dataset",
                "glue/MRPC",
                "--data-dir",
                str(data_dir / "nlu"),
                "--init",
                str(model_dir),
                "--out",
                str(tmp_path / "run"),
                "--max-steps",
                "3",
                "--lr",
                "1e-3",
                "--train-limit",
                "32",
                "--valid-limit",
                "24",
                "--max-length",
                "32",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert not any(key.endswith("_ppl") for row in rows for key in row)
    valid = [row for row in rows if "valid/cls_loss" in row]
    assert len(valid) == 3 and all(0 <= row["valid/cls_accuracy"] <= 1 for row in valid)
    best = min(valid, key=lambda row: row["valid/cls_loss"])
    dev = json.loads((tmp_path / "run/eval_dev.json").read_text())
    assert dev["accuracy"] == pytest.approx(100 * best["valid/cls_accuracy"])


# ---------------------------------------------------------------------------------------- report wording
def shown_bounds(text: str) -> tuple[float, float]:
    low, high = re.fullmatch(r"\S+ \[(\S+), (\S+)\]", text).groups()
    return float(low), float(high)


def test_interval_of_a_tie_heavy_bootstrap_includes_zero_as_p_says():
    """Two systems that differ on one example of 100: about a third of the resamples leave it out,
    a tie, so p is large and the 2.5% bound is exactly 0; it used to print "+0.00", which reads as
    excluding 0."""
    b = np.zeros((1, 100))
    a = b.copy()
    a[0, 7] = 5.0
    test = paired_bootstrap(a, b, resamples=1000)
    assert test.ci_low == 0 and test.p_value > 0.5
    text = format_difference(test.difference, test.ci_low, test.ci_high)
    assert text.startswith("+0.05 [0, +0.") and shown_bounds(text)[0] == 0


def test_interval_bound_that_only_rounds_to_zero_keeps_its_sign():
    """Every example 3e-5 better: p 0 and the interval excludes 0, so no bound may print as 0.00."""
    rng = np.random.default_rng(0)
    b = rng.random((2, 50))
    a = b + 3e-5 * (1 + rng.random((2, 50)))
    test = paired_bootstrap(a, b, resamples=200)
    assert test.p_value == 0 and test.ci_low > 0
    text = format_difference(test.difference, test.ci_low, test.ci_high)
    low, high = shown_bounds(text)
    assert 0 < low <= high and "0.00" not in text


@pytest.mark.parametrize("seed", range(20))
def test_shown_interval_excludes_zero_exactly_when_p_is_below_005(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 60))
    b = rng.random((1, n)).round(1)
    a = b + rng.choice([0.0, 0.0, 0.1, -0.1, 1e-4], size=(1, n)) * rng.integers(0, 2, size=(1, n))
    test = paired_bootstrap(a, b, resamples=400, seed=seed)
    low, high = shown_bounds(format_difference(test.difference, test.ci_low, test.ci_high))
    assert (low > 0 or high < 0) == (test.p_value < 0.05), (test, low, high)


def test_compare_report_row_prints_the_tie_bound_as_zero():
    """The report's results row of the issue's case: Δ 0.05, 2.5% bound 0 (a tie), p 0.674."""
    from ctxlm.report import _table_rows

    row = {
        "objective": "none",
        "parameters": 10,
        "tokens_seen": [5],
        "metrics": {"rougeL": [1.0]},
        "bootstrap": {"difference": 0.05, "ci_low": 0.0, "ci_high": 0.14, "p_value": 0.674, "resamples": 1000},
    }
    assert _table_rows([row], ["rougeL"], "rougeL")[0][-2:] == ["+0.05 [0, +0.14]", "0.674"]
