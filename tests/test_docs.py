"""README.md and docs/*.md: every relative link, #anchor and backticked repository path resolves,
and the README's Python runs as written."""

import re
import shlex
from pathlib import Path

import pytest

from conftest import ROOT, SHARED

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
REPO_PATH = re.compile(r"^(?:ctxlm|reports|benchmarks|docs|tests)/[\w./-]*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, markup and punctuation dropped,
    lower-cased, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, GitHub's -1, -2, ... for repeated headings included."""
    seen: dict[str, int] = {}
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if match:
            slug = github_slug(match.group(1))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            if count:
                seen[f"{slug}-{count}"] = 1
    return set(seen)


def link_problems(path: Path) -> list[str]:
    problems = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"^[a-z][a-z+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                problems.append(f"{path.name}: dead link {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{path.name}: no heading #{anchor} in {linked.name}")
    return problems


def repo_path_problems(path: Path, root: Path = ROOT) -> list[str]:
    """Backticked `ctxlm/...py`, `reports/...`, `benchmarks/...`, `docs/...`, `tests/...` paths
    that do not exist; a `test_x.py::test_name` (or a following `::test_name`) must define the test."""
    problems, last_file = [], None
    for line in prose_lines(path.read_text(encoding="utf-8")):
        for _, span in CODE_SPAN.findall(line):
            for word in span.split():
                name, _, test = word.rstrip(".,;:)").partition("::")
                if re.match(r"^test_\w+\.py$", name):  # a test file named without its folder
                    name = f"tests/{name}"
                name = name or last_file or ""  # `::test_name` after `tests/test_x.py::...`
                if not REPO_PATH.match(name):
                    continue
                last_file = name
                if not (root / name).exists():
                    problems.append(f"{path.name}: no such path {name}")
                elif test and not re.search(
                    rf"^\s*def {re.escape(test)}\(", (root / name).read_text(encoding="utf-8"), re.MULTILINE
                ):
                    problems.append(f"{path.name}: {name} has no {test}")
    return problems


def test_the_docs_exist_and_the_index_links_every_page():
    pages = {p.name for p in DOCS[1:]}
    assert {
        "README.md",
        "pretraining.md",
        "finetuning-and-decoding.md",
        "families.md",
        "compare.md",
        "huggingface.md",
        "scaling.md",
        "guarantees.md",
        "python-api.md",
        "quality.md",
    } <= pages
    index = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    assert all(f"({name})" in index for name in pages - {"README.md"})


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_anchors_and_repo_paths_resolve(path):
    assert link_problems(path) + repo_path_problems(path) == []


def test_the_checks_catch_dead_links_anchors_and_paths(tmp_path):
    (tmp_path / "other.md").write_text(
        "# Other page\n\n## Fine-tuning, decoding: `generate`\n\n## Steps\n## Steps\n", encoding="utf-8"
    )
    good = tmp_path / "good.md"
    good.write_text(
        "# Good\n\n[a](other.md) [b](other.md#fine-tuning-decoding-generate) [c](#good) "
        "[d](other.md#steps-1) [e](https://example.org/missing.md)\n\n"
        "`ctxlm/cli.py`, `tests/test_docs.py::test_the_checks_catch_dead_links_anchors_and_paths`\n\n"
        "```\n[not a link](missing.md) `ctxlm/missing.py`\n```\n",
        encoding="utf-8",
    )
    assert link_problems(good) + repo_path_problems(good) == []

    bad = tmp_path / "bad.md"
    bad.write_text(
        "# Bad\n\nSee [the page](missing.md), [a heading](other.md#no-such-heading), [here](#nowhere), "
        "`ctxlm/no_such_module.py`, `python benchmarks/missing.py` and "
        "`tests/test_docs.py::test_that_does_not_exist`, `::test_nor_this` and "
        "`test_docs.py::test_nor_that`.\n",
        encoding="utf-8",
    )
    assert link_problems(bad) == [
        "bad.md: dead link missing.md",
        "bad.md: no heading #no-such-heading in other.md",
        "bad.md: no heading #nowhere in bad.md",
    ]
    assert repo_path_problems(bad) == [
        "bad.md: no such path ctxlm/no_such_module.py",
        "bad.md: no such path benchmarks/missing.py",
        "bad.md: tests/test_docs.py has no test_that_does_not_exist",
        "bad.md: tests/test_docs.py has no test_nor_this",
        "bad.md: tests/test_docs.py has no test_nor_that",
    ]


def command_lines(path: Path) -> list[list[str]]:
    """The `ctxlm ...` (or `python -m ctxlm`, `torchrun ... -m ctxlm.cli`) command lines of a file's
    fenced code blocks, as the arguments after the program; lines with a `...` placeholder left out."""
    commands, block, pending = [], None, ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line.strip()):
            block = None if block is not None else line.strip()[3:]
            continue
        if block not in ("", "bash", "sh", "console"):
            continue
        pending += line
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        line, pending = pending, ""
        if not re.search(r"(^|\s-m\s+)ctxlm(\.cli)?\s", line.strip()):
            continue
        words = shlex.split(line, comments=True)
        starts = [i + 1 for i, word in enumerate(words) if word == "ctxlm" and (i == 0 or words[i - 1] == "-m")]
        starts += [i + 1 for i, word in enumerate(words) if word == "ctxlm.cli" and i and words[i - 1] == "-m"]
        if starts and "..." not in words:
            commands.append(words[starts[0] :])
    return commands


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_command_line_parses(path, capsys):
    """Each documented command names a verb and flags that `ctxlm` accepts."""
    from ctxlm.cli import build_parser

    refused = []
    for words in command_lines(path):
        try:
            build_parser().parse_args(words)
        except SystemExit:
            refused.append(f"ctxlm {' '.join(words)}: {capsys.readouterr().err.strip().splitlines()[-1]}")
    assert refused == []


def test_command_lines_are_found_and_a_bad_flag_is_refused(tmp_path, capsys):
    page = tmp_path / "page.md"
    page.write_text(
        "```\nctxlm generate --model m \\\n    --beam 3   # a comment\nctxlm pretrain ... --resume\n"
        "torchrun --nproc_per_node 2 -m ctxlm.cli finetune --out x\nctxlm generate --bean 3\n```\n",
        encoding="utf-8",
    )
    assert command_lines(page) == [
        ["generate", "--model", "m", "--beam", "3"],
        ["finetune", "--out", "x"],
        ["generate", "--bean", "3"],
    ]
    from ctxlm.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(command_lines(page)[-1])


def test_the_readme_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and lines[1:6] == ["", "```", "make demo", "make test", "```"]


def readme_python() -> str:
    blocks = re.findall(
        r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL
    )
    assert blocks, "README.md has no ```python block"
    return "\n".join(blocks)


@pytest.mark.slow
def test_the_readme_python_runs_as_written(tmp_path, monkeypatch, single_thread, capsys):
    """From a working directory whose ../shared is the project's shared data, as the repository
    root's is; the snippet itself keeps the run small (train_limit, max_steps)."""
    code = readme_python()
    assert "train_limit=" in code and "max_steps" in code
    (tmp_path / "shared").symlink_to(SHARED.resolve(), target_is_directory=True)
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("CTXLM_CACHE", str(tmp_path / "cache"))
    exec(compile(code, str(ROOT / "README.md"), "exec"), {"__name__": "readme"})
    printed = capsys.readouterr().out
    assert "rouge1" in printed
    assert (work / "runs/giga-py/model.safetensors").is_file() and (work / "export/giga/config.json").is_file()
