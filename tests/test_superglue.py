"""SuperGLUE (FewGLUE) as cloze questions: every row of every task yields one blank and valid
candidates, malformed rows are reported with file:line, and the metrics match hand computations."""

import json

import pytest

from ctxlm.data.superglue import (
    MASK,
    TASKS,
    load_superglue,
    multirc_scores,
    read_superglue,
    record_scores,
    superglue_file,
    task_metrics,
    task_name,
    wsc_noun_phrases,
)
from ctxlm.errors import CtxlmError
from ctxlm.metrics import binary_f1, macro_f1, squad_f1, squad_normalize

VERBALIZERS = {
    "BoolQ": ["No", "Yes"],
    "CB": ["Yes", "No", "Maybe"],
    "RTE": ["Yes", "No"],
    "WiC": ["No", "Yes"],
    "MultiRC": ["No", "Yes"],
}


@pytest.fixture(scope="module")
def nlu(data_dir):
    return data_dir / "nlu"


def rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", ["train", "dev32"])
def test_every_row_gives_one_blank_and_valid_candidates(nlu, task, split):
    examples = load_superglue(f"superglue/{task}", nlu, split)
    raw = rows(superglue_file(task, nlu, split))
    for e in examples:
        assert [text for text, _ in e.parts].count(MASK) == 1 and e.text.count(MASK) == 1, e.source
        assert not dict(e.parts).get(MASK), "the blank is never shortenable"
        assert len(e.candidates) >= 2 and all(c.strip() for c in e.candidates), e.source
        assert all(0 <= g < len(e.candidates) for g in e.gold)
        assert e.source.startswith(str(superglue_file(task, nlu, split)) + ":")
    if task in VERBALIZERS:
        assert all(e.candidates == VERBALIZERS[task] and len(e.gold) == 1 for e in examples)
    if task in ("BoolQ", "CB", "RTE", "WiC"):  # one example per row, gold = the row's label
        assert len(examples) == len(raw)
        for e, row in zip(examples, raw):
            assert e.candidate_labels[e.gold[0]] == row["label"]
    if task == "MultiRC":  # one example per answer option, grouped by question
        options = [a for r in raw for q in r["passage"]["questions"] for a in q["answers"]]
        assert [e.label for e in examples] == [a["label"] for a in options]
        assert len({e.group for e in examples}) == sum(len(r["passage"]["questions"]) for r in raw)
    if task == "COPA":
        chosen = [e.candidates[e.gold[0]] for e in examples]
        expected = [r[f"choice{r['label'] + 1}"].rstrip(".!?").lower() for r in raw]
        if split == "train":  # each row is followed by its mirror: choices swapped, same answer
            assert len(examples) == 2 * len(raw) and chosen[1::2] == chosen[0::2]
            assert all(a.candidates == b.candidates[::-1] for a, b in zip(examples[0::2], examples[1::2]))
            chosen = chosen[0::2]
        assert [c.lower() for c in chosen] == expected
    if task == "WSC":
        kept = [r for r in raw if r["label"] or split != "train"]
        assert [e.candidates[0] for e in examples] == [r["target"]["span1_text"] for r in kept]
        assert all(e.gold == ((0,) if e.label else ()) for e in examples)
        assert all(f"*{r['target']['span2_text']}*" in e.text for e, r in zip(examples, kept))
    if task == "ReCoRD":
        for e in examples:
            assert set(e.answers) and all(e.candidates[g] in e.answers for g in e.gold)
            assert len(set(e.candidates)) == len(e.candidates)
            if split == "train":
                assert e.gold == (0,) and len(e.candidates) <= 10
        if split == "dev32":
            assert len(examples) == len(raw) and all(e.gold for e in examples)


def test_record_training_negatives_are_seeded(nlu):
    one = load_superglue("ReCoRD", nlu, "train", seed=3)
    assert [e.candidates for e in one] == [e.candidates for e in load_superglue("ReCoRD", nlu, "train", seed=3)]
    assert [e.candidates for e in one] != [e.candidates for e in load_superglue("ReCoRD", nlu, "train", seed=4)]


def test_task_names_and_files(nlu):
    assert task_name("superglue/rte") == "RTE" and task_name("record") == "ReCoRD"
    assert superglue_file("superglue/wic", nlu, "dev32") == nlu / "superglue" / "WiC" / "dev32.jsonl"
    assert superglue_file("WiC", nlu / "superglue", "train").is_file()
    with pytest.raises(CtxlmError, match="unknown SuperGLUE task 'MNLI'"):
        task_name("MNLI")


GOOD_RTE = {"premise": "A man sleeps.", "hypothesis": "A person rests.", "label": "entailment", "idx": 0}


