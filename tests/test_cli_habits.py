"""CLI conventions: --version, a flag for every TrainConfig field, comma-separated metric lists,
NLU recipes in YAML, and run.json's provenance."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ctxlm import __version__
from ctxlm.cli import build_parser, main
from ctxlm.tasks import nlu_options
from ctxlm.cli_parser import _train_overrides
from ctxlm.config import TrainConfig
from ctxlm.errors import CtxlmError
from ctxlm.metrics import expand_metric_names
from ctxlm.provenance import provenance


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"ctxlm {__version__}\n"


def flag_values() -> tuple[list[str], dict]:
    """A command-line value for every TrainConfig field, different from its default and in its range."""
    argv, expected = [], {}
    for f in dataclasses.fields(TrainConfig):
        if isinstance(f.default, bool):
            argv.append(f"--{'no-' if f.default else ''}{f.name.replace('_', '-')}")
            expected[f.name] = not f.default
        else:
            if f.default is not None:
                value = type(f.default)(f.default + 3)
                if not f.metadata["range"].holds(value):  # a bounded field (adam_beta1, label_smoothing)
                    value = f.default / 2 or 0.5
            else:  # `X | None` fields
                value = {"int": 3, "float": 0.5}.get(str(f.type).split(" ")[0], "valid/lm_loss")
            argv += [f"--{f.name.replace('_', '-')}", str(value)]
            expected[f.name] = value
    return argv, expected


@pytest.mark.parametrize("verb", [["pretrain", "--corpus", "c.txt"], ["finetune", "--task", "summarization"]])
def test_every_train_config_field_has_a_flag(verb):
    argv, expected = flag_values()
    args = build_parser().parse_args([*verb, "--out", "o", *argv])
    assert _train_overrides(args) == expected and len(expected) == len(dataclasses.fields(TrainConfig))
    assert _train_overrides(build_parser().parse_args([*verb, "--out", "o"])) == {}


def test_metric_lists_accept_commas(tmp_path, capsys):
    assert expand_metric_names(["rouge1,rouge2", "rougeL", "qg"]) == [
        "rouge1",
        "rouge2",
        "rougeL",
        "bleu4",
        "meteor",
        "coco_rougeL",
    ]
    (tmp_path / "pred.txt").write_text("the cat sat\n", encoding="utf-8")
    (tmp_path / "ref.txt").write_text("the cat sat down\n", encoding="utf-8")
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "pred.txt"),
                "--ref",
                str(tmp_path / "ref.txt"),
                "--metrics",
                "rouge1,rouge2,rougeL",
            ]
        )
        == 0
    )
    assert list(json.loads(capsys.readouterr().out.split("\n|")[0])) == ["rouge1", "rouge2", "rougeL"]


def test_nlu_recipe_yaml_under_flags(tmp_path):
    recipe = tmp_path / "mrpc.yaml"
    recipe.write_text(
        "dataset: glue/MRPC\ndata_dir: nlu\nmax_length: 96\npooler: true\ntrain:\n  lr: 3.0e-5\n", encoding="utf-8"
    )
    args = build_parser().parse_args(
        ["finetune", "--task", "classify", "--recipe", str(recipe), "--out", "o", "--max-length", "64"]
    )
    options, train = nlu_options(args.task, args.recipe, vars(args))
    assert (options.dataset, options.data_dir, options.max_length, options.pooler) == ("glue/MRPC", "nlu", 64, True)
    assert train == {"lr": 3.0e-5} and options.doc_stride == 128
    recipe.write_text("dataset: glue/MRPC\ntrain:\n  learning_rate: 1\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"mrpc.yaml: train: unknown key 'learning_rate'"):
        nlu_options(args.task, args.recipe, vars(args))
    recipe.write_text("task: squad\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match="a recipe for --task squad, not classify"):
        nlu_options(args.task, args.recipe, vars(args))


def test_provenance_names_versions_and_commit():
    info = provenance()
    assert info["versions"]["torch"].startswith("2.") and info["versions"]["ctxlm"] == __version__
    assert info["git_commit"] is not None and len(info["git_commit"].split("+")[0]) == 40
