"""What a new user met trying ctxlm (issue 34, point 7), each now one `error:` line that loses
nothing, or the right behaviour: out-of-range numbers refused before any work (flags, YAML and
Python alike), a classifier given to `generate`, the README's runs, infilling's bounded blanks and
its Ctrl-C line, UTF-16 files, `--skip-empty`, and no generation starting with a "##" piece."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from conftest import ROOT, TINY_PALM_MODEL, run_cli, wiki_slice
from ctxlm import cli
from ctxlm.checkpoint import build_model, save_model_dir
from ctxlm.config import GenerationConfig, TrainConfig, load_finetune_config
from ctxlm.families.palm import PalmDataConfig
from ctxlm.config_loading import load_pretrain_config, named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.generation import beam_search, greedy_or_sample
from ctxlm.models.unilm import UnilmClassifier
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tasks import infilling
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

ROWS = [{"document": "the cat sat on the mat .", "summary": "cat sat"}] * 12


run = run_cli


def write_rows(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A Wikipedia slice, a tokenizer, a tiny PALM config and model, a tiny GLM model, Gigaword-like rows."""
    root = tmp_path_factory.mktemp("first_use")
    wiki = wiki_slice(root / "wiki.txt", 300)
    tokenizer = train_tokenizer(wiki, 400, root / "tok", min_frequency=1)
    (root / "tiny.yaml").write_text(TINY_PALM_MODEL, encoding="utf-8")
    torch.manual_seed(0)
    palm = named_model_config(
        "palm-tiny",
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
    )
    save_model_dir(root / "palm", build_model(model_config_for_tokenizer(palm, tokenizer)), tokenizer)
    glm = named_model_config("glm-tiny", d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_position_embeddings=64)
    save_model_dir(root / "glm", build_model(model_config_for_tokenizer(glm, tokenizer)), tokenizer)
    write_rows(root / "pairs.jsonl", ROWS)
    return root, tokenizer


def pretrain_args(root: Path, out: Path, *more) -> list:
    return [
        "pretrain",
        "--corpus",
        root / "wiki.txt",
        "--tokenizer",
        root / "tok",
        "--config",
        root / "tiny.yaml",
        "--out",
        out,
        "--cache-dir",
        out.parent / "cache",
        "--batch-size",
        "2",
        "--eval-batches",
        "1",
        "--no-progress",
        "--device",
        "cpu",
        *more,
    ]


# ------------------------------------------------------------------------------- numbers out of range
@pytest.mark.parametrize(
    "flags, line",
    [
        (["--max-steps", "0"], "error: --max-steps must be at least 1, got 0"),
        (["--max-steps", "-1"], "error: --max-steps must be at least 1, got -1"),
        (["--batch-size", "0"], "error: --batch-size must be at least 1, got 0"),
        (["--lr", "-1"], "error: --lr must be at least 0, got -1.0"),
        (["--adam-beta2", "1"], "error: --adam-beta2 must be in [0, 1), got 1.0"),
        (["--label-smoothing", "nan"], "error: --label-smoothing must be in [0, 1), got nan"),
    ],
)
def test_training_numbers_out_of_range_are_refused_before_any_work(world, tmp_path, capsys, flags, line):
    """Once `--max-steps 0` wrote an untrained model as if done, `--batch-size 0` and `--lr -1` gave
    tracebacks: now one line naming the flag, and nothing is written (pre-training and fine-tuning)."""
    root, _ = world
    assert run(capsys, *pretrain_args(root, tmp_path / "pre", "--max-steps", "1", *flags)) == (2, line)
    assert run(
        capsys,
        "finetune",
        "--init",
        root / "palm",
        "--train",
        root / "pairs.jsonl",
        "--out",
        tmp_path / "ft",
        "--max-steps",
        "1",
        "--no-progress",
        "--device",
        "cpu",
        *flags,
    ) == (2, line)
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "flags, line",
    [
        (["--top-p", "1.5"], "error: --top-p must be in (0, 1], got 1.5"),
        (["--top-p", "0"], "error: --top-p must be in (0, 1], got 0.0"),
        (["--temperature", "0"], "error: --temperature must be > 0, got 0.0"),
        (["--top-k", "-1"], "error: --top-k must be at least 0, got -1"),
        (["--beam", "0"], "error: --beam must be at least 1, got 0"),
        (["--max-length", "0"], "error: --max-length must be at least 1, got 0"),
        (["--length-penalty", "inf"], "error: --length-penalty must be in [-10, 10], got inf"),
        (["--seed", "-1"], f"error: --seed must be in [0, {2**63 - 1}], got -1"),
    ],
)
def test_decoding_numbers_out_of_range_are_refused_before_the_model_is_read(
    world, tmp_path, capsys, monkeypatch, flags, line
):
    root, _ = world
    monkeypatch.setattr(cli, "_generation_config", lambda *a: pytest.fail("the model was read"))
    assert run(capsys, "generate", "--model", root / "palm", "--text", "the cat", *flags) == (2, line)


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["generate", "--batch-size", "0"], "argument --batch-size: must be at least 1, got '0'"),
        (["generate", "--sort-window", "-2"], "argument --sort-window: must be at least 1, got '-2'"),
        (["infill", "--mask-ratio", "1.5"], "argument --mask-ratio: must be in (0, 1), got '1.5'"),
        (["tokenizer", "train", "--vocab-size", "x"], "argument --vocab-size: expected a whole number, got 'x'"),
    ],
)
def test_other_numeric_flags_are_usage_errors(capsys, flags, needle):
    """argparse's usage errors, in one line as ctxlm's own."""
    code, line = run(capsys, *flags, "--model", "m", "--out", "o", "--corpus", "c")
    assert code == 2 and needle in line and line.endswith("--help)")


