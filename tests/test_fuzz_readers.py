"""Fuzzed input for every reader: random bytes, invalid UTF-8, empty and one-token documents, wrong
JSON types, missing fields, unpaired surrogates, deep nesting, huge numbers and 1 MB lines.

Each reader must give a valid result or a one-line `CtxlmError` naming the file (and line, for
line-based formats); any other exception fails the test. Where a reader returns rows, the rows
are checked against the input (nothing dropped that is not counted).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ctxlm.predict import read_sources
from ctxlm.data import glue, superglue, tasks
from ctxlm.data.corpus import iter_documents
from ctxlm.errors import CtxlmError
from ctxlm.tokenization import TextTokenizer, train_tokenizer

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)

# ----------------------------------------------------------------------------- strategies
# A file is drawn either clean (every row has its fields, of their types, with text) so that results
# get checked, or dirty (fields missing or of any JSON type, odd or unpaired-surrogate text,
# garbage and raw-byte lines) so that errors do. A row spec maps (text strategy, object builder)
# to the row's field strategies; the object builder makes nested objects in the same mode.
SURROGATE = st.sampled_from(["\ud800", "\udc00", "\udfff"])
WORDS = ["the", "cat", "sat", ".", "Mr.", "Smith", "é", "日本", "?", "!", "'", "0", "[SEP]"]
ODD_WORDS = ["\t", "\u2028", "\x0b", "\ufeff", "\x85", "", " "]
clean_texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
texts = st.one_of(
    clean_texts,
    st.lists(st.sampled_from(WORDS + ODD_WORDS), max_size=12).map(" ".join),
    st.text(max_size=40),
    st.tuples(st.text(max_size=5), SURROGATE, st.text(max_size=5)).map("".join),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
garbage_lines = st.one_of(
    st.binary(max_size=30),
    st.sampled_from(
        [
            b"",
            b"   ",
            b"{",
            b"[1, 2]",
            b'"text"',
            b"null",
            b"\xff\xfe",
            b"\x00",
            b"[" * 3000,
            b"9" * 5000,
            b'{"text": "\\ud800"}',
            '{"a": "\u00e9"}'.encode("latin-1"),
        ]
    ),
)


def objects(spec, clean: bool) -> st.SearchStrategy:
    fields = spec(clean_texts if clean else texts, lambda inner: objects(inner, clean))
    if clean:
        return st.fixed_dictionaries(fields)
    return st.one_of(
        st.fixed_dictionaries(fields),
        st.fixed_dictionaries({}, optional={k: st.one_of(v, json_values) for k, v in fields.items()}),
    )


def jsonl_files(spec) -> st.SearchStrategy:
    """File bytes: JSON lines of rows of `spec`, clean or dirty."""

    def lines(clean: bool):
        rows = objects(spec, clean)
        line = rows.map(lambda r: json.dumps(r).encode())
        if not clean:
            raw = rows.map(lambda r: json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass"))
            line = st.one_of(line, raw, garbage_lines)
        return st.lists(line, min_size=int(clean), max_size=5).map(b"\n".join)

    return st.booleans().flatmap(lines)


def documents(spec) -> st.SearchStrategy:
    """One JSON document of `spec` (whole-file JSON), clean or dirty."""
    return st.booleans().flatmap(lambda clean: objects(spec, clean))


def write(tmp_path_factory, name: str, data: bytes) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(data)
    return path


def outcome(path: Path, call):
    """`call()`'s result, or the `CtxlmError` it raised, checked to be one line naming the file."""
    try:
        return call()
    except CtxlmError as error:
        message = str(error)
        assert len(message.splitlines()) == 1 and message.startswith(str(path)), message
        return error


def non_blank_lines(data: bytes) -> int:
    lines = data.removeprefix(b"\xef\xbb\xbf").split(b"\n")
    return sum(1 for line in lines if line.decode("utf-8", "replace").strip())


