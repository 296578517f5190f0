"""The command line fuzzed (issue 34, point 6): for every verb, argv drawn from that verb's own
parser (its flags, in any number and order, with edge-case numbers, words, choices and paths: a
tiny model of each kind, a tokenizer, a corpus, task rows, missing paths and files of random
bytes), run in a temporary folder. The outcome is always exit status 0, or 2 with exactly one
`error:` line, and never a traceback (an exception escaping `main` fails the test).

Work stays small: the flags that size work (steps, batches, budgets, lengths, limits) draw only
small or invalid values, and `--compile` and `--data-workers` above 0 are not drawn."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TINY_PALM_MODEL, wiki_slice
from ctxlm.checkpoint import build_model, save_model_dir
from ctxlm.cli import build_parser, main
from ctxlm.config_loading import named_model_config
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

VERBS = ["tokenizer train", "pretrain", "generate", "finetune", "evaluate", "infill", "compare", "convert"]
SKIPPED = {"help", "version", "compile"}  # --compile: minutes of torch.compile for a one-step run

# values of the flags that size work: small or invalid only
SMALL = {
    "max_steps": ["-1", "0", "1", "x"],
    "batch_size": ["-1", "0", "1", "2"],
    "grad_accum": ["0", "1", "2"],
    "eval_batches": ["0", "1"],
    "data_workers": ["-1", "0"],
    "budget_tokens": ["-5", "0", "40", "1.5"],
    "budget_minutes": ["0", "-1", "nan", "0.001"],
    "seeds": ["0", "1", "-2"],
    "finetune_steps": ["0", "1"],
    "resamples": ["0", "5"],
    "limit": ["-1", "0", "1", "2"],
    "eval_limit": ["0", "1", "2"],
    "train_limit": ["0", "4", "all", "2,all", "-3"],
    "valid_limit": ["0", "2"],
    "max_length": ["-1", "0", "1", "3", "9"],
    "min_length": ["-1", "0", "2", "99"],
    "beam": ["-1", "0", "1", "2"],
    "vocab_size": ["-1", "0", "5", "60", "x"],
    "eval_every": ["0", "1"],
    "save_every": ["0", "1"],
    "max_source_tokens": ["-1", "0", "1", "2", "12"],
    "fragment_length": ["-1", "0", "3", "16", "64"],
    "doc_stride": ["0", "8"],
    "max_query_length": ["0", "4"],
    "max_answer_length": ["0", "3"],
    "sort_window": ["0", "1", "2"],
    "log_every": ["0", "1"],
}
NUMBERS = ["-1", "0", "1", "2", "0.5", "1.5", "-0.1", "1e-3", "nan", "inf", "-inf", "7", str(2**70), "x", ""]
WORDS = [
    "x",
    "auto",
    "cpu",
    "gpu",
    "cuda:9",
    "none",
    "palm",
    "glm",
    "rouge1",
    "valid/lm_loss",
    "document",
    "summary",
    "text",
    "gigaword",
    "5GB",
    "0",
    "-1",
    "1kB",
    "hub:x",
    "glue/MRPC",
    "superglue/RTE",
    "[MASK]",
    "the [MASK] sat .",
    "日本",
    "a,b",
    "",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The paths the fuzzer draws from: tiny PALM and GLM models, a tokenizer, a corpus, task rows,
    a YAML config, an empty folder and a missing path (random-byte files come per example)."""
    root = tmp_path_factory.mktemp("fuzz_cli")
    wiki_slice(root / "corpus.txt", 300)
    tokenizer = train_tokenizer(root / "corpus.txt", 400, root / "tok", min_frequency=1)
    small = dict(max_position_embeddings=64)
    palm = named_model_config(
        "palm-tiny",
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        **small,
    )
    glm = named_model_config("glm-tiny", d_model=16, num_layers=1, num_heads=2, ffn_dim=64, **small)  # the hub's 4×
    torch.manual_seed(0)
    for name, config in (("palm", palm), ("glm", glm)):
        save_model_dir(root / name, build_model(model_config_for_tokenizer(config, tokenizer)), tokenizer)
    rows = [{"document": "the cat sat on the mat .", "summary": "cat sat", "id": i} for i in range(20)]
    (root / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "preds.jsonl").write_text(
        "".join(json.dumps({"prediction": "cat", **r}) + "\n" for r in rows), encoding="utf-8"
    )
    (root / "lines.txt").write_text("the cat sat on the mat .\na dog ran fast .\n", encoding="utf-8")
    (root / "tiny.yaml").write_text(TINY_PALM_MODEL, encoding="utf-8")
    (root / "glm.yaml").write_text(
        "model:\n  base: glm-tiny\n  d_model: 16\n  num_layers: 1\n  num_heads: 2\n"
        "  ffn_dim: 32\n  max_position_embeddings: 64\n",
        encoding="utf-8",
    )
    (root / "empty").mkdir()
    names = [
        "corpus.txt",
        "tok",
        "palm",
        "glm",
        "pairs.jsonl",
        "preds.jsonl",
        "lines.txt",
        "tiny.yaml",
        "empty",
        "missing.jsonl",
    ]
    return root, [str(root / name) for name in names]


