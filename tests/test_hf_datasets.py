"""Hugging Face `datasets` inputs (Parquet, save_to_disk, Arrow) read exactly as the same rows in
JSON Lines: corpora into the same token store, task files into the same pairs, generate inputs."""

from __future__ import annotations

import json

import datasets
import numpy as np
import pytest

from ctxlm.cli import main
from ctxlm.predict import read_sources
from ctxlm.data.corpus import iter_documents
from ctxlm.data.store import TokenStore
from ctxlm.data.tasks import read_task
from ctxlm.errors import CtxlmError
from ctxlm.tokenization import train_tokenizer

DOCS = [
    {"text": "The cat sat on the mat. It was warm.\n\nThen it slept. Dogs barked outside.", "id": 1},
    {"text": "A second document arrives. It has two sentences.", "id": 2},
    {"text": "Mr. Smith went to Washington. He met Dr. Jones there. They talked for hours.", "id": 3},
]
PAIRS = [
    {"document": d["text"], "summary": f"summary {i}", "source": d["text"], "target": f"summary {i}"}
    for i, d in enumerate(DOCS)
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_datasets")
    (root / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in DOCS), encoding="utf-8")
    docs = datasets.Dataset.from_list(DOCS)
    docs.to_parquet(str(root / "docs.parquet"))
    docs.save_to_disk(str(root / "docs_saved"))
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(PAIRS[:1]), "validation": datasets.Dataset.from_list(PAIRS)}
    ).save_to_disk(str(root / "pairs_saved"))
    datasets.Dataset.from_list(PAIRS).to_parquet(str(root / "pairs.parquet"))
    (root / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PAIRS), encoding="utf-8")
    tokenizer = train_tokenizer(root / "docs.jsonl", 120, root / "tok", min_frequency=1)
    return root, tokenizer


def store_arrays(store):
    return (np.asarray(store.tokens).tolist(), store.sentence_offsets.tolist(), store.document_offsets.tolist())


def test_parquet_and_save_to_disk_corpora_give_the_jsonl_token_store(inputs):
    root, tokenizer = inputs
    expected = TokenStore.build(root / "docs.jsonl", tokenizer, cache_dir=root / "cache", progress=False, num_workers=1)
    assert expected.num_documents == 3
    for name in ("docs.parquet", "docs_saved", "docs_saved/data-00000-of-00001.arrow"):
        store = TokenStore.build(root / name, tokenizer, cache_dir=root / "cache", progress=False, num_workers=1)
        assert store_arrays(store) == store_arrays(expected), name
        assert store.meta["files"][0]["format"] == "dataset"
        again = TokenStore.build(root / name, tokenizer, cache_dir=root / "cache", progress=False, num_workers=1)
        assert again.from_cache and again.directory == store.directory


def test_task_files_and_generate_inputs_read_from_datasets(inputs):
    root, _ = inputs
    expected = list(read_task("summarization", root / "pairs.jsonl"))
    assert list(read_task("summarization", root / "pairs.parquet")) == expected
    assert list(read_task("summarization", f"{root / 'pairs_saved'}:validation")) == expected
    assert len(list(read_task("qa", root / "pairs_saved"))) == 1  # the train split by default
    named = list(read_task("summarization", root / "pairs.parquet", source_field="summary", target_field="document"))
    assert [(p.source, p.target) for p in named] == [(p.target, p.source) for p in expected]
    assert [r["source"] for r in read_sources(root / "pairs.parquet", "source")] == [d["text"] for d in DOCS]


def test_dataset_errors_name_the_row_and_field(inputs, tmp_path, capsys):
    root, _ = inputs
    with pytest.raises(CtxlmError, match=r"docs_saved row 1: field 'body' missing"):
        list(iter_documents(root / "docs_saved", text_field="body"))
    with pytest.raises(CtxlmError, match=r"no split 'test' \(splits: train, validation"):
        list(read_task("summarization", f"{root / 'pairs_saved'}:test"))
    code = main(
        [
            "tokenizer",
            "train",
            "--corpus",
            str(root / "pairs.parquet"),
            "--text-field",
            "nope",
            "--vocab-size",
            "200",
            "--out",
            str(tmp_path / "tok"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pairs.parquet row 1: field 'nope' missing" in err


def test_a_hub_dataset_without_network_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    """Offline mode stands in for a missing network (the same error, without the client's retries)."""
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code = main(
        [
            "tokenizer",
            "train",
            "--corpus",
            "hub:ctxlm-test/no-such-dataset:train",
            "--vocab-size",
            "200",
            "--out",
            str(tmp_path / "tok"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: hub:ctxlm-test/no-such-dataset:train: the Hugging Face hub cannot be reached")


def test_finetune_reads_a_dataset_with_named_fields(inputs, tmp_path):
    root, _ = inputs
    (tmp_path / "glm.yaml").write_text(
        "model:\n  base: glm-tiny\n  d_model: 32\n  num_layers: 1\n  num_heads: 2\n"
        "  ffn_dim: 64\n  max_position_embeddings: 128\n",
        encoding="utf-8",
    )
    assert (
        main(
            [
                "finetune",
                "--config",
                str(tmp_path / "glm.yaml"),
                "--tokenizer",
                str(root / "tok"),
                "--train",
                f"{root / 'pairs_saved'}:validation",
                "--source-field",
                "document",
                "--target-field",
                "summary",
                "--out",
                str(tmp_path / "run"),
                "--max-steps",
                "1",
                "--batch-size",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    run = json.loads((tmp_path / "run/run.json").read_text())
    assert run["train_examples"] == 3 and run["train_file"].endswith("pairs_saved:validation")