# ----------------------------------------------------------------------------- corpus files
@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.lists(texts, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass")),
    ),
    format=st.sampled_from(["auto", "sentences", "paragraphs"]),
)
def test_corpus_text_files(tmp_path_factory, data, format):
    """Sentence-per-line and paragraph files: every non-blank line's text comes back (sentence
    format: exactly the stripped lines), or a one-line error."""
    path = write(tmp_path_factory, "corpus.txt", data)
    result = outcome(path, lambda: list(iter_documents(path, format)))
    if isinstance(result, CtxlmError):
        return
    assert all(doc and all(s and s == s.strip() for s in doc) for doc in result)
    lines = [line.decode("utf-8").rstrip("\r\n") for line in data.split(b"\n")]
    lines[0] = lines[0].removeprefix("\ufeff")
    lines = [line.strip() for line in lines]
    if format == "sentences":
        assert [s for doc in result for s in doc] == [line for line in lines if line]
    else:  # sentences split by pysbd: the same words
        assert " ".join(" ".join(doc) for doc in result).split() == " ".join(lines).split()


@FUZZ
@given(data=jsonl_files(lambda t, obj: {"text": st.one_of(t, st.lists(t, max_size=3)), "other": t}))
def test_corpus_jsonl_files(tmp_path_factory, data):
    """JSONL corpora: one document per row with text, empty rows counted, or a one-line error."""
    path = write(tmp_path_factory, "corpus.jsonl", data)
    stats: dict = {}
    result = outcome(path, lambda: list(iter_documents(path, "jsonl", stats=stats)))
    if not isinstance(result, CtxlmError):
        assert all(doc and all(isinstance(s, str) and s.strip() for s in doc) for doc in result)
        assert len(result) + stats.get("empty_documents", 0) == non_blank_lines(data)


