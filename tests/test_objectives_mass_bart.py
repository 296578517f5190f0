"""MASS and BART baselines on the PALM encoder-decoder: worked examples, statistics, decoder
positions, and a short pre-training run of each through the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import wiki_slice
from ctxlm.checkpoint import load_model_dir
from ctxlm.cli import main
from ctxlm.families.palm import PalmConfig
from ctxlm.models.palm import PalmModel
from ctxlm.objectives.bart import (
    build_bart_example,
    infill,
    infilling_span_lengths,
    permute_sentences,
    place_infilling_spans,
)
from ctxlm.objectives.mass import build_mass_example, mass_span
from ctxlm.objectives.palm import PalmTokens

pytestmark = pytest.mark.usefixtures("single_thread")

TOK = PalmTokens(cls=2, sep=3, mask=4, decoder_start=2)
M = TOK.mask
POOL = np.arange(100, 200)
TEXT = np.arange(10, 20)  # x1..x10 = 10..19


# ----------------------------------------------------------------------------- MASS
def test_mass_worked_example():
    """x1..x10, span x4..x8 (text positions 3..7): the encoder sees x1 x2 x3 [M]×5 x9 x10; the decoder
    reads x3..x7 at their sentence positions 3..7 ([CLS] is position 0) and predicts x4..x8."""
    ex = build_mass_example(TEXT, (3, 8), TOK, np.random.default_rng(0), POOL, mask_frac=1.0)
    assert ex["input_ids"].tolist() == [2, 10, 11, 12, M, M, M, M, M, 18, 19, 3]
    assert ex["decoder_input_ids"].tolist() == [12, 13, 14, 15, 16]
    assert ex["decoder_position_ids"].tolist() == [3, 4, 5, 6, 7]
    assert ex["labels"].tolist() == [13, 14, 15, 16, 17]
    first = build_mass_example(TEXT, (0, 5), TOK, np.random.default_rng(0), POOL, mask_frac=1.0)
    assert first["decoder_input_ids"].tolist() == [2, 10, 11, 12, 13]  # [CLS] precedes x1
    assert first["decoder_position_ids"].tolist() == [0, 1, 2, 3, 4]


def test_mass_span_is_half_the_segment_at_a_uniform_start():
    for n in (1, 2, 7, 10, 99):
        start, end = mass_span(n, np.random.default_rng(n))
        assert end - start == max(1, n // 2) and 0 <= start <= n - (end - start)
    starts = np.bincount([mass_span(10, np.random.default_rng(s))[0] for s in range(6000)], minlength=6)
    assert len(starts) == 6 and np.all(np.abs(starts / 6000 - 1 / 6) < 0.02), starts  # 0..5


def test_mass_corrupts_the_span_80_10_10_and_nothing_else():
    text = np.arange(10, 90)
    rng = np.random.default_rng(1)
    counts = np.zeros(3)
    for _ in range(300):
        start, end = mass_span(len(text), rng)
        ex = build_mass_example(text, (start, end), TOK, rng, POOL)
        inside = ex["input_ids"][start + 1 : end + 1]
        original = text[start:end]
        counts += [(inside == M).sum(), ((inside != M) & (inside != original)).sum(), (inside == original).sum()]
        outside = np.r_[ex["input_ids"][1 : start + 1], ex["input_ids"][end + 1 : -1]]
        assert outside.tolist() == np.r_[text[:start], text[end:]].tolist()
        assert ex["labels"].tolist() == original.tolist()
    assert np.all(np.abs(counts / counts.sum() - [0.8, 0.1, 0.1]) < 0.01), counts / counts.sum()


def tiny_palm(copy: bool = False) -> PalmModel:
    torch.manual_seed(0)
    cfg = PalmConfig(
        vocab_size=40,
        d_model=16,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
        copy=copy,
    )
    return PalmModel(cfg).double().eval()


@pytest.mark.parametrize("copy", [False, True])
def test_decoder_position_ids_are_the_positions_used(copy):
    """A MASS decoder input at positions 5..8 scores as a model whose position table is shifted by 5
    rows would score it at the default positions 0..3; default ids equal no ids."""
    model = tiny_palm(copy)
    source = torch.tensor([[2, 10, 11, 4, 4, 4, 4, 15, 3]])
    decoder, labels = torch.tensor([[11, 12, 13, 14]]), torch.tensor([[12, 13, 14, 15]])
    positions = torch.arange(5, 9)[None]
    got = model(source, decoder_input_ids=decoder, labels=labels, decoder_position_ids=positions, return_log_probs=True)
    shifted = tiny_palm(copy)
    with torch.no_grad():
        weight = shifted.decoder.embed_positions.weight
        weight[2:-5] = weight[7:].clone()  # row p + 2 (BART's offset) now holds position p + 5
    want = shifted(source, decoder_input_ids=decoder, labels=labels, return_log_probs=True)
    torch.testing.assert_close(got.log_probs, want.log_probs)
    torch.testing.assert_close(got.loss, want.loss)
    default = model(source, decoder_input_ids=decoder, labels=labels, decoder_position_ids=torch.arange(4)[None])
    torch.testing.assert_close(default.loss, model(source, decoder_input_ids=decoder, labels=labels).loss)
    assert not torch.allclose(default.loss, got.loss)


# ----------------------------------------------------------------------------- BART
def test_bart_worked_example_without_permutation():
    """Spans x3 x4, an empty span before x7, and x8 x9: each becomes one [MASK]."""
    spans = [(2, 4), (6, 6), (7, 9)]
    assert infill(TEXT, spans, M).tolist() == [10, 11, M, 14, 15, M, 16, M, 19]
    ex = build_bart_example(TEXT, [0, 10], TOK, np.random.default_rng(0), permute=False)
    corrupted = ex["input_ids"][1:-1]
    assert ex["input_ids"][0] == TOK.cls and ex["input_ids"][-1] == TOK.sep
    assert (TEXT.size - (corrupted != M).sum()) == math.ceil(0.3 * 10)  # 3 tokens masked
    kept = corrupted[corrupted != M]
    assert np.isin(kept, TEXT).all() and (np.diff(kept) > 0).all()  # the rest, in order
    assert ex["decoder_input_ids"].tolist() == [TOK.cls] + TEXT.tolist()
    assert ex["labels"].tolist() == TEXT.tolist() + [TOK.sep]


def test_bart_example_is_its_documented_draws_composed():
    """Permutation, then span lengths, then their layout, from one generator: replaying the draws by
    hand gives the same example, and every drawn span is one [MASK] in the encoder input."""
    text, bounds = np.arange(10, 40), np.array([0, 7, 19, 30])
    for seed in range(20):
        ex = build_bart_example(text, bounds, TOK, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        shuffled = permute_sentences(text, bounds, rng)
        lengths = infilling_span_lengths(len(text), rng)
        spans = place_infilling_spans(lengths, len(text), rng)
        assert sum(lengths) == 9 and [e - s for s, e in spans] == lengths  # ceil(0.3 * 30)
        expected = [TOK.cls]
        last = 0
        for start, end in spans:
            expected += shuffled[last:start].tolist() + [M]
            last = end
        expected += shuffled[last:].tolist() + [TOK.sep]
        assert ex["input_ids"].tolist() == expected
        assert ex["decoder_input_ids"].tolist() == [TOK.cls] + text.tolist()
        assert ex["labels"].tolist() == text.tolist() + [TOK.sep]


def test_bart_permutes_sentences_and_the_decoder_reconstructs_the_original():
    text, bounds = np.arange(10, 19), np.array([0, 2, 5, 9])  # sentences A=10 11, B=12..14, C=15..18
    sentences = {(10, 11): "A", (12, 13, 14): "B", (15, 16, 17, 18): "C"}
    orders = {}
    for seed in range(1200):
        ex = build_bart_example(text, bounds, TOK, np.random.default_rng(seed), ratio=0.0)
        source = ex["input_ids"][1:-1]
        assert sorted(source.tolist()) == text.tolist()  # ratio 0: nothing masked
        parts, i = [], 0
        while i < len(source):
            key = next(k for k in sentences if tuple(source[i : i + len(k)].tolist()) == k)
            parts.append(sentences[key])
            i += len(key)
        order = "".join(parts)
        orders[order] = orders.get(order, 0) + 1
        assert ex["labels"].tolist() == text.tolist() + [TOK.sep]
    assert len(orders) == 6 and all(abs(c / 1200 - 1 / 6) < 0.04 for c in orders.values()), orders
    shuffled = permute_sentences(text, bounds, np.random.default_rng(0))
    assert sorted(shuffled.tolist()) == text.tolist()


def test_bart_infilling_statistics():
    """Over many 1,000-token texts: 30% of the tokens masked, span lengths Poisson(3) (mean 3,
    5% empty), measured from the encoder input alone (masked = n − unmasked tokens left; spans = [MASK]s)."""
    n, rng = 1000, np.random.default_rng(5)
    text = np.arange(10, 10 + n)
    masked = spans = 0
    lengths = []
    for _ in range(150):
        ex = build_bart_example(text, [0, n], TOK, rng, permute=False)
        corrupted = ex["input_ids"][1:-1]
        masked += n - int((corrupted != M).sum())
        spans += int((corrupted == M).sum())
        lengths += infilling_span_lengths(n, rng)
    assert abs(masked / (150 * n) - 0.3) < 0.002
    assert abs(masked / spans - 3.0) < 0.1
    counts = np.bincount(lengths, minlength=8)[:8] / len(lengths)
    poisson = [math.exp(-3) * 3**k / math.factorial(k) for k in range(8)]
    assert np.all(np.abs(counts - poisson) < 0.015), counts


def test_bart_span_layout_is_uniform_and_never_overlaps():
    starts = np.zeros(4)
    for seed in range(4000):
        [(start, end)] = place_infilling_spans([2], 5, np.random.default_rng(seed))
        starts[start] += 1
    assert np.all(np.abs(starts / 4000 - 0.25) < 0.025), starts
    rng = np.random.default_rng(2)
    for _ in range(200):
        lengths = infilling_span_lengths(40, rng)
        spans = place_infilling_spans(lengths, 40, rng)
        assert [e - s for s, e in spans] == lengths and sum(lengths) == 12
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:])) and spans[-1][1] <= 40
        assert len(lengths) <= 12  # never more [MASK]s than masked tokens


# ----------------------------------------------------------------------------- through the CLI
@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory):
    from ctxlm.tokenization import train_tokenizer

    root = tmp_path_factory.mktemp("mass_bart")
    path = wiki_slice(root / "wiki.txt", 600)
    train_tokenizer(path, 800, root / "tok")
    return path, root / "tok"


@pytest.mark.parametrize("objective", ["mass", "bart"])
def test_pretrain_cli_runs_mass_and_bart_on_a_palm_model(objective, corpus_and_tokenizer, tmp_path, capsys):
    corpus, tok = corpus_and_tokenizer
    out = tmp_path / objective
    args = [
        "pretrain",
        "--objective",
        objective,
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tok),
        "--fragment-length",
        "64",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--eval-every",
        "0",
        "--no-progress",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(args + ["--config", "palm-tiny", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["objective"] == objective and run["train_segments"] > 0
    model, _ = load_model_dir(out)
    assert model.config.family == "palm"
    capsys.readouterr()
    i = args.index("--fragment-length")
    assert main(args[:i] + args[i + 2 :] + ["--config", "glm-tiny", "--out", str(tmp_path / "glm")]) == 2
    assert "needs a palm model" in capsys.readouterr().err
