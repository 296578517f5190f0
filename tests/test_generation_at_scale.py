"""Generation over many inputs (`Seq2SeqPredictor.generate_stream` / `generate_to_file`, `ctxlm generate
--input --output [--resume]`): every row comes back in input order, empty and over-long sources included,
the length-sorted batches give what one-at-a-time decoding gives, and a run that crashed and resumed
writes the same file as one that did not."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import wiki_slice
from ctxlm.checkpoint import build_model, save_model_dir
from ctxlm.cli import main
from ctxlm.config import GenerationConfig
from ctxlm.config_loading import named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.predict import Seq2SeqPredictor
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

SIZES = {
    "palm": dict(
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
    ),
    "glm": dict(num_layers=1, num_heads=2, ffn_dim=64),
    "unilm": dict(num_layers=1, num_heads=2, ffn_dim=64),
}
GREEDY = GenerationConfig(num_beams=1, max_new_tokens=4)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny random model directory per family (PALM's copy head makes its outputs depend on the
    source) and the Wikipedia sentences its tokenizer was trained on."""
    root = tmp_path_factory.mktemp("scale")
    text = wiki_slice(root / "wiki.txt", 400)
    tokenizer = train_tokenizer(text, 300, root / "tok")
    dirs = {}
    for family, sizes in SIZES.items():
        torch.manual_seed(0)
        config = named_model_config(f"{family}-tiny", d_model=32, max_position_embeddings=64, **sizes)
        model = build_model(model_config_for_tokenizer(config, tokenizer))
        dirs[family] = save_model_dir(root / family, model, tokenizer)
    sentences = [line.strip() for line in text.read_text(encoding="utf-8").splitlines() if line.strip()]
    return dirs, sentences


def mixed_rows(sentences, n):
    """`n` rows of varied length: empty and blank sources, one word, sentences, runs of sentences and
    sources of ~5,000 tokens (far beyond the 64 positions), each with an id."""
    rows = []
    for i in range(n):
        kind = i % 7
        source = {
            0: "",
            1: " \n ",
            2: sentences[i % len(sentences)].split()[0],
            3: sentences[i % len(sentences)],
            4: " ".join(sentences[i % 50 : i % 50 + 3]),
            5: " ".join(sentences[:300]),
            6: sentences[(3 * i) % len(sentences)],
        }[kind]
        rows.append({"id": i, "source": source})
    return rows


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_many_mixed_inputs_keep_order_and_match_one_at_a_time(models, tmp_path):
    """300 mixed rows decoded in length-sorted batches: one output row per input row, in input
    order, each prediction the one decoding that source alone gives; the file streams rows as they
    finish (a window of batches at a time)."""
    dirs, sentences = models
    predictor = Seq2SeqPredictor.load(dirs["palm"])
    rows = mixed_rows(sentences, 300)
    assert max(len(predictor.tokenizer.encode(r["source"])) for r in rows) > 4000
    out = tmp_path / "out.jsonl"
    written_when = []
    real_generate = predictor.generate

    def counting_generate(texts, cfg, batch_size):
        written_when.append(len(out.read_text(encoding="utf-8").splitlines()) if out.exists() else 0)
        return real_generate(texts, cfg, batch_size=batch_size)

    predictor.generate = counting_generate
    assert predictor.generate_to_file(rows, out, GREEDY, batch_size=8, sort_window=4) == 300
    written = read_jsonl(out)
    assert [r["id"] for r in written] == list(range(300))
    assert all(w == {**r, "prediction": w["prediction"]} for w, r in zip(written, rows))
    alone = [real_generate([r["source"]], GREEDY)[0] for r in rows[:60]]
    assert [w["prediction"] for w in written[:60]] == alone
    assert len({w["prediction"] for w in written}) > 5  # outputs depend on the source
    # 38 batches; windows of 4 batches (32 rows) are written while later ones decode
    assert len(written_when) == 38 and written_when[4] == 32 and written_when[-1] == 288