@pytest.mark.parametrize(
    "task,line,bad,message",
    [
        ("RTE", 2, "{not json", "invalid JSON"),
        ("RTE", 2, json.dumps({"premise": "x", "label": "entailment"}), "missing field 'hypothesis'"),
        ("RTE", 2, json.dumps({**GOOD_RTE, "label": "maybe"}), "field 'label' must be one of"),
        ("RTE", 2, json.dumps({**GOOD_RTE, "premise": 3}), "field 'premise' must be str"),
        ("RTE", 2, json.dumps([1, 2]), "expected a JSON object"),
        (
            "COPA",
            1,
            json.dumps({"premise": "p", "choice1": "a", "choice2": "b", "question": "why", "label": 0}),
            "field 'question' must be 'cause' or 'effect'",
        ),
        (
            "WSC",
            1,
            json.dumps(
                {
                    "text": "Tom saw Bill .",
                    "label": True,
                    "target": {"span1_text": "Tom", "span2_text": "he", "span1_index": 0, "span2_index": 2},
                }
            ),
            "span2_text 'he' is not the word",
        ),
        (
            "ReCoRD",
            1,
            json.dumps(
                {
                    "passage": {"text": "Ann met Bob.", "entities": [{"start": 0, "end": 2}]},
                    "qas": [{"query": "Bob met someone.", "answers": [{"text": "Ann"}], "idx": 1}],
                }
            ),
            "exactly one @placeholder",
        ),
        (
            "ReCoRD",
            1,
            json.dumps({"passage": {"text": "Ann met Bob.", "entities": [{"start": 0, "end": 40}]}, "qas": []}),
            "outside the passage",
        ),
        (
            "MultiRC",
            1,
            json.dumps(
                {
                    "idx": 0,
                    "passage": {
                        "text": "t",
                        "questions": [{"question": "q?", "idx": 0, "answers": [{"text": "a", "idx": 0}]}],
                    },
                }
            ),
            "answers\\[0\\]: missing field 'label'",
        ),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, task, line, bad, message):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(GOOD_RTE)] * (line - 1) + [bad]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CtxlmError, match=message) as error:
        read_superglue(task, path, training=True)
    assert str(error.value).startswith(f"{path}:{line}")
    assert "\n" not in str(error.value)


def test_unlabelled_rows_are_read_outside_training(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text(json.dumps({k: v for k, v in GOOD_RTE.items() if k != "label"}) + "\n", encoding="utf-8")
    (example,) = read_superglue("RTE", path)
    assert example.gold == () and example.label is None
    with pytest.raises(CtxlmError, match="missing field 'label'"):
        read_superglue("RTE", path, training=True)
    with pytest.raises(CtxlmError, match="labelled rows"):
        task_metrics([example], [0])


def test_wsc_noun_phrases():
    words = "The city councilmen refused the demonstrators a permit because they feared Tom Smith , violence .".split()
    assert wsc_noun_phrases(words) == ["The city", "the demonstrators", "a permit", "Tom Smith"]


# ------------------------------------------------------------------------------------------ metrics
def test_binary_and_macro_f1_by_hand():
    pred, gold = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]  # tp 2, fp 1, fn 1
    assert binary_f1(pred, gold) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # CB: classes e, c, n. e: tp1 fp1 fn1 -> .5; c: tp1 fp0 fn1 -> 2/3; n: tp0 -> 0
    pred = ["e", "e", "c", "n"]
    gold = ["e", "c", "c", "e"]
    assert macro_f1(pred, gold) == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert macro_f1(["e"], ["e"]) == 1.0  # classes absent from both are not averaged


def test_multirc_f1a_over_options_and_em_per_question():
    groups = ["q1", "q1", "q1", "q2", "q2", "q3"]
    gold = [1, 0, 1, 0, 0, 1]
    pred = [1, 0, 1, 1, 0, 0]  # q1 all right; q2 one wrong; q3 wrong
    scores = multirc_scores(groups, pred, gold)
    tp, fp, fn = 2, 1, 1
    assert scores["f1a"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert scores["em"] == pytest.approx(1 / 3)


def test_record_squad_f1_and_em():
    assert squad_normalize("The  Blues, Chelsea!") == "blues chelsea"
    assert squad_f1("Diego Costa", "Costa") == pytest.approx(2 * (1 / 2) * 1 / (1 / 2 + 1))
    scores = record_scores(
        ["Diego Costa", "the Blues", "Zouma"], [["Costa", "Diego Costa"], ["Chelsea"], ["Kurt Zouma"]]
    )
    assert scores["em"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx((1.0 + 0.0 + 2 / 3) / 3)


def test_task_metrics_on_real_examples(nlu):
    cb = load_superglue("CB", nlu, "dev32")
    gold = [e.gold[0] for e in cb]
    assert task_metrics(cb, gold) == {"accuracy": 1.0, "f1": 1.0}
    wrong = [(g + 1) % 3 for g in gold]
    assert task_metrics(cb, wrong)["accuracy"] == 0.0
    wsc = load_superglue("WSC", nlu, "dev32")
    assert task_metrics(wsc, [0 if e.label else 1 for e in wsc])["accuracy"] == 1.0
    assert task_metrics(wsc, [0] * len(wsc))["accuracy"] == pytest.approx(sum(e.label for e in wsc) / len(wsc))
    record = load_superglue("ReCoRD", nlu, "dev32")
    best = task_metrics(record, [e.gold[0] for e in record])
    assert best["em"] == best["f1"] == best["accuracy"] == 1.0
    multirc = load_superglue("MultiRC", nlu, "dev32")
    perfect = task_metrics(multirc, [e.gold[0] for e in multirc])
    assert perfect == {"accuracy": 1.0, "f1a": 1.0, "em": 1.0}
