"""Task readers: real shared files round-trip; SQuAD/MARCO in their upstream formats; errors."""

import json
import re
from itertools import islice
from pathlib import Path

import pytest

from ctxlm.data.tasks import (
    SEP,
    TASK_READERS,
    Pair,
    read_cnndm,
    read_cornell,
    read_du2017_qg,
    read_gigaword,
    read_jsonl,
    read_jsonl_pairs,
    read_marco,
    read_squad_qg,
    read_task,
    read_xsum,
    write_jsonl,
)
from ctxlm.errors import CtxlmError

SAMPLE = 50


def raw_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def line_count(path: Path) -> int:
    return path.read_bytes().count(b"\n")


# --------------------------------------------------------------------------- real shared files

REAL_FILES = [  # (reader, task, file, source field, target field, has id)
    (read_gigaword, "summarization", "summarization/gigaword/train.jsonl", "document", "summary", False),
    (read_gigaword, "summarization", "summarization/gigaword/valid.jsonl", "document", "summary", False),
    (read_cnndm, "summarization", "summarization/cnndm/dev.jsonl", "article", "highlights", True),
    (read_xsum, "summarization", "summarization/xsum/dev.jsonl", "document", "summary", True),
    (read_du2017_qg, "qg", "qg/squad_du2017/train.jsonl", "sentence", "question", False),
    (read_du2017_qg, "qg", "qg/squad_du2017/valid.jsonl", "sentence", "question", False),
]


@pytest.mark.parametrize(
    "reader, task, name, source_field, target_field, has_id", REAL_FILES, ids=[f[2] for f in REAL_FILES]
)
def test_real_file_round_trips(data_dir, reader, task, name, source_field, target_field, has_id):
    path = data_dir / name
    rows = raw_rows(path)
    stats = {}
    pairs = list(reader(path, stats=stats))
    assert len(pairs) == len(rows) == line_count(path) == stats["pairs"] == stats["rows"]
    for pair, row in zip(pairs[:SAMPLE], rows[:SAMPLE]):
        assert pair.source == row[source_field]
        assert pair.target == row[target_field]
        assert pair.references == (row[target_field],)
        assert pair.id == (row["id"] if has_id else None)
    assert list(islice(read_task(task, path), SAMPLE)) == pairs[:SAMPLE]


@pytest.mark.parametrize("name", ["dialog/cornell/train.jsonl", "dialog/cornell/valid.jsonl"])
def test_cornell_blank_rows_are_reported_or_counted(data_dir, name):
    path = data_dir / name
    rows = raw_rows(path)
    blank = [i for i, r in enumerate(rows) if not r["context"].strip() or not r["response"].strip()]
    assert blank, "the shared Cornell files are known to hold blank rows"
    with pytest.raises(CtxlmError, match=f"{name}:{blank[0] + 1}: field '(context|response)' is empty"):
        list(read_cornell(path))
    stats = {}
    pairs = list(read_task("dialog", path, skip_empty=True, stats=stats))
    kept = [r for i, r in enumerate(rows) if i not in set(blank)]
    assert stats == {"rows": line_count(path), "pairs": len(kept), "skipped_empty": len(blank)}
    assert len(pairs) + len(blank) == line_count(path)
    for pair, row in zip(pairs[:SAMPLE], kept[:SAMPLE]):
        assert (pair.source, pair.target) == (row["context"], row["response"])


def test_cnndm_extra_references(data_dir):
    path = data_dir / "summarization/cnndm/dev.jsonl"
    rows = raw_rows(path)
    pairs = list(read_cnndm(path, extra_references=True))
    with_extra = [(p, r) for p, r in zip(pairs, rows) if "extra_references" in r]
    assert with_extra
    for pair, row in with_extra:
        assert pair.references == (row["highlights"], *row["extra_references"])
        assert pair.target == row["highlights"]


# --------------------------------------------------------------------------- SQuAD 1.1 JSON


