"""alibaba/AliceMind's PALM release → ctxlm (`palm-alicemind` in `ctxlm.official.FORMATS`).

The release (README, `finetune_cnndm_task_roberta.sh`) is `model_palm_en_base.pt` beside a
`roberta-base/` folder (config.json, vocab.json, merges.txt, RoBERTa weights). The .pt is
`models/trainer.py::_save`'s `torch.save({"model": state_dict, "opt": argparse.Namespace,
"optims": [models.optimizers.Optimizer, ...]})`, read here with `safe_torch_load` (no foreign code
runs; the optimizers become inert placeholders). `AbsSummarizer` (`models/model_builder.py`):

- `bert.model.*`: transformers-2.1.1 RoBERTa (post-LN, erf GELU, eps from config.json, positions
  arange(2, S+2), token type 0 added everywhere): ctxlm's encoder by the names of `models/hf.py`;
- `decoder.*`: PreSumm's decoder (`models/decoder.py`) → `decoder_style="presumm"` (eps 1e-6, tanh
  GELU), its own embedding `decoder.embeddings` (`tie_decoder_embedding=False`); `decoder.pos_emb.pe`
  and each layer's 5000×5000 `mask` are buffers ctxlm recomputes (ignored);
- `generator.0.{weight,bias}` (plain head: weight = the decoder embedding, bias → `final_logits_bias`)
  or, with `-p_gen`, `generator.{gen_proj,prob_proj}.*` (`CopyGenerator` → `copy_head="attention"`).

Decoder heads are not in the file: `opt.dec_heads` when the Namespace has it, else 8 (`train.py`'s
default; the paper says 12), or the `dec_heads` option.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..config import GenerationConfig
from ..families.palm import PalmConfig
from ..errors import CtxlmError
from ..models.hf import BERT_LAYER_NAMES
from .safe_pickle import safe_torch_load
from .tokenizers import roberta_bpe_tokenizer

ROBERTA_DIR = "roberta-base"
DEFAULT_DEC_HEADS = 8  # PALM/train.py: parser.add_argument("-dec_heads", default=8)
# PreSumm's MultiHeadedAttention / TransformerDecoderLayer names → ctxlm's (BART's) layer names
ATTENTION_NAMES = {
    "linear_query": "q_proj",
    "linear_keys": "k_proj",
    "linear_values": "v_proj",
    "final_linear": "out_proj",
}
DECODER_LAYER_NAMES = {
    "self_attn": "self_attn",
    "context_attn": "encoder_attn",
    "layer_norm_1": "self_attn_layer_norm",
    "layer_norm_2": "encoder_attn_layer_norm",
    "feed_forward.w_1": "fc1",
    "feed_forward.w_2": "fc2",
    "feed_forward.layer_norm": "final_layer_norm",
}


def _release_files(path: Path, roberta_dir=None) -> tuple[Path, Path] | None:
    """(the .pt, the roberta-base folder) that `path` names, or None."""
    if path.is_dir():
        pts = sorted(path.glob("*.pt"))
        if len(pts) != 1:
            return None
        pt = pts[0]
    elif path.is_file() and path.suffix == ".pt":
        pt = path
    else:
        return None
    folder = Path(roberta_dir) if roberta_dir is not None else pt.parent / ROBERTA_DIR
    return (pt, folder) if (folder / "config.json").is_file() else None


def is_alicemind(path: Path) -> bool:
    """A .pt with `roberta-base/config.json` beside it, or a directory with one .pt and `roberta-base/`."""
    try:
        return _release_files(Path(path)) is not None
    except OSError:
        return False


def _roberta_config(folder: Path) -> dict:
    file = folder / "config.json"
    try:
        values = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CtxlmError(f"{file}: cannot read ({error})") from None
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(values.get(key), int):
            raise CtxlmError(f"{file}: '{key}' is missing or not an integer")
    return values


def roberta_tokenizer(folder: Path):
    """The release's RoBERTa byte-level BPE (vocab.json + merges.txt) as a `TextTokenizer`, or None."""
    if not ((folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        return None
    return roberta_bpe_tokenizer(folder)


def _lm_head(folder: Path, d_model: int, vocab_size: int, notes: list[str]) -> dict[str, torch.Tensor]:
    """ctxlm's MLM head: RoBERTa's `lm_head` when `roberta-base/` holds one (the release's model has
    none: `AbsSummarizer` keeps `RobertaModel` only), else a fresh one (BERT's initialisation)."""
    for name in ("pytorch_model.bin", "model.safetensors"):
        file = folder / name
        if not file.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(str(file), framework="pt") as handle:
                state = {key: handle.get_tensor(key) for key in handle.keys() if key.startswith("lm_head.")}
        else:
            state = safe_torch_load(file)
        if "lm_head.bias" in state:
            notes.append(f"MLM head from {file}")
            names = ["dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias", "bias"]
            return {f"mlm_head.{name}": state[f"lm_head.{name}"] for name in names}
    notes.append("MLM head fresh (the release has none)")
    generator = torch.Generator().manual_seed(0)
    return {
        "mlm_head.dense.weight": torch.randn(d_model, d_model, generator=generator) * 0.02,
        "mlm_head.dense.bias": torch.zeros(d_model),
        "mlm_head.layer_norm.weight": torch.ones(d_model),
        "mlm_head.layer_norm.bias": torch.zeros(d_model),
        "mlm_head.bias": torch.zeros(vocab_size),
    }


def _encoder_tensors(state: dict, get, layers: int) -> dict[str, torch.Tensor]:
    """`bert.model.*` (RobertaModel) → ctxlm's encoder. Token type 0 is added to every token, so its
    row folds into the position table; RoBERTa's table (positions from row 2) loads as is."""
    tensors = {
        "shared.weight": get("bert.model.embeddings.word_embeddings.weight"),
        "encoder.embed_positions.weight": get("bert.model.embeddings.position_embeddings.weight")
        + get("bert.model.embeddings.token_type_embeddings.weight")[0],
        "encoder.layernorm_embedding.weight": get("bert.model.embeddings.LayerNorm.weight"),
        "encoder.layernorm_embedding.bias": get("bert.model.embeddings.LayerNorm.bias"),
    }
    for i in range(layers):
        for ours, theirs in BERT_LAYER_NAMES.items():
            for kind in ("weight", "bias"):
                tensors[f"encoder.layers.{i}.{ours}.{kind}"] = get(f"bert.model.encoder.layer.{i}.{theirs}.{kind}")
    return tensors


def _decoder_tensors(get, layers: int) -> dict[str, torch.Tensor]:
    tensors = {
        "decoder.embed_tokens.weight": get("decoder.embeddings.weight"),
        "decoder.layer_norm.weight": get("decoder.layer_norm.weight"),
        "decoder.layer_norm.bias": get("decoder.layer_norm.bias"),
    }
    for i in range(layers):
        for theirs, ours in DECODER_LAYER_NAMES.items():
            inner = ATTENTION_NAMES.items() if theirs.endswith("attn") else [("", "")]
            for their_part, our_part in inner:
                for kind in ("weight", "bias"):
                    source = ".".join(filter(None, (f"decoder.transformer_layers.{i}.{theirs}", their_part, kind)))
                    tensors[".".join(filter(None, (f"decoder.layers.{i}.{ours}", our_part, kind)))] = get(source)
    return tensors


def _count(state: dict, prefix: str) -> int:
    return len({key[len(prefix) :].split(".")[0] for key in state if key.startswith(prefix)})


def _generation(opt) -> GenerationConfig | None:
    """The predictor's settings stored in `opt` (`models/predictor.py`: beam `beam_size`, EOS banned
    while step < `min_length`, `max_length` steps, GNMT length penalty ((5+len)/6)^alpha, trigram
    blocking on words — here on ids)."""
    needed = ("beam_size", "min_length", "max_length", "alpha")
    if not all(isinstance(getattr(opt, key, None), (int, float)) for key in needed):
        return None
    return GenerationConfig(
        num_beams=int(opt.beam_size),
        min_new_tokens=int(opt.min_length),
        max_new_tokens=int(opt.max_length),
        length_penalty=float(opt.alpha),
        length_penalty_type="gnmt",
        no_repeat_ngram_size=3 if getattr(opt, "block_trigram", False) is True else 0,
    )


def read_alicemind(path: Path, roberta_dir=None, dec_heads: int | None = None, **options):
    """The release at `path` (the .pt, or its directory) → `OfficialCheckpoint`. `roberta_dir`: the
    roberta-base folder when it is not beside the .pt; `dec_heads`: the decoder's heads when the
    checkpoint's `opt` has none (default 8, `train.py`'s)."""
    from . import OfficialCheckpoint

    if options:
        raise CtxlmError(f"{path}: unknown option(s) for palm-alicemind: {', '.join(sorted(options))}")
    path = Path(path)
    found = _release_files(path, roberta_dir)
    if found is None:
        raise CtxlmError(
            f"{path}: not an AliceMind PALM release (a .pt with {ROBERTA_DIR}/config.json beside it, "
            "or option roberta_dir)"
        )
    pt, folder = found
    checkpoint = safe_torch_load(pt)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CtxlmError(f"{pt}: no 'model' state dict (expected trainer.py's {{model, opt, optims}})")
    state = checkpoint["model"]
    opt = checkpoint.get("opt")
    opt = opt if isinstance(opt, argparse.Namespace) else argparse.Namespace()

    def get(key: str) -> torch.Tensor:
        if key not in state:
            raise CtxlmError(f"{pt}: 'model' has no '{key}'")
        return state[key]

    roberta = _roberta_config(folder)
    notes = [f"encoder shape from {folder / 'config.json'}"]
    heads = dec_heads if dec_heads is not None else getattr(opt, "dec_heads", None)
    if not isinstance(heads, int):
        heads = DEFAULT_DEC_HEADS
        notes.append(f"decoder heads {heads}: not in the checkpoint (train.py's default)")
    encoder_layers = _count(state, "bert.model.encoder.layer.")
    decoder_layers = _count(state, "decoder.transformer_layers.")
    vocab_size, d_model = get("decoder.embeddings.weight").shape
    if encoder_layers != roberta["num_hidden_layers"] or get("bert.model.embeddings.word_embeddings.weight").shape != (
        roberta["vocab_size"],
        roberta["hidden_size"],
    ):
        raise CtxlmError(f"{pt}: the encoder's weights do not match {folder / 'config.json'}")
    if d_model != roberta["hidden_size"]:
        raise CtxlmError(f"{pt}: decoder width {d_model} differs from the encoder's {roberta['hidden_size']}")
    if "generator.prob_proj.weight" in state:
        copy, head_prefix = True, "generator.gen_proj."
    elif "generator.0.bias" in state:
        copy, head_prefix = False, "generator.0."
    else:
        raise CtxlmError(f"{pt}: no generator (expected generator.0.bias or generator.prob_proj.weight)")
    positions = get("bert.model.embeddings.position_embeddings.weight").shape[0]
    pad = int(roberta.get("pad_token_id", 1))
    config = PalmConfig(
        vocab_size=vocab_size,
        d_model=d_model,
        encoder_layers=encoder_layers,
        decoder_layers=decoder_layers,
        encoder_attention_heads=roberta["num_attention_heads"],
        decoder_attention_heads=heads,
        encoder_ffn_dim=roberta["intermediate_size"],
        decoder_ffn_dim=get("decoder.transformer_layers.0.feed_forward.w_1.weight").shape[0],
        max_position_embeddings=positions - (pad + 1),  # RoBERTa's rows 0..pad are never read
        dropout=float(roberta.get("hidden_dropout_prob", 0.1)),
        attention_dropout=float(roberta.get("attention_probs_dropout_prob", 0.1)),
        activation_function=roberta.get("hidden_act", "gelu"),
        mlm_head_activation="gelu",
        layer_norm_eps=float(roberta.get("layer_norm_eps", 1e-12)),  # BertConfig 2.1.1's default
        copy=copy,
        copy_head="attention",
        pad_token_id=pad,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=0,
        mask_token_id=vocab_size - 1,
        decoder_style="presumm",
        decoder_layer_norm_eps=1e-6,
        decoder_activation_function="gelu_tanh",
        tie_decoder_embedding=False,
    )
    tokenizer = roberta_tokenizer(folder)
    if tokenizer is not None:
        config.bos_token_id = config.decoder_start_token_id = tokenizer.cls_id
        config.eos_token_id, config.pad_token_id, config.mask_token_id = (
            tokenizer.sep_id,
            tokenizer.pad_id,
            tokenizer.mask_id,
        )
    tensors = _encoder_tensors(state, get, encoder_layers)
    tensors.update(_decoder_tensors(get, decoder_layers))
    tensors["final_logits_bias"] = get(head_prefix + "bias")[None]
    if copy:
        tensors["attention_copy.prob_proj.weight"] = get("generator.prob_proj.weight")
        tensors["attention_copy.prob_proj.bias"] = get("generator.prob_proj.bias")
    tensors.update(_lm_head(folder, d_model, vocab_size, notes))
    notes.append(
        f"head: {'p_gen copy (CopyGenerator)' if copy else 'plain generator'}; "
        f"ignored: decoder.pos_emb.pe, decoder.transformer_layers.*.mask, bert.model.pooler.*"
    )
    return OfficialCheckpoint(
        config=config, tensors=tensors, tokenizer=tokenizer, generation=_generation(opt), notes=notes
    )