def test_yaml_and_python_get_the_same_ranges(tmp_path):
    """The ranges live on the config dataclasses: a recipe, a pre-training YAML and Python code are
    refused as the flags are, naming the file and key."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: -1\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"^.*r\.yaml: train: lr must be at least 0, got -1\.0$"):
        load_finetune_config(str(recipe))
    recipe.write_text("decoding:\n  top_p: 1.5\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"r\.yaml: decoding: top_p must be in \(0, 1\], got 1\.5$"):
        load_finetune_config(str(recipe))
    config = tmp_path / "p.yaml"
    config.write_text(TINY_PALM_MODEL + "train:\n  max_steps: 0\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"p\.yaml: train: max_steps must be at least 1, got 0$"):
        load_pretrain_config(str(config))
    config.write_text(TINY_PALM_MODEL + "data:\n  source_ratio: 1.2\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"p\.yaml: data: source_ratio must be in \(0, 1\), got 1\.2$"):
        load_pretrain_config(str(config))
    for make, message in (
        (lambda: TrainConfig(batch_size=0), "batch_size must be at least 1, got 0"),
        (lambda: GenerationConfig(top_p=1.5), "top_p must be in"),
        (lambda: PalmDataConfig(mlm_weight=-1.0), "mlm_weight must be at least 0"),
    ):
        with pytest.raises(CtxlmError, match=message):
            make()


# ------------------------------------------------------------------------------- a classifier to generate
def test_generate_with_a_classifier_names_what_to_use(world, tmp_path, capsys):
    root, tokenizer = world
    config = model_config_for_tokenizer(
        named_model_config("unilm-tiny", d_model=16, num_layers=1, num_heads=2, ffn_dim=32, max_position_embeddings=64),
        tokenizer,
    )
    UnilmClassifier(config, num_labels=2).save_pretrained(tmp_path / "mrpc", tokenizer)
    code, line = run(capsys, "generate", "--model", tmp_path / "mrpc", "--text", "hi", "--device", "cpu")
    assert code == 2 and line == (
        f"error: {tmp_path / 'mrpc'}: a classifier (UnilmClassifier), which does not "
        f"generate text; score it with `ctxlm evaluate --task classify --model "
        f"{tmp_path / 'mrpc'}` (Python: the task's evaluate function in ctxlm.tasks)"
    )


# ------------------------------------------------------------------------------- the README
def test_the_readme_python_and_quick_start_write_other_folders():
    """Following the README top to bottom: the Python snippet's runs are not the Quick start's."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    shell = "\n".join(re.findall(r"^```\n(.*?)^```", text, re.MULTILINE | re.DOTALL))
    python = "\n".join(re.findall(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL))
    written_by_shell = set(re.findall(r"--(?:out|output) (\S+)", shell))
    written_by_python = set(re.findall(r'"((?:runs|export)/[^"]+)"', python))
    assert "runs/giga" in written_by_shell and written_by_python and not written_by_shell & written_by_python


def test_a_second_run_into_a_folder_names_the_python_keywords(world, tmp_path):
    from ctxlm.config import PretrainConfig
    from ctxlm.pretraining import pretrain
    from ctxlm.run_options import CorpusSpec, RunOptions

    root, tokenizer = world
    model = load_pretrain_config(str(root / "tiny.yaml")).model
    config = PretrainConfig(
        model=model,
        train=TrainConfig(max_steps=1, batch_size=2, eval_batches=1, progress=False),
        data=PalmDataConfig(fragment_length=128),
    )
    corpus = CorpusSpec((root / "wiki.txt",), cache_dir=tmp_path / "cache")
    common = dict(tokenizer=tokenizer, run=RunOptions(device="cpu"))
    pretrain(corpus, tmp_path / "run", config, **common)
    with pytest.raises(
        CtxlmError,
        match=r"--resume or start over with --overwrite \(in Python: resume=True or "
        r"overwrite=True\)",
    ):
        pretrain(corpus, tmp_path / "run", config, **common)


