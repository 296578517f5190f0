"""UniLMv2 ↔ transformers' BERT. UniLMv2 is BERT's post-LN encoder plus one relative-position bias
table shared by all layers (§4.1), so every BERT weight maps by name:

- BERT → UniLMv2: embeddings, layers and the masked-LM head load as they are; the bias table starts
  at zero, so the converted model computes exactly BERT's hidden states until it is trained; [P]
  is added to the vocabulary when the tokenizer lacks it.
- UniLMv2 → BERT: a `BertForMaskedLM`, with the bias table saved alongside (BERT cannot hold it;
  the exported model equals ours only while the table is zero or switched off).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..families.unilm import UnilmConfig
from ..errors import CtxlmError
from .hf import (
    Conversion,
    add_special_tokens,
    bert_backbone_fields,
    bert_layer_pairs,
    bert_prefix,
    copy_rows,
    copy_pairs,
    decoding_note,
    load_hf_model,
    mlm_head_pairs,
    state_names,
    transformers_module,
)
from .unilm import UnilmModel

EMBEDDING_NAMES = [
    ("embeddings.position_embeddings.weight", "embeddings.position_embeddings.weight"),
    ("embeddings.token_type_embeddings.weight", "embeddings.token_type_embeddings.weight"),
    ("embeddings.layer_norm.weight", "embeddings.LayerNorm.weight"),
    ("embeddings.layer_norm.bias", "embeddings.LayerNorm.bias"),
]
RELATIVE_TABLE = "rel_pos_bias.embedding.weight"
MASK_NOTE = """# Exported from ctxlm (UniLMv2)

`model.safetensors` is a `BertForMaskedLM`: UniLMv2's embeddings, layers and masked-LM head.

- `ctxlm_extra.safetensors` holds `rel_pos_bias.embedding.weight`, the relative-position bias
  table (buckets × heads, T5's bidirectional bucketing, shared by all layers) that BERT cannot hold.
  BERT's outputs equal UniLMv2's only when this table is zero (or the config switches it off).
- The mask: BERT attends bidirectionally over the non-padding tokens, which is UniLMv2's NLU
  use. Sequence-to-sequence fine-tuning and decoding use UniLMv2's own mask (source tokens see the
  source; target tokens and their [P] pseudo masks see the source and earlier targets, §3.4),
  which `ctxlm.objectives.unilm.build_seq2seq_example` builds; load this directory with
  `ctxlm convert --from-hf` to use it.
