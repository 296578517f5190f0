"""The papers' own releases ↔ ctxlm model directories (`ctxlm convert --from-official / --to-official`).

Each released format registers one `OfficialFormat` in `FORMATS` below: how to recognise it on disk,
how to read it into ctxlm's names (`OfficialCheckpoint`), and, where the official fine-tuning code takes
a ctxlm model back, how to write it. The readers live one module per family (`glm.py`, `unilm.py`,
`palm.py`); this module detects, dispatches and builds the model.

What each release is, and where its code departs from its paper: docs/official-models.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import DEFAULT_MAX_SHARD_SIZE, parse_size
from ..errors import CtxlmError
from ..families import resolve

Ref = Any  # a function, or "module:attribute" imported on first use


@dataclass
class OfficialCheckpoint:
    """What a format's reader found: ctxlm's model config, the weights under ctxlm's parameter names
    (views of memory-mapped files where the format allows: nothing is copied before the model takes
    them), the release's tokenizer (a `TextTokenizer`, or None when the directory has none), the
    decoding settings the official code decodes with (a `GenerationConfig` or None) and notes."""

    config: Any
    tensors: Mapping[str, torch.Tensor]
    tokenizer: Any = None
    generation: Any = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class OfficialFormat:
    """One released on-disk format.

    - `detect(path: Path) -> bool`: does `path` (a directory, or a file for single-file formats) hold it;
    - `read(path: Path, **options) -> OfficialCheckpoint`;
    - `write(model, tokenizer, out_dir: Path) -> list[str]` (notes): the official layout, so that the
      official code can fine-tune a model ctxlm trained (None: no writer).
    """

    name: str
    family: str
    description: str
    detect: Ref
    read: Ref
    write: Ref = None


FORMATS: dict[str, OfficialFormat] = {
    format.name: format
    for format in (
        OfficialFormat(
            "glm-hub",
            "glm",
            "THUDM/glm-* hub directory (config.json model_type 'glm')",
            "ctxlm.official.glm:is_hub",
            "ctxlm.official.glm:read_hub",
            "ctxlm.official.glm:write_hub",
        ),
        OfficialFormat(
            "glm-megatron",
            "glm",
            "THUDM/GLM Megatron checkpoint (latest_checkpointed_iteration.txt, mp_rank_XX_model_states.pt)",
            "ctxlm.official.glm:is_megatron",
            "ctxlm.official.glm:read_megatron",
        ),
        OfficialFormat(
            "unilm-s2s-ft",
            "unilm",
            "microsoft/unilm s2s-ft fine-tuned directory",
            "ctxlm.official.unilm:is_s2s_ft",
            "ctxlm.official.unilm:read_s2s_ft",
            "ctxlm.official.unilm:write_s2s_ft",
        ),
        OfficialFormat(
            "unilm-release",
            "unilm",
            "microsoft/unilm unilm2-* release (fused qkv_linear)",
            "ctxlm.official.unilm:is_release",
            "ctxlm.official.unilm:read_release",
        ),
        OfficialFormat(
            "palm-alicemind",
            "palm",
            "alibaba/AliceMind PALM .pt with its roberta-base/ folder",
            "ctxlm.official.palm:is_alicemind",
            "ctxlm.official.palm:read_alicemind",
        ),
    )
}


def detect_format(path: str | Path, *, family: str | None = None, format: str | None = None) -> OfficialFormat:
    """The format `path` holds: `format` when given, else the first of `FORMATS` (of `family`, when
    given) whose `detect` says yes; none is a one-line error naming the formats tried."""
    path = Path(path)
    if format is not None:
        if format not in FORMATS:
            raise CtxlmError(f"unknown official format '{format}' (known: {', '.join(FORMATS)})")
        return FORMATS[format]
    tried = [spec for spec in FORMATS.values() if family is None or spec.family == family]
    if not tried:
        raise CtxlmError(
            f"no official format of family '{family}' (families: "
            f"{', '.join(sorted({spec.family for spec in FORMATS.values()}))})"
        )
    for spec in tried:
        if resolve(spec.detect)(path):
            return spec
    raise CtxlmError(f"{path}: in no known official format (tried {', '.join(spec.name for spec in tried)})")


def read_official(
    source: str | Path, *, family: str | None = None, format: str | None = None, **options
) -> tuple[OfficialFormat, OfficialCheckpoint]:
    """(the format, what its reader found) for a local path or a hub id."""
    from ..hub import hf_source_dir

    path = Path(source)
    if not path.exists():
        path = hf_source_dir(source)
    spec = detect_format(path, family=family, format=format)
    return spec, resolve(spec.read)(path, **options)


@contextlib.contextmanager
def parameters_on_meta():
    """Build modules whose parameters live on the meta device (no memory, no initialisation) while
    their buffers are computed as usual: a non-persistent buffer (one no checkpoint holds) is then
    already right, and the file's tensors replace the parameters (`load_on_meta`). As accelerate's
    `init_empty_weights(include_buffers=False)`."""
    register = torch.nn.Module.register_parameter

    def register_on_meta(module, name, param):
        if param is not None and param.device.type != "meta":
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register


def load_on_meta(model, tensors: Mapping[str, torch.Tensor], source: str):
    """Give the meta-device `model` the reader's tensors themselves (`load_state_dict(assign=True)`: no
    copy, the checkpoint's dtype kept; views of a memory-mapped file stay views), tie again the
    parameters the model ties, and refuse a parameter or persistent buffer the checkpoint lacks."""
    from ..checkpoint import load_weights

    tied = _tied_groups(model)
    load_weights(model, _unshared(tensors, tied), source=source, assign=True)
    for names in tied:
        loaded = next((name for name in names if name in tensors), None)
        if loaded is None:
            continue  # reported as missing below
        value = model.get_parameter(loaded)
        for name in names:
            owner, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(owner), attribute, value)
    empty = [name for name, tensor in model.state_dict(keep_vars=True).items() if tensor.device.type == "meta"]
    if empty:
        more = f" and {len(empty) - 1} more tensors" if len(empty) > 1 else ""
        raise CtxlmError(
            f"{source}: the checkpoint has no '{empty[0]}'{more} that the {model.config.family} config needs"
        )
    return model


def _unshared(tensors: Mapping[str, torch.Tensor], tied: list[list[str]]) -> dict[str, torch.Tensor]:
    """`tensors`, those a safetensors file cannot hold as they are copied: a view into a larger storage (q,
    k, v cut from a fused `query_key_value`, rows cut from a padded table) and a second name over one
    storage that the model does not tie. Only those tensors are copied (for GLM a quarter of a layer)."""
    tied_with = {name: frozenset(group) for group in tied for name in group}
    copied, owners = dict(tensors), {}
    for name, tensor in tensors.items():
        if not tensor.numel():
            continue
        storage = tensor.untyped_storage()
        whole = tensor.data_ptr() == storage.data_ptr() and tensor.numel() * tensor.element_size() == storage.nbytes()
        owner = owners.setdefault(storage.data_ptr(), name) if whole else None
        if not whole or tied_with.get(owner, owner) != tied_with.get(name, name):
            copied[name] = tensor.clone()
    return copied


def _tied_groups(model) -> list[list[str]]:
    """The names of each parameter that more than one name shares (tied weights)."""
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    return [group for group in names.values() if len(group) > 1]


def model_from_official(source: str | Path, *, family: str | None = None, format: str | None = None, **options):
    """(model in eval mode, tokenizer or None, `Conversion`) from an official release. The model is
    built on the meta device and takes the reader's tensors as they are (`load_on_meta`), so the
    weights are in memory once, in the checkpoint's dtype (glm-10b: ~20 GB bf16, no float32 copy beside).
    Tensors the reader cut from a larger one (q, k, v from a fused `query_key_value`) are copied."""
    from ..checkpoint import build_model
    from ..models.hf import Conversion

    spec, found = read_official(source, family=family, format=format, **options)
    with parameters_on_meta():
        model = build_model(found.config)
    load_on_meta(model, found.tensors, source=str(source))
    model.generation_config = found.generation
    report = Conversion(
        source=str(source),
        family=spec.family,
        mapped=sorted(found.tensors),
        notes=[f"format {spec.name}", *found.notes],
    )
    return model.eval(), found.tokenizer, report


def convert_from_official(
    source: str | Path,
    out_dir: str | Path,
    *,
    family: str | None = None,
    format: str | None = None,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    **options,
):
    """An official release → a ctxlm model directory (with `conversion.json`; weights above
    `max_shard_size` sharded, as transformers). Returns the `Conversion`.

    Args:
        source: a release of a paper's own code (directory, file or hub id): THUDM GLM (hub or Megatron),
            microsoft/unilm UniLMv2 (release or s2s-ft), AliceMind PALM; the format is detected (or give `format`)
        format: with --from-official / --to-official: the official format by name (default: detected / the
            family's only writable one; names: docs/official-models.md)
        max_shard_size: weights above this are written as shards with an index, as transformers
    """
    parse_size(max_shard_size)  # a bad size stops before the release is read
    model, tokenizer, report = model_from_official(source, family=family, format=format, **options)
    model.save_pretrained(out_dir, tokenizer, max_shard_size=max_shard_size)
    (Path(out_dir) / "conversion.json").write_text(
        json.dumps(dataclasses.asdict(report), indent=2) + "\n", encoding="utf-8"
    )
    return report


def writable_formats(family: str) -> list[str]:
    return [spec.name for spec in FORMATS.values() if spec.family == family and spec.write is not None]


def convert_to_official(model_dir: str | Path, out_dir: str | Path, *, format: str | None = None) -> list[str]:
    """A ctxlm model directory → the official layout of its family (`format`: one of `writable_formats`;
    default the family's only one). Returns notes.

    Args:
        model_dir: a ctxlm model directory, written in its family's official layout (for the official
            fine-tuning code)
    """
    from ..checkpoint import load_model_dir

    model, tokenizer = load_model_dir(model_dir)
    family = model.config.family
    choices = writable_formats(family)
    if format is None:
        if not choices:
            raise CtxlmError(f"{model_dir}: {family} models have no official format to write")
        format = choices[0]
    if format not in choices:
        raise CtxlmError(
            f"{model_dir}: a {family} model writes {', '.join(choices) or 'no official format'}, not '{format}'"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return resolve(FORMATS[format].write)(model, tokenizer, out_dir)