# ------------------------------------------------------------------------------- infilling
def test_a_blank_is_no_longer_than_its_masked_span(world, tmp_path, monkeypatch):
    """evaluate_infilling decodes each blank for at most its masked words' tokens (+ [eop]), not
    `max_new_tokens` (64): a model that repeats a word stops there."""
    root, tokenizer = world
    (tmp_path / "lines.txt").write_text(
        "the cat sat on the mat today .\na dog ran very fast in the park .\n", encoding="utf-8"
    )
    limits = []
    generate = infilling.generate

    def recording(model, input_ids, mask, cfg, **kwargs):
        result = generate(model, input_ids, mask, cfg, **kwargs)
        limits.append((cfg.max_new_tokens, len(result.tokens[0])))
        return result

    monkeypatch.setattr(infilling, "generate", recording)
    out = tmp_path / "fills.jsonl"
    infilling.evaluate_infilling(
        root / "glm",
        tmp_path / "lines.txt",
        mask_ratio=0.3,
        seed=1,
        device="cpu",
        generation_config=GenerationConfig(num_beams=2, max_new_tokens=64),
        output=out,
    )
    spans = []
    for record in map(json.loads, out.read_text(encoding="utf-8").splitlines()):
        words, masked = record["reference"].split(), record["masked"].split()
        spans += blank_spans(words, masked)
    assert len(limits) == len(spans) > 0
    for (limit, produced), span in zip(limits, spans):
        assert limit == len(tokenizer.encode(" ".join(span))) + 1 and produced <= limit < 64


def blank_spans(words: list[str], masked: list[str]) -> list[list[str]]:
    """The words each [MASK] of `masked` stands for in `words` (the unmasked words are kept in order)."""
    spans, at = [], 0
    for i, word in enumerate(masked):
        if word != "[MASK]":
            at += 1
            continue
        following = masked[i + 1] if i + 1 < len(masked) else None
        end = words.index(following, at) if following is not None else len(words)
        while following is not None and end == at:  # the masked words may include the next word
            end = words.index(following, end + 1)
        spans.append(words[at:end])
        at = end
    return spans


@pytest.mark.parametrize("verb, kept", [("infill", False), ("generate", False), ("pretrain", True)])
def test_ctrl_c_mentions_checkpoints_only_where_there_are_some(capsys, monkeypatch, verb, kept):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, f"cmd_{verb}", interrupted)
    argv = {
        "infill": ["infill", "--model", "m", "--text", "a [MASK]"],
        "generate": ["generate", "--model", "m"],
        "pretrain": ["pretrain", "--corpus", "c", "--out", "o"],
    }[verb]
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == ("interrupted (finished checkpoints are kept)\n" if kept else "interrupted\n")


