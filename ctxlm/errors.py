"""The one exception type users see.

A `CtxlmError` carries a single-line message that names what was wrong and where
(file and line, config key, field). The CLI prints it as `error: <message>` and exits
with status 2; Python callers can catch it.
"""


class CtxlmError(Exception):
    """A user-facing error whose message is one line naming the file/line/key at fault."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).splitlines()))


def where(path, line: int | None = None) -> str:
    """`path:line` (or just `path`) for error messages."""
    return f"{path}:{line}" if line is not None else f"{path}"


BYTE_ORDER_MARKS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}


def wide_encoding(path) -> str | None:
    """ "UTF-16 (byte-order mark FF FE)" (or UTF-32, or UTF-16 without a mark, told by its NUL
    bytes) when the file at `path` is written so; else None (or unreadable)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return None
    for mark, name in BYTE_ORDER_MARKS.items():
        if head.startswith(mark):
            return f"{name} (byte-order mark {mark.hex(' ').upper()})"
    if len(head) >= 8 and max(head[0::2].count(0), head[1::2].count(0)) >= len(head) // 2 - 1:
        return "UTF-16 (no byte-order mark)"  # ASCII text as UTF-16: every other byte is NUL
    return None


def not_utf8(path, at=None, detail: str = "") -> CtxlmError:
    """The error for a file (or `at`, its file:line) that is not UTF-8; for a UTF-16/32 file, one
    that names its encoding and how to convert it."""
    wide = wide_encoding(path)
    if wide is not None:
        name = wide.split(" ")[0]
        return CtxlmError(
            f"{at or path}: {wide} text, not UTF-8; save it as UTF-8, e.g. "
            f"`iconv -f {name} -t UTF-8 {path} > {path}.utf8` (or choose UTF-8 in the editor's Save As)"
        )
    return CtxlmError(f"{at or path}: not valid UTF-8{detail}")


def plain_warnings() -> None:
    """Show warnings as `warning: <message>` lines (the CLI's style), without source excerpts."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
