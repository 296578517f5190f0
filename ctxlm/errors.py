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


def plain_warnings() -> None:
    """Show warnings as `warning: <message>` lines (the CLI's style), without source excerpts."""
    import warnings

    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
