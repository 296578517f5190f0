"""Text infilling: the Yahoo masking protocol (ratio, merged blanks), BLEU of an oracle fill, typed
blanks kept as one token, every blank filled by a tiny random GLM, and the evaluation end to end."""

import json
from collections import Counter

import numpy as np
import pytest
import torch

from ctxlm.checkpoint import save_model_dir
from ctxlm.config import GenerationConfig
from ctxlm.config_loading import named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.tasks.infilling import (
    BLANK,
    encode_with_blanks,
    evaluate_infilling,
    fill_words,
    infill,
    infill_bleu,
    infill_texts,
    mask_words,
    merge_infilled,
)
from ctxlm.models.glm import GlmModel, glm_tokens
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")
GREEDY = GenerationConfig(num_beams=1, max_new_tokens=4)


@pytest.fixture(scope="module")
def yahoo(data_dir):
    return data_dir / "infill" / "yahoo" / "valid.txt"


@pytest.fixture(scope="module")
def lines(yahoo):
    with open(yahoo, encoding="utf-8") as handle:
        return [line.split() for _, line in zip(range(2000), handle) if line.strip()]


@pytest.fixture(scope="module")
def tokenizer(lines, tmp_path_factory):
    path = tmp_path_factory.mktemp("infill_tok") / "corpus.txt"
    path.write_text("\n".join(" ".join(words) for words in lines), encoding="utf-8")
    return train_tokenizer(path, 800)


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = named_model_config(
        "glm-tiny",
        d_model=32,
        num_layers=2,
        num_heads=2,
        ffn_dim=64,
        max_position_embeddings=128,
        dropout=0.0,
        attention_dropout=0.0,
        init_std=0.3,
    )
    torch.manual_seed(0)
    return GlmModel(model_config_for_tokenizer(cfg, tokenizer)).eval()


@pytest.fixture(scope="module")
def model_dir(model, tokenizer, tmp_path_factory):
    return save_model_dir(tmp_path_factory.mktemp("glm_infill"), model, tokenizer)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5])
def test_masking_takes_the_ratio_and_merges_runs(lines, ratio):
    for i, words in enumerate(lines[:300]):
        masked, spans = mask_words(words, ratio, np.random.default_rng([7, i]))
        assert sum(map(len, spans)) == int(len(words) * ratio)
        assert masked.count(BLANK) == len(spans)
        assert all(not (a == b == BLANK) for a, b in zip(masked, masked[1:])), "adjacent blanks are merged"
        spans_left = iter(spans)  # putting the spans back gives the line
        assert [w for m in masked for w in (next(spans_left) if m == BLANK else [m])] == words
        again, _ = mask_words(words, ratio, np.random.default_rng([7, i]))
        assert again == masked
    with pytest.raises(CtxlmError, match="mask ratio"):
        mask_words(["a"], 1.0, np.random.default_rng(0))


def test_masked_positions_are_uniform():
    words = [str(i) for i in range(10)]
    counts = Counter()
    draws = 3000
    for seed in range(draws):
        masked, spans = mask_words(words, 0.3, np.random.default_rng(seed))
        counts.update(w for span in spans for w in span)
    for word in words:  # each word masked with probability 0.3 (sd of the rate ~ 0.008)
        assert abs(counts[word] / draws - 0.3) < 0.04


def test_bleu_of_the_oracle_fill_is_100(lines, tokenizer):
    references = [" ".join(words) for words in lines[:200]]
    hypotheses, through_tokenizer = [], []
    for i, words in enumerate(lines[:200]):
        masked, spans = mask_words(words, 0.5, np.random.default_rng(i))
        fills = iter(spans)
        hypotheses.append(" ".join(w for m in masked for w in (next(fills) if m == BLANK else [m])))
        # the same oracle through the tokenizer and back (how model fills are written)
        fills = iter(
            fill_words(
                tokenizer,
                encode_with_blanks(tokenizer, " ".join(s), glm_tokens_of(tokenizer), unk_marker="_UNK"),
                unk_marker="_UNK",
            )
            for s in spans
        )
        through_tokenizer.append(" ".join(next(fills) if m == BLANK else m for m in masked))
    assert infill_bleu(hypotheses, references) == pytest.approx(100.0)
    assert infill_bleu(through_tokenizer, references) > 99.0
    worse = [h.replace(" the ", " a ") for h in hypotheses]
    assert infill_bleu(worse, references) < 100.0


