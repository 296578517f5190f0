"""GLM and transformers checkpoints.

- BERT → GLM: what has a place in GLM maps: token embeddings (GLM's output layer is tied to them),
  the position table (with BERT's token-type-0 vector folded in), each layer's attention and FFN.
  GLM is pre-LN and BERT post-LN, so each BERT LayerNorm goes to where GLM normalises the same
  stream: layer i's input LayerNorm is the one BERT applies before layer i (the embedding LayerNorm
  for i = 0), its post-attention LayerNorm BERT's attention LayerNorm, the final LayerNorm BERT's
  last. The network is not BERT's function any more and needs pre-training. The block-position
  table starts at zero; [sop] [eop] [sMASK] [gMASK] are added to the vocabulary when missing.
- GLM → "transformers": transformers has no class for this GLM (THUDM's needs remote code), so the
  export is GLM's own layout: `model.safetensors` with ctxlm's names and a `config.json` naming
  the architecture (`CtxlmGlmModel`, model_type `ctxlm-glm`), which `--from-hf` reads back.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..checkpoint import load_weights
from ..families.glm import GlmConfig
from ..config_loading import model_config_from_dict
from ..errors import CtxlmError
from .glm import GlmModel
from .hf import (
    Conversion,
    add_special_tokens,
    bert_backbone_fields,
    bert_prefix,
    copy_rows,
    copy_pairs,
    decoding_note,
    load_hf_model,
    state_names,
)

GLM_TOKENS = ["[sop]", "[eop]", "[sMASK]", "[gMASK]"]
ARCHITECTURE, MODEL_TYPE = "CtxlmGlmModel", "ctxlm-glm"


def glm_config_from_bert(hf_config, tokenizer) -> GlmConfig:
    return GlmConfig(
        **bert_backbone_fields(hf_config, tokenizer),
        sop_token_id=tokenizer.special_id("[sop]"),
        eop_token_id=tokenizer.special_id("[eop]"),
        smask_token_id=tokenizer.special_id("[sMASK]"),
        gmask_token_id=tokenizer.special_id("[gMASK]"),
    )


def bert_pairs(cfg: GlmConfig, prefix: str) -> list[tuple[str, str]]:
    """(GLM name, BERT name) of every layer's weights, LayerNorms moved as the module docstring says."""
    pairs = []
    for i in range(cfg.num_layers):
        bert, ours = f"{prefix}encoder.layer.{i}.", f"layers.{i}."
        before = f"{prefix}embeddings.LayerNorm" if i == 0 else f"{prefix}encoder.layer.{i - 1}.output.LayerNorm"
        modules = {
            "attention.q_proj": bert + "attention.self.query",
            "attention.k_proj": bert + "attention.self.key",
            "attention.v_proj": bert + "attention.self.value",
            "attention.out_proj": bert + "attention.output.dense",
            "fc1": bert + "intermediate.dense",
            "fc2": bert + "output.dense",
            "input_layernorm": before,
            "post_attention_layernorm": bert + "attention.output.LayerNorm",
        }
        pairs += [(f"{ours}{a}.{kind}", f"{b}.{kind}") for a, b in modules.items() for kind in ("weight", "bias")]
    last = f"{prefix}encoder.layer.{cfg.num_layers - 1}.output.LayerNorm"
    return pairs + [(f"final_layernorm.{kind}", f"{last}.{kind}") for kind in ("weight", "bias")]


def glm_from_bert(hf_dir: Path, tokenizer, *, config: GlmConfig | None = None, decoder: str = "fresh"):
    """A BERT directory → (GlmModel, tokenizer, Conversion)."""
    if tokenizer is None:
        raise CtxlmError(f"{hf_dir}: GLM needs the checkpoint's tokenizer (tokenizer.json or vocab files)")
    hf = load_hf_model(hf_dir)
    state = hf.state_dict()
    prefix = bert_prefix(state)
    notes = []
    if config is None:
        tokenizer, added = add_special_tokens(tokenizer, GLM_TOKENS)
        notes += [added] if added else []
        config = glm_config_from_bert(hf.config, tokenizer)
    model = GlmModel(config)
    copy_rows(model.word_embeddings.weight, state[prefix + "embeddings.word_embeddings.weight"])
    with torch.no_grad():
        model.position_embeddings.weight.copy_(
            state[prefix + "embeddings.position_embeddings.weight"]
            + state[prefix + "embeddings.token_type_embeddings.weight"][0]
        )
        model.block_position_embeddings.weight.zero_()
    mapped = ["word_embeddings.weight", "position_embeddings.weight"] + copy_pairs(
        model, state, bert_pairs(config, prefix)
    )
    notes += [
        "token type 0 folded into the position table",
        "block positions start at zero",
        "BERT's post-LN LayerNorms moved to GLM's pre-LN places (outputs differ from BERT's)",
    ]
    if any(key.startswith(("cls.", "lm_head.")) for key in state):
        notes.append("BERT's MLM head is dropped (GLM's output layer is the tied embedding)")
    fresh = [name for name in state_names(model) if name not in set(mapped)]
    return model, tokenizer, Conversion("bert", "glm", mapped, fresh, notes)


def glm_from_export(hf_dir: Path, tokenizer, *, config: GlmConfig | None = None, decoder: str = "fresh"):
    """A directory written by `export_glm` → (GlmModel, tokenizer, Conversion)."""
    if config is None:
        values = json.loads((Path(hf_dir) / "config.json").read_text(encoding="utf-8"))
        config = model_config_from_dict(values.get("ctxlm", {}), source=f"{hf_dir}/config.json: ctxlm")
    model = GlmModel(config)
    load_weights(model, load_file(str(Path(hf_dir) / "model.safetensors")), source=str(hf_dir))
    return model, tokenizer, Conversion(MODEL_TYPE, "glm", state_names(model), [])


def export_glm(
    model: GlmModel, tokenizer, out_dir: Path, *, generation=None, drop_copy_head: bool = False, **_
) -> tuple[dict, list[str]]:
    """GLM's own layout: `model.safetensors` (ctxlm's names; the copy head's `pointer.*` too, unless
    `drop_copy_head`) and a config.json naming the architecture, with the ctxlm config under
    "ctxlm", and CTXLM_NOTE.md (on the decoding settings `generation` too)."""
    cfg = model.config
    dropped = drop_copy_head and model.pointer is not None
    if dropped:
        cfg = dataclasses.replace(cfg, copy=False)
    config = {
        "architectures": [ARCHITECTURE],
        "model_type": MODEL_TYPE,
        "library_name": "ctxlm",
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.ffn_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "ctxlm": dataclasses.asdict(cfg),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = {
        name: value.contiguous()
        for name, value in model.state_dict().items()
        if not (dropped and name.startswith("pointer."))
    }  # GLM ties no tensors: save_file takes them
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt", "architecture": ARCHITECTURE})
    note = f"# Exported from ctxlm (GLM)\n\nGLM's own layout ({ARCHITECTURE}); no transformers class loads it.\n"
    decoding = "\n" + decoding_note(generation, None) if generation is not None else ""
    (out_dir / "CTXLM_NOTE.md").write_text(note + decoding, encoding="utf-8")
    notes = [f"GLM's own layout (architecture {ARCHITECTURE}); no transformers class loads it"]
    if model.pointer is not None:  # ctxlm's copy head (models/glm.py), an extra head
        notes.append(
            "the copy head is left out"
            if dropped
            else "the copy head (pointer.*, ctxlm's extension) is saved in model.safetensors"
        )
    return {}, notes
