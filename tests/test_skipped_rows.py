"""Rows that pre-training deliberately leaves out are counted, against brute force and a worked
example, and reported once per run (one warning line, and run.json's `skipped`)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from ctxlm.config import PretrainConfig, TrainConfig
from ctxlm.families.palm import PalmDataConfig
from ctxlm.config_loading import named_model_config
from ctxlm.objectives.chunks import sentence_chunks, skipped_sentences
from ctxlm.objectives.palm import palm_windows
from ctxlm.pretraining import pretrain
from ctxlm.run_options import CorpusSpec
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")


def brute_force(lengths, offsets, documents, spans, budget):
    covered = {s for first, count in spans for s in range(first, first + count)}
    sentences = [s for d in documents for s in range(offsets[d], offsets[d + 1])]
    return {
        "long_sentences": sum(lengths[s] > budget for s in sentences),
        "sentences_in_no_example": sum(s not in covered for s in sentences),
    }


@pytest.mark.parametrize("seed", range(20))
def test_skipped_sentences_match_brute_force(seed):
    """Over random documents, with GLM/UniLMv2 chunks and PALM windows (sources only, as stage 1,
    or sources and targets), the counts equal a sentence-by-sentence enumeration."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 7, size=12)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    lengths = rng.integers(1, 30, size=offsets[-1])
    documents = np.sort(rng.choice(12, size=int(rng.integers(1, 13)), replace=False))
    budget = int(rng.integers(8, 40))
    chunks = sentence_chunks(lengths, offsets, documents, budget)
    windows = palm_windows(lengths, offsets, documents, budget + 2, 12)
    for spans, limit in (
        (chunks, budget),
        (windows[:, :2], budget),
        (np.stack([windows[:, 0], windows[:, 1] + windows[:, 2]], axis=1), budget),
    ):
        assert skipped_sentences(lengths, offsets, documents, spans, limit) == brute_force(
            lengths, offsets, documents, spans, limit
        )


def test_palm_stage_one_run_reports_what_it_skipped(tmp_path):
    """A worked example: PALM stage 1 with L = 64 (sources ≤ 49 text tokens, targets ≤ 12).

    doc A: 3 short sentences (and a line that encodes to nothing) → windows A0+A1→A2, A1→A2: A2,
           the last sentence, is in no source;
    doc B: one sentence → no window;
    doc C: C0, a 300-word sentence, C2, C3 → only C2→C3: C0 (whose target would be the long one),
           the long one and C3 are in no source;
    JSONL: a row without text (an empty document) and a row of three sentences (D2 in no source).
    """
    short = ["the cat sat on the mat .", "the dog ran to the cat .", "a bird sat on the dog ."]
    text = tmp_path / "corpus.txt"
    text.write_text(
        "\n".join(short)
        + "\n\x01\n\nthe mat is red .\n\n"
        + "the cat sat .\n"
        + " ".join(["cat"] * 300)
        + " .\nthe dog sat .\nthe bird ran .\n",
        encoding="utf-8",
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"text": ""}) + "\n" + json.dumps({"text": "The cat sat. The dog ran. The bird flew."}) + "\n",
        encoding="utf-8",
    )
    tokenizer = train_tokenizer([text, rows], 150, min_frequency=1)
    model = named_model_config(
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
    config = PretrainConfig(
        model=model,
        data=PalmDataConfig(fragment_length=64, valid_fraction=0.0),
        train=TrainConfig(max_steps=1, batch_size=2, eval_every=0, save_every=0, progress=False),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain(
            CorpusSpec((text, rows), cache_dir=tmp_path / "cache"),
            tmp_path / "run",
            config,
            stage="mlm",
            tokenizer=tokenizer,
        )
    expected = {
        "empty_documents": 1,
        "empty_sentences": 1,
        "one_sentence_documents": 1,
        "long_sentences": 1,
        "sentences_in_no_example": 6,
    }
    assert json.loads((tmp_path / "run" / "run.json").read_text(encoding="utf-8"))["skipped"] == expected
    reports = [str(w.message) for w in caught if "skipped while building examples" in str(w.message)]
    assert reports == [
        "skipped while building examples: 1 empty documents, 1 empty sentences, "
        "1 one sentence documents, 1 long sentences, 6 sentences in no example "
        "(counts in run.json under 'skipped')"
    ]
