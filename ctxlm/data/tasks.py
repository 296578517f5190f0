"""Downstream task readers: dataset files in their upstream formats -> (source, target) `Pair`s.

Every reader is a generator of `Pair`s. JSON Lines files are streamed line by line; the official
SQuAD and MS MARCO distributions are single JSON documents and are parsed whole. Text is passed
through verbatim (no stripping, no re-tokenization), so newlines inside a summary survive for
ROUGE-Lsum.

Input layouts (PALM, Bi et al. 2020, §3.3-3.6):

- summarization: source = article, target = summary.
- question generation, Du et al. 2017 JSONL: source = sentence, target = question.
- question generation, SQuAD JSON (answer-aware, as UniLM/PALM): source =
  ``context + separator + answer`` (``answer + separator + context`` with ``answer_first=True``),
  default separator ``" [SEP] "``; target = question.
- generative QA, MS MARCO v2.1 NLG: source = ``passage_separator.join(passages) +
  question_separator + query`` (the question at the end, §3.3); target = the first well-formed
  answer, references = all of them.
- response generation, Cornell: source = context, target = response.

Problems in a file raise `CtxlmError` naming the file, the line (JSONL) or the JSON path (whole-file
JSON), and the field. A row whose source or target is blank is an error unless the reader is asked
to `skip_empty`; skipped rows are counted in the `stats` dict a caller may pass (and logged).
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

from ctxlm.data.json_text import check_no_surrogates, json_problem, parse_json
from ctxlm.data.hf_datasets import dataset_rows, is_dataset
from ctxlm.errors import CtxlmError, not_utf8, where, wide_encoding

log = logging.getLogger(__name__)

SEP = " [SEP] "  # default separator between the parts of a composite source
Stats = dict[str, int]


@dataclass(frozen=True)
class Pair:
    """One example: encoder `source`, decoder `target` (None when unlabeled), optional `id`.

    `references` holds every acceptable target, `target` first; it defaults to `(target,)` for a
    labeled pair and is `()` for an unlabeled one.
    """

    source: str
    target: str | None
    id: str | None = None
    references: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        references = tuple(self.references)
        if self.target is None:
            if references:
                raise ValueError("an unlabeled Pair (target None) cannot have references")
        elif not references:
            references = (self.target,)
        elif references[0] != self.target:
            raise ValueError("Pair.references must start with the target")
        object.__setattr__(self, "references", references)


# ----------------------------------------------------------------------------- small helpers

_JSON_TYPE = {
    dict: "object",
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def _json_type(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


def _an(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _fail(at: str, name: str, problem: str) -> NoReturn:
    """Raise `<file[:line]>: field '<name>' <problem>`."""
    raise CtxlmError(f"{at}: field '{name}' {problem}")


FIELD_FLAGS = (
    "name your fields with --source-field and --target-field "
    "(in a recipe YAML: reader: {source_field: ..., target_field: ...})"
)


def row_fields(row: Mapping, shown: int = 12) -> str:
    """`'a', 'b', ...` (sorted; the first `shown`, then a count) for messages naming a row's fields."""
    names = sorted(map(str, row))
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(f"'{name}'" for name in names[:shown]) + more if names else "no fields"


def _missing_field(at: str, row: Mapping, name: str, role: str) -> NoReturn:
    """Raise `<at>: field '<name>' missing (the <role>); the row has ...; <the flags that fix it>`."""
    raise CtxlmError(f"{at}: field '{name}' missing (the {role}); the row has {row_fields(row)}; {FIELD_FLAGS}")


