"""`ctxlm convert`: move models between ctxlm directories and Hugging Face transformers checkpoints.

Each family registers its converters (`ctxlm.families`): PALM imports BART whole and takes its
encoder from BERT / RoBERTa, UniLMv2 and GLM start from BERT; PALM exports as BART, UniLMv2 as
BERT, GLM in its own layout. What a transformers class cannot hold (PALM's copy and MLM heads,
UniLMv2's relative-position table) is saved alongside in `ctxlm_extra.safetensors`, with ctxlm's
config in `ctxlm_config.json`, so that `--from-hf` on an exported directory restores the model.

A source is a local directory or a hub id (fetched with huggingface_hub; without network the hub
id stops with an error saying so).

Decoding settings travel both ways: an export holds transformers' `generation_config.json` (what
`generate` can express; CTXLM_NOTE.md names the rest) and ctxlm's own `generation.json`; an import
takes `generation.json` when present (a ctxlm export), with the fields `generation_config.json`
sets laid over it. The exported tokenizer adds around a text what ctxlm adds around a source.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from .checkpoint import load_model_dir, load_weights, resolve_model_dir
from .config import GenerationConfig, load_generation_config, save_generation_config
from .config_loading import model_config_from_dict
from .errors import CtxlmError
from .extras import require
from .families import FAMILIES, get_family, resolve
from .hub import hf_source_dir
from .layouts import prompt_example
from .tokenization import TextTokenizer

EXPORT_CONFIG = "ctxlm_config.json"
EXPORT_EXTRA = "ctxlm_extra.safetensors"
DECODER_INITS = ("fresh", "encoder")


def _hf_tokenizer(hf_dir: Path) -> TextTokenizer | None:
    """The directory's tokenizer.json, or one built by transformers from vocab/merges files."""
    if (hf_dir / "tokenizer.json").is_file():
        return TextTokenizer.load(hf_dir / "tokenizer.json")
    try:
        from transformers import AutoTokenizer

        fast = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True, use_fast=True)
    except Exception:  # no tokenizer files at all: convert the weights only
        return None
    return TextTokenizer(fast.backend_tokenizer)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CtxlmError(f"{path}: cannot read ({error})") from None


def _converter(model_type: str, family: str | None, source: Path):
    if family is not None:
        converters = get_family(family).from_hf
        if model_type not in converters:
            known = ", ".join(converters) or "nothing"
            raise CtxlmError(f"{source}: a '{model_type}' checkpoint does not convert to {family} (it takes {known})")
        return family, converters[model_type]
    for name, spec in FAMILIES.items():
        if model_type in spec.from_hf:
            return name, spec.from_hf[model_type]
    known = sorted({t for spec in FAMILIES.values() for t in spec.from_hf})
    raise CtxlmError(f"{source}: no converter for model_type '{model_type}' (known: {', '.join(known)})")


def model_from_hf(source: str | Path, *, family: str | None = None, decoder: str = "fresh"):
    """(model, tokenizer or None, Conversion) from a transformers checkpoint: `family` chooses the
    target when several take the model type (default: the first registered, PALM for BART, BERT
    and RoBERTa); `decoder` is "fresh" or "encoder" (PALM from an encoder-only checkpoint)."""
    if decoder not in DECODER_INITS:
        raise CtxlmError(f"decoder initialisation must be one of {', '.join(DECODER_INITS)}, not '{decoder}'")
    hf_dir = hf_source_dir(source)
    model_type = _read_json(hf_dir / "config.json").get("model_type") if (hf_dir / "config.json").is_file() else None
    if model_type is None:
        raise CtxlmError(f"{hf_dir}: not a transformers checkpoint directory (no config.json with a model_type)")
    saved = None
    if (hf_dir / EXPORT_CONFIG).is_file():  # exported by ctxlm: rebuild the same model
        saved = model_config_from_dict(_read_json(hf_dir / EXPORT_CONFIG), source=str(hf_dir / EXPORT_CONFIG))
        family = saved.family
    family, converter = _converter(model_type, family, hf_dir)
    model, tokenizer, report = resolve(converter)(hf_dir, _hf_tokenizer(hf_dir), config=saved, decoder=decoder)
    if (hf_dir / EXPORT_EXTRA).is_file():
        extra = load_file(str(hf_dir / EXPORT_EXTRA))
        load_weights(model, {**model.state_dict(), **extra}, source=str(hf_dir / EXPORT_EXTRA))
        report.mapped += [name for name in extra if name not in report.mapped]
        report.fresh = [name for name in report.fresh if name not in extra]
    model.generation_config = _hf_generation(hf_dir, report)
    return model.eval(), tokenizer, report


def _hf_generation(hf_dir: Path, report) -> GenerationConfig | None:
    """The directory's decoding settings: ctxlm's generation.json (an export's), with what
    transformers' generation_config.json sets laid over it; a note in `report` says where from."""
    from .models.hf import HF_GENERATION_FILE, generation_from_hf

    saved = load_generation_config(hf_dir)
    if not (hf_dir / HF_GENERATION_FILE).is_file():
        return saved
    cfg, notes = generation_from_hf(_read_json(hf_dir / HF_GENERATION_FILE), saved, str(hf_dir / HF_GENERATION_FILE))
    report.notes += notes
    if cfg is not None and saved is None:
        report.notes.append(f"decoding settings from {HF_GENERATION_FILE} (the others: ctxlm's defaults)")
    return cfg or saved


