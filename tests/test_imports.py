"""ctxlm's modules import one way: no module-level import cycle, and `ctxlm.config` (the
family-independent settings) imports no family; each family's configs live in its family's module
(issue 32, point 4)."""

from __future__ import annotations

import ast
from pathlib import Path

import ctxlm

PACKAGE = Path(ctxlm.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(path: Path, modules: set[str]) -> set[str]:
    """The ctxlm modules `path` imports at its top level (not inside a function or a class)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: module_level_imports(path, set(paths)) for name, path in paths.items()}


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (a path back to its start), or None."""
    state: dict[str, str] = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt, trail + [nxt])):
                return found
        state[node] = "done"
        return None

    return next((found for node in sorted(graph) if node not in state and (found := visit(node, [node]))), None)


def test_no_module_level_import_cycle():
    assert cycle(import_graph()) is None


def test_the_cycle_finder_finds_one():
    graph = import_graph()
    graph["ctxlm.config"].add("ctxlm.families.palm")  # config importing a family: config -> families.palm -> config
    assert cycle(graph) is not None


def test_config_imports_no_family():
    assert import_graph()["ctxlm.config"] <= {"ctxlm.errors"}
    source = (PACKAGE / "config.py").read_text(encoding="utf-8")
    assert "families" not in {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}


def test_each_family_owns_its_configs():
    from ctxlm.config import PretrainConfig
    from ctxlm.families import FAMILIES, NAMED_CONFIGS, default_objective

    for name in ("palm", "glm", "unilm"):
        family = FAMILIES[name]
        assert family.config.__module__ == f"ctxlm.families.{name}"
        assert default_objective(name).data_config.__module__ == f"ctxlm.families.{name}"
        assert set(family.named_configs) <= set(NAMED_CONFIGS)
        assert isinstance(PretrainConfig(model=family.config()).data, default_objective(name).data_config)
    assert all(values["family"] in FAMILIES for values in NAMED_CONFIGS.values())