def squad_document() -> dict:
    """A small SQuAD 1.1 file (dev-style: several answers for one question)."""
    c0 = "Super Bowl 50 was an American football game. The Denver Broncos won."
    c1 = "Warsaw is the capital of Poland."
    c2 = "Oxygen is a chemical element with symbol O."

    def ans(context, text):
        return {"text": text, "answer_start": context.index(text)}

    return {
        "version": "1.1",
        "data": [
            {
                "title": "Super_Bowl_50",
                "paragraphs": [
                    {
                        "context": c0,
                        "qas": [
                            {
                                "id": "56be4db0acb8001400a502ec",
                                "question": "Which team won Super Bowl 50?",
                                "answers": [ans(c0, "The Denver Broncos"), ans(c0, "Denver Broncos")],
                            },
                            {
                                "id": "56be4db0acb8001400a502ed",
                                "question": "What sport is Super Bowl 50?",
                                "answers": [ans(c0, "American football")],
                            },
                        ],
                    },
                ],
            },
            {
                "title": "Warsaw",
                "paragraphs": [
                    {
                        "context": c1,
                        "qas": [
                            {
                                "id": "5733",
                                "question": "Warsaw is the capital of which country?",
                                "answers": [ans(c1, "Poland")],
                            }
                        ],
                    },
                    {
                        "context": c2,
                        "qas": [{"id": "5734", "question": "What is the symbol of oxygen?", "answers": [ans(c2, "O")]}],
                    },
                ],
            },
        ],
    }


def write_json(path: Path, obj, indent=None) -> Path:
    path.write_text(json.dumps(obj, indent=indent), encoding="utf-8")
    return path


@pytest.mark.parametrize("indent", [None, 2])
def test_squad_qg_layout(tmp_path, indent):
    doc = squad_document()
    path = write_json(tmp_path / "dev-v1.1.json", doc, indent)
    expected = [(p["context"], qa) for a in doc["data"] for p in a["paragraphs"] for qa in p["qas"]]
    pairs = list(read_squad_qg(path))
    assert len(pairs) == len(expected) == 4
    for pair, (context, qa) in zip(pairs, expected):
        assert pair.source == context + " [SEP] " + qa["answers"][0]["text"]
        assert (pair.target, pair.id, pair.references) == (qa["question"], qa["id"], (qa["question"],))
    first = list(read_squad_qg(path, separator=" | ", answer_first=True))[0]
    assert first.source == "The Denver Broncos | " + expected[0][0]
    assert list(read_task("qg", path)) == pairs


def test_squad_answer_span_mismatch_names_json_path_and_question(tmp_path):
    doc = squad_document()
    doc["data"][1]["paragraphs"][1]["qas"][0]["answers"][0]["answer_start"] += 1
    path = write_json(tmp_path / "train-v1.1.json", doc)
    with pytest.raises(CtxlmError) as e:
        list(read_squad_qg(path))
    message = str(e.value)
    assert message.startswith(f"{path}: field 'data[1].paragraphs[1].qas[0].answers[0]'")
    assert "question id 5734" in message and "\n" not in message


@pytest.mark.parametrize(
    "edit, field_path",
    [
        (lambda d: d["data"][0]["paragraphs"][0]["qas"][1].pop("question"), "data[0].paragraphs[0].qas[1].question"),
        (lambda d: d["data"][1]["paragraphs"][0].__setitem__("context", 7), "data[1].paragraphs[0].context"),
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][0].__setitem__("answers", []),
            "data[0].paragraphs[0].qas[0].answers",
        ),
        (lambda d: d["data"][1].pop("paragraphs"), "data[1].paragraphs"),
    ],
)
def test_squad_malformed(tmp_path, edit, field_path):
    doc = squad_document()
    edit(doc)
    path = write_json(tmp_path / "squad.json", doc)
    with pytest.raises(CtxlmError, match=f"^{re.escape(f'{path}: field {field_path!r}')}"):
        list(read_task("qg", path))


# --------------------------------------------------------------------------- MS MARCO v2.1 NLG

MARCO_ROWS = [  # (query_id, query, [(is_selected, passage_text)], wellFormedAnswers)
    (
        1102432,
        "what is a cortex",
        [
            (0, "The cortex is an outer layer."),
            (1, "Cerebral cortex is grey matter."),
            (1, "Cortex means bark in Latin."),
        ],
        ["A cortex is the outer layer of an organ.", "The cortex is an outer layer."],
    ),
    (1102431, "why is the sky blue", [(0, "Rayleigh scattering."), (1, "Blue light scatters more.")], "[]"),
    (
        1102430,
        "how tall is everest",
        [(0, "Everest is 8,849 m tall."), (0, "It is in Nepal.")],
        ["Mount Everest is 8,849 metres tall."],
    ),
]


