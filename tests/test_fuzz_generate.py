"""Fuzzed `ctxlm generate --input` files through the CLI on a tiny model: the command writes one
output row per input row, in order (empty and long sources included), or exits with status 2 and
a one-line error naming the file; it never raises."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxlm.checkpoint import build_model, save_model_dir
from ctxlm.cli import main
from ctxlm.config_loading import named_model_config
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tokenization import train_tokenizer
from test_fuzz_readers import clean_texts, garbage_lines, json_values, non_blank_lines, texts

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_generate")
    (root / "text.txt").write_text("the cat sat on the mat .\nMr. Smith bought 日本 cheese !\n" * 20, encoding="utf-8")
    tokenizer = train_tokenizer(root / "text.txt", 150, min_frequency=1)
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
    return save_model_dir(root / "model", build_model(model_config_for_tokenizer(config, tokenizer)), tokenizer)


sources = st.one_of(clean_texts, st.text(max_size=30), st.just(""), st.integers(1, 3000).map(lambda n: "the cat " * n))
clean_rows = st.fixed_dictionaries({"source": sources, "id": st.integers()}).map(lambda r: json.dumps(r).encode())
dirty_rows = st.fixed_dictionaries({}, optional={"source": st.one_of(sources, texts, json_values), "id": json_values})
files = st.booleans().flatmap(
    lambda clean: st.lists(
        clean_rows if clean else st.one_of(clean_rows, dirty_rows.map(lambda r: json.dumps(r).encode()), garbage_lines),
        min_size=int(clean),
        max_size=6,
    ).map(b"\n".join)
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
@given(data=files, batch_size=st.integers(1, 4), sort_window=st.integers(1, 3))
def test_generate_fuzzed_input(model_dir, tmp_path_factory, capsys, data, batch_size, sort_window):
    root = tmp_path_factory.mktemp("run")
    (root / "in.jsonl").write_bytes(data)
    status = main(
        [
            "generate",
            "--model",
            str(model_dir),
            "--input",
            str(root / "in.jsonl"),
            "--output",
            str(root / "out.jsonl"),
            "--beam",
            "2",
            "--max-length",
            "3",
            "--batch-size",
            str(batch_size),
            "--sort-window",
            str(sort_window),
        ]
    )
    err = capsys.readouterr().err
    if status == 2:
        (message,) = [line for line in err.splitlines() if line.startswith("error: ")]
        assert message.startswith(f"error: {root / 'in.jsonl'}")
        return
    assert status == 0
    written = [json.loads(line) for line in (root / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    inputs = [json.loads(line.removeprefix("\ufeff")) for line in data.decode("utf-8").split("\n") if line.strip()]
    assert len(written) == non_blank_lines(data) == len(inputs)
    assert all(
        w == {**row, "prediction": w["prediction"]} and isinstance(w["prediction"], str)
        for w, row in zip(written, inputs)
    )