def test_corpus_one_megabyte_lines(tmp_path):
    """A 1 MB line is read whole (sentences: one sentence); a line over the limit is an error."""
    path = tmp_path / "big.txt"
    path.write_text("a" * 999_999 + ".\n\nshort.\n", encoding="utf-8")
    assert [len(doc[0]) for doc in iter_documents(path, "sentences")] == [1_000_000, 6]
    path.write_text("ok.\n" + "b" * 1_000_001 + "\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"big\.txt:2: line longer than 1,000,000 characters"):
        list(iter_documents(path, "sentences"))


# ----------------------------------------------------------------------------- task readers
PAIR_LAYOUTS = [  # reader, source field, target field
    (tasks.read_gigaword, "document", "summary"),
    (tasks.read_xsum, "document", "summary"),
    (tasks.read_cnndm, "article", "highlights"),
    (tasks.read_du2017_qg, "sentence", "question"),
    (tasks.read_cornell, "context", "response"),
    (tasks.read_jsonl_pairs, "source", "target"),
]


@FUZZ
@given(layout=st.sampled_from(PAIR_LAYOUTS), data=st.data(), skip_empty=st.booleans(), labelled=st.booleans())
def test_pair_readers(tmp_path_factory, layout, data, skip_empty, labelled):
    """Gigaword, XSum, CNN/DM, Du 2017, Cornell and generic JSONL: every row becomes a pair or is
    counted as skipped (empty), or the read stops with a one-line error naming file:line."""
    reader, source, target = layout
    content = data.draw(jsonl_files(lambda t, obj: {source: t, target: t, "id": st.integers() | t}))
    path = write(tmp_path_factory, "pairs.jsonl", content)
    stats: dict = {}
    result = outcome(path, lambda: list(reader(path, require_target=labelled, skip_empty=skip_empty, stats=stats)))
    if isinstance(result, CtxlmError):
        return
    assert stats.get("rows", 0) == non_blank_lines(content) == len(result) + stats.get("skipped_empty", 0)
    assert all(p.source.strip() and (p.target is None or p.target.strip()) for p in result)
    assert labelled <= all(p.target is not None for p in result)


@FUZZ
@given(task=st.sampled_from(sorted(tasks.TASK_READERS)), data=st.data())
def test_task_dispatch_on_jsonl(tmp_path_factory, task, data):
    """`read_task` picks a reader from the first row's fields; any JSONL gives pairs or one error."""

    def fields(t, obj):
        names = [
            "source",
            "target",
            "document",
            "summary",
            "article",
            "highlights",
            "sentence",
            "question",
            "context",
            "response",
            "query",
        ]
        return {
            **{name: t for name in names},
            "passages": st.lists(
                obj(lambda t, obj: {"passage_text": t, "is_selected": st.sampled_from([0, 1])}), min_size=1, max_size=3
            ),
            "wellFormedAnswers": st.one_of(st.just("[]"), st.lists(t, max_size=2)),
        }

    content = data.draw(jsonl_files(fields))
    path = write(tmp_path_factory, f"{task}.jsonl", content)
    result = outcome(path, lambda: list(tasks.read_task(task, path)))
    if not isinstance(result, CtxlmError):
        assert all(isinstance(p, tasks.Pair) and isinstance(p.source, str) for p in result)


def squad_spec(t, obj):
    answer = obj(lambda t, obj: {"text": t, "answer_start": st.just(0)})
    question = obj(
        lambda t, obj: {
            "question": t,
            "id": t | st.integers(),
            "answers": st.lists(answer, max_size=2),
            "is_impossible": st.booleans(),
        }
    )
    paragraph = obj(lambda t, obj: {"context": t, "qas": st.lists(question, max_size=3)})
    return {
        "data": st.lists(obj(lambda t, obj: {"paragraphs": st.lists(paragraph, max_size=2)}), max_size=2),
        "version": t,
    }


def squad_with_spans(document):
    """Answer texts cut from their contexts at random-ish starts (so that clean documents are valid)."""
    for article in document.get("data", []) if isinstance(document.get("data"), list) else []:
        for paragraph in article.get("paragraphs", []) if isinstance(article, dict) else []:
            if not (isinstance(paragraph, dict) and isinstance(paragraph.get("context"), str)):
                continue
            context = paragraph["context"]
            for qa in paragraph.get("qas", []) if isinstance(paragraph.get("qas"), list) else []:
                for i, answer in enumerate(
                    qa.get("answers", []) if isinstance(qa, dict) and isinstance(qa.get("answers"), list) else []
                ):
                    if isinstance(answer, dict) and answer.get("answer_start") == 0 and context.strip():
                        start = (7 * i) % len(context)
                        answer["text"], answer["answer_start"] = context[start : start + 5], start
    return document


squad = documents(squad_spec).map(squad_with_spans)


@FUZZ
@given(document=squad, answer_first=st.booleans())
def test_squad_json(tmp_path_factory, document, answer_first):
    """SQuAD JSON: one pair per answerable question, unanswerable ones counted, or one error."""
    path = write(tmp_path_factory, "squad.json", json.dumps(document).encode())
    stats: dict = {}
    result = outcome(path, lambda: list(tasks.read_squad_qg(path, answer_first=answer_first, stats=stats)))
    if not isinstance(result, CtxlmError):
        questions = sum(len(p["qas"]) for a in document["data"] for p in a["paragraphs"])
        assert len(result) + stats.get("skipped_impossible", 0) == questions


@FUZZ
def marco_columns(rows):
    """The official column layout of (query, passages, well-formed answers) rows."""
    return {
        name: {str(i): row[k] for i, row in enumerate(rows)}
        for k, name in enumerate(["query", "passages", "wellFormedAnswers"])
    }


passage = st.fixed_dictionaries({"passage_text": clean_texts, "is_selected": st.sampled_from([0, 1])})
clean_marco = st.lists(
    st.tuples(
        clean_texts, st.lists(passage, min_size=1, max_size=2), st.just("[]") | st.lists(clean_texts, max_size=2)
    ),
    max_size=3,
).map(marco_columns)
dirty_marco = st.dictionaries(
    st.sampled_from(["query", "passages", "wellFormedAnswers", "answers"]),
    st.dictionaries(st.sampled_from(["0", "1", "2"]), json_values, max_size=3) | json_values,
    max_size=4,
)


@FUZZ
@given(columns=st.one_of(clean_marco, dirty_marco))
def test_marco_column_json(tmp_path_factory, columns):
    path = write(tmp_path_factory, "marco.json", json.dumps(columns).encode())
    result = outcome(path, lambda: list(tasks.read_marco(path)))
    if not isinstance(result, CtxlmError):  # the column layout, or one JSON Lines row
        assert len(result) == (len(columns["query"]) if isinstance(columns["query"], dict) else 1)


def test_task_reader_one_megabyte_source(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"source": "word " * 200_000, "target": "t"}) + "\n", encoding="utf-8")
    (pair,) = tasks.read_jsonl_pairs(path)
    assert len(pair.source) == 1_000_000