def marco_row(query_id, query, passages, well_formed) -> dict:
    return {
        "query": query,
        "query_id": query_id,
        "query_type": "DESCRIPTION",
        "answers": ["an answer"],
        "passages": [
            {"is_selected": s, "passage_text": t, "url": f"http://example.com/{i}"} for i, (s, t) in enumerate(passages)
        ],
        "wellFormedAnswers": well_formed,
    }


def marco_columns(rows) -> dict:
    """The official v2.1 layout: one object, each column mapping a row index string to a value."""
    columns = {}
    for i, row in enumerate(rows):
        for name, value in row.items():
            columns.setdefault(name, {})[str(i)] = value
    return columns


@pytest.fixture
def marco_json(tmp_path) -> Path:
    return write_json(tmp_path / "dev_v2.1.json", marco_columns([marco_row(*r) for r in MARCO_ROWS]))


def test_marco_official_json(marco_json):
    stats = {}
    pairs = list(read_marco(marco_json, stats=stats))
    assert stats == {"rows": 3, "pairs": 3, "unanswerable": 1}
    for pair, (qid, query, passages, well_formed) in zip(pairs, MARCO_ROWS):
        assert pair.source == " ".join(t for _, t in passages) + SEP + query
        assert pair.source.endswith(" [SEP] " + query)
        assert pair.id == str(qid)
    assert pairs[0].target == MARCO_ROWS[0][3][0] and pairs[0].references == tuple(MARCO_ROWS[0][3])
    assert pairs[1].target is None and pairs[1].references == ()
    assert list(read_task("qa", marco_json)) == pairs


def test_marco_selected_only_and_skip_unanswerable(marco_json):
    stats = {}
    pairs = list(
        read_marco(
            marco_json,
            selected_only=True,
            passage_separator="\n",
            question_separator=" || ",
            skip_unanswerable=True,
            stats=stats,
        )
    )
    assert [p.id for p in pairs] == ["1102432", "1102430"]
    assert pairs[0].source == ("Cerebral cortex is grey matter.\nCortex means bark in Latin. || what is a cortex")
    # no passage selected: all of them
    assert pairs[1].source == "Everest is 8,849 m tall.\nIt is in Nepal. || how tall is everest"
    assert stats == {"rows": 3, "pairs": 2, "unanswerable": 1, "no_selected_passage": 1}


def test_marco_jsonl_variants_match_official(tmp_path, marco_json):
    rows = [marco_row(*r) for r in MARCO_ROWS]
    jsonl = tmp_path / "marco.jsonl"
    write_jsonl(jsonl, rows)
    # HF datasets export: passages as parallel lists, [] for no well-formed answer
    hf_rows = [
        dict(
            r,
            wellFormedAnswers=[] if r["wellFormedAnswers"] == "[]" else r["wellFormedAnswers"],
            passages={k: [p[k] for p in r["passages"]] for k in ("is_selected", "passage_text", "url")},
        )
        for r in rows
    ]
    hf = tmp_path / "marco_hf.jsonl"
    write_jsonl(hf, hf_rows)
    official = list(read_marco(marco_json))
    assert list(read_task("qa", jsonl)) == official
    assert list(read_task("qa", hf)) == official


def test_marco_eval_file_without_answers_is_unlabeled(tmp_path):
    columns = marco_columns([marco_row(*r) for r in MARCO_ROWS])
    del columns["wellFormedAnswers"], columns["answers"]
    path = write_json(tmp_path / "eval_v2.1_public.json", columns)
    assert [p.target for p in read_marco(path)] == [None, None, None]


def test_marco_malformed(tmp_path):
    columns = marco_columns([marco_row(*r) for r in MARCO_ROWS])
    del columns["passages"]["1"]
    path = write_json(tmp_path / "train_v2.1.json", columns)
    with pytest.raises(CtxlmError, match=rf"^{path}: field 'passages\[\"1\"\]' missing"):
        list(read_marco(path))
    rows = [marco_row(*r) for r in MARCO_ROWS]
    rows[2]["passages"][1]["is_selected"] = "yes"
    rows[1]["wellFormedAnswers"] = "none"
    write_jsonl(path := tmp_path / "marco.jsonl", rows)
    with pytest.raises(CtxlmError, match=rf"^{path}:2: field 'wellFormedAnswers' must be an array"):
        list(read_marco(path))
    write_jsonl(path, rows[2:])
    with pytest.raises(CtxlmError, match=rf"^{path}:1: field 'passages\[1\].is_selected' must be a number"):
        list(read_marco(path))