"""


def unilm_config_from_bert(hf_config, tokenizer) -> UnilmConfig:
    return UnilmConfig(
        **bert_backbone_fields(hf_config, tokenizer),
        type_vocab_size=hf_config.type_vocab_size,
        pseudo_token_id=tokenizer.special_id("[P]"),
    )


def bert_pairs(cfg: UnilmConfig, prefix: str) -> list[tuple[str, str]]:
    """(our name, BERT's name) of the embeddings (word embeddings aside) and every layer."""
    pairs = [(ours, prefix + theirs) for ours, theirs in EMBEDDING_NAMES]
    for i in range(cfg.num_layers):
        pairs += bert_layer_pairs(f"layers.{i}.", f"{prefix}encoder.layer.{i}.")
    return pairs


def refuse_official_unilm(hf_dir: Path) -> None:
    """microsoft/unilm's own files (a BERT config.json with `rel_pos_bins`) are not a BERT to start
    UniLMv2 from: this path would add a [P] row and zero their trained bias table."""
    config = hf_dir / "config.json"
    try:
        official = "rel_pos_bins" in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if official:
        raise CtxlmError(
            f"{config}: a microsoft/unilm UniLMv2 checkpoint (rel_pos_bins); convert it with "
            "`ctxlm convert --from-official`, which keeps its bias table and vocabulary"
        )


def unilm_from_bert(hf_dir: Path, tokenizer, *, config: UnilmConfig | None = None, decoder: str = "fresh"):
    """A BERT directory → (UnilmModel, tokenizer, Conversion)."""
    if tokenizer is None:
        raise CtxlmError(f"{hf_dir}: UniLMv2 needs the checkpoint's tokenizer (tokenizer.json or vocab files)")
    refuse_official_unilm(Path(hf_dir))
    hf = load_hf_model(hf_dir)
    notes = []
    if config is None:
        tokenizer, added = add_special_tokens(tokenizer, ["[P]"])
        notes += [added] if added else []
        config = unilm_config_from_bert(hf.config, tokenizer)
    model = UnilmModel(config)
    state = hf.state_dict()
    prefix = bert_prefix(state)
    copy_rows(model.embeddings.word_embeddings.weight, state[prefix + "embeddings.word_embeddings.weight"])
    mapped = ["embeddings.word_embeddings.weight"] + copy_pairs(
        model, state, bert_pairs(config, prefix) + mlm_head_pairs(state)
    )
    if model.rel_pos_bias is not None:
        with torch.no_grad():
            model.rel_pos_bias.embedding.weight.zero_()
        notes.append("relative position bias starts at zero (the model computes BERT's states)")
    fresh = [name for name in state_names(model) if name not in set(mapped)]
    return model, tokenizer, Conversion("bert", "unilm", mapped, fresh, notes)


def export_unilm(
    model: UnilmModel, tokenizer, out_dir: Path, *, generation=None, drop_copy_head: bool = False, **_
) -> tuple[dict, list[str]]:
    """UniLMv2 → a `BertForMaskedLM` in `out_dir` (and a note on the bias table, the mask and the
    decoding settings `generation`); returns the relative-position table and the copy head
    (`copy: true`, unless `drop_copy_head`) for `ctxlm.convert` to save alongside."""
    transformers = transformers_module()
    cfg = model.config
    bert = transformers.BertForMaskedLM(
        transformers.BertConfig(
            vocab_size=cfg.vocab_size,
            hidden_size=cfg.d_model,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            intermediate_size=cfg.ffn_dim,
            hidden_act=cfg.activation_function,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.attention_dropout,
            max_position_embeddings=cfg.max_position_embeddings,
            type_vocab_size=cfg.type_vocab_size,
            layer_norm_eps=cfg.layer_norm_eps,
            initializer_range=cfg.init_std,
            pad_token_id=cfg.pad_token_id,
        )
    )
    ours = model.state_dict()
    pairs = bert_pairs(cfg, "bert.") + [("embeddings.word_embeddings.weight", "bert.embeddings.word_embeddings.weight")]
    pairs += mlm_head_pairs({"cls.predictions.bias": None})
    state = {theirs: ours[name] for name, theirs in pairs if name in ours}  # key_bias False: BERT's stays 0
    missing, unexpected = bert.load_state_dict(state, strict=False)
    no_key_bias = not cfg.key_bias and all(
        key.endswith("attention.self.key.bias") for key in missing if not key.startswith("cls.predictions.decoder.")
    )
    if unexpected or (any(not key.startswith("cls.predictions.decoder.") for key in missing) and not no_key_bias):
        raise CtxlmError(f"BERT layout mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if no_key_bias:
        with torch.no_grad():
            for layer in bert.bert.encoder.layer:
                layer.attention.self.key.bias.zero_()
    bert.tie_weights()
    bert.save_pretrained(out_dir)
    decoding = "\n" + decoding_note(generation, None) if generation is not None else ""
    (Path(out_dir) / "CTXLM_NOTE.md").write_text(MASK_NOTE + decoding, encoding="utf-8")
    extra = {RELATIVE_TABLE: ours[RELATIVE_TABLE]} if RELATIVE_TABLE in ours else {}
    notes = ["the relative-position table is saved alongside; see CTXLM_NOTE.md on the mask"]
    if model.pointer is not None:  # ctxlm's copy head (models/unilm.py): no BERT counterpart
        if not drop_copy_head:
            extra.update({name: value for name, value in ours.items() if name.startswith("pointer.")})
        notes.append(
            "the copy head is left out (transformers' BERT decodes without it)"
            if drop_copy_head
            else "the copy head is saved alongside; transformers' BERT decodes without it"
        )
    return extra, notes