def verb_parser(verb: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in verb.split():
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    return parser


def flag_words(action: argparse.Action, paths: list[str], out: str) -> st.SearchStrategy:
    """One flag of `action` with values: its choices, small numbers, words or paths."""
    flag = st.sampled_from(action.option_strings)
    if action.nargs == 0:  # store_true, store_const
        return flag.map(lambda f: [f])
    name = action.dest
    if name in ("out", "output", "predictions_out", "cache_dir", "pretrain_dir"):
        # new, under a file, a folder holding something, a file (the shared inputs are never written)
        value = st.sampled_from([out, paths[-1] + "/sub/x.json", out + "-existing", paths[-1]])
    elif name in SMALL:
        value = st.sampled_from(SMALL[name])
    elif action.choices is not None:
        value = st.one_of(st.sampled_from(list(action.choices)), st.sampled_from(WORDS))
    elif action.type not in (None, str):
        value = st.sampled_from(NUMBERS)
    elif name in (
        "text",
        "source_field",
        "target_field",
        "pred_field",
        "ref_field",
        "text_field",
        "metrics",
        "objectives",
        "select_metric",
        "format",
        "max_shard_size",
        "device",
        "fallback_encoding",
        "split",
        "dataset",
        "task",
        "config",
        "recipe",
    ):
        value = st.one_of(st.sampled_from(WORDS), st.sampled_from(paths), st.text(max_size=8))
    else:  # a path: never a bare word, which could name a hub model or dataset
        value = st.sampled_from(paths)
    many = action.nargs in ("+", "*")
    values = st.lists(value, min_size=1, max_size=2) if many else value.map(lambda v: [v])
    return st.tuples(flag, values).map(lambda fv: [fv[0], *fv[1]])


def bases(verb: str, root, out: str) -> list[list[str]]:
    """Working command lines of `verb` (one step, a few tokens), which the fuzzer then changes."""
    r = f"{root}/"
    train = ["--max-steps", "1", "--batch-size", "2", "--eval-batches", "1", "--no-progress", "--device", "cpu"]
    decode = ["--max-length", "3", "--beam", "2", "--device", "cpu"]
    return {
        "tokenizer train": [
            ["--corpus", r + "corpus.txt", "--vocab-size", "130", "--min-frequency", "1", "--out", out]
        ],
        "pretrain": [
            [
                "--corpus",
                r + "corpus.txt",
                "--tokenizer",
                r + "tok",
                "--config",
                r + "tiny.yaml",
                "--out",
                out,
                "--cache-dir",
                out + "-cache",
                *train,
            ],
            [
                "--objective",
                "glm",
                "--config",
                r + "glm.yaml",
                "--tokenizer",
                r + "tok",
                "--corpus",
                r + "corpus.txt",
                "--out",
                out,
                "--cache-dir",
                out + "-cache",
                *train,
            ],
        ],
        "generate": [
            ["--model", r + "palm", "--text", "the cat", *decode],
            [
                "--model",
                r + "palm",
                "--input",
                r + "pairs.jsonl",
                "--source-field",
                "document",
                "--output",
                out + ".jsonl",
                *decode,
            ],
        ],
        "finetune": [
            [
                "--init",
                r + "palm",
                "--train",
                r + "pairs.jsonl",
                "--valid",
                r + "pairs.jsonl",
                "--recipe",
                "gigaword",
                "--out",
                out,
                *train,
            ]
        ],
        "evaluate": [
            [
                "--pred",
                r + "preds.jsonl",
                "--ref",
                r + "pairs.jsonl",
                "--ref-field",
                "summary",
                "--metrics",
                "rouge1,bleu4",
            ],
            ["--model", r + "palm", "--task", "summarization", "--ref", r + "pairs.jsonl", "--device", "cpu"],
        ],
        "infill": [
            ["--model", r + "glm", "--text", "the [MASK] sat .", *decode],
            ["--model", r + "glm", "--eval", r + "lines.txt", "--limit", "2", *decode],
        ],
        "compare": [
            [
                "--corpus",
                r + "corpus.txt",
                "--tokenizer",
                r + "tok",
                "--task",
                "gigaword",
                "--train",
                r + "pairs.jsonl",
                "--valid",
                r + "pairs.jsonl",
                "--config",
                r + "tiny.yaml",
                "--budget-tokens",
                "40",
                "--seeds",
                "1",
                "--objectives",
                "none",
                "--finetune-steps",
                "1",
                "--eval-limit",
                "2",
                "--resamples",
                "5",
                "--no-plots",
                "--out",
                out,
            ]
        ],
        "convert": [["--to-hf", r + "palm", "--out", out], ["--to-official", r + "glm", "--out", out]],
    }[verb]


@st.composite
def command_lines(draw, verb: str, root, paths: list[str], out: str) -> list[str]:
    """A working command line of the verb or only its required flags, then one to three flags of the
    verb's parser (argparse keeps a repeated flag's last value), in any order."""
    actions = [a for a in verb_parser(verb)._actions if a.option_strings and a.dest not in SKIPPED]
    words = draw(st.sampled_from(bases(verb, root, out) + [None]))
    if words is None:
        words = []
        for action in (a for a in actions if a.required):
            words += draw(flag_words(action, paths, out))
    for action in draw(st.lists(st.sampled_from(actions), min_size=1, max_size=3)):
        words += draw(flag_words(action, paths, out))
    return [*verb.split(), *words]


def check_outcome(argv: list[str], capsys) -> None:
    try:
        status = main(argv)
    except SystemExit as done:  # argparse's usage errors
        status = done.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, argv
    assert status in (0, 2), (status, argv)
    if status == 2:
        errors = [line for line in (out + err).splitlines() if "error:" in line]
        assert len(errors) == 1 and "usage:" not in err, (argv, errors)


FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


@pytest.mark.parametrize("verb", VERBS)
def test_fuzzed_command_lines_exit_0_or_2_with_one_line(verb, world, tmp_path_factory, capsys, monkeypatch):
    root, paths = world
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("CTXLM_CACHE", str(root / "cache"))

    @FUZZ
    @given(data=st.data(), junk=st.binary(max_size=64))
    def fuzz(data, junk):
        work = tmp_path_factory.mktemp("cmd")
        monkeypatch.chdir(work)
        (work / "out-existing").mkdir()
        (work / "out-existing" / "notes.txt").write_text("mine\n", encoding="utf-8")
        pool = list(paths)
        for name in ("junk.txt", "junk.jsonl", "junk.yaml"):
            (work / name).write_bytes(junk)
            pool.append(str(work / name))
        argv = data.draw(command_lines(verb, root, pool, str(work / "out")), label="argv")
        check_outcome(argv, capsys)

    fuzz()


EDGES = ["-1", "0", "nan", "1e30"]


@pytest.mark.parametrize("verb", [verb for verb in VERBS if verb != "convert"])  # convert: no numeric flag
def test_every_numeric_flag_at_its_edges(verb, world, tmp_path_factory, capsys, monkeypatch):
    """Each numeric flag of the verb, added to a working command line, at -1, 0, NaN and 1e30 (the
    flags that size work: their small values): exit 0, or 2 with one line. The random draws above
    seldom meet every flag; this meets each one."""
    root, _ = world
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("CTXLM_CACHE", str(root / "cache"))
    numeric = [
        a
        for a in verb_parser(verb)._actions
        if a.option_strings and a.type not in (None, str) and a.dest not in SKIPPED and a.nargs != 0
    ]
    assert numeric
    for action in numeric:
        for value in SMALL.get(action.dest, EDGES):
            work = tmp_path_factory.mktemp("edge")
            monkeypatch.chdir(work)
            check_outcome(
                [*verb.split(), *bases(verb, root, str(work / "out"))[0], action.option_strings[0], value], capsys
            )