# --------------------------------------------------------------------------- malformed JSONL rows

GOOD = {"document": "an article .", "summary": "a summary"}


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"document": "x", "summary": ', r"invalid JSON"),
        ('{"document": "an article"}', r"field 'summary' missing"),
        ('{"document": "x", "summary": 3}', r"field 'summary' must be a string, got number"),
        ('{"document": "  ", "summary": "s"}', r"field 'document' is empty"),
        ('["document", "summary"]', r"expected a JSON object, got array"),
    ],
)
def test_malformed_row_names_file_line_and_field(tmp_path, bad_line, message):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(GOOD), "", bad_line, json.dumps(GOOD)]  # the bad row is on line 3
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for reader in (read_gigaword, lambda p: read_task("summarization", p)):
        with pytest.raises(CtxlmError, match=rf"^{path}:3: {message}") as e:
            list(reader(path))
        assert "\n" not in str(e.value)


def test_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "valid.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"document": "\xff", "summary": "s"}\n')
    with pytest.raises(CtxlmError, match=rf"^{path}:2: not valid UTF-8"):
        list(read_gigaword(path))
    with pytest.raises(CtxlmError, match="file not found"):
        list(read_gigaword(tmp_path / "absent.jsonl"))


def test_generic_pairs_and_unlabeled_inputs(tmp_path):
    path = tmp_path / "test.jsonl"
    write_jsonl(path, [{"source": "a", "target": "b", "id": 7}, {"source": "c"}])
    with pytest.raises(CtxlmError, match=rf"^{path}:2: field 'target' missing"):
        list(read_task("seq2seq", path))
    assert list(read_jsonl_pairs(path, require_target=False)) == [Pair("a", "b", "7"), Pair("c", None)]
    assert list(read_task("dialog", path, require_target=False))[1] == Pair("c", None)


def test_write_and_read_jsonl_round_trip(tmp_path):
    path = tmp_path / "pairs.jsonl"
    pairs = [Pair("x", "y", "1", ("y", "z")), Pair("ü\nnewline", None)]
    assert write_jsonl(path, pairs) == 2
    assert list(read_jsonl(path)) == [
        {"source": "x", "target": "y", "id": "1", "references": ["y", "z"]},
        {"source": "ü\nnewline", "target": None, "id": None, "references": []},
    ]
    assert [Pair(r["source"], r["target"], r["id"], r["references"]) for r in read_jsonl(path)] == pairs


def test_pair_references_invariant():
    assert Pair("s", "t").references == ("t",)
    assert Pair("s", None).references == ()
    with pytest.raises(ValueError):
        Pair("s", "t", references=("u", "t"))
    with pytest.raises(ValueError):
        Pair("s", None, references=("t",))


# --------------------------------------------------------------------------- registry


def test_registry_errors(tmp_path):
    assert set(TASK_READERS) == {"summarization", "qg", "qa", "dialog", "seq2seq"}
    with pytest.raises(
        CtxlmError, match="unknown task 'translation'; known tasks: dialog, qa, qg, seq2seq, summarization"
    ):
        read_task("translation", tmp_path / "x.jsonl")
    path = tmp_path / "odd.jsonl"
    write_jsonl(path, [{"text": "a", "label": "b"}])
    with pytest.raises(
        CtxlmError,
        match=rf"^{path}:1: unrecognised summarization layout: "
        r"fields \['label', 'text'\]",
    ):
        read_task("summarization", path)
    write_jsonl(path, [GOOD])
    with pytest.raises(CtxlmError, match="option.* selected_only not accepted by read_xsum"):
        read_task("summarization", path, selected_only=True)
    squad = write_json(tmp_path / "not_squad.json", {"version": "1.1", "articles": []})
    with pytest.raises(CtxlmError, match=r"unrecognised qg layout: top-level fields \['articles', 'version'\]"):
        read_task("qg", squad)
