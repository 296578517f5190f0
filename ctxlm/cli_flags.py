"""Command-line flags generated from what they set, over argparse (as jsonargparse and tyro do):
a dataclass's fields (`add_field_flags`, help from each field's comment) or a function's parameters
(`add_signature_flags`, help from its docstring's `Args:` section). Either way the help has one
source, the code's own documentation. A function is read from its module's source without importing
it, so that building the parser imports nothing heavy (torch). `Parser` shows every default in --help
and reports a usage error in one line. `ctxlm.cli_parser` builds the verbs' parsers with these.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.util
import inspect
import re
import types
from pathlib import Path
from typing import Any


def option_name(name: str) -> str:
    """A field's or parameter's flag: `--max-steps` for `max_steps`."""
    return "--" + name.replace("_", "-")


@functools.cache
def field_comments(cls) -> dict[str, str]:
    """Each field's comment in a dataclass's source: the comment lines right above it and the one
    after it on its line, joined (the one source of a config field's help, in code and in --help)."""
    return _comments(inspect.getsource(cls), {f.name for f in dataclasses.fields(cls)})


def _comments(source: str, names) -> dict[str, str]:
    comments, above = {}, []
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        name = re.match(r"(\w+)\s*:", text)
        if name and name.group(1) in names:
            after = text.split("  # ", 1)[1] if "  # " in text else ""
            comments[name.group(1)] = " ".join([*above, after]).strip()
        above = []
    return comments


def param_docs(docstring: str | None) -> dict[str, str]:
    """Each parameter's description in a (cleaned) docstring's `Args:` section (Google style: `name: text`,
    continued on more deeply indented lines; the section ends at a blank or unindented line)."""
    docs, current, inside = {}, None, False
    for line in (docstring or "").splitlines():
        if line.strip() == "Args:":
            inside = True
        elif inside and (entry := re.match(r"^ {4}(\w+): (.*)$", line)):
            current = entry.group(1)
            docs[current] = entry.group(2).strip()
        elif inside and current and line.startswith(" " * 8):
            docs[current] += " " + line.strip()
        elif inside:
            inside = False
    return docs


def value_type(annotation: Any, given: bool = False) -> type | None:
    """The type a flag parses for `annotation` (a string under postponed annotations): int or float when
    it is (or starts with) one, and with `given` also str; None (a string) otherwise."""
    kinds = (int, float, str) if given else (int, float)
    first = str(annotation).split("|")[0].strip()
    return next((kind for kind in kinds if first == kind.__name__), None)


def ranged_number(kind: type, low=None, high=None, **open_ends):
    """An argparse type: a `kind` (int or float) number in `config.Range(low, high, **open_ends)`;
    else argparse's usage error naming the range."""
    from .config import Range

    bounds = Range(low, high, **open_ends)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole' if kind is int else 'a'} number, got '{text}'")
        if not bounds.holds(value):
            raise argparse.ArgumentTypeError(f"must be {bounds.describe()}, got '{text}'")
        return value

    return parse


def given_help(field: dataclasses.Field, text: str | None, note: str = "") -> str | None:
    """The help of a flag that defaults to None (not given): the field's comment and its default, e.g.
    "... (default: 1000)" (and `note`); an on/off switch's default is its absence, and a None default is
    explained by the text."""
    if field.default is True:  # the flag is --no-<field>
        return f"no {text}" if text else None
    if field.default is dataclasses.MISSING or field.default is None or isinstance(field.default, bool):
        return text
    value = f"{field.default:g}" if isinstance(field.default, float) else field.default
    return f"{text or ''} (default: {value}{note})".strip()


def _add_flag(
    target,
    name: str,
    annotation: Any,
    default: Any,
    text: str | None,
    extra: dict,
    *,
    given: bool = False,
    switch_off: bool = False,
    kind: type | None = None,
) -> None:
    """One flag for a field or parameter `name` (see `add_field_flags`)."""
    known = extra.pop("known", None)  # the names a flag takes that no docstring can list (a registry's)
    text = f"{text or ''} (known: {', '.join(known)})".strip() if known else text
    kwargs = dict(dest=name, default=None if given else default, help=text.replace("%", "%%") if text else None)
    option = extra.pop("option", option_name(name))
    if str(annotation) == "bool" and not {"action", "type"} & set(extra):
        if given:
            option = option_name(f"no_{name}") if switch_off else option
            kwargs.update(action="store_const", const=not switch_off)
        else:
            kwargs.update(action="store_true")
    elif not {"action", "type", "choices"} & set(extra) and extra.get("nargs") != "?":  # choices: the values
        kwargs["type"] = kind or value_type(annotation, given)
    target.add_argument(option, **{**kwargs, **extra})


def add_field_flags(
    target, cls, names=None, *, given: bool = False, checked: bool = False, help=None, options: dict | None = None
) -> None:
    """One flag per field of dataclass `cls` (`names`, default all, in that order): `--<field>` storing
    the field's name, parsing the field's type (int, float; else a string), with the field's default
    and its comment as help (`field_comments`, or `help(field, comment)`). `cls` may be "module:Class",
    read from its module's source without importing it (`dataclass_fields`).

    - `given`: the flag defaults to None, "not given" (the field then comes from a config, a recipe or
      the task), and a bool field is a switch to the other value (`--no-<field>` for a default True);
      without it, a bool field is an on switch (`store_true`).
    - `checked`: a number outside the field's range (`config.ranged`) is argparse's usage error.
    - `options`: field → argparse keywords beyond these (choices, nargs, a type, an action, another option
      name; `known`: names appended to the help, e.g. a registry's); a flag with choices, an action of its
      own or an optional value (nargs "?") parses no type.
    """
    comments, fields = dataclass_fields(cls)
    for name in names or fields:
        f, text = fields[name], comments.get(name) or None
        text = help(f, text) if help is not None else given_help(f, text) if given else text
        kind, bounds = value_type(f.type, given), f.metadata.get("range")
        if checked and bounds is not None and kind is not None:
            kind = ranged_number(kind, bounds.low, bounds.high, low_open=bounds.low_open, high_open=bounds.high_open)
        default, extra = None if f.default is dataclasses.MISSING else f.default, dict((options or {}).get(name, {}))
        if default is ... and "default" not in extra:
            raise ValueError(f"{cls}: the default of '{name}' is not a literal; give the flag's default")
        _add_flag(target, name, f.type, default, text, extra, given=given, switch_off=f.default is True, kind=kind)


def function_source(ref: str) -> ast.FunctionDef:
    """The definition of the function `ref` ("module:name" or "module:Class.method"), read from its
    module's source file without importing the module."""
    return _definition(ref)[0]


@functools.cache
def _module_tree(module: str) -> tuple[ast.Module, str]:
    """(the parsed source, the source text) of `module`, read once per process (every parser build asks)."""
    text = Path(importlib.util.find_spec(module).origin).read_text(encoding="utf-8")
    return ast.parse(text), text


def _definition(ref: str) -> tuple[Any, str]:
    """(the definition `ref` names, "module:Name" or "module:Class.name", its module's source text)."""
    module, _, qualname = ref.partition(":")
    node, text = _module_tree(module)
    for part in qualname.split("."):
        node = next(n for n in node.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
    return node, text


@functools.cache  # a parser build asks for the same classes again and again; their sources do not change
def dataclass_fields(cls) -> tuple[dict[str, str], dict[str, Any]]:
    """(each field's comment, the fields by name) of a dataclass, or of the dataclass "module:Class" read
    from its module's source without importing it (a module that imports torch): each field then has its
    `name`, `type` (the annotation as written), `default` (a literal; `dataclasses.MISSING` where there is
    none, `...` where it is not a literal) and no metadata (no range)."""
    if not isinstance(cls, str):
        return field_comments(cls), {f.name: f for f in dataclasses.fields(cls)}
    node, text = _definition(cls)
    fields = {}
    for statement in node.body:
        if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            try:
                default = dataclasses.MISSING if statement.value is None else ast.literal_eval(statement.value)
            except ValueError:
                default = ...
            fields[statement.target.id] = types.SimpleNamespace(
                name=statement.target.id, type=ast.unparse(statement.annotation), default=default, metadata={}
            )
    return _comments(ast.get_source_segment(text, node), fields), fields


def parameters(function: ast.FunctionDef) -> dict[str, tuple[str, Any]]:
    """A function definition's parameters: name → (annotation as written, default); the default is
    None where there is none, and `...` where it is not a literal (give the flag's default in `options`)."""
    args = function.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    found = {}
    for arg, default in [*zip(positional, defaults), *zip(args.kwonlyargs, args.kw_defaults)]:
        try:
            value = None if default is None else ast.literal_eval(default)
        except ValueError:
            value = ...
        found[arg.arg] = (ast.unparse(arg.annotation) if arg.annotation else "", value)
    return found


def add_signature_flags(target, ref: str, names, *, options: dict | None = None) -> None:
    """One flag per parameter `names` of the function `ref` ("module:name", `function_source`):
    `--<parameter>` storing its name, parsing its annotation's type (int, float; else a string; a bool
    is an on switch), with its default and its description in the docstring's `Args:` section
    (`param_docs`) as help. `options`: parameter → argparse keywords beyond these, as `add_field_flags`'s."""
    function = function_source(ref)
    docs, found = param_docs(ast.get_docstring(function)), parameters(function)
    for name in names:
        (annotation, default), extra = found[name], dict((options or {}).get(name, {}))
        if default is ... and "default" not in extra:
            raise ValueError(f"{ref}: the default of '{name}' is not a literal; give the flag's default")
        _add_flag(target, name, annotation, default, docs.get(name), extra)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help with each flag's default, `(default: X)`, where it has one (not None, not an
    off switch) and its text does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text, default = action.help or "", action.default
        if default in (None, False, argparse.SUPPRESS) or not action.option_strings or "default" in text.lower():
            return action.help
        value = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {value.replace('%', '%%')})".strip()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help shows the defaults (verbs' parsers are this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        """A usage error in one line (without argparse's usage block), naming the verb's --help."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def bundle_from_args(cls, args, **values):
    """A bundle (`cls`, a dataclass whose fields became flags through `add_field_flags`) from a verb's
    parsed flags: each field a flag gave (not None), then `values`, which win."""
    given = vars(args)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{**{name: given[name] for name in names if given.get(name) is not None}, **values})


def flag_values(args, *names: str, given: bool = True) -> dict:
    """{name: value} of a verb's flags `names` (with `given`, only those not None)."""
    values = vars(args)
    return {name: values[name] for name in names if not given or values[name] is not None}
