"""What produced a run: package versions and the git commit of ctxlm's source, for run.json."""

from __future__ import annotations

import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

PACKAGES = ("ctxlm", "torch", "numpy", "tokenizers", "safetensors", "transformers", "datasets")


def package_versions() -> dict[str, str]:
    """Installed versions of ctxlm's main dependencies (those present), and Python's."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the checkout ctxlm runs from ("+dirty" with uncommitted changes); None when it
    is not a git checkout (an installed wheel) or git is missing."""
    source = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "."],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def provenance() -> dict:
    return {"versions": package_versions(), "git_commit": git_commit()}
