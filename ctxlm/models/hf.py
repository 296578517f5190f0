"""Adapters between ctxlm's PALM and Hugging Face transformers checkpoints, and what every family's
converter shares (`Conversion`, loading a transformers directory, BERT's parameter names).

- BART ↔ PALM: `BartForConditionalGeneration` maps by name (PALM's parameters are BART's without
  the `model.` prefix); the copy head and the MLM head have no BART counterpart.
- BERT / RoBERTa → PALM encoder: the paper initialises PALM's encoder from RoBERTa (§3.1). A
  BERT/RoBERTa layer is the same post-LN block as a BART encoder layer; the token-type-0 vector is
  folded into the position table (it is added to every token), and the position table is shifted
  to BART's offset of 2 (RoBERTa's already has it when its padding id is 1). The MLM head is
  loaded too when the checkpoint has one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import GenerationConfig, from_mapping
from ..families.palm import PalmConfig
from ..errors import CtxlmError
from ..extras import require
from .layers import LearnedPositions
from .palm import PalmModel


# ------------------------------------------------------------------------------------- shared
@dataclass
class Conversion:
    """What a conversion did: the parameters taken from the checkpoint, those freshly initialised,
    and notes (tokens added, layer norms moved, ...)."""

    source: str
    family: str
    mapped: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: counts, the fresh parameters grouped by their first two name parts, notes."""
        groups = sorted({".".join(name.split(".")[:2]) for name in self.fresh})
        fresh = f"; freshly initialised: {', '.join(groups)}" if groups else "; nothing freshly initialised"
        notes = "".join(f"; {note}" for note in self.notes)
        return f"{self.source} → {self.family}: {len(self.mapped)} tensors mapped{fresh}{notes}"


def transformers_module(purpose: str = "converting transformers checkpoints"):
    return require("transformers", extra="hf", purpose=purpose)


def load_hf_model(path: str | Path, model_class: str | None = None):
    """A local transformers directory as its model class: `model_class` (e.g.
    "BartForConditionalGeneration"), else the masked-LM class when the checkpoint has that head, else
    the base model. Nothing is fetched from the hub."""
    transformers = transformers_module()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CtxlmError(f"{path}: not a transformers checkpoint directory (no config.json)")
    try:
        if model_class is None:
            architectures = transformers.AutoConfig.from_pretrained(path, local_files_only=True).architectures or []
            head = any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in architectures)
            model_class = "AutoModelForMaskedLM" if head else "AutoModel"
        return getattr(transformers, model_class).from_pretrained(path, local_files_only=True).eval()
    except (OSError, ValueError, KeyError) as error:
        raise CtxlmError(f"{path}: cannot load with transformers ({str(error).splitlines()[0]})") from None


def state_names(model) -> list[str]:
    """The names `save_model` writes (tied parameters once)."""
    seen, names = set(), []
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen and tensor.numel():
            continue
        seen.add(tensor.data_ptr())
        names.append(name)
    return names


# A BERT layer's modules under ctxlm's post-LN layer names (BART's) ↔ BERT's.
BERT_LAYER_NAMES = {
    "self_attn.q_proj": "attention.self.query",
    "self_attn.k_proj": "attention.self.key",
    "self_attn.v_proj": "attention.self.value",
    "self_attn.out_proj": "attention.output.dense",
    "self_attn_layer_norm": "attention.output.LayerNorm",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "final_layer_norm": "output.LayerNorm",
}
# BERT's / RoBERTa's masked-LM head ↔ `MaskedLMHead`.
MLM_HEAD_NAMES = {
    "bert": {
        "dense": "cls.predictions.transform.dense",
        "layer_norm": "cls.predictions.transform.LayerNorm",
        "bias": "cls.predictions.bias",
    },
    "roberta": {"dense": "lm_head.dense", "layer_norm": "lm_head.layer_norm", "bias": "lm_head.bias"},
}


def bert_prefix(state: dict) -> str:
    """The prefix of a BERT/RoBERTa state dict's encoder ("bert.", "roberta." or "")."""
    prefix = next((p for p in ("roberta.", "bert.", "") if f"{p}embeddings.word_embeddings.weight" in state), None)
    if prefix is None:
        raise CtxlmError("not a BERT/RoBERTa checkpoint (no embeddings.word_embeddings.weight)")
    return prefix


