"""Corpus reading: the three formats, format detection, path expansion and error messages."""

import json
import re

import pytest

from ctxlm.data import corpus as corpus_module
from ctxlm.data.corpus import (
    MAX_LINE_CHARS,
    SEGMENT_WINDOW_CHARS,
    detect_format,
    expand_corpus_paths,
    iter_blocks,
    iter_documents,
    split_sentences,
)
from ctxlm.errors import CtxlmError


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def test_split_sentences_keeps_abbreviations_together():
    assert split_sentences("Mr. Smith went to Washington. He met the U.S. president.") == [
        "Mr. Smith went to Washington.",
        "He met the U.S. president.",
    ]
    assert split_sentences("He served in the U.S. Army. Then he left.  ") == [
        "He served in the U.S. Army.",
        "Then he left.",
    ]
    assert split_sentences("   ") == []


def test_long_texts_are_segmented_in_windows_without_losing_sentences():
    expected = [f"Sentence {i} was written by Mr. Smith of the U.S. Army in {1900 + i}." for i in range(400)]
    text = " ".join(expected)
    assert len(text) > 8 * SEGMENT_WINDOW_CHARS
    assert split_sentences(text) == expected
    unbroken = "x" * (2 * SEGMENT_WINDOW_CHARS + 17)  # no space to cut at: cut anywhere, keep all
    assert "".join(split_sentences(unbroken)) == unbroken


def test_sentences_format(tmp_path):
    path = tmp_path / "bert.txt"
    path.write_bytes(b"\n\nFirst one.\r\n  Second one.  \r\n\r\n\r\nOther doc.\n \t \nLast doc\nno period")
    assert list(iter_documents(path, "sentences")) == [
        ["First one.", "Second one."],
        ["Other doc."],
        ["Last doc", "no period"],
    ]


def test_paragraphs_format_joins_wrapped_lines_and_splits_with_pysbd(tmp_path):
    paragraphs = [
        ["Sixteen years had Miss Taylor been in Mr.", "Woodhouse's family.  She was fond of", "Emma."],
        ["He served in the U.S. Army for", "ten years! Did he?"],
        ["CHAPTER I"],
    ]
    text = "\n\n\n".join("\n".join(lines) for lines in paragraphs) + "\n"
    path = write(tmp_path / "book.txt", text)
    documents = list(iter_documents(path, "paragraphs"))
    assert documents == [[
        "Sixteen years had Miss Taylor been in Mr. Woodhouse's family.",
        "She was fond of Emma.",
        "He served in the U.S. Army for ten years!",
        "Did he?",
        "CHAPTER I",
    ]]  # fmt: skip
    # the reference: pysbd on each paragraph with its lines joined by spaces
    assert documents[0] == [s for lines in paragraphs for s in split_sentences(" ".join(lines))]


def test_document_without_blank_lines_is_read_in_bounded_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_module, "MAX_LINE_CHARS", 100)
    lines = [f"Line {i} of an endless paragraph." for i in range(20)]
    path = write(tmp_path / "endless.txt", "\n".join(lines) + "\n")
    blocks = list(iter_blocks(path, "paragraphs"))
    assert len(blocks) >= 5 and all(len(b.texts[0]) <= 100 + 40 for b in blocks)
    assert [b.starts_document for b in blocks] == [True] + [False] * (len(blocks) - 1)
    assert list(iter_documents(path, "paragraphs")) == [lines]
    path = write(tmp_path / "bert.txt", "\n".join(lines) + "\n\nNext document.\n")
    blocks = list(iter_blocks(path, "sentences"))
    assert len(blocks) >= 6 and all(b.presplit for b in blocks)
    assert [b.starts_document for b in blocks] == [True] + [False] * (len(blocks) - 2) + [True]
    assert list(iter_documents(path, "sentences")) == [lines, ["Next document."]]


def test_jsonl_format_string_and_list_fields(tmp_path):
    rows = [
        {"text": "Mr. Smith went to Washington. He met the U.S. president.\n\nNew paragraph here."},
        {"text": ""},
        {"paragraphs": ["other field"], "text": ["One para. Two.", "Wrapped\nline."]},
    ]
    path = write(tmp_path / "rows.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert list(iter_documents(path)) == [
        ["Mr. Smith went to Washington.", "He met the U.S. president.", "New paragraph here."],
        ["One para.", "Two.", "Wrapped line."],
    ]
    path = write(tmp_path / "custom.jsonl", json.dumps(rows[2]) + "\n")
    assert list(iter_documents(path, "jsonl", text_field="paragraphs")) == [["other field"]]


