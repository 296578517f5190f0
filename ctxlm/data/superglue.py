"""SuperGLUE (FewGLUE format) as cloze questions for GLM (Du et al., 2021, §2.3 and Appendix).

GLM reformulates each NLU task as a blank-filling question, as PET does (Schick & Schütze, 2020):
a *pattern* turns a row into a text with one `[MASK]`, and the answer is either a *verbalizer*
word of each label ("Yes" / "No" / "Maybe") or one of the row's own candidate texts (COPA's
choices, WSC's noun phrases, ReCoRD's entities). The patterns are those of the GLM paper's appendix
table "cloze questions and verbalizers for the 8 SuperGLUE tasks", pattern 0 of THUDM/GLM's
`tasks/superglue/pvp.py`:

| task    | pattern (the blank is [M])                                    | answers                    |
| ------- | ------------------------------------------------------------- | -------------------------- |
| BoolQ   | passage Question: question? Answer: [M].                      | No / Yes                   |
| CB      | "hypothesis" ? [M], "premise"                                 | Yes / No / Maybe           |
| RTE     | "hypothesis" ? [M], "premise"                                 | Yes / No                   |
| COPA    | "choice1" or "choice2"? premise because/so [M].               | the two choices            |
| WiC     | "sentence1" / "sentence2" Similar sense of "word"? [M].       | No / Yes                   |
| WSC     | text (pronoun as *p*) The pronoun '*p*' refers to [M].        | referent + noun phrases    |
| MultiRC | passage. Question: question? Is it answer? [M].               | No / Yes (per answer)      |
| ReCoRD  | passage query-before-@placeholder [M] query-after             | the passage's entities     |

A pattern is a list of `(text, shortenable)` parts with the blank as its own part `(MASK, False)`;
`ctxlm.tasks.cloze` tokenizes the parts and cuts shortenable ones (passages, premises) from their ends
until the longest candidate row fits the model, so the blank and the question always survive.

Training-set conventions follow THUDM/GLM's `tasks/superglue/dataset.py`: COPA's training rows are
doubled by mirroring the two choices; ReCoRD's training rows become one example per correct answer
with that answer and at most 9 other entities as candidates; WSC trains only on its positive rows.
Readers raise `CtxlmError` naming `file:line` and the field for malformed rows.

The metrics at the end are SuperGLUE's (0-1 scale): accuracy; CB adds macro-F1; MultiRC reports
F1a over all answer options and EM per question; ReCoRD max-over-gold token F1 and EM after
SQuAD's normalization.
"""

from __future__ import annotations

import string
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import CtxlmError
from ..metrics import accuracy, binary_f1, macro_f1, squad_exact_match, squad_f1
from .tasks import jsonl_rows

MASK = "[MASK]"  # the blank: a pattern part of its own
Part = tuple[str, bool]  # (text, shortenable)


@dataclass
class ClozeExample:
    """One cloze question: the pattern's parts, the candidate answers and which are correct.

    `gold` holds the indices of the correct candidates: one for most tasks, every entity that is
    an answer for ReCoRD evaluation, none for WSC's negative rows (whose referent is not named).
    `candidate_labels[i]` is the dataset label that candidate i stands for (verbalizer tasks).
    """

    task: str
    parts: list[Part]
    candidates: list[str]
    gold: tuple[int, ...]
    label: Any = None  # the row's label as in the file
    candidate_labels: tuple | None = None
    group: str | None = None  # MultiRC: passage-question id (EM is per question)
    answers: tuple[str, ...] = ()  # ReCoRD: the gold answer texts
    source: str = ""  # file:line

    @property
    def text(self) -> str:
        """The pattern as one string, with the blank written `[MASK]`."""
        return "".join(text for text, _ in self.parts)


# ----------------------------------------------------------------------------------- helpers


