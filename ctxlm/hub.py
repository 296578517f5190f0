"""A model given as a local directory or a Hugging Face hub id: the directory to read (a hub id is
downloaded, or found in the cache, by huggingface_hub, the `hf` extra)."""

from __future__ import annotations

from pathlib import Path

from .errors import CtxlmError
from .extras import require


def hf_source_dir(source: str | Path) -> Path:
    """A local transformers directory, or a hub id downloaded (or found in the cache) by
    huggingface_hub."""
    path = Path(source)
    if path.is_dir():
        return path
    if path.exists():
        raise CtxlmError(f"{source}: not a directory (a transformers checkpoint is a directory)")
    if str(source).count("/") > 1 or str(source).startswith((".", "/", "~")):
        raise CtxlmError(f"{source}: no such directory")
    hub = require("huggingface_hub", extra="hf", purpose=f"fetching '{source}' from the Hugging Face hub")
    try:
        return Path(hub.snapshot_download(str(source)))
    except Exception as error:  # offline, unknown repo, gated: huggingface_hub raises many kinds
        first = (str(error).splitlines() or [type(error).__name__])[0]
        if _offline(error):
            raise CtxlmError(
                f"{source}: not a local directory, and the Hugging Face hub cannot be reached (no "
                f"network?); download the model elsewhere and pass its directory"
            ) from None
        raise CtxlmError(f"{source}: cannot fetch from the Hugging Face hub ({first})") from None


def _offline(error: BaseException) -> bool:
    names = {type(e).__name__ for e in (error, error.__cause__, error.__context__) if e is not None}
    return bool(
        names
        & {
            "LocalEntryNotFoundError",
            "OfflineModeIsEnabled",
            "ConnectionError",
            "ConnectError",
            "ConnectTimeout",
            "NameResolutionError",
            "MaxRetryError",
            "TimeoutError",
        }
    )
