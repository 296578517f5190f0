"""Extractive QA (UniLMv2 §4.2, SQuAD 1.1): the SQuAD reader and its errors, answer spans through the
tokenizer's offsets, windows over long passages, span decoding, the official v1.1 EM/F1, and a tiny
fine-tune + evaluate on a SQuAD 1.1 file written here."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from ctxlm.checkpoint import load_model_dir, save_model_dir
from ctxlm.config_loading import named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.metrics import squad_f1, squad_normalize
from ctxlm.tasks.extractive_qa import (
    QaFeatures,
    QaSettings,
    best_spans,
    char_span_to_tokens,
    evaluate_squad,
    finetune_squad,
    read_squad,
    squad_scores,
    window_starts,
)
from ctxlm.models.unilm import UnilmModel, UnilmQuestionAnswering
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tasks import TaskData
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

# Contexts with double spaces, a tab, a newline, a no-break space, dashes, curly quotes, accents,
# an emoji and abbreviations; one answer keeps a leading space, one spans a newline.
CONTEXTS = [
    (
        "Super Bowl 50 was an American football game.  The Denver Broncos\u00a0defeated the Carolina Panthers "
        "24\u201310 (at Levi's Stadium) in Santa Clara, California.\tIt was the 50th\nSuper Bowl.",
        [
            ("Who won Super Bowl 50?", ["Denver Broncos", "The Denver Broncos"]),
            ("Who lost?", [" Carolina Panthers"]),
            ("What was the score?", ["24\u201310"]),
            ("Where was the game played?", ["Levi's Stadium", "Santa Clara, California"]),
            ("Which Super Bowl was it?", ["50th\nSuper Bowl"]),
        ],
    ),
    (
        "Caf\u00e9 M\u00fcller \U0001f389 opened in 1998\u2014a year after the \u201cGrand Opening\u201d of "
        "na\u00efve art's museum (Z\u00fcrich).",
        [
            ("What opened in 1998?", ["Caf\u00e9 M\u00fcller"]),
            ("When did it open?", ["1998"]),
            ("What came a year before?", ["\u201cGrand Opening\u201d"]),
            ("Where is the museum?", ["Z\u00fcrich"]),
            ("Whose museum?", ["na\u00efve art's museum"]),
        ],
    ),
    (
        "U.S. President John F. Kennedy was born on May 29, 1917, in Brookline, Massachusetts.",
        [
            ("Who was born in Brookline?", ["John F. Kennedy"]),
            ("When was Kennedy born?", ["May 29, 1917"]),
            ("Where was Kennedy born?", ["Brookline, Massachusetts"]),
            ("Which country?", ["U.S."]),
        ],
    ),
]
LONG = " ".join(f"Sentence {k} mentions the word w{k}." for k in range(120))


def squad_document() -> dict:
    paragraphs, n = [], 0
    for context, qas in CONTEXTS + [
        (LONG, [(f"Which word does sentence {k} mention?", [f"w{k}"]) for k in (0, 57, 118)])
    ]:
        items = []
        for question, answers in qas:
            spans = [{"text": a, "answer_start": context.index(a)} for a in answers]
            items.append({"id": f"q{n}", "question": question, "answers": spans})
            n += 1
        paragraphs.append({"context": context, "qas": items})
    return {"version": "1.1", "data": [{"title": "Test", "paragraphs": paragraphs}]}


@pytest.fixture(scope="module")
def squad(tmp_path_factory):
    """The test file, a tokenizer trained on it and a tiny random UniLMv2 model directory."""
    root = tmp_path_factory.mktemp("squad")
    document = squad_document()
    path = root / "squad.json"
    path.write_text(json.dumps(document, ensure_ascii=False, indent=1), encoding="utf-8")
    texts = [p["context"] for p in document["data"][0]["paragraphs"]]
    texts += [qa["question"] for p in document["data"][0]["paragraphs"] for qa in p["qas"]]
    (root / "corpus.txt").write_text("\n".join(t.replace("\n", " ") for t in texts) + "\n", encoding="utf-8")
    tokenizer = train_tokenizer(root / "corpus.txt", 300, root / "tok", min_frequency=1)
    config = model_config_for_tokenizer(
        named_model_config(
            "unilm-tiny", d_model=32, num_layers=2, num_heads=2, ffn_dim=64, max_position_embeddings=128
        ),
        tokenizer,
    )
    torch.manual_seed(0)
    save_model_dir(root / "init", UnilmModel(config), tokenizer)
    return {"root": root, "path": path, "document": document, "tokenizer": tokenizer, "config": config}


def test_reader_keeps_every_field(squad):
    questions = read_squad(squad["path"])
    raw = [(qa, p["context"]) for p in squad["document"]["data"][0]["paragraphs"] for qa in p["qas"]]
    assert len(questions) == len(raw) == 17
    for question, (qa, context) in zip(questions, raw):
        assert question.id == qa["id"] and question.question == qa["question"] and question.context == context
        assert question.answers == tuple((a["text"], a["answer_start"]) for a in qa["answers"])


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda d: d["data"][0]["paragraphs"][0]["qas"][1]["answers"][0].update(answer_start=3),
            r"data\[0\]\.paragraphs\[0\]\.qas\[1\]\.answers\[0\]\.answer_start 3 "
            r"does not point at ' Carolina Panthers'",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][1]["qas"][0].pop("question"),
            r"data\[0\]\.paragraphs\[1\]\.qas\[0\]\.question must be str, missing",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][2]["qas"][0].update(answers=[], is_impossible=True),
            r"qas\[0\]\.answers is an unanswerable \(SQuAD 2\.0\) question \(id q10\)",
        ),
        (
            lambda d: d["data"][0]["paragraphs"][2]["qas"][1].update(id="q0"),
            r"qas\[1\]\.id: duplicate question id 'q0'",
        ),
        (lambda d: d["data"][0]["paragraphs"][0].update(context=7), r"paragraphs\[0\]\.context must be str, got int"),
    ],
)
def test_malformed_squad_names_the_json_path(squad, tmp_path, edit, message):
    document = copy.deepcopy(squad["document"])
    edit(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(CtxlmError, match=f"^{path}: .*{message}"):
        read_squad(path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"data": [\n  {"paragraphs": []},\n  oops\n]}', encoding="utf-8")
    with pytest.raises(CtxlmError, match=f"^{path}:3: invalid JSON"):
        read_squad(path)


def test_every_answer_span_round_trips_through_the_offsets(squad):
    """Each gold answer (all of them, surrounding whitespace dropped) maps to tokens whose offsets
    give back exactly its text, and its token ids are those of the answer tokenized alone."""
    tokenizer = squad["tokenizer"]
    features = QaFeatures(squad["config"], tokenizer, read_squad(squad["path"]))
    assert features.skipped == 0
    for q, question in enumerate(features.questions):
        ids, offsets = features.passages[q]
        for text, start in question.answers:
            first = start + len(text) - len(text.lstrip())
            span = char_span_to_tokens(offsets, first, first + len(text.strip()))
            assert span is not None
            assert features.span_text(q, *span) == text.strip()
            assert ids[span[0] : span[1] + 1].tolist() == tokenizer.encode(text)
        assert features.answer_tokens[q] == char_span_to_tokens(
            offsets,
            question.context.index(question.answers[0][0].strip()),
            question.context.index(question.answers[0][0].strip()) + len(question.answers[0][0].strip()),
        )


def test_windows_cover_long_passages_and_carry_the_labels(squad):
    settings = QaSettings(max_length=48, doc_stride=16, max_query_length=12)
    features = QaFeatures(squad["config"], squad["tokenizer"], read_squad(squad["path"]), settings)
    cfg = squad["config"]
    long_questions = [q for q, question in enumerate(features.questions) if question.context == LONG]
    assert len(features.passages[long_questions[0]][0]) > 3 * 48  # really needs windows
    for q in long_questions:
        rows = features.windows[features.first_window[q] : features.first_window[q + 1]]
        ids = features.passages[q][0]
        size = 48 - len(features.question_ids[q]) - 3
        assert rows[0, 1] == 0 and rows[-1, 2] == len(ids)
        assert np.all(np.diff(rows[:, 1]) == 16) and np.all(rows[:, 2] - rows[:, 1] <= size)
        covered = np.zeros(len(ids), dtype=bool)
        for f in range(features.first_window[q], features.first_window[q + 1]):
            _, ws, we, start, end = features.windows[f]
            covered[ws:we] = True
            example = features.example(f)
            at = features.passage_start(f)
            assert example["input_ids"][0] == cfg.bos_token_id and example["input_ids"][at - 1] == cfg.eos_token_id
            assert example["input_ids"][-1] == cfg.eos_token_id and len(example["input_ids"]) <= 48
            assert example["input_ids"][at : at + we - ws].tolist() == ids[ws:we].tolist()
            assert example["token_type_ids"].tolist() == [0] * at + [1] * (we - ws + 1)
            assert example["answer_mask"].tolist() == [True] + [False] * (at - 1) + [True] * (we - ws) + [False]
            first, last = features.answer_tokens[q]
            if ws <= first and last < we:
                assert (start, end) == (first - ws + at, last - ws + at)
                assert features.span_text(q, start - at + ws, end - at + ws) == features.questions[q].answers[0][0]
            else:
                assert (start, end) == (0, 0)  # BERT's convention: point at [SOS]
        assert covered.all()
    assert window_starts(10, 4, 3) == [0, 3, 6] and window_starts(4, 4, 3) == [0]


def oracle_logits(features: QaFeatures, shift: int = 0):
    starts, ends = [], []
    for f in range(len(features)):
        n = len(features.example(f)["input_ids"])
        s, e = np.zeros(n), np.zeros(n)
        _, _, _, start, end = features.windows[f]
        if start:
            s[start + shift], e[end + shift] = 10.0, 10.0
        starts.append(s)
        ends.append(e)
    return starts, ends


def test_best_spans_decodes_gold_logits_to_the_gold_answers(squad):
    settings = QaSettings(max_length=48, doc_stride=16, max_query_length=12)
    questions = read_squad(squad["path"])
    features = QaFeatures(squad["config"], squad["tokenizer"], questions, settings)
    predictions = best_spans(features, *oracle_logits(features))
    assert predictions == {q.id: q.answers[0][0].strip() for q in questions}
    assert squad_scores(predictions, questions) == {"exact_match": 100.0, "f1": 100.0}
    assert squad_scores(best_spans(features, *oracle_logits(features, shift=1)), questions)["exact_match"] < 50
    # the answer length limit: a 1-token limit cannot return a 3-token answer
    short = best_spans(features, *oracle_logits(features), max_answer_length=1)
    assert short["q5"] != predictions["q5"]


def test_squad_v11_metric_against_hand_computations():
    assert squad_normalize("The  Denver Broncos!") == "denver broncos"
    assert squad_normalize("an apple, a pear & the plum") == "apple pear plum"
    assert squad_f1("Broncos", "Denver Broncos") == pytest.approx(2 / 3)
    assert squad_f1("the cat sat on a mat", "a cat on the mat") == pytest.approx(2 * 0.75 / 1.75)
    assert squad_f1("nothing", "Denver") == 0.0
    from ctxlm.tasks.extractive_qa import SquadQuestion

    questions = [
        SquadQuestion("a", "?", "", (("Denver Broncos", 0), ("Broncos", 7))),
        SquadQuestion("b", "?", "", (("Santa Clara", 0),)),
        SquadQuestion("c", "?", "", (("x", 0),)),
    ]
    scores = squad_scores({"a": "broncos", "b": "Santa Clara, California"}, questions)  # "c" unanswered
    assert scores["exact_match"] == pytest.approx(100 * 1 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.8) / 3)


def test_finetune_and_evaluate_squad_end_to_end(squad):
    """Fine-tune on the 14 short-passage questions (validating on them too), then evaluate: the
    model directory loads as a QA model, the scores are the official metric of the written
    predictions, and the tiny model has memorized much of what it saw."""
    root, path = squad["root"], squad["path"]
    settings = QaSettings(max_length=64, doc_stride=24, max_query_length=16, max_answer_length=8)
    files = TaskData(train=path, valid=path, train_limit=14, valid_limit=14)
    result = finetune_squad(
        root / "init",
        files,
        root / "qa",
        settings=settings,
        train_overrides=dict(
            max_steps=150,
            batch_size=8,
            lr=3e-3,
            warmup_steps=10,
            eval_every=50,
            progress=False,
            save_every=0,
            log_every=50,
        ),
    )
    assert result.step == 150 and set(result.final_metrics) >= {"valid/qa_loss", "dev/exact_match", "dev/f1"}
    model, tokenizer = load_model_dir(root / "qa")
    assert isinstance(model, UnilmQuestionAnswering) and tokenizer is not None
    scores = evaluate_squad(root / "qa", path, limit=14)
    assert set(scores) == {"exact_match", "f1"}
    assert scores == pytest.approx({k[4:]: v for k, v in result.final_metrics.items() if k.startswith("dev/")})
    torch.manual_seed(0)
    save_model_dir(root / "untrained", UnilmQuestionAnswering(load_model_dir(root / "init")[0]), tokenizer)
    untrained = evaluate_squad(root / "untrained", path, limit=14)
    assert scores["f1"] > 35 and scores["f1"] > untrained["f1"] + 20, (scores, untrained)

    out = root / "predictions.json"  # every question, the long passage's windows included
    all_scores = evaluate_squad(root / "qa", path, predictions_out=out)
    predictions = json.loads(out.read_text(encoding="utf-8"))
    questions = read_squad(path)
    assert set(predictions) == {q.id for q in questions}
    assert all(predictions[q.id] and predictions[q.id] in q.context for q in questions)
    assert squad_scores(predictions, questions) == all_scores
    with pytest.raises(CtxlmError, match="not an extractive QA model"):
        evaluate_squad(root / "init", path)


def test_an_answer_the_normalizer_drops_gets_no_training_window(squad, tmp_path):
    """A zero-width space is dropped by BERT's normalizer: no token covers that answer."""
    context = "Look \u200b here, there is a gap."
    document = {
        "data": [
            {
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": "gap",
                                "question": "What is there?",
                                "answers": [{"text": "\u200b", "answer_start": 5}],
                            },
                            {
                                "id": "ok",
                                "question": "Where to look?",
                                "answers": [{"text": "here", "answer_start": 7}],
                            },
                        ],
                    }
                ]
            }
        ]
    }
    path = tmp_path / "gap.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    questions = read_squad(path)
    training = QaFeatures(squad["config"], squad["tokenizer"], questions, training=True)
    assert training.skipped == 1 and training.answer_tokens[0] is None
    assert training.windows[:, 0].tolist() == [1]  # only the mappable question trains
    evaluation = QaFeatures(squad["config"], squad["tokenizer"], questions)
    assert evaluation.windows[:, 0].tolist() == [0, 1]
    starts, ends = oracle_logits(evaluation)
    assert best_spans(evaluation, starts, ends)["ok"] == "here"