def glm_tokens_of(tokenizer):
    cfg = model_config_for_tokenizer(named_model_config("glm-tiny"), tokenizer)
    return glm_tokens(cfg)


def test_fill_words_writes_ptb_tokens(tokenizer):
    text = "i ca n't say it 's `` fine '' , we 'll see ... _UNK ok"
    ids = encode_with_blanks(tokenizer, text, glm_tokens_of(tokenizer), unk_marker="_UNK")
    assert tokenizer.unk_id in ids
    assert fill_words(tokenizer, ids, unk_marker="_UNK") == text


def test_typed_blanks_are_one_token(tokenizer):
    tok = glm_tokens_of(tokenizer)
    ids = tokenizer.encode("the [MASK] sat on the [MASK] .")  # the tokenizer keeps them whole
    assert ids.count(tok.mask) == 2
    ours = encode_with_blanks(tokenizer, "the [MASK] sat on the [sMASK] . [gMASK]", tok)
    assert ours == [
        *tokenizer.encode("the"),
        tok.mask,
        *tokenizer.encode("sat on the"),
        tok.smask,
        *tokenizer.encode("."),
        tok.gmask,
    ]


@torch.no_grad()
def test_infill_fills_every_blank_and_merge_round_trips(model, tokenizer, lines):
    tok = glm_tokens(model.config)
    words = lines[3]
    original = tokenizer.encode(" ".join(words))
    spans = [(1, 3), (5, 6), (8, 11)]
    masked = original[:1] + [tok.mask] + original[3:5] + [tok.mask] + original[6:8] + [tok.mask] + original[11:]
    truth = [original[s:e] for s, e in spans]
    assert merge_infilled(masked, truth, tok) == original
    fills = infill(model, masked, GREEDY)
    assert len(fills) == 3 and all(len(f) <= GREEDY.max_new_tokens and tok.eop not in f for f in fills)
    merged = merge_infilled(masked, fills, tok)
    assert len(merged) == len(masked) - 3 + sum(map(len, fills))
    with pytest.raises(CtxlmError, match="3 blanks but 2 fills"):
        merge_infilled(masked, fills[:2], tok)


def test_infill_texts_keeps_the_text_and_fills_the_blanks(model_dir):
    texts = ["the [MASK] sat on the [MASK] .", "what is [MASK] ?"]
    filled = infill_texts(model_dir, texts, GREEDY, device="cpu")
    assert len(filled) == 2 and all("[MASK]" not in f for f in filled)
    assert filled[0].startswith("the ") and " sat on the " in filled[0] and filled[0].endswith(".")
    assert filled[1].startswith("what is ") and filled[1].endswith("?")
    with pytest.raises(CtxlmError, match="text 2: no \\[MASK\\]"):
        infill_texts(model_dir, ["a [MASK]", "no blank here"], GREEDY, device="cpu")


def test_evaluate_infilling_is_deterministic_and_keeps_the_context(model_dir, yahoo, tmp_path):
    out = tmp_path / "fills.jsonl"
    first = evaluate_infilling(
        model_dir, yahoo, mask_ratio=0.3, seed=1, limit=6, generation_config=GREEDY, device="cpu", output=out
    )
    again = evaluate_infilling(
        model_dir, yahoo, mask_ratio=0.3, seed=1, limit=6, generation_config=GREEDY, device="cpu"
    )
    assert first == again and first["lines"] == 6 and 0.0 <= first["bleu"] <= 100.0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sum(int(len(r["reference"].split()) * 0.3) for r in records) == first["masked_words"]
    assert sum(r["masked"].split().count(BLANK) for r in records) == first["blanks"]
    for r in records:  # the words around the blanks are the reference's, in order
        context = [w for w in r["masked"].split() if w != BLANK]
        prediction = iter(r["prediction"].split())
        assert all(any(p == w for p in prediction) for w in context)
    other = evaluate_infilling(
        model_dir, yahoo, mask_ratio=0.3, seed=2, limit=6, generation_config=GREEDY, device="cpu"
    )
    assert other["masked_words"] == first["masked_words"] and other != first