# ------------------------------------------------------------------------------- UTF-16, --skip-empty
@pytest.mark.parametrize(
    "encoding, named", [("utf-16", "UTF-16 (byte-order mark FF FE)"), ("utf-16-le", "UTF-16 (no byte-order mark)")]
)
def test_a_utf16_file_is_named_with_the_fix(world, tmp_path, capsys, encoding, named):
    root, _ = world
    (tmp_path / "corpus.txt").write_text("the cat sat .\na dog ran .\n", encoding=encoding)
    (tmp_path / "u.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS), encoding=encoding)
    for argv, path in (
        (
            [
                "tokenizer",
                "train",
                "--corpus",
                tmp_path / "corpus.txt",
                "--vocab-size",
                "200",
                "--out",
                tmp_path / "tok",
            ],
            tmp_path / "corpus.txt",
        ),
        (["evaluate", "--pred", tmp_path / "u.jsonl", "--ref", root / "pairs.jsonl"], tmp_path / "u.jsonl"),
        (
            [
                "finetune",
                "--init",
                root / "palm",
                "--train",
                tmp_path / "u.jsonl",
                "--out",
                tmp_path / "o",
                "--max-steps",
                "1",
                "--no-progress",
                "--device",
                "cpu",
            ],
            tmp_path / "u.jsonl",
        ),
    ):
        code, line = run(capsys, *argv)
        assert code == 2 and line.startswith(f"error: {path}") and f"{named} text, not UTF-8" in line
        assert f"iconv -f UTF-16 -t UTF-8 {path} > {path}.utf8" in line


def test_skip_empty_has_a_flag(world, tmp_path, capsys):
    root, _ = world
    rows = write_rows(tmp_path / "rows.jsonl", ROWS[:6] + [{"document": "the dog .", "summary": " "}] + ROWS[:6])
    common = [
        "finetune",
        "--init",
        root / "palm",
        "--recipe",
        "gigaword",
        "--train",
        rows,
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--no-progress",
        "--device",
        "cpu",
    ]
    code, line = run(capsys, *common, "--out", tmp_path / "a")
    assert code == 2 and f"{rows}:7: " in line and "skip such rows with --skip-empty" in line
    assert run(capsys, *common, "--out", tmp_path / "b", "--skip-empty") == (0, "")


# ------------------------------------------------------------------------------- no "##" first
class PieceLovingModel:
    """The decoding protocol over a vocabulary of 10: the word piece 5 ("##om") is always likeliest,
    then the word 7, then EOS (3)."""

    decoder_start_token_id, eos_token_id = 2, 3

    def start_decoding(self, input_ids, attention_mask, num_beams=1, max_length=8):
        return {"rows": input_ids.shape[0] * num_beams}

    def decode_step(self, state, tokens):
        logits = torch.full((len(tokens), 10), -5.0)
        logits[:, 5], logits[:, 7], logits[:, 3] = 3.0, 2.0, 1.0
        return logits.log_softmax(-1)

    def reorder(self, state, index):
        pass


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_a_generation_never_starts_with_a_word_piece(search):
    continuation = torch.zeros(10, dtype=torch.bool)
    continuation[[5, 6]] = True
    prompt = torch.ones(2, 3, dtype=torch.long)
    cfg = GenerationConfig(num_beams=1 if search == "greedy" else 3, max_new_tokens=4)
    decode = greedy_or_sample if search == "greedy" else beam_search
    tokens = decode(PieceLovingModel(), prompt, None, cfg, continuation=continuation).tokens
    assert [row[0] for row in tokens] == [7, 7]  # the piece comes later, inside a word
    assert all(5 in row for row in tokens)
    assert decode(PieceLovingModel(), prompt, None, cfg).tokens[0][0] == 5  # without the marks, as before


# ------------------------------------------------------------------------------- found by the fuzzer
def test_what_the_fuzzer_found_is_one_line(world, tmp_path, capsys):
    """Each was a traceback: an unknown --fallback-encoding (LookupError), an --out that is a file
    (FileExistsError), an --output that is a folder, an infill text longer than the model's
    positions (ValueError), a huge length penalty (OverflowError), infill --eval of a file that is
    not UTF-8 (UnicodeDecodeError), --glm-task on a PALM run (TypeError), a huge --min-frequency
    (OverflowError)."""
    root, _ = world
    (tmp_path / "file").write_text("x\n", encoding="utf-8")
    tokenizer = ["tokenizer", "train", "--corpus", root / "wiki.txt", "--vocab-size", "200"]
    cases = [
        (
            [*tokenizer, "--out", tmp_path / "t", "--fallback-encoding", "nosuch"],
            "error: unknown fallback encoding 'nosuch' (--fallback-encoding; e.g. latin-1 or cp1252)",
        ),
        (
            [*tokenizer, "--out", tmp_path / "file"],
            f"error: --out {tmp_path / 'file'}: {tmp_path / 'file'} is a file, not a folder",
        ),
        (
            ["generate", "--model", root / "palm", "--text", "hi", "--output", tmp_path],
            f"error: --output {tmp_path}: a folder; give a file name",
        ),
        (
            ["infill", "--model", root / "glm", "--text", "the cat " * 40 + "[MASK] .", "--device", "cpu"],
            "error: text 1: 84 tokens with its special tokens, more than the model's 64 positions; shorten the text",
        ),
        (
            ["generate", "--model", root / "palm", "--text", "hi", "--length-penalty", "1e30"],
            "error: --length-penalty must be in [-10, 10], got 1e+30",
        ),
    ]
    (tmp_path / "bytes.txt").write_bytes(b"\x80abc\n")
    cases.append(
        (
            ["infill", "--model", root / "glm", "--eval", tmp_path / "bytes.txt", "--device", "cpu"],
            f"error: {tmp_path / 'bytes.txt'}:1: not valid UTF-8 (byte 0x80 at column 1); re-encode the file as UTF-8",
        )
    )
    cases.append(
        (
            pretrain_args(root, tmp_path / "pre", "--max-steps", "1", "--glm-task", "blank"),
            "error: --glm-task (glm_task) is a glm option; the objective here is palm",
        )
    )
    for argv, line in cases:
        assert run(capsys, *argv) == (2, line)
    code, line = run(capsys, *tokenizer, "--out", tmp_path / "t", "--min-frequency", str(2**70))
    assert code == 2 and "argument --min-frequency: must be in [0, 4294967295]" in line
