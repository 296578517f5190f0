"""GLUE / SuperGLUE readers (ctxlm.data.glue) on the staged files: rows re-read independently,
the held-out MRPC dev split, and file:line errors for malformed rows."""

from __future__ import annotations

import collections
import csv
import json
import random

import pytest

from ctxlm.data.glue import DATASETS, MRPC_DEV_SIZE, Row, read_mrpc, read_rte, read_split, read_sts
from ctxlm.errors import CtxlmError

NLU = "nlu"


@pytest.fixture(scope="module")
def nlu(data_dir):
    return data_dir / NLU


def test_mrpc_rows_match_an_independent_parse(nlu):
    path = nlu / DATASETS["glue/MRPC"].files["train"]
    with open(path, encoding="utf-8-sig", newline="") as handle:
        raw = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert raw[0] == ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    rows = read_mrpc(path)
    assert rows == [Row(r[3], r[4], int(r[0])) for r in raw[1:]]
    assert len(rows) == 4076 and collections.Counter(r.label for r in rows) == {1: 2753, 0: 1323}
    assert rows[0] == Row(
        'Amrozi accused his brother, whom he called "the witness", of deliberately distorting his evidence.',
        'Referring to him as only "the witness", Amrozi accused his brother of deliberately distorting his evidence.',
        1,
    )


def test_mrpc_dev_split_is_deterministic_disjoint_and_order_free(nlu, tmp_path):
    train, dev = read_split("glue/MRPC", nlu, "train"), read_split("glue/MRPC", nlu, "dev")
    assert len(dev) == MRPC_DEV_SIZE == 408 and len(train) == 4076 - 408
    assert not {(r.text_a, r.text_b) for r in train} & {(r.text_a, r.text_b) for r in dev}
    assert sorted(train + dev) == sorted(read_mrpc(nlu / DATASETS["glue/MRPC"].files["train"]))
    assert read_split("glue/MRPC", nlu, "dev") == dev  # same call, same rows
    assert collections.Counter(r.label for r in dev) == {1: 269, 0: 139}  # pinned: the split must not drift
    # the split depends on the rows' text, not on their order in the file
    lines = (nlu / DATASETS["glue/MRPC"].files["train"]).read_text(encoding="utf-8-sig").splitlines()
    body = lines[1:]
    random.Random(0).shuffle(body)
    shuffled = tmp_path / "glue" / "MRPC" / "msr_paraphrase_train.txt"
    shuffled.parent.mkdir(parents=True)
    shuffled.write_text("\n".join([lines[0]] + body) + "\n", encoding="utf-8")
    assert sorted(read_split("glue/MRPC", tmp_path, "dev")) == sorted(dev)


def test_sts_rows_match_an_independent_parse(nlu):
    for split, count in (("train", 5749), ("dev", 1500)):
        path = nlu / DATASETS["glue/STS-B"].files[split]
        raw = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()]
        rows = read_split("glue/STS-B", nlu, split)
        assert len(rows) == count == len(raw)
        assert rows == [Row(r[5], r[6], float(r[4])) for r in raw]
        assert min(r.label for r in rows) == 0.0 and max(r.label for r in rows) == 5.0
    first = read_split("glue/STS-B", nlu, "train")[0]
    assert first == Row("A plane is taking off.", "An air plane is taking off.", 5.0)
    # rows with trailing license columns keep their sentences
    licensed = [i for i, r in enumerate(raw) if len(r) > 7]
    assert licensed and all(rows[i].text_b == raw[i][6] for i in licensed)


def test_rte_rows_match_an_independent_parse(nlu):
    for split, entailed in (("train", 13), ("dev", 21)):
        path = nlu / DATASETS["superglue/RTE"].files[split]
        raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = read_split("superglue/RTE", nlu, split)
        assert len(rows) == 32 == len(raw)
        assert rows == [Row(r["premise"], r["hypothesis"], 0 if r["label"] == "entailment" else 1) for r in raw]
        assert sum(r.label == 0 for r in rows) == entailed


def test_registry(nlu):
    assert set(DATASETS) == {"glue/MRPC", "glue/STS-B", "superglue/RTE"}
    assert [(d.num_labels, d.metrics) for d in DATASETS.values()] == [
        (2, ("accuracy", "f1")),
        (1, ("pearson", "spearman")),
        (2, ("accuracy",)),
    ]
    with pytest.raises(CtxlmError, match="unknown dataset 'glue/MRCP'"):
        read_split("glue/MRCP", nlu, "train")
    with pytest.raises(CtxlmError, match="has no split 'test'"):
        read_split("glue/STS-B", nlu, "test")
    with pytest.raises(CtxlmError, match="nowhere/glue/STS-B/sts-dev.tsv: file not found"):
        read_split("glue/STS-B", "nowhere", "dev")


HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
GOOD_MRPC = "1\t1\t2\tA cat sat.\tA cat was sitting.\n"
GOOD_STS = "main-news\theadlines\t2016\t0001\t3.5\tA man runs.\tA person runs.\n"
GOOD_RTE = json.dumps({"premise": "A man runs.", "hypothesis": "A person moves.", "label": "entailment"}) + "\n"


@pytest.mark.parametrize(
    "reader, text, message",
    [
        (read_mrpc, HEADER + GOOD_MRPC + "2\t1\t2\tA.\tB.\n", r":3: field 'Quality' must be 0 or 1, got '2'"),
        (read_mrpc, HEADER + GOOD_MRPC + "1\t1\t2\tA only\n", r":3: expected 5 tab-separated fields, got 4"),
        (read_mrpc, HEADER + "1\t1\t2\t \tB.\n", r":2: field '#1 String' is empty"),
        (read_mrpc, GOOD_MRPC, r":1: expected the MRPC header"),
        (read_sts, GOOD_STS + GOOD_STS.replace("3.5", "high"), r":2: field 'score' \(column 5\) must be a number"),
        (read_sts, GOOD_STS.replace("3.5", "5.5"), r":1: field 'score' \(column 5\) must lie in \[0, 5\]"),
        (read_sts, GOOD_STS + "\n" + "a\tb\tc\td\t1.0\tonly one\n", r":3: expected at least 7 tab-separated fields"),
        (read_rte, GOOD_RTE + GOOD_RTE.replace("entailment", "contradiction"), r":2: field 'label' must be one of"),
        (read_rte, GOOD_RTE + '{"premise": "x", "label": "entailment"}\n', r":2: field 'hypothesis' must be a string"),
        (read_rte, GOOD_RTE + "{oops\n", r":2: invalid JSON"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, reader, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(CtxlmError, match=f"^{path}{message}"):
        reader(path)


def test_invalid_utf8_names_the_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(GOOD_STS.encode() + b"x\tb\tc\td\t1\t\xff\tz\n")
    with pytest.raises(CtxlmError, match=f"^{path}:2: not valid UTF-8"):
        read_sts(path)


def test_mrpc_holdout_needs_enough_rows(tmp_path):
    root = tmp_path / "glue" / "MRPC"
    root.mkdir(parents=True)
    (root / "msr_paraphrase_train.txt").write_text(HEADER + GOOD_MRPC, encoding="utf-8")
    with pytest.raises(CtxlmError, match="cannot hold out 408 dev rows from 1"):
        read_split("glue/MRPC", tmp_path, "dev")
