"""JSON text from data files → Python values, or a one-line `CtxlmError` naming where.

`json.loads` fails in more ways than `JSONDecodeError`: numbers over 4,300 digits raise a plain
`ValueError`, deep nesting a `RecursionError`; and it accepts `"\\ud800"`, an unpaired surrogate
that is no Unicode text (the tokenizer and any UTF-8 writer reject it later). `parse_json` turns all
of these into errors that name the file and line (and, for surrogates, the field).
"""

from __future__ import annotations

import json
import re
from typing import Any

from ctxlm.errors import CtxlmError

_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(text: str, at: str) -> Any:
    """The value of JSON `text`; `at` (e.g. `file:line`) starts error messages."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CtxlmError(f"{at}: invalid JSON ({json_problem(error)})") from None
    check_no_surrogates(value, text, at)
    return value


def json_problem(error: ValueError | RecursionError) -> str:
    """A short description of why `json.loads` failed."""
    if isinstance(error, json.JSONDecodeError):
        return (
            f"{error.msg} at column {error.colno}"
            if error.lineno == 1
            else f"{error.msg} at line {error.lineno} column {error.colno}"
        )
    if isinstance(error, RecursionError):
        return "nested too deeply"
    return str(error).split(";")[0][:120]  # e.g. an integer of more than 4,300 digits


def check_no_surrogates(value: Any, text: str, at: str) -> None:
    """Raise if `value` (parsed from `text`) holds an unpaired surrogate (`"\\ud800"`)."""
    if _SURROGATE_ESCAPE.search(text):
        field = surrogate_field(value)
        if field is not None:
            raise CtxlmError(
                f"{at}: field '{field}' holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text"
            )


def surrogate_field(value: Any) -> str | None:
    """The path (`a.b[2]`) of the first string, or key, in `value` with an unpaired surrogate."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path or "(the whole value)"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                name = f"{path}.{key}" if path else key
                if _SURROGATE.search(key):
                    return ascii(name)[1:-1]  # printable
                stack.append((name, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None