def _get(row: dict, key: str, kind: type | tuple, at: str):
    if not isinstance(row, dict):
        raise CtxlmError(f"{at}: must be an object with '{key}', got {type(row).__name__}")
    if key not in row:
        raise CtxlmError(f"{at}: missing field '{key}'")
    value = row[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise CtxlmError(f"{at}: field '{key}' must be {names}, got {value!r}"[:300])
    if isinstance(value, str) and not value.strip():
        raise CtxlmError(f"{at}: field '{key}' is empty")
    return value


def _label(row: dict, labels: Sequence, at: str, required: bool):
    """The row's label (None for unlabelled rows unless `required`), checked against `labels`."""
    if "label" not in row:
        if required:
            raise CtxlmError(f"{at}: missing field 'label'")
        return None
    value = row["label"]
    if value not in labels or type(value) is not type(labels[0]):
        raise CtxlmError(f"{at}: field 'label' must be one of {list(labels)}, got {value!r}")
    return value


def remove_final_punc(text: str) -> str:
    return text.rstrip(string.punctuation)


def lowercase_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _verbalized(task, parts, label, labels, words, at, **extra) -> ClozeExample:
    gold = (labels.index(label),) if label is not None else ()
    return ClozeExample(task, parts, list(words), gold, label, tuple(labels), source=at, **extra)


# ----------------------------------------------------------------------------------- readers
# Each reader turns one JSON row into cloze examples; `training` applies the training-set rules.

YES_NO = ("No", "Yes")


def _boolq(row, at, training, rng):
    passage, question = _get(row, "passage", str, at), _get(row, "question", str, at)
    label = _label(row, [False, True], at, training)
    parts = [
        (passage, True),
        (" Question: ", False),
        (question, True),
        ("? Answer: ", False),
        (MASK, False),
        (".", False),
    ]
    return [_verbalized("BoolQ", parts, label, [False, True], YES_NO, at)]


def _entailment(task, labels, words):
    def read(row, at, training, rng):
        premise, hypothesis = _get(row, "premise", str, at), _get(row, "hypothesis", str, at)
        label = _label(row, labels, at, training)
        parts = [
            ('"', False),
            (remove_final_punc(hypothesis), True),
            ('" ? ', False),
            (MASK, False),
            (', "', False),
            (premise, True),
            ('"', False),
        ]
        return [_verbalized(task, parts, label, labels, words, at)]

    return read


def _copa(row, at, training, rng):
    premise = _get(row, "premise", str, at)
    choices = [_get(row, "choice1", str, at), _get(row, "choice2", str, at)]
    question = _get(row, "question", str, at)
    if question not in ("cause", "effect"):
        raise CtxlmError(f"{at}: field 'question' must be 'cause' or 'effect', got {question!r}")
    label = _label(row, [0, 1], at, training)
    joiner = " because " if question == "cause" else ", so "
    choices = [remove_final_punc(lowercase_first(c)) for c in choices]
    for name, choice in zip(("choice1", "choice2"), choices):
        if not choice.strip():
            raise CtxlmError(f"{at}: field '{name}' has no text before its final punctuation")

    def example(first, second, gold):
        parts = [
            ('"', False),
            (first, False),
            ('" or "', False),
            (second, False),
            ('"? ', False),
            (remove_final_punc(premise), True),
            (joiner, False),
            (MASK, False),
            (".", False),
        ]
        return ClozeExample("COPA", parts, [first, second], gold, label, source=at)

    examples = [example(choices[0], choices[1], (label,) if label is not None else ())]
    if training:  # THUDM/GLM doubles COPA's training set with the choices swapped
        examples.append(example(choices[1], choices[0], (1 - label,)))
    return examples


def _wic(row, at, training, rng):
    word = _get(row, "word", str, at)
    first, second = _get(row, "sentence1", str, at), _get(row, "sentence2", str, at)
    label = _label(row, [False, True], at, training)
    parts = [(f'"{first}" / "{second}"', True), (f' Similar sense of "{word}"? ', False), (MASK, False), (".", False)]
    return [_verbalized("WiC", parts, label, [False, True], YES_NO, at)]


# Words that do not start or make up a noun phrase (for WSC's candidate extraction).
_FUNCTION_WORDS = set(
    """a an the this that these those his her hers their theirs my mine our ours your yours its
he she it they them him we us i you me who whom which what when where why how there here then than so because
but and or nor if while as of in on at to for with by from about into onto over under after before since until
up down out off again is was are were be been being am do does did have has had will would can could shall
should may might must not no yes very too also just only all any some each every both either neither one
other another such own same few more most many much several""".split()
)
_DETERMINERS = {"the", "a", "an", "this", "these", "those", "his", "her", "their", "my", "our", "your", "its"}


def wsc_noun_phrases(words: Sequence[str]) -> list[str]:
    """Candidate referents of a WSC sentence without a parser (THUDM/GLM uses spaCy's noun chunks,
    which need a model download): a determiner or possessive with the next content word ("the
    demonstrators", "his toy"), then maximal runs of capitalized content words (names such as
    "Tina"); punctuation is stripped from word edges and ends a phrase."""
    clean = [w.strip(string.punctuation + "“”‘’") for w in words]
    phrases = []
    for i, (word, raw) in enumerate(zip(clean, words)):
        if (
            word.lower() in _DETERMINERS
            and word == raw
            and i + 1 < len(clean)
            and clean[i + 1]
            and clean[i + 1].lower() not in _FUNCTION_WORDS
        ):
            phrases.append(f"{word} {clean[i + 1]}")
    run: list[str] = []
    for word, raw in zip(clean, words):
        if word[:1].isupper() and word.lower() not in _FUNCTION_WORDS:
            run.append(word)
            if word == raw:
                continue
        if run:
            phrases.append(" ".join(run))
            run = []
    if run:
        phrases.append(" ".join(run))
    return phrases


def _bare(phrase: str) -> str:
    """A phrase in lower case without its leading determiner ("The bag" -> "bag")."""
    head, _, rest = phrase.lower().partition(" ")
    return rest if head in _DETERMINERS and rest else phrase.lower()


def _wsc(row, at, training, rng, max_negatives: int = 9):
    text = _get(row, "text", str, at)
    target = _get(row, "target", dict, at)
    span1 = _get(target, "span1_text", str, f"{at}: target")
    pronoun = _get(target, "span2_text", str, f"{at}: target")
    index = _get(target, "span2_index", int, f"{at}: target")
    label = _label(row, [False, True], at, training)
    if training and label is not True:
        return []  # THUDM/GLM trains WSC on the positive rows only (the correct referent)
    words = text.split()
    # The indices are off by one in a few rows and a pronoun may carry punctuation ("him,"): fix
    # them as THUDM/GLM does.
    if not (0 <= index < len(words) and words[index] == pronoun):
        for offset in (-1, 1):
            if 0 <= index + offset < len(words) and words[index + offset] == pronoun:
                index += offset
                break
    if 0 <= index < len(words) and words[index] != pronoun and words[index].startswith(pronoun):
        words[index : index + 1] = [pronoun, words[index][len(pronoun) :]]
    if not (0 <= index < len(words) and words[index] == pronoun):
        raise CtxlmError(f"{at}: target.span2_text {pronoun!r} is not the word at span2_index {index}")
    marked = words[:index] + [f"*{pronoun}*"] + words[index + 1 :]
    parts = [(" ".join(marked), True), (f" The pronoun '*{pronoun}*' refers to ", False), (MASK, False), (".", False)]
    seen = {_bare(span1), pronoun.lower()}
    negatives = []
    for phrase in wsc_noun_phrases(words[:index] + words[index + 1 :]):
        if _bare(phrase) not in seen:
            seen.add(_bare(phrase))
            negatives.append(phrase)
    candidates = [span1] + negatives[:max_negatives]
    # The correct referent is candidate 0 for a positive row; a negative row's true referent is
    # unknown, so it has no gold candidate (its label is predicted right if span1 does not win).
    return [ClozeExample("WSC", parts, candidates, (0,) if label else (), label, source=at)]


def _multirc(row, at, training, rng):
    passage = _get(row, "passage", dict, at)
    text = _get(passage, "text", str, f"{at}: passage")
    questions = _get(passage, "questions", list, f"{at}: passage")
    passage_id = row.get("idx", at)
    examples = []
    for qi, question_row in enumerate(questions):
        q_at = f"{at}: passage.questions[{qi}]"
        question = _get(question_row, "question", str, q_at)
        answers = _get(question_row, "answers", list, q_at)
        group = f"{passage_id}-{question_row.get('idx', qi)}"
        for ai, answer_row in enumerate(answers):
            a_at = f"{q_at}.answers[{ai}]"
            answer = _get(answer_row, "text", str, a_at)
            label = _label(answer_row, [0, 1], a_at, training)
            parts = [
                (remove_final_punc(text.rstrip()), True),
                (". Question: ", False),
                (remove_final_punc(question.rstrip()), False),
                ("? Is it ", False),
                (answer, False),
                ("? ", False),
                (MASK, False),
                (".", False),
            ]
            examples.append(_verbalized("MultiRC", parts, label, [0, 1], YES_NO, at, group=group))
    return examples


def _record(row, at, training, rng, max_train_candidates: int = 10):
    passage = _get(row, "passage", dict, at)
    text = _get(passage, "text", str, f"{at}: passage")
    entities = []
    for ei, span in enumerate(_get(passage, "entities", list, f"{at}: passage")):
        e_at = f"{at}: passage.entities[{ei}]"
        start, end = _get(span, "start", int, e_at), _get(span, "end", int, e_at)
        if not 0 <= start <= end < len(text):
            raise CtxlmError(f"{e_at}: span ({start}, {end}) is outside the passage")
        entities.append(text[start : end + 1])  # ReCoRD's `end` is inclusive
    entities = list(dict.fromkeys(entities))  # distinct, in order of first occurrence
    if not entities:
        raise CtxlmError(f"{at}: field 'passage.entities' is empty")
    passage_text = text.replace("@highlight\n", "- ")  # as THUDM/GLM (and GPT-3) write highlights
    examples = []
    for qi, qa in enumerate(_get(row, "qas", list, at)):
        q_at = f"{at}: qas[{qi}]"
        query = _get(qa, "query", str, q_at)
        if query.count("@placeholder") != 1:
            raise CtxlmError(f"{q_at}: field 'query' must hold exactly one @placeholder")
        before, after = query.split("@placeholder")
        answers = qa.get("answers", [])
        if not isinstance(answers, list):
            raise CtxlmError(f"{q_at}: field 'answers' must be list, got {type(answers).__name__}")
        answers = [_get(a, "text", str, f"{q_at}.answers[{ai}]") for ai, a in enumerate(answers)]
        if training and not answers:
            raise CtxlmError(f"{q_at}: missing field 'answers'")
        answers = list(dict.fromkeys(answers))
        parts = [(passage_text, True), (" " + before.rstrip() + " ", False), (MASK, False), (after, False)]
        if training:
            # THUDM/GLM: one example per correct answer, against at most 9 other entities
            others = [e for e in entities if e not in answers]
            for answer in answers:
                negatives = [others[i] for i in rng.permutation(len(others))[: max_train_candidates - 1]]
                examples.append(
                    ClozeExample(
                        "ReCoRD",
                        parts,
                        [answer] + negatives,
                        (0,),
                        answer,
                        group=f"{row.get('idx', at)}-{qi}",
                        answers=(answer,),
                        source=at,
                    )
                )
        else:
            gold = tuple(i for i, e in enumerate(entities) if e in answers)
            examples.append(
                ClozeExample(
                    "ReCoRD",
                    parts,
                    list(entities),
                    gold,
                    None,
                    group=str(qa.get("idx", f"{row.get('idx', at)}-{qi}")),
                    answers=tuple(answers),
                    source=at,
                )
            )
    return examples


READERS: dict[str, Callable] = {
    "BoolQ": _boolq,
    "CB": _entailment("CB", ["entailment", "contradiction", "neutral"], ("Yes", "No", "Maybe")),
    "COPA": _copa,
    "MultiRC": _multirc,
    "ReCoRD": _record,
    "RTE": _entailment("RTE", ["entailment", "not_entailment"], ("Yes", "No")),
    "WiC": _wic,
    "WSC": _wsc,
}
TASKS = tuple(READERS)


def task_name(name: str) -> str:
    """The canonical task name for `name` ("rte", "superglue/RTE", ...)."""
    key = str(name).rsplit("/", 1)[-1].lower()
    for task in TASKS:
        if task.lower() == key:
            return task
    raise CtxlmError(f"unknown SuperGLUE task '{name}' (known: {', '.join(TASKS)})")


def read_superglue(task: str, path: str | Path, *, training: bool = False, seed: int = 0) -> list[ClozeExample]:
    """The cloze examples of a FewGLUE/SuperGLUE JSONL file. `training` applies the training-set
    rules (labels required, COPA mirroring, ReCoRD expansion, WSC positives only); `seed` draws
    ReCoRD's training negatives (each row from its own generator, so a row's draw is stable)."""
    task = task_name(task)
    path = Path(path)
    if not path.is_file():
        raise CtxlmError(f"{path}: no such file")
    examples = []
    for number, (at, row) in enumerate(jsonl_rows(path), 1):
        examples.extend(READERS[task](row, at, training, np.random.default_rng([seed, number])))
    if not examples:
        raise CtxlmError(f"{path}: no examples")
    return examples


def superglue_file(dataset: str, data_dir: str | Path, split: str) -> Path:
    """`data_dir/superglue/<Task>/<split>.jsonl` for `dataset` "superglue/RTE" (or "RTE"); `data_dir`
    may also be the `superglue` folder itself. Task folders match case-insensitively."""
    task = task_name(dataset)
    root = Path(data_dir)
    for base in (root / "superglue", root):
        if base.is_dir():
            for folder in sorted(base.iterdir()):
                if folder.is_dir() and folder.name.lower() == task.lower():
                    return folder / f"{split}.jsonl"
    raise CtxlmError(f"{root}: no folder for SuperGLUE task {task} (looked in {root / 'superglue'} and {root})")


def load_superglue(dataset: str, data_dir: str | Path, split: str, *, seed: int = 0) -> list[ClozeExample]:
    """The cloze examples of one split ("train" gets the training-set rules)."""
    return read_superglue(dataset, superglue_file(dataset, data_dir, split), training=split == "train", seed=seed)


# ----------------------------------------------------------------------------------- metrics


def multirc_scores(groups: Sequence[str], predictions: Sequence[int], references: Sequence[int]) -> dict[str, float]:
    """MultiRC: F1a, the binary F1 over all answer options, and EM, the share of questions whose
    options are all labelled right."""
    by_question = defaultdict(list)
    for group, p, r in zip(groups, predictions, references):
        by_question[group].append(p == r)
    return {"f1a": binary_f1(predictions, references, 1), "em": float(np.mean([all(v) for v in by_question.values()]))}


def record_scores(predictions: Sequence[str], answers: Sequence[Sequence[str]]) -> dict[str, float]:
    """ReCoRD: token F1 and exact match of each prediction against its best gold answer, averaged."""
    f1s, ems = [], []
    for prediction, golds in zip(predictions, answers):
        if not golds:
            raise CtxlmError("ReCoRD scoring needs the gold answers of every query")
        f1s.append(max(squad_f1(prediction, g) for g in golds))
        ems.append(max(squad_exact_match(prediction, g) for g in golds))
    return {"f1": float(np.mean(f1s)), "em": float(np.mean(ems))}


def task_metrics(examples: Sequence[ClozeExample], predicted: Sequence[int]) -> dict[str, float]:
    """SuperGLUE's metrics for predictions (the index of the best candidate of each example)."""
    if len(examples) != len(predicted) or not examples:
        raise CtxlmError(f"{len(predicted)} predictions for {len(examples)} examples")
    task = examples[0].task
    if task == "ReCoRD":
        scores = record_scores([e.candidates[p] for e, p in zip(examples, predicted)], [e.answers for e in examples])
        return {"accuracy": float(np.mean([p in e.gold for e, p in zip(examples, predicted)])), **scores}
    if task == "WSC":  # the row's label says whether span1 is the referent: it must win iff True
        return {"accuracy": accuracy([p == 0 for p in predicted], [bool(e.label) for e in examples])}
    if any(e.label is None for e in examples):
        raise CtxlmError(f"{examples[0].source}: scoring needs labelled rows")
    if examples[0].candidate_labels is None:  # COPA: the gold choice
        return {"accuracy": accuracy(list(predicted), [e.gold[0] for e in examples])}
    labels = [e.candidate_labels[p] for e, p in zip(examples, predicted)]
    gold = [e.label for e in examples]
    out = {"accuracy": accuracy(labels, gold)}
    if task == "CB":
        out["f1"] = macro_f1(labels, gold)
    if task == "MultiRC":
        out.update(multirc_scores([e.group for e in examples], labels, gold))
    return out