def test_auto_detection_threshold(tmp_path):
    def lines_file(name, sentence_like, total):
        lines = [f"line {i} ends well." if i < sentence_like else f"line {i} wraps" for i in range(total)]
        return write(tmp_path / name, "\n".join(lines) + "\n")

    assert detect_format(lines_file("a.txt", 7, 10)) == "sentences"
    assert detect_format(lines_file("b.txt", 6, 10)) == "paragraphs"  # needs more than 60%
    assert detect_format(write(tmp_path / "c.txt", 'He said "stop."\nDid he?)\nYes!\u201d\nno\n')) == "sentences"
    # only the first 300 non-empty lines count
    lines = ["sentence."] * 300 + ["wrapped"] * 1000
    assert detect_format(write(tmp_path / "d.txt", "\n\n".join(lines))) == "sentences"
    assert detect_format(write(tmp_path / "e.jsonl", "wrapped\n")) == "jsonl"
    assert detect_format(write(tmp_path / "f.json", "wrapped\n")) == "jsonl"


def test_auto_detection_on_shared_corpora(data_dir):
    pretrain = data_dir / "pretrain"
    assert detect_format(pretrain / "wikipedia" / "sents_008.txt") == "sentences"
    assert detect_format(pretrain / "gutenberg" / "austen-emma.txt") == "paragraphs"
    assert detect_format(pretrain / "gutenberg" / "melville-moby_dick.txt") == "paragraphs"  # CRLF
    assert detect_format(pretrain / "speeches" / "speeches.jsonl") == "jsonl"


def test_wikipedia_shard_documents_match_blank_line_blocks(data_dir):
    path = data_dir / "pretrain" / "wikipedia" / "sents_008.txt"
    text = path.read_text(encoding="utf-8")
    blocks = [b for b in re.split(r"\n\s*\n", text) if b.strip()]
    expected = [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]
    documents = list(iter_documents(path))
    assert len(documents) == len(expected) == 8
    assert documents == expected


def test_speeches_use_paragraph_lists(data_dir):
    path = data_dir / "pretrain" / "speeches" / "speeches.jsonl"
    with open(path, encoding="utf-8") as handle:
        first = json.loads(handle.readline())
    block = next(iter_blocks(path, text_field="paragraphs"))
    assert block.starts_document and not block.presplit
    assert list(block.texts) == [p.strip() for p in first["paragraphs"] if p.strip()]


def test_reading_is_streaming(tmp_path):
    path = tmp_path / "late_error.txt"
    path.write_bytes(b"One.\nTwo.\n\nThree.\n\nFour.\n\n" + b"bad \xff byte\n")
    documents = iter_documents(path, "sentences")
    assert next(documents) == ["One.", "Two."]
    assert next(documents) == ["Three."]  # read before the bad line 8 is reached
    with pytest.raises(CtxlmError, match=r"late_error\.txt:8: not valid UTF-8 \(byte 0xff at column 5\)"):
        next(documents)


