"""Model, data and pre-training configs from names, mappings and YAML files: the step from
`ctxlm.config`'s dataclasses to a family's config, which needs the family registry
(`ctxlm.families`). `ctxlm.config` itself knows no family, so the registry may import it.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from .config import PretrainConfig, TrainConfig, from_mapping, read_yaml
from .errors import CtxlmError
from .families import FAMILIES, default_objective, named_model_values


def model_config_from_dict(values: dict[str, Any], source: str = "config") -> Any:
    """A model config from a dict carrying `family` (default palm), or `base: <named config>`."""
    values = dict(values)
    base = values.pop("base", None)
    if base is not None:
        merged = dict(named_model_values(str(base)))
        merged.update(values)
        values = merged
    family = values.get("family", "palm")
    if family not in FAMILIES:
        raise CtxlmError(f"{source}: unknown model family '{family}' (known: {', '.join(FAMILIES)})")
    return from_mapping(FAMILIES[family].config, values, source)


def named_model_config(name: str, **overrides: Any) -> Any:
    values = dict(named_model_values(name))
    values.update(overrides)
    return model_config_from_dict(values, source=name)


def default_data_config(family: str) -> type:
    """The data config type of a family's default pre-training objective (`ctxlm.families`)."""
    return default_objective(family).data_config


EXAMPLE_LENGTHS = ("fragment_length", "max_length")  # a data config's example length (PALM; GLM, UniLMv2)


def sized_data_config(model: Any, values: dict[str, Any] | None = None, source: str = "config") -> Any:
    """The data config of `model`'s family from `values` (a YAML `data:` section), its example
    length (`fragment_length`, `max_length`) unless given the smaller of the default and the
    model's `max_position_embeddings` (palm-mini's 256, not 500)."""
    cls = default_data_config(model.family)
    values = {} if values is None else values
    positions = getattr(model, "max_position_embeddings", None)
    if isinstance(values, dict) and positions is not None:  # from_mapping names a wrong type
        values = {
            **{f.name: min(f.default, positions) for f in dataclasses.fields(cls) if f.name in EXAMPLE_LENGTHS},
            **values,
        }
    return from_mapping(cls, values, source)


def _is_named(spec: str) -> bool:
    return not (spec.endswith((".yaml", ".yml")) or Path(spec).is_file())


def train_keys_given(spec: str) -> set[str]:
    """The TrainConfig fields a pre-training config sets itself (its YAML `train:` section); the
    others may take the model family's defaults (`pretraining.with_train_defaults`)."""
    return set() if _is_named(spec) else set(read_yaml(spec).get("train") or {})


def load_pretrain_config(spec: str) -> PretrainConfig:
    """`spec` is a named config (`palm-tiny`) or a YAML file with `model`, `train`, `data` sections.

    In YAML, `model` is either a named config or a mapping of fields (optionally with
    `base: <named config>` to override a few). `data` holds the model family's data config
    (`PalmDataConfig`, `GlmDataConfig` or `UnilmDataConfig`); an example length it does not give
    fits the model's positions (`sized_data_config`).
    """
    if _is_named(spec):
        model = named_model_config(spec)
        return PretrainConfig(model=model, data=sized_data_config(model))
    values = read_yaml(spec)
    unknown = set(values) - {"model", "train", "data"}
    if unknown:
        key = sorted(unknown)[0]
        close = difflib.get_close_matches(key, ["model", "train", "data"], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CtxlmError(f"{spec}: unknown section '{key}'{hint}; sections: model, train, data")
    model = values.get("model")
    if model is None:
        raise CtxlmError(f"{spec}: missing section 'model'")
    model_config = (
        named_model_config(model) if isinstance(model, str) else model_config_from_dict(model, source=f"{spec}: model")
    )
    return PretrainConfig(
        model=model_config,
        train=from_mapping(TrainConfig, values.get("train") or {}, f"{spec}: train"),
        data=sized_data_config(model_config, values.get("data") or {}, f"{spec}: data"),
    )


def set_copy(model_config, copy: bool):
    """`model_config` with PALM's copy head on or off (--copy / --no-copy).

    Args:
        copy: the model's copy head, PALM's pointer-generator, on (--copy; GLM, UniLMv2: ctxlm's extension,
            copy: true) or off (pretrain --no-copy), over the config's model section (finetune: with --config)
    """
    if not any(f.name == "copy" for f in dataclasses.fields(model_config)):
        raise CtxlmError(f"--copy/--no-copy: model family '{model_config.family}' has no copy head option")
    return dataclasses.replace(model_config, copy=copy)