def bert_layer_pairs(ours: str, theirs: str) -> list[tuple[str, str]]:
    """(our name, BERT's name) of every weight and bias of one post-LN layer."""
    return [
        (f"{ours}{a}.{kind}", f"{theirs}{b}.{kind}") for a, b in BERT_LAYER_NAMES.items() for kind in ("weight", "bias")
    ]


def mlm_head_pairs(state: dict, ours: str = "mlm_head.") -> list[tuple[str, str]]:
    """(our name, theirs) of the checkpoint's masked-LM head; empty when it has none."""
    names = next((n for n in MLM_HEAD_NAMES.values() if n["bias"] in state), None)
    if names is None:
        return []
    pairs = [
        (f"{ours}{a}.{kind}", f"{names[a]}.{kind}") for a in ("dense", "layer_norm") for kind in ("weight", "bias")
    ]
    return pairs + [(f"{ours}bias", names["bias"])]


def copy_pairs(model, state: dict, pairs: list[tuple[str, str]]) -> list[str]:
    """Copy `state[theirs]` into our parameter `ours` for each pair; return our names. A tensor of
    ours with more rows (a vocabulary with added tokens) takes the checkpoint's rows first."""
    own = model.state_dict()
    for ours, theirs in pairs:
        copy_rows(own[ours], state[theirs], f"'{theirs}' into ctxlm's '{ours}'")
    return [ours for ours, _ in pairs]


def copy_rows(target: torch.Tensor, rows: torch.Tensor, what: str = "checkpoint tensor") -> None:
    """`rows` into the first rows of `target` (rows after them, for added tokens, stay fresh)."""
    if target.shape[1:] != rows.shape[1:] or target.shape[0] < rows.shape[0]:
        raise CtxlmError(f"{what}: shape {tuple(rows.shape)} does not fit {tuple(target.shape)}")
    with torch.no_grad():
        target[: rows.shape[0]].copy_(rows)


def bert_backbone_fields(hf_config, tokenizer) -> dict:
    """The config fields a BERT checkpoint fixes for a BERT-shaped ctxlm backbone (GLM, UniLMv2):
    its shape, dropout, activation and initialisation, with the vocabulary and the shared special
    ids of `tokenizer`."""
    return dict(
        vocab_size=tokenizer.vocab_size,
        d_model=hf_config.hidden_size,
        num_layers=hf_config.num_hidden_layers,
        num_heads=hf_config.num_attention_heads,
        ffn_dim=hf_config.intermediate_size,
        max_position_embeddings=hf_config.max_position_embeddings,
        dropout=hf_config.hidden_dropout_prob,
        attention_dropout=hf_config.attention_probs_dropout_prob,
        activation_function=hf_config.hidden_act,
        layer_norm_eps=hf_config.layer_norm_eps,
        init_std=hf_config.initializer_range,
        pad_token_id=hf_config.pad_token_id,
        bos_token_id=tokenizer.cls_id,
        eos_token_id=tokenizer.sep_id,
        mask_token_id=tokenizer.mask_id,
    )


def add_special_tokens(tokenizer, names: list[str]) -> tuple:
    """The tokenizer with the special tokens of `names` it lacks added (new ids after its
    vocabulary), and a note naming them (None when nothing was added)."""
    from ..tokenization import TextTokenizer

    missing = [name for name in names if tokenizer.token_to_id(name) is None]
    if not missing:
        return tokenizer, None
    tokenizer.backend.add_special_tokens(missing)
    extended = TextTokenizer(tokenizer.backend, tokenizer.source)
    ids = [extended.token_to_id(name) for name in missing]
    return extended, f"added tokens {' '.join(missing)} as ids {', '.join(map(str, ids))} (fresh embedding rows)"


BART_FIELDS = [
    "vocab_size",
    "d_model",
    "encoder_layers",
    "decoder_layers",
    "encoder_attention_heads",
    "decoder_attention_heads",
    "encoder_ffn_dim",
    "decoder_ffn_dim",
    "max_position_embeddings",
    "dropout",
    "attention_dropout",
    "activation_dropout",
    "activation_function",
    "scale_embedding",
    "init_std",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "decoder_start_token_id",
]