def import_from_hf(source: str | Path, out_dir: str | Path, *, family: str | None = None, decoder: str = "fresh"):
    """A transformers checkpoint → a ctxlm model directory (and `conversion.json` saying what was
    mapped and what freshly initialised). Returns the `Conversion`.

    Args:
        source: a transformers directory or hub id: BART (PALM), BERT/RoBERTa (PALM's encoder; BERT also
            UniLMv2 or GLM with `family`), or a directory ctxlm exported
        out_dir: the model directory written
        family: the ctxlm family to convert into (default: PALM for BART, BERT and RoBERTa); with
            --from-official (`convert_from_official`): try only this family's formats
        decoder: PALM from BERT/RoBERTa: a fresh decoder, or one starting from the encoder's layers
    """
    model, tokenizer, report = model_from_hf(source, family=family, decoder=decoder)
    model.save_pretrained(out_dir, tokenizer)  # with its decoding settings (generation.json)
    (Path(out_dir) / "conversion.json").write_text(
        json.dumps(dataclasses.asdict(report), indent=2) + "\n", encoding="utf-8"
    )
    return report


def export_to_hf(model_dir: str | Path, out_dir: str | Path, drop_copy_head: bool = False) -> list[str]:
    """A ctxlm model directory → the family's transformers layout in `out_dir`, with ctxlm's config,
    the tensors the layout cannot hold and ctxlm's decoding settings alongside, and the tokenizer.
    Returns notes.

    Args:
        model_dir: a ctxlm model directory: PALM → BART, UniLMv2 → BERT, GLM → its own layout
        out_dir: the transformers directory written
        drop_copy_head: export PALM without saving its copy head alongside
    """
    model, tokenizer = load_model_dir(model_dir)
    generation = load_generation_config(resolve_model_dir(model_dir)) or GenerationConfig()
    if hasattr(model, "head_config"):
        raise CtxlmError(f"{model_dir}: a task-head model ({model.head_config()['type']}); export its backbone")
    exporter = get_family(model.config.family).to_hf
    if exporter is None:
        raise CtxlmError(f"{model_dir}: {model.config.family} models have no transformers export")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    extra, notes = resolve(exporter)(model, tokenizer, out_dir, drop_copy_head=drop_copy_head, generation=generation)
    save_generation_config(out_dir, generation)
    config = model.config
    if drop_copy_head and getattr(config, "copy", False):
        config = dataclasses.replace(config, copy=False)
    (out_dir / EXPORT_CONFIG).write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n", encoding="utf-8")
    if extra:
        save_file({name: tensor.contiguous() for name, tensor in extra.items()}, str(out_dir / EXPORT_EXTRA))
    if tokenizer is not None:
        _save_hf_tokenizer(tokenizer, out_dir, model.config)
    _follow_umask(out_dir.glob("*.safetensors"))
    return notes


def _follow_umask(paths) -> None:
    """Give files the umask's permissions (safetensors writes its files 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)


def source_template(tokenizer: TextTokenizer, model_config):
    """A tokenizers post-processor that adds around a text exactly what ctxlm adds around a source
    (the family's decoding layout: `[CLS] text [SEP]` for PALM and UniLMv2 as BART and BERT expect,
    `[CLS] text [gMASK]` for GLM); a second text follows with type id 1 and the same closing tokens."""
    from tokenizers.processors import TemplateProcessing

    ids = prompt_example(model_config, [-1], model_config.max_position_embeddings)["input_ids"].tolist()
    before, after = ids[: ids.index(-1)], ids[ids.index(-1) + 1 :]
    names = [tokenizer.id_to_token(i) for i in before + after]
    if None in names:
        raise CtxlmError(
            f"{tokenizer.source}: has no token for special id {(before + after)[names.index(None)]} "
            f"of the model's config"
        )
    first, last = names[: len(before)], names[len(before) :]
    pair = [*first, "$A", *last, "$B:1", *(f"{n}:1" for n in last)]
    return TemplateProcessing(
        single=[*first, "$A", *last], pair=pair, special_tokens=sorted(set(zip(names, before + after)))
    )


def _save_hf_tokenizer(tokenizer: TextTokenizer, out_dir: Path, model_config) -> None:
    """tokenizer.json plus transformers' `PreTrainedTokenizerFast` files (special tokens named), the
    tokenizer adding ctxlm's special tokens around a text (`source_template`)."""
    from tokenizers import Tokenizer

    transformers = require("transformers", extra="hf", purpose="writing a transformers tokenizer")
    backend = Tokenizer.from_str(tokenizer.backend.to_str())
    backend.post_processor = source_template(tokenizer, model_config)
    name = tokenizer.backend.id_to_token
    segments = ["token_type_ids"] if getattr(model_config, "type_vocab_size", 0) else []  # BERT's, not BART's
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=name(tokenizer.pad_id),
        unk_token=name(tokenizer.unk_id),
        cls_token=name(tokenizer.cls_id),
        sep_token=name(tokenizer.sep_id),
        bos_token=name(tokenizer.cls_id),
        eos_token=name(tokenizer.sep_id),
        mask_token=name(tokenizer.mask_id),
        model_max_length=model_config.max_position_embeddings,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids", *segments, "attention_mask"],
    )
    fast.save_pretrained(out_dir)