def test_sorted_batches_are_formed_longest_first_within_windows(models):
    """Each batch holds rows of one window, longest sources first; the stream yields input order."""
    dirs, _ = models
    predictor = Seq2SeqPredictor.load(dirs["palm"])
    texts = [" ".join(["the history"] * ((7 * i) % 13)) + f" {i}" for i in range(40)]  # distinct
    batches = []
    real_generate = predictor.generate

    def recording_generate(batch, cfg, batch_size):
        batches.append([texts.index(t) for t in batch])
        return real_generate(batch, cfg, batch_size=batch_size)

    predictor.generate = recording_generate
    predictions = list(predictor.generate_stream(texts, GREEDY, batch_size=4, sort_window=3))
    assert predictions == real_generate(texts, GREEDY, batch_size=40)
    assert len(batches) == 10 and sorted(i for batch in batches for i in batch) == list(range(40))
    assert all(len({i // 12 for i in batch}) == 1 for batch in batches)  # windows of 3 batches of 4
    for first in range(0, 10, 3):
        window = [i for batch in batches[first : first + 3] for i in batch]
        lengths = [len(predictor.tokenizer.encode(texts[i])) for i in window]
        assert lengths == sorted(lengths, reverse=True)


class Crash(RuntimeError):
    pass


def test_crash_then_resume_writes_the_uninterrupted_file(models, tmp_path):
    """A run that dies after k batches (its last line torn mid-write) and is resumed leaves the same
    bytes as a run that was never interrupted; the resumed run decodes only the missing rows."""
    dirs, sentences = models
    rows = mixed_rows(sentences, 120)
    whole = tmp_path / "whole.jsonl"
    Seq2SeqPredictor.load(dirs["palm"]).generate_to_file(rows, whole, GREEDY, batch_size=8, sort_window=2)

    crashing = Seq2SeqPredictor.load(dirs["palm"])
    calls = []
    real_generate = crashing.generate

    def generate_then_crash(texts, cfg, batch_size):
        calls.append(len(texts))
        if len(calls) > 7:
            raise Crash("injected")
        return real_generate(texts, cfg, batch_size=batch_size)

    crashing.generate = generate_then_crash
    out = tmp_path / "out.jsonl"
    with pytest.raises(Crash):
        crashing.generate_to_file(rows, out, GREEDY, batch_size=8, sort_window=2)
    done = len(read_jsonl(out))
    assert 48 <= done < 64  # three whole windows of 16 rows, and the start of the fourth if its batch held it
    with open(out, "a", encoding="utf-8") as handle:
        handle.write(f'{{"id": {done}, "sour')  # a line torn by the crash
    resumed = Seq2SeqPredictor.load(dirs["palm"])
    assert resumed.generate_to_file(rows, out, GREEDY, batch_size=8, sort_window=2, resume=True) == 120 - done
    assert out.read_bytes() == whole.read_bytes()
    assert resumed.generate_to_file(rows, out, GREEDY, batch_size=8, sort_window=2, resume=True) == 0


def test_resume_mid_window_decodes_the_same_batches(models, tmp_path):
    """Resuming at a row inside a window re-forms that window's batches as the first run did (only
    batches wholly before the resume point are skipped), so the predictions are the same."""
    dirs, sentences = models
    predictor = Seq2SeqPredictor.load(dirs["palm"])
    texts = [r["source"] for r in mixed_rows(sentences, 50)]
    whole = list(predictor.generate_stream(texts, GREEDY, batch_size=4, sort_window=4))
    for start in (5, 17, 50):
        assert list(predictor.generate_stream(texts, GREEDY, batch_size=4, sort_window=4, start=start)) == whole[start:]


def test_resume_rejects_an_output_that_does_not_match_the_input(models, tmp_path):
    dirs, sentences = models
    predictor = Seq2SeqPredictor.load(dirs["palm"])
    rows = mixed_rows(sentences, 10)
    out = tmp_path / "out.jsonl"
    predictor.generate_to_file(rows, out, GREEDY, batch_size=4)
    lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3].replace('"id": 3', '"id": 33') + "".join(lines[4:]), encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"out\.jsonl:4: does not match input row 4"):
        predictor.generate_to_file(rows, out, GREEDY, resume=True)
    out.write_text("".join(lines[:3]) + "not json\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"out\.jsonl:4: not a JSON line"):
        predictor.generate_to_file(rows, out, GREEDY, resume=True)
    out.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"out\.jsonl:10: the output has more rows than the input \(9\)"):
        predictor.generate_to_file(rows[:9], out, GREEDY, resume=True)


@pytest.mark.parametrize("family", ["glm", "unilm"])
def test_every_family_decodes_empty_and_over_long_sources(models, tmp_path, family):
    """GLM and UniLMv2 give a row for empty sources and for sources far beyond their positions
    (UniLMv2's source is cut to leave positions for the target)."""
    dirs, sentences = models
    rows = mixed_rows(sentences, 14)
    out = tmp_path / "out.jsonl"
    Seq2SeqPredictor.load(dirs[family]).generate_to_file(
        rows, out, GenerationConfig(num_beams=2, max_new_tokens=6), batch_size=4
    )
    written = read_jsonl(out)
    assert [w["id"] for w in written] == list(range(14))
    assert all(isinstance(w["prediction"], str) for w in written)


def test_generate_verb_streams_and_resumes(models, tmp_path, capsys):
    """`ctxlm generate --input --output` writes rows plus predictions; `--resume` on a cut file
    finishes it exactly; `--resume` without `--output` is a one-line error."""
    dirs, sentences = models
    rows = mixed_rows(sentences, 30)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    flags = [
        "generate",
        "--model",
        str(dirs["palm"]),
        "--input",
        str(source),
        "--beam",
        "1",
        "--max-length",
        "4",
        "--batch-size",
        "4",
        "--sort-window",
        "2",
    ]
    assert main(flags + ["--output", str(tmp_path / "whole.jsonl")]) == 0
    whole = (tmp_path / "whole.jsonl").read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(whole[: whole.index(b"\n", len(whole) // 2) + 20])
    assert main(flags + ["--output", str(cut), "--resume"]) == 0
    assert cut.read_bytes() == whole
    assert main(flags + ["--resume"]) == 2
    assert "error: --resume needs --output" in capsys.readouterr().err
    assert main(flags) == 0  # to stdout
    assert capsys.readouterr().out.encode("utf-8") == whole
