"""What a new user meets (issue 21): every mistake is one `error: ...` line naming the fix (exit
status 2, no traceback), checked before any work; and what used to fail now does the right thing
(yes/no flags, the model's own source field, palm-mini's fragment length, cloze's default dataset,
a rerun after a failed `compare` start, `python -m ctxlm`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_PALM_MODEL, run_cli, wiki_slice
from ctxlm import compare as compare_module
from ctxlm.cli import build_parser, main
from ctxlm.families.glm import GlmConfig
from ctxlm.config_loading import load_pretrain_config
from ctxlm.errors import CtxlmError
from ctxlm.models.glm import GlmModel
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tasks.cloze import GlmClozeModel
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")


run = run_cli


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    """A Wikipedia slice, 16 Gigaword pairs (also as text/headline rows), a tokenizer trained on
    both, and a tiny PALM config."""
    root = tmp_path_factory.mktemp("cli_errors")
    wiki = wiki_slice(root / "wiki.txt", 300)
    lines = (data_dir / "summarization/gigaword/train.jsonl").read_text(encoding="utf-8").splitlines()[:16]
    pairs = [json.loads(line) for line in lines]
    write_rows(root / "giga.jsonl", pairs)
    write_rows(root / "renamed.jsonl", [{"text": p["document"], "headline": p["summary"]} for p in pairs])
    (root / "giga.txt").write_text("".join(p["document"] + "\n\n" for p in pairs), encoding="utf-8")
    tokenizer = train_tokenizer([wiki, root / "giga.txt"], 600, root / "tok", min_frequency=1)
    (root / "tiny.yaml").write_text(TINY_PALM_MODEL, encoding="utf-8")
    return root, tokenizer, pairs


@pytest.fixture(scope="module")
def models(setup):
    """Two tiny Gigaword models (one step each): `giga` from the recipe's own layout, `renamed`
    from text/headline rows named with --source-field/--target-field."""
    root, _, _ = setup
    common = [
        "--config",
        root / "tiny.yaml",
        "--tokenizer",
        root / "tok",
        "--recipe",
        "gigaword",
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert main([str(a) for a in ["finetune", "--train", root / "giga.jsonl", "--out", root / "giga", *common]]) == 0
    assert (
        main(
            [
                str(a)
                for a in [
                    "finetune",
                    "--train",
                    root / "renamed.jsonl",
                    "--source-field",
                    "text",
                    "--target-field",
                    "headline",
                    "--out",
                    root / "renamed",
                    *common,
                ]
            ]
        )
        == 0
    )
    return root / "giga", root / "renamed"


# ------------------------------------------------------------------------------- 1. boolean flags
@pytest.mark.parametrize(
    "text, value", [("yes", True), ("No", False), ("TRUE", True), ("false", False), ("1", True), ("0", False)]
)
def test_boolean_flags_take_yes_no_true_false_1_0(text, value):
    args = build_parser().parse_args(
        [
            "generate",
            "--model",
            "m",
            "--block-subword-loops",
            text,
            "--block-word-repeats",
            text,
            "--early-stopping",
            text,
        ]
    )
    assert (args.block_subword_loops, args.block_word_repeats, args.early_stopping) == (value, value, value)
    assert build_parser().parse_args(["infill", "--model", "m", "--early-stopping", "Never"]).early_stopping == "never"


@pytest.mark.parametrize("flag", ["--block-subword-loops", "--block-word-repeats", "--early-stopping"])
def test_another_word_for_a_boolean_flag_is_a_usage_error(capsys, flag):
    code, line = run(capsys, "generate", "--model", "m", "--text", "x", flag, "maybe")
    assert code == 2 and f"argument {flag}: expected yes/no, true/false" in line and "'maybe'" in line


# ------------------------------------------------------------------------------- 2. compare's budget
def compare_args(root: Path, out: Path, *more) -> list:
    return [
        "compare",
        "--corpus",
        root / "wiki.txt",
        "--tokenizer",
        root / "tok",
        "--task",
        "gigaword",
        "--train",
        root / "giga.jsonl",
        "--valid",
        root / "giga.jsonl",
        "--config",
        root / "tiny.yaml",
        "--objectives",
        "palm",
        "--seeds",
        "1",
        "--no-plots",
        "--out",
        out,
        *more,
    ]


@pytest.mark.parametrize("budget", [("--budget-minutes", "0"), ("--budget-tokens", "-5"), ("--budget-minutes", "nan")])
def test_compare_budget_must_be_positive(setup, tmp_path, capsys, budget):
    root, _, _ = setup
    code, line = run(capsys, *compare_args(root, tmp_path / "cmp", *budget))
    assert code == 2 and f"must be > 0 ({budget[0]})" in line
    assert not (tmp_path / "cmp").exists()


# ------------------------------------------------------------------------------- 3. field errors
def test_a_field_error_names_file_line_fields_and_the_flags(setup, tmp_path, capsys):
    """A Gigaword recipe on text/headline rows: the file and line, the fields looked for (and whose),
    the row's fields and --source-field/--target-field; no reader function names. The same
    for a row with the source but no target."""
    root, _, pairs = setup
    common = [
        "finetune",
        "--config",
        root / "tiny.yaml",
        "--tokenizer",
        root / "tok",
        "--recipe",
        "gigaword",
        "--out",
        tmp_path / "o",
        "--max-steps",
        "1",
        "--no-progress",
        "--device",
        "cpu",
    ]
    code, line = run(capsys, *common, "--train", root / "renamed.jsonl")
    assert code == 2 and line.startswith(f"error: {root / 'renamed.jsonl'}:1: ")
    assert "document/summary (Gigaword, XSum)" in line and "['headline', 'text']" in line
    assert "--source-field and --target-field" in line and "read_" not in line
    half = write_rows(tmp_path / "half.jsonl", [{"document": p["document"], "title": p["summary"]} for p in pairs])
    code, line = run(capsys, *common, "--train", half)
    assert code == 2 and f"{half}:1: field 'summary' missing (the target)" in line
    assert "'document', 'title'" in line and "--target-field" in line


# ------------------------------------------------------------------------------- 4. generate's source field
def predictions(path: Path) -> list[str]:
    return [json.loads(line)["prediction"] for line in path.read_text(encoding="utf-8").splitlines()]


def test_generate_reads_the_field_the_models_task_reads(setup, models, tmp_path, capsys):
    """A Gigaword model decodes `document` rows without --source-field, as with it; --source-field
    still picks another field; a model fine-tuned with --source-field text reads `text`."""
    _, _, pairs = setup
    giga, renamed = models
    documents = [p["document"] for p in pairs[:3]]
    decode = ["--beam", "1", "--max-length", "3", "--device", "cpu"]

    def generate(model, rows, *flags) -> list[str]:
        source = write_rows(tmp_path / "in.jsonl", rows)
        assert run(
            capsys, "generate", "--model", model, "--input", source, "--output", tmp_path / "out.jsonl", *decode, *flags
        ) == (0, "")
        return predictions(tmp_path / "out.jsonl")

    by_default = generate(giga, [{"document": d, "id": i} for i, d in enumerate(documents)])
    assert len(by_default) == 3
    assert generate(giga, [{"document": d} for d in documents], "--source-field", "document") == by_default
    assert generate(giga, [{"document": "x", "body": d} for d in documents], "--source-field", "body") == by_default
    assert generate(renamed, [{"text": d} for d in documents]) == generate(
        renamed, [{"text": d} for d in documents], "--source-field", "text"
    )
    write_rows(tmp_path / "in.jsonl", [{"body": d} for d in documents])
    code, line = run(capsys, "generate", "--model", giga, "--input", tmp_path / "in.jsonl", *decode)
    assert code == 2 and f"{tmp_path / 'in.jsonl'}:1: field 'document' missing" in line
    assert "the row has 'body'" in line and "--source-field" in line


# ------------------------------------------------------------------------------- 5. checked before any work
def test_a_device_that_is_not_there_is_refused_before_the_corpus_is_read(setup, tmp_path, capsys):
    root, _, _ = setup
    code, line = run(
        capsys,
        "pretrain",
        "--corpus",
        root / "wiki.txt",
        "--tokenizer",
        root / "tok",
        "--config",
        root / "tiny.yaml",
        "--out",
        tmp_path / "run",
        "--cache-dir",
        tmp_path / "cache",
        "--device",
        "gpu",
    )
    assert code == 2 and line == "error: device 'gpu': expected auto, cpu, cuda or cuda:N"
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "verb, flag",
    [
        (["generate", "--text", "x", "--model"], "--model"),
        (["tokenizer", "train", "--vocab-size", "100", "--out", "t", "--corpus"], "--corpus"),
        (["finetune", "--config", "{root}/tiny.yaml", "--tokenizer", "{root}/tok", "--out", "o", "--train"], "--train"),
        (["evaluate", "--pred", "{root}/giga.jsonl", "--ref"], "--ref"),
        (
            [
                "compare",
                "--corpus",
                "{root}/wiki.txt",
                "--tokenizer",
                "{root}/tok",
                "--task",
                "gigaword",
                "--valid",
                "{root}/giga.jsonl",
                "--budget-tokens",
                "10",
                "--out",
                "o",
                "--train",
            ],
            "--train",
        ),
        (["convert", "--out", "o", "--to-hf"], "--to-hf"),
    ],
)
def test_an_input_that_does_not_exist_is_named_with_its_flag(setup, tmp_path, capsys, monkeypatch, verb, flag):
    root, _, _ = setup
    monkeypatch.chdir(tmp_path)
    code, line = run(capsys, *[word.format(root=root) for word in verb], tmp_path / "absent.jsonl")
    assert code == 2 and line == f"error: {flag} {tmp_path / 'absent.jsonl'}: no such file or directory"
    assert sorted(tmp_path.iterdir()) == []  # nothing written


# ------------------------------------------------------------------------------- 6. palm-mini
def test_named_configs_size_the_example_length_to_their_positions(tmp_path):
    """palm-mini (256 positions) gets fragment_length 256, palm-tiny keeps the default 500; a YAML
    that gives a length keeps it."""
    assert load_pretrain_config("palm-mini").data.fragment_length == 256
    assert load_pretrain_config("palm-tiny").data.fragment_length == 500
    (tmp_path / "a.yaml").write_text(TINY_PALM_MODEL, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(TINY_PALM_MODEL + "data:\n  fragment_length: 64\n", encoding="utf-8")
    assert [load_pretrain_config(str(tmp_path / n)).data.fragment_length for n in ("a.yaml", "b.yaml")] == [128, 64]
    glm = tmp_path / "glm.yaml"
    glm.write_text("model:\n  base: glm-tiny\n  max_position_embeddings: 96\n", encoding="utf-8")
    assert load_pretrain_config(str(glm)).data.max_length == 96


def test_palm_mini_pretrains_with_its_default_fragment_length(setup, tmp_path, capsys):
    root, _, _ = setup
    code, line = run(
        capsys,
        "pretrain",
        "--config",
        "palm-mini",
        "--corpus",
        root / "wiki.txt",
        "--tokenizer",
        root / "tok",
        "--out",
        tmp_path / "run",
        "--cache-dir",
        tmp_path / "cache",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--eval-batches",
        "1",
        "--no-progress",
        "--device",
        "cpu",
    )
    assert (code, line) == (0, "")
    assert json.loads((tmp_path / "run/run.json").read_text())["data"]["fragment_length"] == 256
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "palm-mini" in capsys.readouterr().out


def test_stage_two_from_a_smaller_model_names_the_fragment_length_flag(setup, tmp_path, capsys):
    """`--init` a model of 128 positions with the default config (palm-tiny's fragment length 500):
    one line naming --fragment-length, which fixes it."""
    root, _, _ = setup
    common = [
        "--corpus",
        root / "wiki.txt",
        "--cache-dir",
        tmp_path / "cache",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--eval-batches",
        "1",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert run(
        capsys,
        "pretrain",
        "--config",
        root / "tiny.yaml",
        "--tokenizer",
        root / "tok",
        "--stage",
        "mlm",
        "--out",
        tmp_path / "s1",
        *common,
    ) == (0, "")
    code, line = run(capsys, "pretrain", "--init", tmp_path / "s1", "--out", tmp_path / "s2", *common)
    assert code == 2 and "max_position_embeddings 128" in line and "--fragment-length" in line
    assert run(
        capsys, "pretrain", "--init", tmp_path / "s1", "--out", tmp_path / "s2", "--fragment-length", "128", *common
    ) == (0, "")


# ------------------------------------------------------------------------------- 7. cloze's default dataset
def test_evaluate_cloze_defaults_to_the_models_dataset(setup, data_dir, tmp_path, capsys):
    """A cloze model fine-tuned on RTE (head.json's task) is scored on RTE without --dataset, as
    with it; a plain GLM needs --dataset."""
    _, tokenizer, _ = setup
    config = model_config_for_tokenizer(
        GlmConfig(d_model=32, num_layers=1, num_heads=2, ffn_dim=64, max_position_embeddings=256), tokenizer
    )
    torch.manual_seed(0)
    GlmClozeModel(config, task="RTE", max_length=256).save_pretrained(tmp_path / "rte", tokenizer)
    GlmModel(config).save_pretrained(tmp_path / "glm", tokenizer)
    common = ["evaluate", "--task", "cloze", "--data-dir", data_dir / "nlu", "--limit", "4", "--device", "cpu"]
    scores = []
    for extra in ([], ["--dataset", "superglue/RTE"]):
        assert run(capsys, *common, "--model", tmp_path / "rte", "--output", tmp_path / "s.json", *extra) == (0, "")
        scores.append(json.loads((tmp_path / "s.json").read_text()))
    assert scores[0] == scores[1] and scores[0]["examples"] == 4
    code, line = run(capsys, *common, "--model", tmp_path / "glm")
    assert code == 2 and "give --dataset superglue/<Task>" in line


# ------------------------------------------------------------------------------- 8. compare's settings.json
def test_a_failed_compare_start_does_not_block_the_fixed_rerun(setup, tmp_path, capsys, monkeypatch):
    """settings.json is written once the inputs are checked (not after a field error); a start that
    failed before any work is rerun with another config; once there is work, another config is
    refused naming only what changed, `key: old -> new`."""
    root, _, _ = setup
    out = tmp_path / "cmp"
    code, line = run(capsys, *compare_args(root, out, "--budget-tokens", "100", "--train", root / "renamed.jsonl"))
    assert code == 2 and "renamed.jsonl:1: unrecognised summarization layout" in line and not out.exists()

    def fail_in_the_first_cell(self, objective, seed):
        raise CtxlmError(f"failed in {objective} seed {seed}")

    monkeypatch.setattr(compare_module.Comparison, "run_cell", fail_in_the_first_cell)
    first = run(capsys, *compare_args(root, out, "--budget-tokens", "100"))
    assert first == (2, "error: failed in palm seed 0")
    other = tmp_path / "other.yaml"
    other.write_text(
        TINY_PALM_MODEL.replace("d_model: 32", "d_model: 16") + "data:\n  fragment_length: 64\n", encoding="utf-8"
    )
    assert run(capsys, *compare_args(root, out, "--budget-tokens", "100", "--config", other)) == first
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["config"]["model"]["d_model"], settings["config"]["data"]["fragment_length"]) == (16, 64)

    (out / "cells/palm-seed0").mkdir(parents=True)
    write_rows(out / "cells/palm-seed0/result.json", [{}])  # a finished cell: work a rerun keeps
    code, line = run(capsys, *compare_args(root, out, "--budget-tokens", "100"))
    assert code == 2 and line == (
        f"error: {out}: the comparison there was started with another 'config' "
        "(config.model.d_model: 16 -> 32; config.data.fragment_length: 64 -> 128); "
        "rerun with those or use a new --out"
    )


# ------------------------------------------------------------------------------- 9. python -m ctxlm
@pytest.mark.slow  # a fresh interpreter (imports torch)
def test_python_dash_m_ctxlm_runs_the_cli(tmp_path):
    """`python -m ctxlm` (and so `torchrun -m ctxlm`) is the CLI: here its one-line error."""
    done = subprocess.run(
        [sys.executable, "-m", "ctxlm", "generate", "--model", str(tmp_path / "absent"), "--text", "x"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr + done.stdout
    assert done.stderr == f"error: --model {tmp_path / 'absent'}: no such file or directory\n"


@pytest.mark.parametrize(
    "verb, flag", [("generate", "--limit"), ("evaluate", "--limit"), ("finetune", "--train-limit")]
)
def test_a_row_limit_must_be_a_positive_number(capsys, verb, flag):
    """`--limit -1` would slice from the end: refused in one line, as argparse's usage error."""
    with pytest.raises(SystemExit) as done:
        main([verb, "--model" if verb != "finetune" else "--out", "m", flag, "-1"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "expected a number of rows (1 or more), got '-1'" in err and "Traceback" not in err