# ----------------------------------------------------------------------------- SuperGLUE and GLUE
SUPERGLUE_FIELDS = {
    "BoolQ": lambda t, obj: {"passage": t, "question": t, "label": st.booleans()},
    "CB": lambda t, obj: {
        "premise": t,
        "hypothesis": t,
        "label": st.sampled_from(["entailment", "contradiction", "neutral"]),
    },
    "RTE": lambda t, obj: {"premise": t, "hypothesis": t, "label": st.sampled_from(["entailment", "not_entailment"])},
    "COPA": lambda t, obj: {
        "premise": t,
        "choice1": t,
        "choice2": t,
        "question": st.sampled_from(["cause", "effect"]),
        "label": st.integers(0, 1),
    },
    "WiC": lambda t, obj: {"word": t, "sentence1": t, "sentence2": t, "label": st.booleans()},
    "WSC": lambda t, obj: {
        "text": st.just("The cat saw Smith and it ran ."),
        "label": st.booleans(),
        "target": obj(
            lambda t, obj: {
                "span1_text": t,
                "span2_text": st.sampled_from(["it", "cat", "he"]),
                "span2_index": st.integers(4, 6),
            }
        ),
    },
    "MultiRC": lambda t, obj: {
        "idx": st.integers(),
        "passage": obj(
            lambda t, obj: {
                "text": t,
                "questions": st.lists(
                    obj(
                        lambda t, obj: {
                            "question": t,
                            "answers": st.lists(
                                obj(lambda t, obj: {"text": t, "label": st.integers(0, 1)}), max_size=2
                            ),
                        }
                    ),
                    max_size=2,
                ),
            }
        ),
    },
    "ReCoRD": lambda t, obj: {
        "passage": obj(
            lambda t, obj: {
                "text": st.just("@highlight\nSmith met the cat ."),
                "entities": st.lists(
                    obj(lambda t, obj: {"start": st.integers(-1, 12), "end": st.integers(-1, 12)}),
                    min_size=1,
                    max_size=3,
                ),
            }
        ),
        "qas": st.lists(
            obj(
                lambda t, obj: {
                    "query": st.sampled_from(["@placeholder wins", "a @placeholder b @placeholder", "none"]),
                    "answers": st.lists(obj(lambda t, obj: {"text": st.sampled_from(["Smith", "cat", t])}), max_size=2),
                }
            ),
            max_size=2,
        ),
    },
}


@FUZZ
@given(task=st.sampled_from(superglue.TASKS), data=st.data(), training=st.booleans())
def test_superglue_readers(tmp_path_factory, task, data, training):
    """Every SuperGLUE task: cloze examples with a blank and valid gold indices, or one error."""
    content = data.draw(jsonl_files(SUPERGLUE_FIELDS[task]))
    path = write(tmp_path_factory, "rows.jsonl", content)
    result = outcome(path, lambda: superglue.read_superglue(task, path, training=training))
    if not isinstance(result, CtxlmError):
        for example in result:
            assert (superglue.MASK, False) in example.parts and example.candidates
            assert all(isinstance(c, str) and c for c in example.candidates)
            assert all(0 <= g < len(example.candidates) for g in example.gold)