def test_expand_corpus_paths(tmp_path, data_dir):
    root = tmp_path / "corpus"
    for name in [
        "b.txt",
        "sub/a.jsonl",
        "sub/deeper/c.txt",
        "README.txt",
        "README.md",
        "LICENSE.txt",
        "manifest.json",
        "notes.csv",
        ".hidden/x.txt",
        "sub/.y.txt",
    ]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        write(root / name, "text.\n")
    assert expand_corpus_paths(root) == [root / "b.txt", root / "sub/a.jsonl", root / "sub/deeper/c.txt"]
    # explicit files are kept whatever their name; repeats are kept once
    assert expand_corpus_paths([root / "README.md", str(root / "b.txt"), root / "b.txt"]) == [
        root / "README.md",
        root / "b.txt",
    ]
    gutenberg = data_dir / "pretrain" / "gutenberg"
    assert expand_corpus_paths(gutenberg) == sorted(gutenberg.glob("*.txt"))
    assert len(expand_corpus_paths(gutenberg)) == 14
    assert expand_corpus_paths(data_dir / "pretrain" / "speeches") == [data_dir / "pretrain/speeches/speeches.jsonl"]
    with pytest.raises(CtxlmError, match=r"nope\.txt: corpus path not found"):
        expand_corpus_paths([root / "b.txt", root / "nope.txt"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CtxlmError, match=r"empty: directory holds no corpus files"):
        expand_corpus_paths(tmp_path / "empty")
    with pytest.raises(CtxlmError, match="no corpus paths"):
        expand_corpus_paths([])


BAD_INPUTS = [
    # (file name, bytes, format, expected message)
    ("latin1.txt", b"fine line.\nCaf\xe9 au lait.\n", "auto", r"latin1\.txt:2: not valid UTF-8 \(byte 0xe9 at column 4\)"),
    ("bad.txt", b"ok.\n\nstill ok.\n\xc3\xa9t\xff\n", "sentences", r"bad\.txt:4: not valid UTF-8 \(byte 0xff at column 3\)"),
    ("nul.txt", b"text.\nbinary\x00junk\n", "auto", r"nul\.txt:2: contains NUL bytes"),
    ("bad.jsonl", b'{"text": "a."}\n{"text": "b." "c"}\n', "auto", r"bad\.jsonl:2: not valid JSON \(Expecting ',' delimiter\)"),
    ("list.jsonl", b'{"text": "a."}\n\n["text"]\n', "auto", r"list\.jsonl:3: row is not a JSON object \(got list\)"),
    ("field.jsonl", b'{"text": "a."}\n{"body": "b."}\n', "auto", r"field\.jsonl:2: no text field .*found body"),
    ("number.jsonl", b'{"text": 3}\n', "auto", r"number\.jsonl:1: field 'text' must be a string or a list of strings"),
    ("mixed.jsonl", b'{"text": "a."}\n{"text": ["a", 1]}\n', "auto", r"mixed\.jsonl:2: field 'text' must be a string or a list of strings"),
    ("empty.txt", b"", "auto", r"empty\.txt: empty file \(no text\)"),
    ("blank.txt", b"\n  \n\t\n", "sentences", r"blank\.txt: empty file \(no text\)"),
    ("blank.jsonl", b'{"text": ""}\n{"text": ["  "]}\n', "auto", r"blank\.jsonl: empty file \(no text\)"),
    ("long.txt", b"short.\n" + b"x" * (MAX_LINE_CHARS + 1) + b"\n", "sentences", r"long\.txt:2: line longer than 1,000,000 characters"),
    ("long2.txt", b"short.\n" + "é".encode() * (MAX_LINE_CHARS + 1), "sentences", r"long2\.txt:2: line longer than 1,000,000 characters"),
    ("long3.txt", b"short.\n" + b"x" * (5 * MAX_LINE_CHARS), "sentences", r"long3\.txt:2: line longer than 1,000,000 characters"),
]  # fmt: skip


@pytest.mark.parametrize("name, content, format, message", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_gives_one_line_error_naming_file_and_line(tmp_path, name, content, format, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CtxlmError, match=message) as caught:
        list(iter_documents(path, format))
    assert "\n" not in str(caught.value)


def test_longest_allowed_line_is_read(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_bytes("é".encode() * MAX_LINE_CHARS + "\n🙂".encode() * 3)  # multi-byte chars count as one
    documents = list(iter_documents(path, "sentences"))
    assert [len(s) for s in documents[0]] == [MAX_LINE_CHARS, 1, 1, 1]


def test_unknown_format_is_an_error(tmp_path):
    with pytest.raises(CtxlmError, match="unknown corpus format 'csv'"):
        list(iter_documents(write(tmp_path / "a.txt", "a.\n"), "csv"))


def test_fallback_encoding_reads_latin1_lines_with_a_warning(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine line.\nCaf\xe9 au lait.\n")
    with pytest.warns(UserWarning, match=r"latin1\.txt:2: not valid UTF-8; reading such lines as latin-1"):
        documents = list(iter_documents(path, "sentences", fallback_encoding="latin-1"))
    assert documents == [["fine line.", "Café au lait."]]


def test_jsonl_text_field_defaults_to_the_first_known_field(tmp_path):
    path = tmp_path / "speech.jsonl"
    path.write_text('{"id": 1, "paragraphs": ["One. Two.", "Three."]}\n{"text": "Four."}\n', encoding="utf-8")
    assert list(iter_documents(path)) == [["One.", "Two.", "Three."], ["Four."]]
