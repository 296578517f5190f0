"""Flags generated from dataclass fields and function signatures (`ctxlm.cli_flags`, issue 32 point 2):
types, defaults and switches from the code, help from one source (a field's comment, a parameter's
`Args:` line), and a parser built without importing torch."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ctxlm.cli_flags import (
    Parser,
    add_field_flags,
    add_signature_flags,
    dataclass_fields,
    field_comments,
    function_source,
    param_docs,
)
from ctxlm.config import ranged


@dataclass
class Toy:
    steps: int = ranged(10, 1)  # optimizer steps
    # the learning rate,
    # over two lines
    lr: float = 0.5
    name: str | None = None  # a name
    progress: bool = True  # progress bar
    fast: bool = False  # go fast


def parser_of(**options) -> argparse.ArgumentParser:
    parser = Parser(prog="toy")
    add_field_flags(parser, Toy, **options)
    return parser


def test_field_flags_take_type_default_and_help_from_the_field():
    parser = parser_of()
    assert vars(parser.parse_args([])) == {"steps": 10, "lr": 0.5, "name": None, "progress": True, "fast": False}
    assert vars(parser.parse_args(["--steps", "3", "--lr", "1e-3", "--name", "x", "--fast"])) == {
        "steps": 3,
        "lr": 1e-3,
        "name": "x",
        "progress": True,
        "fast": True,
    }
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["steps"] == "optimizer steps" and helps["lr"] == "the learning rate, over two lines"


def test_given_flags_default_to_none_and_switch_a_bool_to_its_other_value():
    parser = parser_of(given=True)
    assert set(vars(parser.parse_args([])).values()) == {None}
    args = parser.parse_args(["--no-progress", "--fast", "--steps", "2"])
    assert (args.progress, args.fast, args.steps) == (False, True, 2)
    assert {a.dest: a.help for a in parser._actions}["steps"] == "optimizer steps (default: 10)"


def test_checked_flags_refuse_a_number_outside_the_fields_range(capsys):
    with pytest.raises(SystemExit):
        parser_of(checked=True).parse_args(["--steps", "0"])
    assert "argument --steps: must be at least 1, got '0'" in capsys.readouterr().err
    assert parser_of().parse_args(["--steps", "0"]).steps == 0  # unchecked: the config refuses it later


def test_options_rename_and_extend_a_flag():
    parser = parser_of(names=["name"], options={"name": dict(option="--label", choices=["a", "b"])})
    assert parser.parse_args(["--label", "a"]).name == "a"


def test_signature_flags_come_from_the_parameters_and_the_args_section():
    parser = Parser(prog="toy")
    add_signature_flags(parser, "ctxlm.metrics:evaluate_files", ["pred_field", "limit"])
    assert vars(parser.parse_args(["--limit", "3"])) == {"pred_field": "prediction", "limit": 3}
    from ctxlm.metrics import evaluate_files

    docs = param_docs(inspect.getdoc(evaluate_files))
    assert {a.dest: a.help for a in parser._actions}["pred_field"] == docs["pred_field"]
    assert docs["metrics"].startswith("metric names or groups") and docs["metrics"].endswith("marco_bleu1")
    with pytest.raises(ValueError, match="not a literal"):  # SORT_WINDOW: the flag's default must be given
        add_signature_flags(Parser(prog="toy"), "ctxlm.predict:Seq2SeqPredictor.generate_to_file", ["sort_window"])


def test_building_the_parser_imports_no_torch():
    code = "import sys; from ctxlm.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        timeout=120,
    )
    assert done.stdout.strip() == "False", done.stderr


PARSER = Path(__file__).resolve().parents[1] / "ctxlm/cli_parser.py"


def test_no_field_comment_is_restated_in_the_parser():
    """The bundles' help has one source: their comments, not a copy in cli_parser.py; nor the help of
    the functions' parameters (their docstrings' `Args:`) and of the bundles read from source."""
    from ctxlm.config import GenerationConfig, TrainConfig
    from ctxlm.run_options import CorpusSpec, HfInit, RunOptions
    from ctxlm.tasks import NluOptions, ScratchModel, TaskData

    source = PARSER.read_text(encoding="utf-8")
    for cls in (TrainConfig, GenerationConfig, RunOptions, CorpusSpec, TaskData, NluOptions, ScratchModel, HfInit):
        for name, comment in field_comments(cls).items():
            assert len(comment) < 25 or comment not in source, (cls.__name__, name)
    assert dataclasses.fields(TaskData)  # the loop saw the fields
    refs = set(re.findall(r'"(ctxlm[\w.]*:[\w.]+)"', source))  # the functions and bundles that make flags
    assert len(refs) >= 20 and "ctxlm.compare:ComparisonSpec" in refs
    texts = 0
    for ref in refs:
        node = function_source(ref)
        found = dataclass_fields(ref)[0] if isinstance(node, ast.ClassDef) else param_docs(ast.get_docstring(node))
        for name, text in found.items():
            texts += 1
            assert len(text) < 25 or text not in source, (ref, name)
    assert texts >= 40  # the loop saw the parameters' and fields' help


# cli_parser.py's add_argument calls that no field or docstring generates (at most this many; lower it when
# you generate one, never raise it): --version; the families' own switches (one call over `Family.flags`);
# output switches with no Python counterpart (generate --limit, evaluate --output, infill --input); convert's
# --out (four functions' out_dir, no help)
HAND_WRITTEN = 6


def test_the_hand_written_flags_only_shrink():
    calls = [
        node
        for node in ast.walk(ast.parse(PARSER.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"
    ]
    assert len(calls) <= HAND_WRITTEN, [ast.unparse(call.args[0]) for call in calls]


def test_a_dataclass_read_from_source_gives_the_same_flags_as_the_class():
    """`add_field_flags` over "module:Class" (not imported): the same flags, defaults and help as over the class."""
    from ctxlm.run_options import CorpusSpec

    def flags(cls):
        parser = Parser(prog="toy")
        add_field_flags(parser, cls, ["paths", "format", "text_field", "cache_dir"])
        return [(a.option_strings, a.dest, a.default, a.type, a.help) for a in parser._actions[1:]]

    assert flags("ctxlm.run_options:CorpusSpec") == flags(CorpusSpec)
    assert dataclass_fields("ctxlm.compare:ComparisonSpec")[1]["resamples"].default == 10000
    with pytest.raises(ValueError, match="not a literal"):  # Toy.steps = ranged(...): the flag's default is needed
        add_field_flags(Parser(prog="toy"), f"{__name__}:Toy", ["steps"])


@dataclass
class ToyData:
    width: int = 4  # the toy objective's width


def test_a_familys_pretrain_flags_come_from_its_registry_entry():
    """`Family.objective_flags` naming a field of the data config: the flag's type and help from the field;
    `Family.flags` for a switch that is no field."""
    from ctxlm import families
    from ctxlm.cli import build_parser

    saved = (dict(families.FAMILIES), dict(families.OBJECTIVES))
    families.register(
        families.Family(
            name="toyflags",
            config=Toy,
            model="unused:Model",
            objectives=(families.Objective("toyflags-lm", "toyflags", ToyData, "unused:prepare"),),
            objective_flags={"toy_width": "width"},
            config_flags=("toy_switch",),
            flags={"toy_switch": dict(action="store_true", help="a toy switch")},
        )
    )
    try:
        pretrain = build_parser()._subparsers._group_actions[0].choices["pretrain"]
        actions = {a.dest: a for a in pretrain._actions}
        assert actions["toy_width"].type is int and actions["toy_width"].default is None
        assert actions["toy_width"].help == "the toy objective's width (default: the config's data.width)"
        assert actions["toy_switch"].help == "a toy switch"
        assert pretrain.parse_args(["--corpus", "c", "--out", "o", "--toy-width", "8"]).toy_width == 8
    finally:
        for store, old in zip((families.FAMILIES, families.OBJECTIVES), saved):
            store.clear()
            store.update(old)