# ------------------------------------------------------------------------------------- decoding
HF_GENERATION_FILE = "generation_config.json"
# ctxlm GenerationConfig fields that transformers' GenerationConfig has under the same name and
# meaning (lengths count new tokens; the "hf" length penalty is transformers' own)
HF_DECODING_FIELDS = ("num_beams", "max_new_tokens", "min_new_tokens", "no_repeat_ngram_size", "do_sample")
HF_BEAM_FIELDS = ("length_penalty", "early_stopping")  # written only for beam search
HF_SAMPLING_FIELDS = ("top_k", "top_p", "temperature")  # written only for sampling
# transformers settings ctxlm cannot follow, with the value that means "off"
HF_UNFOLLOWED = {
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "repetition_penalty": 1.0,
    "num_beam_groups": 1,
    "diversity_penalty": 0.0,
    "bad_words_ids": None,
    "encoder_no_repeat_ngram_size": 0,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
}


def hf_generation_values(cfg, model_config) -> dict:
    """transformers' generation_config.json values for ctxlm's decoding settings `cfg` (a
    `GenerationConfig`) and an encoder-decoder's special ids."""
    names = (
        HF_DECODING_FIELDS
        + (HF_BEAM_FIELDS if cfg.num_beams > 1 else ())
        + (HF_SAMPLING_FIELDS if cfg.do_sample else ())
    )
    ids = {
        name: getattr(model_config, name)
        for name in ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")
    }
    return {
        **{name: getattr(cfg, name) for name in names},
        **ids,
        "forced_bos_token_id": None,
        "forced_eos_token_id": None,
    }


def ctxlm_only_settings(cfg) -> list[str]:
    """The settings of `cfg` transformers' `generate` cannot express, as "name value" (empty when
    it decodes as ctxlm does)."""
    unexpressed = []
    if cfg.length_penalty_type != "hf" and cfg.num_beams > 1:
        unexpressed.append(
            f"length_penalty_type {cfg.length_penalty_type} (score / ((5 + len) / 6) ** "
            f"{cfg.length_penalty}; transformers divides by len ** {cfg.length_penalty})"
        )
    unexpressed += [f"{name} true" for name in ("block_subword_loops", "block_word_repeats") if getattr(cfg, name)]
    if cfg.do_sample and cfg.seed is not None:
        unexpressed.append(f"seed {cfg.seed} (transformers samples from torch's global generator)")
    return unexpressed


def generation_from_hf(values: dict, base, source: str) -> tuple:
    """(ctxlm decoding settings, notes) from a transformers generation_config.json's `values`:
    `base` (a `GenerationConfig`) with the fields the file sets, `max_length` / `min_length`
    counted as an encoder-decoder's (the start token included); None when the file sets none. The
    notes name what the file sets that ctxlm cannot follow."""
    names = HF_DECODING_FIELDS + HF_BEAM_FIELDS + HF_SAMPLING_FIELDS
    found = {name: values[name] for name in names if values.get(name) is not None}
    for length, new in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
        if new not in found and isinstance(values.get(length), int):
            found[new] = max(values[length] - 1, 0)
    notes = [
        f"{source}: ctxlm does not follow {key}={values[key]!r}"
        for key, off in HF_UNFOLLOWED.items()
        if values.get(key, off) != off
    ]
    if not found:
        return None, notes
    merged = from_mapping(GenerationConfig, {**dataclasses.asdict(base or GenerationConfig()), **found}, source)
    return merged, notes


def decoding_note(cfg, generator: str | None) -> str:
    """CTXLM_NOTE.md's section on the decoding settings `cfg`, for an export whose transformers class
    `generator` decodes with them (None: it does not generate)."""
    lines = ["## Decoding", ""]
    if generator is None:
        lines.append("- transformers' class here does not generate text.")
    else:
        unexpressed = ctxlm_only_settings(cfg)
        lines.append(
            f"- `{HF_GENERATION_FILE}` holds ctxlm's decoding settings as `{generator}.generate` reads "
            "them (beams, lengths as new tokens, length penalty, n-gram blocking, early stopping, sampling, "
            "special ids)."
        )
        lines.append(
            "- ctxlm's settings that transformers cannot express, so that its `generate` decodes without "
            "them: " + ("; ".join(unexpressed) if unexpressed else "none") + "."
        )
    lines.append("- `generation.json` holds all of ctxlm's settings; `ctxlm convert --from-hf` restores them exactly.")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------- BART