tsv_fields = st.lists(
    st.one_of(
        texts.filter(lambda t: "\t" not in t and "\n" not in t),
        st.sampled_from(["0", "1", "2.5", "nan", "-1", "5", "1e9", ""]),
    ),
    max_size=8,
)


@FUZZ
@given(
    reader=st.sampled_from(["mrpc", "sts"]),
    lines=st.lists(tsv_fields, max_size=5),
    header=st.booleans(),
    noise=st.binary(max_size=8),
)
def test_glue_tsv_readers(tmp_path_factory, reader, lines, header, noise):
    """MRPC and STS-B TSV: rows with both texts and a valid label, or one error."""
    body = [glue.MRPC_HEADER] * header + lines
    data = "\n".join("\t".join(fields) for fields in body).encode("utf-8", "surrogatepass") + noise
    path = write(tmp_path_factory, f"{reader}.tsv", data)
    result = outcome(path, lambda: getattr(glue, f"read_{reader}")(path))
    if not isinstance(result, CtxlmError):
        assert all(row.text_a.strip() and row.text_b.strip() for row in result)
        assert all(row.label in (0, 1) if reader == "mrpc" else 0 <= row.label <= 5 for row in result)


@FUZZ
@given(
    data=jsonl_files(
        lambda t, obj: {
            "premise": t,
            "hypothesis": t,
            "label": st.sampled_from(["entailment", "not_entailment", "other"]),
        }
    )
)
def test_glue_rte_reader(tmp_path_factory, data):
    path = write(tmp_path_factory, "rte.jsonl", data)
    result = outcome(path, lambda: glue.read_rte(path))
    if not isinstance(result, CtxlmError):
        assert len(result) == non_blank_lines(data)


# ----------------------------------------------------------------------------- tokenizer, generate input
@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> TextTokenizer:
    path = tmp_path_factory.mktemp("tok") / "text.txt"
    path.write_text("the cat sat on the mat .\nMr. Smith bought 日本 cheese !\n" * 20, encoding="utf-8")
    return train_tokenizer(path, 150, min_frequency=1)


@FUZZ
@given(
    batch=st.lists(st.one_of(texts, st.text(max_size=200)), max_size=5),
    ids=st.lists(st.integers(-3, 2**33), max_size=6),
)
def test_tokenizer_calls(tokenizer, batch, ids):
    """encode/encode_batch agree and give known ids (or name the text they cannot encode); decode
    takes any id list (or names the id it cannot decode)."""
    try:
        encoded = tokenizer.encode_batch(batch)
    except CtxlmError as error:
        assert len(str(error).splitlines()) == 1 and any("\ud800" <= c <= "\udfff" for c in "".join(batch))
    else:
        assert encoded == [tokenizer.encode(text) for text in batch]
        assert all(0 <= i < tokenizer.vocab_size for row in encoded for i in row)
        assert all(isinstance(tokenizer.decode(row), str) for row in encoded)
    try:
        assert isinstance(tokenizer.decode(ids), str)
    except CtxlmError as error:
        assert "cannot decode token id" in str(error) and any(not 0 <= i < 2**32 for i in ids)


def test_tokenizer_one_megabyte_text(tokenizer):
    assert len(tokenizer.encode("the cat " * 125_000)) == 250_000


@FUZZ
@given(data=jsonl_files(lambda t, obj: {"source": t | st.just(""), "id": st.integers()}))
def test_generate_input_rows(tmp_path_factory, data):
    """`ctxlm generate --input`: every row with a string source (empty included) is kept, or one error."""
    path = write(tmp_path_factory, "input.jsonl", data)
    result = outcome(path, lambda: read_sources(path, "source"))
    if not isinstance(result, CtxlmError):
        assert len(result) == non_blank_lines(data) and all(isinstance(r["source"], str) for r in result)