def _get(obj: Mapping, key: str, kind: type | tuple[type, ...], at: str, name: str) -> Any:
    """`obj[key]`, which must exist and have type `kind`; `name` is its path for messages."""
    if key not in obj:
        _fail(at, name, "missing")
    value = obj[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        _fail(at, name, f"must be {_an(' or '.join(_JSON_TYPE[k] for k in kinds))}, got {_json_type(value)}")
    return value


def _objects(array: list, at: str, name: str) -> Iterator[tuple[int, dict]]:
    """(index, item) for an array whose items must all be JSON objects."""
    for i, item in enumerate(array):
        if not isinstance(item, dict):
            _fail(at, f"{name}[{i}]", f"must be an object, got {_json_type(item)}")
        yield i, item


def _count(stats: Stats | None, key: str, n: int = 1) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + n


def _open(path: str | Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise CtxlmError(f"{path}: file not found") from None
    except OSError as e:
        raise CtxlmError(f"{path}: cannot open ({e.strerror})") from None


def _decode(data: bytes, at: str, path: str | Path) -> str:
    if b"\x00" in data and wide_encoding(path) is not None:  # UTF-16 without a byte-order mark
        raise not_utf8(path, at)
    try:
        return data.decode("utf-8-sig")  # tolerates a byte-order mark
    except UnicodeDecodeError as e:
        raise not_utf8(path, at, f" (byte {e.start + 1})") from None


def jsonl_rows(path: str | Path) -> Iterator[tuple[str, dict]]:
    """`("file:line", row)` for each non-blank line of a JSON Lines file, or `("SOURCE row N", row)`
    for each row of a Hugging Face dataset input (`ctxlm.data.hf_datasets`: Parquet, Arrow,
    save_to_disk, hub:NAME)."""
    if is_dataset(path):
        yield from dataset_rows(path)
        return
    with _open(path) as lines:
        for lineno, raw in enumerate(lines, 1):
            at = where(path, lineno)
            line = _decode(raw, at, path)
            if not line.strip():
                continue
            row = parse_json(line, at)
            if not isinstance(row, dict):
                raise CtxlmError(f"{at}: expected a JSON object, got {_json_type(row)}")
            yield at, row


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """The JSON objects of a JSON Lines file (blank lines ignored); errors name file:line."""
    for _, row in jsonl_rows(path):
        yield row


def write_jsonl(path: str | Path, rows: Iterable[Mapping | Pair]) -> int:
    """Write one JSON object per line (UTF-8, not ASCII-escaped); returns the number of rows.

    `Pair`s are written as `{source, target, id, references}`.
    """
    n = 0
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            obj = asdict(row) if is_dataclass(row) else dict(row)
            out.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    return n


def _load_json_document(path: str | Path) -> Any | None:
    """Parse a whole-file JSON document; None when the file holds several values (JSON Lines)."""
    with _open(path) as f:
        text = _decode(f.read(), str(path), path)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            return None
        raise CtxlmError(f"{where(path, e.lineno)}: invalid JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise CtxlmError(f"{path}: invalid JSON ({json_problem(e)})") from None
    check_no_surrogates(document, text, str(path))
    return document


def _first_row(path: str | Path) -> tuple[str, dict]:
    for at, row in jsonl_rows(path):
        return at, row
    raise CtxlmError(f"{path}: file has no rows")


# ----------------------------------------------------------------------------- JSONL pair readers


def read_jsonl_pairs(
    path: str | Path,
    source_field: str = "source",
    target_field: str = "target",
    require_target: bool = True,
    *,
    id_field: str | None = "id",
    references_field: str | None = None,
    skip_empty: bool = False,
    stats: Stats | None = None,
) -> Iterator[Pair]:
    """Pairs from a JSON Lines file with string fields `source_field` -> `target_field`.

    - `require_target=False`: a row without `target_field` gives an unlabeled pair (target None).
    - `id_field`: string or integer field copied to `Pair.id` when present.
    - `references_field`: optional array of further acceptable targets, appended after the target.
    - blank source/target: error, or with `skip_empty=True` the row is skipped and counted in
      `stats["skipped_empty"]`. `stats["rows"]` counts rows read, `stats["pairs"]` pairs yielded.

    Args:
        source_field: seq2seq: the JSONL/dataset field holding the source
        target_field: seq2seq: the JSONL/dataset field holding the target
        skip_empty: seq2seq: skip (and count) rows whose source or target is empty instead of stopping (the
            recipe's reader: {skip_empty: true})
    """
    first_skipped = None
    skipped = 0
    for at, row in jsonl_rows(path):
        _count(stats, "rows")
        for name, role in ((source_field, "source"), (target_field, "target")):
            if name not in row and (role == "source" or require_target):
                _missing_field(at, row, name, role)
        source = _get(row, source_field, str, at, source_field)
        target = None
        if require_target or target_field in row:
            target = _get(row, target_field, str, at, target_field)
        blank = [
            name
            for name, text in ((source_field, source), (target_field, target))
            if text is not None and not text.strip()
        ]
        if blank:
            if not skip_empty:
                _fail(
                    at,
                    blank[0],
                    "is empty; skip such rows with --skip-empty (Python: skip_empty=True; a recipe: "
                    "reader: {skip_empty: true})",
                )
            skipped += 1
            first_skipped = first_skipped or at
            _count(stats, "skipped_empty")
            continue
        references: tuple[str, ...] = ()
        if target is not None and references_field is not None and references_field in row:
            extra = _get(row, references_field, list, at, references_field)
            for i, text in enumerate(extra):
                if not isinstance(text, str):
                    _fail(at, f"{references_field}[{i}]", f"must be a string, got {_json_type(text)}")
            references = (target, *extra)
        pair_id = None
        if id_field is not None and id_field in row:
            pair_id = str(_get(row, id_field, (str, int), at, id_field))
        _count(stats, "pairs")
        yield Pair(source, target, pair_id, references)
    if skipped:
        log.warning("%s: skipped %d rows with an empty field (first at %s)", path, skipped, first_skipped)


def read_gigaword(
    path: str | Path, *, require_target: bool = True, skip_empty: bool = False, stats: Stats | None = None
) -> Iterator[Pair]:
    """Gigaword headlines, JSONL `{document, summary}`: document -> summary."""
    return read_jsonl_pairs(path, "document", "summary", require_target, skip_empty=skip_empty, stats=stats)


def read_xsum(
    path: str | Path, *, require_target: bool = True, skip_empty: bool = False, stats: Stats | None = None
) -> Iterator[Pair]:
    """XSum, JSONL `{id, document, summary, ...}`: document -> summary, id kept."""
    return read_jsonl_pairs(path, "document", "summary", require_target, skip_empty=skip_empty, stats=stats)


def read_cnndm(
    path: str | Path,
    extra_references: bool = False,
    *,
    require_target: bool = True,
    skip_empty: bool = False,
    stats: Stats | None = None,
) -> Iterator[Pair]:
    """CNN/DailyMail, JSONL `{id, article, highlights, ...}`: article -> highlights, id kept.

    Highlights are kept verbatim, with whatever sentence separators the file has (newlines between
    highlights in the upstream HF layout; " . " in the shared dev.jsonl, which has no newlines).
    With `extra_references=True` a row's `extra_references` array (further human summaries, where
    present) follows the highlights in `Pair.references`; by default the highlights are the only
    reference, as in the standard CNN/DM evaluation.
    """
    return read_jsonl_pairs(
        path,
        "article",
        "highlights",
        require_target,
        references_field="extra_references" if extra_references else None,
        skip_empty=skip_empty,
        stats=stats,
    )


def read_du2017_qg(
    path: str | Path, *, require_target: bool = True, skip_empty: bool = False, stats: Stats | None = None
) -> Iterator[Pair]:
    """Du et al. 2017 sentence-level question generation, JSONL `{sentence, question}`."""
    return read_jsonl_pairs(path, "sentence", "question", require_target, skip_empty=skip_empty, stats=stats)


def read_cornell(
    path: str | Path, *, require_target: bool = True, skip_empty: bool = False, stats: Stats | None = None
) -> Iterator[Pair]:
    """Cornell Movie Dialogs, JSONL `{context, response}`: context -> response.

    The shared train/valid files hold a few rows with a blank context or response; read them with
    `skip_empty=True` to skip (and count) those rows instead of failing on the first.
    """
    return read_jsonl_pairs(path, "context", "response", require_target, skip_empty=skip_empty, stats=stats)


# ----------------------------------------------------------------------------- SQuAD 1.1 JSON


def read_squad_qg(
    path: str | Path,
    separator: str = SEP,
    answer_first: bool = False,
    *,
    stats: Stats | None = None,
) -> Iterator[Pair]:
    """Answer-aware question generation from a SQuAD 1.1 JSON file; one pair per question.

    source = ``context + separator + answer`` (``answer + separator + context`` when
    `answer_first`), using the question's first answer; target = question; id = question id.
    Every answer's `answer_start` must point at its `text` in the context. Unanswerable SQuAD 2.0
    questions (`is_impossible` with no answers) are skipped and counted in
    `stats["skipped_impossible"]`.
    """
    return _squad_pairs(_load_json_document(path), path, separator, answer_first, stats=stats)


def _squad_pairs(
    document: Any, path: str | Path, separator: str = SEP, answer_first: bool = False, *, stats: Stats | None = None
) -> Iterator[Pair]:
    """The pairs of an already parsed SQuAD document (see `read_squad_qg`)."""
    at = str(path)
    if not isinstance(document, dict):
        raise CtxlmError(f"{path}: expected one SQuAD JSON document (an object with 'data')")
    skipped = 0
    for i, article in _objects(_get(document, "data", list, at, "data"), at, "data"):
        name = f"data[{i}].paragraphs"
        for j, paragraph in _objects(_get(article, "paragraphs", list, at, name), at, name):
            p = f"{name}[{j}]"
            context = _get(paragraph, "context", str, at, f"{p}.context")
            if not context.strip():
                _fail(at, f"{p}.context", "is empty")
            for k, qa in _objects(_get(paragraph, "qas", list, at, f"{p}.qas"), at, f"{p}.qas"):
                q = f"{p}.qas[{k}]"
                question = _get(qa, "question", str, at, f"{q}.question")
                question_id = str(_get(qa, "id", (str, int), at, f"{q}.id"))
                if not question.strip():
                    _fail(at, f"{q}.question", f"is empty (question id {question_id})")
                answers = _get(qa, "answers", list, at, f"{q}.answers")
                if not answers:
                    if qa.get("is_impossible"):
                        _count(stats, "skipped_impossible")
                        skipped += 1
                        continue
                    _fail(at, f"{q}.answers", f"is empty (question id {question_id})")
                for a, answer in _objects(answers, at, f"{q}.answers"):
                    _check_span(context, answer, at, f"{q}.answers[{a}]", question_id)
                answer_text = answers[0]["text"]
                parts = (answer_text, context) if answer_first else (context, answer_text)
                _count(stats, "pairs")
                yield Pair(separator.join(parts), question, question_id)
    if skipped:
        log.warning("%s: skipped %d unanswerable questions", path, skipped)


def _check_span(context: str, answer: dict, at: str, name: str, question_id: str) -> None:
    text = _get(answer, "text", str, at, f"{name}.text")
    start = _get(answer, "answer_start", int, at, f"{name}.answer_start")
    if not text.strip():
        _fail(at, f"{name}.text", f"is empty (question id {question_id})")
    if context[start : start + len(text)] != text:
        _fail(at, name, f"answer_start {start} does not point at {text!r} in the context (question id {question_id})")


# ----------------------------------------------------------------------------- MS MARCO v2.1 NLG


def read_marco(
    path: str | Path,
    selected_only: bool = False,
    passage_separator: str = " ",
    question_separator: str = SEP,
    skip_unanswerable: bool = False,
    *,
    stats: Stats | None = None,
) -> Iterator[Pair]:
    """MS MARCO v2.1 Q&A + NLG: passages then the question -> the first well-formed answer.

    Reads the official JSON (`.json`: one object whose columns `query`, `query_id`, `passages`,
    `answers`, `wellFormedAnswers`, `query_type` map a row index string to that row's value) or the
    JSONL variant (one row object per line; `passages` either a list of
    `{is_selected, passage_text, url}` or a dict of parallel lists as in HF `datasets`).

    source = ``passage_separator.join(texts) + question_separator + query`` where texts are all
    non-blank passages, or with `selected_only` those with `is_selected == 1` (all when none is
    selected; counted in `stats["no_selected_passage"]`). target = first well-formed answer,
    references = all of them, id = query_id. A row with no well-formed answer (`"[]"`, `[]` or no
    such column, as in the eval set) is counted in `stats["unanswerable"]` and yielded unlabeled
    (target None), or skipped when `skip_unanswerable=True` (use that for training).
    """
    skipped = 0
    for at, row, label in _marco_rows(path):
        _count(stats, "rows")
        query = _get(row, "query", str, at, label("query"))
        if not query.strip():
            _fail(at, label("query"), "is empty")
        texts = _marco_passages(row, at, label("passages"), selected_only, stats)
        answers = _well_formed_answers(row, at, label("wellFormedAnswers"))
        query_id = row.get("query_id")
        pair_id = str(query_id) if isinstance(query_id, (str, int)) else None
        source = passage_separator.join(texts) + question_separator + query
        if not answers:
            _count(stats, "unanswerable")
            if skip_unanswerable:
                skipped += 1
                continue
        _count(stats, "pairs")
        yield Pair(source, answers[0] if answers else None, pair_id, tuple(answers))
    if skipped:
        log.warning("%s: skipped %d rows without a well-formed answer", path, skipped)


Label = Callable[[str], str]  # field name -> its path in error messages


def _marco_rows(path: str | Path) -> Iterator[tuple[str, dict, Label]]:
    """(location, row, label) for each MARCO row, from the column JSON or from JSONL."""
    document = _load_json_document(path) if Path(path).suffix == ".json" else None
    if document is None:
        for at, row in jsonl_rows(path):
            yield at, row, str
    elif isinstance(document, dict) and isinstance(document.get("query"), dict):
        yield from _marco_columnar_rows(document, str(path))
    elif isinstance(document, dict) and "query" in document:  # a one-row JSONL file
        yield where(path, 1), document, str
    else:
        found = sorted(document) if isinstance(document, dict) else _json_type(document)
        raise CtxlmError(
            f"{path}: unrecognised MS MARCO layout: top-level fields {found}; "
            "expected columns query, passages, wellFormedAnswers, ..."
        )


def _marco_columnar_rows(document: dict, at: str) -> Iterator[tuple[str, dict, Label]]:
    """Rows of the official column layout; labels are JSON paths such as `passages["17"]`."""
    for name, column in document.items():
        if not isinstance(column, dict):
            _fail(at, name, f"must be an object mapping row index to value, got {_json_type(column)}")
    if "passages" not in document:
        _fail(at, "passages", "missing")
    for key in document["query"]:
        row = {"query_id": key}
        for name, column in document.items():
            if key in column:
                row[name] = column[key]
            elif name in ("passages", "wellFormedAnswers"):
                _fail(at, f'{name}["{key}"]', "missing")
        yield at, row, lambda name, key=key: f'{name}["{key}"]'


def _marco_passages(row: dict, at: str, name: str, selected_only: bool, stats: Stats | None) -> list[str]:
    """Passage texts of one row (selected ones only if asked and any are selected)."""
    passages = row.get("passages")
    if passages is None:
        _fail(at, name, "missing")
    if isinstance(passages, dict):  # HF datasets layout: parallel lists
        texts = _get(passages, "passage_text", list, at, f"{name}.passage_text")
        flags = _get(passages, "is_selected", list, at, f"{name}.is_selected")
        if len(flags) != len(texts):
            _fail(at, f"{name}.is_selected", f"has {len(flags)} entries for {len(texts)} passages")
        passages = [{"passage_text": t, "is_selected": s} for t, s in zip(texts, flags)]
    elif not isinstance(passages, list):
        _fail(at, name, f"must be an array, got {_json_type(passages)}")
    texts, selected = [], []
    for i, passage in _objects(passages, at, name):
        text = _get(passage, "passage_text", str, at, f"{name}[{i}].passage_text")
        flag = _get(passage, "is_selected", int, at, f"{name}[{i}].is_selected")
        if flag not in (0, 1):
            _fail(at, f"{name}[{i}].is_selected", f"must be 0 or 1, got {flag}")
        if text.strip():
            texts.append(text)
            if flag:
                selected.append(text)
    if not texts:
        _fail(at, name, "has no non-empty passage")
    if selected_only:
        if selected:
            return selected
        _count(stats, "no_selected_passage")
    return texts


def _well_formed_answers(row: dict, at: str, name: str) -> list[str]:
    """The row's well-formed answers; `[]` for the string "[]", an empty list or no column."""
    answers = row.get("wellFormedAnswers", [])
    if answers == "[]":
        return []
    if not isinstance(answers, list):
        _fail(at, name, f'must be an array of strings or "[]", got {_json_type(answers)}')
    for i, answer in enumerate(answers):
        if not isinstance(answer, str):
            _fail(at, f"{name}[{i}]", f"must be a string, got {_json_type(answer)}")
        if not answer.strip():
            _fail(at, f"{name}[{i}]", "is empty")
    return answers


# ----------------------------------------------------------------------------- task registry

Reader = Callable[..., Iterator[Pair]]


def _check_options(reader: Reader, path: str | Path, options: dict[str, Any]) -> None:
    """Raise a CtxlmError naming any option that `reader` does not take."""
    accepted = set(inspect.signature(reader).parameters) - {"path"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise CtxlmError(
            f"{path}: option(s) {', '.join(unknown)} not accepted by "
            f"{reader.__name__} (accepts: {', '.join(sorted(accepted))})"
        )


def _with_options(reader: Reader, path: str | Path, options: dict[str, Any]) -> Iterator[Pair]:
    _check_options(reader, path, options)
    return reader(path, **options)


@dataclass(frozen=True)
class Layout:
    """A JSONL layout a task reader recognises by its source field: `source` → `target`, as read by
    `reader`; `datasets` names who uses it (for messages). `one_field`: the source is that one
    field (MS MARCO's joins the passages and the query)."""

    source: str
    target: str
    reader: Reader
    datasets: str
    one_field: bool = True

    def describe(self) -> str:
        return f"{self.source}/{self.target}" + (f" ({self.datasets})" if self.datasets else "")


GENERIC = Layout("source", "target", read_jsonl_pairs, "")
TASK_LAYOUTS: dict[str, tuple[Layout, ...]] = {  # in the order tried
    "summarization": (
        Layout("document", "summary", read_xsum, "Gigaword, XSum"),
        Layout("article", "highlights", read_cnndm, "CNN/DM"),
        GENERIC,
    ),
    "qg": (Layout("sentence", "question", read_du2017_qg, "Du et al. 2017"), GENERIC),
    "qa": (Layout("query", "wellFormedAnswers", read_marco, "MS MARCO", one_field=False), GENERIC),
    "dialog": (Layout("context", "response", read_cornell, "Cornell"), GENERIC),
    "seq2seq": (GENERIC,),
}


def task_source_fields(task: str | None) -> tuple[str, ...]:
    """The one-field sources of `task`'s JSONL layouts, in the order its reader tries them
    (`('source',)` for seq2seq and for a task without layouts)."""
    return tuple(layout.source for layout in TASK_LAYOUTS.get(task or "", (GENERIC,)) if layout.one_field)


def _by_first_row(path: str | Path, task: str, options: dict[str, Any]) -> Iterator[Pair]:
    """The reader of the first of `task`'s layouts whose source field JSONL row 1 has."""
    at, row = _first_row(path)
    layouts = TASK_LAYOUTS[task]
    for layout in layouts:
        if layout.source in row:
            return _with_options(layout.reader, path, options)
    expected = ", ".join(layout.describe() for layout in layouts[:-1]) + f" or {layouts[-1].describe()}"
    raise CtxlmError(f"{at}: unrecognised {task} layout: fields {sorted(row)}; expected {expected}; {FIELD_FLAGS}")


def read_seq2seq(path: str | Path, **options: Any) -> Iterator[Pair]:
    """Generic JSONL `{source, target}` (see `read_jsonl_pairs`)."""
    return _with_options(read_jsonl_pairs, path, options)


def read_summarization(path: str | Path, **options: Any) -> Iterator[Pair]:
    """JSONL document/summary (Gigaword, XSum), article/highlights (CNN/DM) or source/target."""
    return _by_first_row(path, "summarization", options)


def read_qg(path: str | Path, **options: Any) -> Iterator[Pair]:
    """SQuAD 1.1 JSON (`.json` document with `data`), sentence/question or source/target JSONL."""
    fields = {layout.source for layout in TASK_LAYOUTS["qg"]}
    document = _load_json_document(path) if Path(path).suffix == ".json" else None
    if isinstance(document, dict) and "data" in document:
        _check_options(read_squad_qg, path, options)
        return _squad_pairs(document, path, **options)
    if document is not None and not (isinstance(document, dict) and set(document) & fields):
        found = sorted(document) if isinstance(document, dict) else _json_type(document)
        raise CtxlmError(
            f"{path}: unrecognised qg layout: top-level fields {found}; expected a SQuAD document with 'data'"
        )
    return _by_first_row(path, "qg", options)


def read_qa(path: str | Path, **options: Any) -> Iterator[Pair]:
    """MS MARCO v2.1 (`.json` column document or query/passages JSONL) or source/target JSONL."""
    if Path(path).suffix == ".json":
        return _with_options(read_marco, path, options)
    return _by_first_row(path, "qa", options)


def read_dialog(path: str | Path, **options: Any) -> Iterator[Pair]:
    """JSONL with context/response (Cornell) or source/target."""
    return _by_first_row(path, "dialog", options)


TASK_READERS: dict[str, Reader] = {
    "summarization": read_summarization,
    "qg": read_qg,
    "qa": read_qa,
    "dialog": read_dialog,
    "seq2seq": read_seq2seq,
}


def read_task(task: str, path: str | Path, **options: Any) -> Iterator[Pair]:
    """Pairs of `path` for `task` (a key of TASK_READERS), the reader chosen by the file's layout.

    An unknown task, an option the chosen reader does not take and (for JSONL) an unrecognised
    layout raise `CtxlmError` here; problems in rows raise while iterating.
    """
    if task not in TASK_READERS:
        raise CtxlmError(f"unknown task '{task}'; known tasks: {', '.join(sorted(TASK_READERS))}")
    if "source_field" in options or "target_field" in options:  # named fields: any task, generic rows
        return _with_options(read_jsonl_pairs, path, options)
    return TASK_READERS[task](path, **options)