def palm_config_from_bart(hf_config, mask_token_id: int | None = None) -> PalmConfig:
    values = {name: getattr(hf_config, name) for name in BART_FIELDS}
    if getattr(hf_config, "normalize_before", False) or getattr(hf_config, "add_final_layer_norm", False):
        raise CtxlmError("only BART's post-LN layout converts (this config uses pre-LN / a final layer norm)")
    values["mask_token_id"] = hf_config.vocab_size - 1 if mask_token_id is None else mask_token_id
    return PalmConfig(copy=False, layer_norm_eps=1e-5, **values)


def bart_config_from_palm(cfg: PalmConfig):
    return transformers_module().BartConfig(
        **{name: getattr(cfg, name) for name in BART_FIELDS},
        forced_eos_token_id=None,
        forced_bos_token_id=None,
        is_encoder_decoder=True,
    )


def palm_from_bart(bart, mask_token_id: int | None = None, config: PalmConfig | None = None) -> PalmModel:
    """A `BartForConditionalGeneration` (object) → PalmModel with the copy head off (or as `config`
    says: a model exported by ctxlm gets its copy head back from the file saved alongside)."""
    model = PalmModel(config or palm_config_from_bart(bart.config, mask_token_id))
    state = {}
    for key, value in bart.state_dict().items():
        if key in ("lm_head.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"):
            continue  # tied to model.shared.weight
        state[key.removeprefix("model.")] = value
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(("mlm_head.", "pointer."))]
    if missing or unexpected:
        raise CtxlmError(f"BART checkpoint does not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model


def bart_from_palm(model: PalmModel, drop_copy_head: bool = False):
    """PalmModel → `BartForConditionalGeneration`. A copy head has no BART counterpart: refused
    unless `drop_copy_head` (the exported model then uses the plain tied softmax)."""
    cfg = model.config
    if cfg.decoder_style != "bart" or not cfg.tie_decoder_embedding or model.attention_copy is not None:
        raise CtxlmError(
            "this PALM has the AliceMind release's decoder (decoder_style, tie_decoder_embedding, "
            "copy_head), which transformers' BART cannot hold"
        )
    if model.pointer is not None and not drop_copy_head:
        raise CtxlmError(
            "this model has PALM's copy head, which BART cannot hold; pass --drop-copy-head "
            "to export without it (its outputs will differ)"
        )
    bart = transformers_module().BartForConditionalGeneration(bart_config_from_palm(model.config))
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(("pointer.", "mlm_head.")):
            continue
        state[key if key == "final_logits_bias" else f"model.{key}"] = value
    state["lm_head.weight"] = state["model.encoder.embed_tokens.weight"] = state[
        "model.decoder.embed_tokens.weight"
    ] = state["model.shared.weight"]
    bart.load_state_dict(state, strict=True)
    return bart


# ------------------------------------------------------------------------------ BERT / RoBERTa
def palm_config_from_encoder(
    hf_config,
    *,
    decoder_layers: int | None = None,
    copy: bool = True,
    mask_token_id: int | None = None,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
) -> PalmConfig:
    """A PALM config whose encoder has the shape of a BERT/RoBERTa config (decoder alike)."""
    roberta = hf_config.model_type in ("roberta", "xlm-roberta", "camembert")
    max_positions = hf_config.max_position_embeddings - (hf_config.pad_token_id + 1 if roberta else 0)
    bos = bos_token_id if bos_token_id is not None else (hf_config.bos_token_id if roberta else 101)
    eos = eos_token_id if eos_token_id is not None else (hf_config.eos_token_id if roberta else 102)
    return PalmConfig(
        vocab_size=hf_config.vocab_size,
        d_model=hf_config.hidden_size,
        encoder_layers=hf_config.num_hidden_layers,
        decoder_layers=decoder_layers if decoder_layers is not None else hf_config.num_hidden_layers,
        encoder_attention_heads=hf_config.num_attention_heads,
        decoder_attention_heads=hf_config.num_attention_heads,
        encoder_ffn_dim=hf_config.intermediate_size,
        decoder_ffn_dim=hf_config.intermediate_size,
        max_position_embeddings=max_positions,
        dropout=hf_config.hidden_dropout_prob,
        attention_dropout=hf_config.attention_probs_dropout_prob,
        activation_function=hf_config.hidden_act,
        mlm_head_activation="gelu" if roberta else hf_config.hidden_act,
        layer_norm_eps=hf_config.layer_norm_eps,
        copy=copy,
        pad_token_id=hf_config.pad_token_id,
        bos_token_id=bos,
        eos_token_id=eos,
        decoder_start_token_id=bos,
        mask_token_id=mask_token_id if mask_token_id is not None else hf_config.vocab_size - 1,
    )


def load_encoder_from_bert(model: PalmModel, hf_model) -> list[str]:
    """Copy a `BertModel`/`RobertaModel` (or their *ForMaskedLM) into PALM's encoder, the shared
    embedding and the MLM head (when the checkpoint has one); return the names filled."""
    hf_config = hf_model.config
    roberta = hf_config.model_type in ("roberta", "xlm-roberta", "camembert")
    state = hf_model.state_dict()
    prefix = bert_prefix(state)
    cfg = model.config
    if (hf_config.hidden_size, hf_config.num_hidden_layers) != (
        cfg.d_model,
        cfg.encoder_layers,
    ) or hf_config.vocab_size > cfg.vocab_size:
        raise CtxlmError("encoder shape differs from the checkpoint's; build the config with palm_config_from_encoder")

    def get(name):
        return state[prefix + name]

    with torch.no_grad():
        copy_rows(model.shared.weight, get("embeddings.word_embeddings.weight"))
        positions = get("embeddings.position_embeddings.weight") + get("embeddings.token_type_embeddings.weight")[0]
        table = model.encoder.embed_positions.weight
        table.zero_()
        first = hf_config.pad_token_id + 1 if roberta else 0  # HF row of position 0
        n = min(table.shape[0] - LearnedPositions.offset, positions.shape[0] - first)
        table[LearnedPositions.offset : LearnedPositions.offset + n].copy_(positions[first : first + n])
        model.encoder.layernorm_embedding.weight.copy_(get("embeddings.LayerNorm.weight"))
        model.encoder.layernorm_embedding.bias.copy_(get("embeddings.LayerNorm.bias"))
    pairs = [
        pair
        for i in range(cfg.encoder_layers)
        for pair in bert_layer_pairs(f"encoder.layers.{i}.", f"{prefix}encoder.layer.{i}.")
    ]
    return [
        "shared.weight",
        "encoder.embed_positions.weight",
        "encoder.layernorm_embedding.weight",
        "encoder.layernorm_embedding.bias",
    ] + copy_pairs(model, state, pairs + mlm_head_pairs(state))


def palm_from_encoder_checkpoint(hf_model, **config_overrides) -> PalmModel:
    """A new PALM whose encoder (and embeddings) come from a BERT/RoBERTa model, as in the paper."""
    cfg = palm_config_from_encoder(hf_model.config, **config_overrides)
    model = PalmModel(cfg)
    load_encoder_from_bert(model, hf_model)
    return model


def init_decoder_from_encoder(model: PalmModel) -> list[str]:
    """Decoder layer i takes encoder layer i's self-attention, FFN and layer norms (and the
    decoder the encoder's positions and embedding layer norm), as BERT2BERT (Rothe et al., 2020);
    cross-attention stays fresh. Returns the decoder names filled."""
    n = min(model.config.decoder_layers, model.config.encoder_layers)
    shared = ["embed_positions.weight", "layernorm_embedding.weight", "layernorm_embedding.bias"]
    shared += [
        f"layers.{i}.{name}.{kind}" for i in range(n) for name in BERT_LAYER_NAMES for kind in ("weight", "bias")
    ]
    state = model.state_dict()
    if model.config.decoder_ffn_dim != model.config.encoder_ffn_dim:
        raise CtxlmError("the decoder starts from the encoder only when their FFN sizes agree")
    with torch.no_grad():
        for name in shared:
            state[f"decoder.{name}"].copy_(state[f"encoder.{name}"])
    return [f"decoder.{name}" for name in shared]


def _fresh(model, mapped: list[str]) -> list[str]:
    done = set(mapped)
    return [name for name in state_names(model) if name not in done]


def palm_from_bart_model(hf_dir: Path, tokenizer, *, config: PalmConfig | None = None, decoder: str = "fresh"):
    """A transformers BART directory → (PalmModel, tokenizer, Conversion): the whole model."""
    bart = load_hf_model(hf_dir, "BartForConditionalGeneration")
    mask_id = tokenizer.mask_id if tokenizer is not None else None
    model = palm_from_bart(bart, mask_token_id=mask_id, config=config)
    mapped = [name for name in state_names(model) if not name.startswith(("pointer.", "mlm_head."))]
    return model, tokenizer, Conversion("bart", "palm", mapped, _fresh(model, mapped))


def palm_from_encoder_model(hf_dir: Path, tokenizer, *, config: PalmConfig | None = None, decoder: str = "fresh"):
    """A BERT/RoBERTa directory → PALM whose encoder, embeddings and MLM head come from it (§3.1);
    the decoder is fresh, or (`decoder="encoder"`) starts from the encoder's layers."""
    hf = load_hf_model(hf_dir)
    ids = {}
    if tokenizer is not None:
        ids = dict(mask_token_id=tokenizer.mask_id, bos_token_id=tokenizer.cls_id, eos_token_id=tokenizer.sep_id)
    model = PalmModel(config or palm_config_from_encoder(hf.config, **ids))
    mapped = load_encoder_from_bert(model, hf)
    notes = ["token type 0 folded into the position table"]
    if decoder == "encoder":
        mapped += init_decoder_from_encoder(model)
        notes.append("decoder self-attention and FFN from the encoder's layers")
    return model, tokenizer, Conversion(hf.config.model_type, "palm", mapped, _fresh(model, mapped), notes)


COPY_HEAD_NOTE = {
    "kept": "PALM's copy head (pointer-generator) is not in `model.safetensors`: transformers' BART has no copy "
    "head. `BartForConditionalGeneration` here computes this model without it, so its predictions differ "
    "from ctxlm's, which decode with the copy head. The copy head is saved in `ctxlm_extra.safetensors`; "
    "`ctxlm convert --from-hf` restores it.",
    "dropped": "PALM's copy head (pointer-generator) was dropped (`--drop-copy-head`): transformers' BART has no "
    "copy head. `BartForConditionalGeneration` here is this model without it, and its predictions "
    "differ from those of the model with the copy head.",
}


def export_palm(
    model: PalmModel, tokenizer, out_dir: Path, *, drop_copy_head: bool = False, generation=None
) -> tuple[dict, list[str]]:
    """PALM → `BartForConditionalGeneration` in `out_dir`, decoding with `generation` (ctxlm's
    `GenerationConfig`, written as transformers' generation_config.json), and CTXLM_NOTE.md.
    Returns the tensors BART cannot hold (the copy head, the MLM head), which `ctxlm.convert`
    saves alongside, and notes."""
    generation = generation or GenerationConfig()
    bart = bart_from_palm(model, drop_copy_head=True)
    values = hf_generation_values(generation, model.config)
    if tokenizer is not None:  # as ctxlm, no prediction starts with a word piece ("##om")
        values["begin_suppress_tokens"] = [i for i in tokenizer.continuation_ids() if i < model.config.vocab_size]
    bart.generation_config = transformers_module().GenerationConfig(**values)
    bart.save_pretrained(out_dir)
    extra = {
        name: tensor
        for name, tensor in model.state_dict().items()
        if name.startswith(("pointer.", "mlm_head.")) and not (drop_copy_head and name.startswith("pointer."))
    }
    notes, sections = [], []
    if model.pointer is not None:
        notes.append(
            "the copy head is left out (transformers' BART decodes without it)"
            if drop_copy_head
            else "the copy head is saved alongside; transformers' BART decodes without it (see CTXLM_NOTE.md)"
        )
        sections.append("## The copy head\n\n" + COPY_HEAD_NOTE["dropped" if drop_copy_head else "kept"] + "\n")
    text = (
        "# Exported from ctxlm (PALM)\n\n`model.safetensors` is a `BartForConditionalGeneration`; what BART "
        "cannot hold (the copy head, the MLM head) is in `ctxlm_extra.safetensors`.\n\n"
    )
    (Path(out_dir) / "CTXLM_NOTE.md").write_text(
        text + "\n".join(sections + [decoding_note(generation, "BartForConditionalGeneration")]), encoding="utf-8"
    )
    return extra, notes
