"""THUDM's GLM releases ↔ ctxlm's `GlmModel`.

Two on-disk formats (facts from THUDM/GLM at 4f61ed7 and the hub remote code `modeling_glm.py`):

- hub (`THUDM/glm-*`): `config.json` with model_type "glm" (the hub `GLMConfig` fields), weights in
  `pytorch_model.bin` / `model.safetensors`, possibly sharded (`*.index.json`), keys with or without
  the `glm.` prefix that transformers adds. The hub code's MLP calls transformers' `gelu`: exact erf.
- Megatron (the THUDM/GLM repository's own checkpoints): `latest_checkpointed_iteration.txt` names a
  tag directory holding `mp_rank_XX_model_states.pt`, a pickle whose "module" is the state dict. No
  config: shapes come from the tensors, the head count from `num_heads` (or the release shapes), the
  activation is the repository's `gelu_impl`, the tanh approximation. Model-parallel shards are merged
  as THUDM's `change_mp.py` merges them.

Both share the key names (`transformer.layers.{i}.attention.query_key_value` = rows [q; k; v], ...),
a position and a block-position table of max_sequence_length + 1 rows, LayerNorm eps 1e-5, an FFN of
4h, and the output layer tied to `word_embeddings`. The token ids are the release tokenizer's: the
special tokens GLM adds follow the base vocabulary (`<|startofpiece|>` = its size, ...; THUDM/GLM's
`data_utils/tokenization.py`), see `TOKEN_LAYOUTS`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..families.glm import GlmConfig
from ..errors import CtxlmError
from . import OfficialCheckpoint
from .safe_pickle import safe_torch_load
from .tokenizers import (
    GLM_BERT_TOKENS,
    GLM_GPT2_TOKENS,
    GLM_ROBERTA_TOKENS,
    bert_wordpiece_tokenizer,
    gpt2_bpe_tokenizer,
    roberta_bpe_tokenizer,
)

TRACKER = "latest_checkpointed_iteration.txt"
SHARD = re.compile(r"mp_rank_(\d+)_model_states\.pt")
RELEASE_HEADS = {768: 12, 1024: 16, 2048: 32, 4096: 64}  # glm-base, glm-large, glm-2b, glm-10b (config_tasks)

# The special tokens of each release tokenizer (THUDM/GLM data_utils/tokenization.py; hub tokenization_glm.py):
# a spelling found in the vocabulary files, or an offset from the base vocabulary's size where GLM appends it.
TOKEN_LAYOUTS = {
    "bert": dict(
        pad_token_id="[PAD]",
        bos_token_id="[CLS]",
        eos_token_id="[SEP]",
        mask_token_id="[MASK]",
        sop_token_id=0,
        eop_token_id=1,
        smask_token_id=None,
        gmask_token_id=None,
    ),
    "roberta": dict(
        pad_token_id="</s>",
        bos_token_id="<s>",
        eos_token_id="</s>",
        mask_token_id="<mask>",
        sop_token_id=0,
        eop_token_id=1,
        smask_token_id=None,
        gmask_token_id=None,
    ),
    "gpt2": dict(
        pad_token_id="<|endoftext|>",
        bos_token_id=2,
        eos_token_id="<|endoftext|>",
        mask_token_id=3,
        sop_token_id=0,
        eop_token_id=1,
        gmask_token_id=6,
        smask_token_id=7,
    ),
}
BASE_VOCAB = {"bert": 30522, "roberta": 50265, "gpt2": 50257}  # when the directory has no vocabulary files
RELEASE_TOKENS = {"bert": GLM_BERT_TOKENS, "roberta": GLM_ROBERTA_TOKENS, "gpt2": GLM_GPT2_TOKENS}


# ----------------------------------------------------------------------------------------- keys
def layer_pairs(num_layers: int) -> list[tuple[str, str]]:
    """(official name, ctxlm name) of every weight but the fused query_key_value."""
    pairs = [("word_embeddings.weight", "word_embeddings.weight")]
    for name in (
        "position_embeddings.weight",
        "block_position_embeddings.weight",
        "final_layernorm.weight",
        "final_layernorm.bias",
    ):
        pairs.append((f"transformer.{name}", name))
    modules = {
        "input_layernorm": "input_layernorm",
        "post_attention_layernorm": "post_attention_layernorm",
        "attention.dense": "attention.out_proj",
        "mlp.dense_h_to_4h": "fc1",
        "mlp.dense_4h_to_h": "fc2",
    }
    for i in range(num_layers):
        for theirs, ours in modules.items():
            pairs += [
                (f"transformer.layers.{i}.{theirs}.{kind}", f"layers.{i}.{ours}.{kind}") for kind in ("weight", "bias")
            ]
    return pairs


def count_layers(state) -> int:
    found = {int(m.group(1)) for key in state if (m := re.match(r"transformer\.layers\.(\d+)\.", key))}
    return max(found) + 1 if found else 0


def strip_prefix(state: dict, source: str) -> dict:
    """The GLMModel keys without a wrapper's prefix: transformers' `glm.` (GLMForConditionalGeneration's
    `base_model_prefix`) or `model.` (THUDM's fine-tuning wrappers, train_utils.load_pretrained)."""
    for prefix in ("glm.", "model."):
        if f"{prefix}word_embeddings.weight" in state:
            return {key[len(prefix) :] if key.startswith(prefix) else key: value for key, value in state.items()}
    if "word_embeddings.weight" not in state:
        raise CtxlmError(f"{source}: no word_embeddings.weight (bare, 'glm.' or 'model.'): not a GLM state dict")
    return state


def unused_note(state: dict) -> list[str]:
    """A note naming the checkpoint's weights that ctxlm's GlmModel has no place for (a task head, ...)."""
    layers = count_layers(state)
    used = {theirs for theirs, _ in layer_pairs(layers)}
    used |= {
        f"transformer.layers.{i}.attention.query_key_value.{kind}" for i in range(layers) for kind in ("weight", "bias")
    }
    extra = sorted(set(state) - used)
    if not extra:
        return []
    return [f"{len(extra)} weights not loaded ({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})"]


def to_ctxlm(state: dict, source: str) -> dict[str, torch.Tensor]:
    """THUDM's names → ctxlm's: query_key_value's rows [q; k; v] become q/k/v_proj (views, no copies)."""
    for key in state:
        if ".relative" in key or "r_w_bias" in key:
            raise CtxlmError(f"{source}: '{key}': relative (Transformer-XL) encoding is not supported")
    if "transformer.block_position_embeddings.weight" not in state:
        raise CtxlmError(
            f"{source}: no transformer.block_position_embeddings.weight: GLM without 2D positions "
            "(block_position_encoding false) is not supported"
        )
    layers = count_layers(state)
    tensors = {}
    for theirs, ours in layer_pairs(layers):
        if theirs not in state:
            raise CtxlmError(f"{source}: missing '{theirs}'")
        tensors[ours] = state[theirs]
    for i in range(layers):
        for kind in ("weight", "bias"):
            fused = state[f"transformer.layers.{i}.attention.query_key_value.{kind}"]
            for name, part in zip("qkv", fused.chunk(3, dim=0)):
                tensors[f"layers.{i}.attention.{name}_proj.{kind}"] = part
    return tensors


def to_official(model) -> dict[str, torch.Tensor]:
    """ctxlm's GlmModel weights under THUDM's names (unprefixed, as THUDM's hub conversion saves them)."""
    own = model.state_dict()
    state = {theirs: own[ours] for theirs, ours in layer_pairs(model.config.num_layers)}
    for i in range(model.config.num_layers):
        for kind in ("weight", "bias"):
            parts = [own[f"layers.{i}.attention.{name}_proj.{kind}"] for name in "qkv"]
            state[f"transformer.layers.{i}.attention.query_key_value.{kind}"] = torch.cat(parts, 0)
    return state


# ------------------------------------------------------------------------------- model parallel
def merge_model_parallel(shards: list[dict], source: str) -> dict:
    """One state dict from MP ranks, as THUDM's change_mp.py merges them: each query_key_value shard is
    its own [q_r; k_r; v_r]; word embeddings and dense_h_to_4h are split by rows (column-parallel), the
    attention output dense and dense_4h_to_h by columns (row-parallel); the rest is replicated."""
    if len(shards) == 1:
        return shards[0]
    merged = {}
    for key, first in shards[0].items():
        parts = [shard[key] for shard in shards]
        if "query_key_value" in key:
            thirds = [part.chunk(3, dim=0) for part in parts]
            merged[key] = torch.cat([third[j] for j in range(3) for third in thirds], 0)
        elif first.dim() == 2 and "position" not in key and ("word" in key or "h_to_4h" in key):
            merged[key] = torch.cat(parts, 0)
        elif first.dim() == 2 and "position" not in key:
            merged[key] = torch.cat(parts, 1)
        elif first.dim() == 1 and "dense_h_to_4h" in key:
            merged[key] = torch.cat(parts, 0)
        else:
            merged[key] = first
    return merged


def split_model_parallel(state: dict, ranks: int) -> list[dict]:
    """The inverse of `merge_model_parallel` (what THUDM's change_mp.py writes for `ranks` > 1)."""
    shards = [{} for _ in range(ranks)]
    for key, value in state.items():
        if "query_key_value" in key:
            thirds = [third.chunk(ranks, dim=0) for third in value.chunk(3, dim=0)]
            pieces = [torch.cat([thirds[j][r] for j in range(3)], 0) for r in range(ranks)]
        elif value.dim() == 2 and "position" not in key and ("word" in key or "h_to_4h" in key):
            pieces = value.chunk(ranks, dim=0)
        elif value.dim() == 2 and "position" not in key:
            pieces = value.chunk(ranks, dim=1)
        elif value.dim() == 1 and "dense_h_to_4h" in key:
            pieces = value.chunk(ranks, dim=0)
        else:
            pieces = [value] * ranks
        for shard, piece in zip(shards, pieces):
            shard[key] = piece.clone()
    return shards


# ------------------------------------------------------------------------------------ tokenizer
def vocabulary_files(path: Path) -> tuple[str | None, dict[str, int]]:
    """(tokenizer kind, token → id) of the release's vocabulary files in `path`, (None, {}) without any."""
    config = path / "tokenizer_config.json"
    declared = str(read_json(config).get("tokenizer_class", "")) if config.is_file() else ""
    if (path / "vocab.txt").is_file():
        lines = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
        return "bert", {token: i for i, token in enumerate(lines)}
    if (path / "vocab.json").is_file():
        vocab = read_json(path / "vocab.json")
        gpt2 = "GPT2" in declared or ("<|endoftext|>" in vocab and "<s>" not in vocab)
        return ("gpt2" if gpt2 else "roberta"), vocab
    return None, {}


def release_token_ids(kind: str, vocab: dict[str, int], source: str) -> dict[str, int | None]:
    """The GlmConfig token ids of a release tokenizer `kind` (`TOKEN_LAYOUTS`)."""
    base = len(vocab) if vocab else BASE_VOCAB[kind]
    ids = {}
    for field, where in TOKEN_LAYOUTS[kind].items():
        if where is None or isinstance(where, int):
            ids[field] = where if where is None else base + where
        elif where in vocab:
            ids[field] = vocab[where]
        elif not vocab and kind == "bert":  # bert-*-uncased's fixed ids
            ids[field] = {"[PAD]": 0, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}[where]
        elif not vocab:
            ids[field] = {"</s>": 2, "<s>": 0, "<mask>": 50264, "<|endoftext|>": 50256}[where]
        else:
            raise CtxlmError(f"{source}: the vocabulary has no {where} token")
    return ids


def build_tokenizer(path: Path, kind: str, vocab: dict[str, int]):
    """The release's tokenizer (`ctxlm.official.tokenizers`: BERT WordPiece, RoBERTa or GPT-2 BPE) with GLM's
    added tokens where THUDM's code puts them: after the `len(vocab)` pieces, in `RELEASE_TOKENS[kind]`'s order."""
    release = RELEASE_TOKENS[kind]
    first = min(release.values())
    added = {token: len(vocab) + token_id - first for token, token_id in release.items()}
    if kind == "bert":
        return bert_wordpiece_tokenizer(path / "vocab.txt", added=added)
    return (roberta_bpe_tokenizer if kind == "roberta" else gpt2_bpe_tokenizer)(path, added=added)


def token_ids(path: Path, vocab_rows: int, options: dict, source: str, saved: dict | None = None):
    """(token ids, tokenizer, notes) from the directory's vocabulary files, the `tokenizer` option
    ("bert" / "roberta" / "gpt2"), or glm-large's BERT layout for 30592 rows; then the ids `write_hub`
    saved (`saved`), then the `token_ids` option override. A ctxlm tokenizer.json, when present, is the
    tokenizer."""
    found, vocab = vocabulary_files(path)
    kind = options.get("tokenizer", found)
    if kind is None and vocab_rows == 30592:
        kind = "bert"
    options = {**options, "token_ids": {**(saved or {}), **(options.get("token_ids") or {})}}
    if kind is None and not options["token_ids"]:
        raise CtxlmError(
            f"{source}: no vocabulary files to take the special-token ids from; pass "
            "tokenizer='bert'|'roberta'|'gpt2' or token_ids={...}"
        )
    if kind is not None and kind not in TOKEN_LAYOUTS:
        raise CtxlmError(f"{source}: unknown tokenizer '{kind}' (known: {', '.join(TOKEN_LAYOUTS)})")
    ids = release_token_ids(kind, vocab, source) if kind is not None else {}
    ids.update(options.get("token_ids") or {})
    unknown = [field for field in ids if field not in TOKEN_LAYOUTS["bert"]]
    if unknown:
        known = ", ".join(TOKEN_LAYOUTS["bert"])
        raise CtxlmError(f"{source}: unknown token_ids field '{unknown[0]}' (known: {known})")
    missing = [field for field in TOKEN_LAYOUTS["bert"] if field not in ids]
    if missing:
        raise CtxlmError(f"{source}: token_ids lacks {', '.join(missing)}")
    for field, value in ids.items():
        if value is not None and (not isinstance(value, int) or not 0 <= value < vocab_rows):
            raise CtxlmError(f"{source}: {field} {value} is outside the {vocab_rows} embedding rows")
    if (path / "tokenizer.json").is_file():
        from ..tokenization import TextTokenizer

        tokenizer = TextTokenizer.load(path)
    else:
        tokenizer = build_tokenizer(path, kind, vocab) if vocab and kind == found else None
    notes = [f"special-token ids of the {kind or 'given'} layout" + (" (+ saved / given ids)" if saved else "")]
    return ids, tokenizer, notes


def glm_config(
    *,
    vocab_rows: int,
    hidden: int,
    layers: int,
    heads: int,
    positions: int,
    activation: str,
    ids: dict,
    decode_blank: str = "first",
    **fields,
) -> GlmConfig:
    """The GlmConfig of a release: FFN 4h, LayerNorm eps 1e-5 (both hard-coded in THUDM's code); decoding
    fills the first blank, as both THUDM's generate_samples.py and the hub's build_inputs_for_generation do."""
    return GlmConfig(
        vocab_size=vocab_rows,
        d_model=hidden,
        num_layers=layers,
        num_heads=heads,
        ffn_dim=4 * hidden,
        max_position_embeddings=positions,
        activation_function=activation,
        layer_norm_eps=1e-5,
        decode_blank=decode_blank,
        **ids,
        **fields,
    )


# ------------------------------------------------------------------------------------------ hub
def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CtxlmError(f"{path}: not readable JSON ({error})") from None


def is_hub(path: Path) -> bool:
    path = Path(path)
    try:
        return (
            path.is_dir() and json.loads((path / "config.json").read_text(encoding="utf-8")).get("model_type") == "glm"
        )
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def load_file_state(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file (memory-mapped) or a pickled state dict (the allow-list unpickler)."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                return {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as error:  # safetensors raises its own error types
            raise CtxlmError(f"{path}: cannot read weights ({str(error).splitlines()[0]})") from None
    if not path.is_file():
        raise CtxlmError(f"{path}: not found")
    state = safe_torch_load(path)
    if not isinstance(state, dict):
        raise CtxlmError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def hub_state(path: Path) -> dict[str, torch.Tensor]:
    """The hub directory's weights: one file or the shards an `*.index.json` names."""
    for index_name, single in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (path / index_name).is_file():
            weight_map = read_json(path / index_name).get("weight_map", {})
            state = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_file_state(path / shard))
            return state
        if (path / single).is_file():
            return load_file_state(path / single)
    raise CtxlmError(f"{path}: no model.safetensors, pytorch_model.bin or *.index.json")


def read_hub(path: Path, **options) -> OfficialCheckpoint:
    """A THUDM/glm-* hub directory. Options: `tokenizer` / `token_ids` (see `token_ids`)."""
    path = Path(path)
    values = read_json(path / "config.json")
    source = f"{path}/config.json"
    for name in ("num_layers", "vocab_size", "hidden_size", "num_attention_heads", "max_sequence_length"):
        value = values.get(name, values.get("num_hidden_layers") if name == "num_layers" else None)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CtxlmError(f"{source}: '{name}' must be a positive integer, got {value!r}")
    if values.get("relative_encoding"):
        raise CtxlmError(f"{source}: relative_encoding true (Transformer-XL positions) is not supported")
    if not values.get("block_position_encoding", True):
        raise CtxlmError(f"{source}: block_position_encoding false (no 2D positions) is not supported")
    notes = ["exact (erf) GELU, as the hub code's transformers gelu"]
    if values.get("spell_length") is not None:
        notes.append("the P-tuning prompt encoder (spell_length) is not loaded")
    state = strip_prefix(hub_state(path), str(path))
    tensors = to_ctxlm(state, str(path))
    rows, hidden = tensors["word_embeddings.weight"].shape
    saved = values.get("ctxlm") if isinstance(values.get("ctxlm"), dict) else {}
    ids, tokenizer, id_notes = token_ids(path, rows, options, str(path), saved.get("token_ids"))
    config = glm_config(
        vocab_rows=rows,
        hidden=hidden,
        layers=values.get("num_layers", values.get("num_hidden_layers")),
        heads=values["num_attention_heads"],
        positions=tensors["position_embeddings.weight"].shape[0],
        activation="gelu",
        ids=ids,
        decode_blank=saved.get("decode_blank", "first"),
        dropout=float(values.get("output_dropout_prob", 0.1)),
        attention_dropout=float(values.get("attention_dropout_prob", 0.1)),
        init_std=float(values.get("initializer_range", 0.02)),
    )
    if hidden % config.num_heads:
        raise CtxlmError(f"{source}: hidden_size {hidden} is not divisible by num_attention_heads {config.num_heads}")
    if (config.num_layers, values["hidden_size"], values["vocab_size"]) != (count_layers(state), hidden, rows):
        raise CtxlmError(
            f"{source}: num_layers / hidden_size / vocab_size disagree with the weights "
            f"({count_layers(state)} layers of {hidden}, {rows} rows)"
        )
    return OfficialCheckpoint(config, tensors, tokenizer, None, notes + id_notes + unused_note(state))


def write_hub(model, tokenizer, out_dir: Path) -> list[str]:
    """The GLM hub layout, for the hub code's GLMForConditionalGeneration (`trust_remote_code`):
    config.json (the hub GLMConfig fields, model_type "glm"), `pytorch_model.bin` with THUDM's unprefixed
    names, ctxlm's tokenizer.json and a vocab.txt of a WordPiece vocabulary."""
    cfg = model.config
    if cfg.family != "glm":
        raise CtxlmError(f"the GLM hub format holds GLM models, not {cfg.family}")
    if cfg.ffn_dim != 4 * cfg.d_model or cfg.layer_norm_eps != 1e-5 or cfg.activation_function != "gelu":
        raise CtxlmError(
            "the hub code hard-codes an FFN of 4 × d_model, LayerNorm eps 1e-5 and exact GELU; this "
            f"model has ffn_dim {cfg.ffn_dim}, eps {cfg.layer_norm_eps}, {cfg.activation_function}"
        )
    if model.pointer is not None:
        raise CtxlmError("the hub code has no copy head (GlmConfig.copy): convert a model without one")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {
        "architectures": ["GLMForConditionalGeneration"],
        "model_type": "glm",
        "auto_map": {
            "AutoConfig": "configuration_glm.GLMConfig",
            "AutoModelForSeq2SeqLM": "modeling_glm.GLMForConditionalGeneration",
        },
        "num_layers": cfg.num_layers,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_attention_heads": cfg.num_heads,
        "embedding_dropout_prob": cfg.dropout,
        "attention_dropout_prob": cfg.attention_dropout,
        "output_dropout_prob": cfg.dropout,
        "max_sequence_length": cfg.max_position_embeddings - 1,
        "checkpoint_activations": False,
        "checkpoint_num_layers": 1,
        "parallel_output": True,
        "relative_encoding": False,
        "block_position_encoding": True,
        "output_predict": True,
        "spell_length": None,
        "spell_func": "lstm",
        "attention_scale": 1.0,
        "initializer_range": cfg.init_std,
        "pool_token": "cls",
        "torch_dtype": "float32",
        # not read by the hub code: the token ids and decoding rule ctxlm reads back (`read_hub`)
        "ctxlm": {
            "token_ids": {field: getattr(cfg, field) for field in TOKEN_LAYOUTS["bert"]},
            "decode_blank": cfg.decode_blank,
        },
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    state = {key: value.detach().to("cpu").contiguous().clone() for key, value in to_official(model).items()}
    torch.save(state, out_dir / "pytorch_model.bin")
    notes = [
        "pytorch_model.bin with THUDM's unprefixed names; config.json names the hub remote code "
        "(modeling_glm.py, configuration_glm.py), which is not copied: take it from a THUDM/glm-* repository",
        f"max_sequence_length {cfg.max_position_embeddings - 1} (the tables hold one row more)",
    ]
    if tokenizer is not None:
        tokenizer.save(out_dir)
        vocab = tokenizer.backend.get_vocab(with_added_tokens=False)
        if type(tokenizer.backend.model).__name__ == "WordPiece" and sorted(vocab.values()) == list(range(len(vocab))):
            by_id = sorted(vocab, key=vocab.get)
            (out_dir / "vocab.txt").write_text("".join(token + "\n" for token in by_id), encoding="utf-8")
        notes.append("ctxlm's tokenizer.json (and vocab.txt for WordPiece); no hub tokenizer class is configured")
    return notes


# ------------------------------------------------------------------------------------- megatron
def tag_directory(path: Path) -> Path | None:
    """The directory holding the mp_rank files: the tracker's tag under `path`, or `path` itself."""
    path = Path(path)
    if not path.is_dir():
        return None
    if (path / TRACKER).is_file():
        return path / (path / TRACKER).read_text(encoding="utf-8", errors="replace").strip()
    if (path / "latest").is_file():  # change_mp.py and DeepSpeed also write `latest`
        tag = path / (path / "latest").read_text(encoding="utf-8", errors="replace").strip()
        if (tag / "mp_rank_00_model_states.pt").is_file():
            return tag
    if (path / "mp_rank_00_model_states.pt").is_file():
        return path
    return None


def is_megatron(path: Path) -> bool:
    try:
        return tag_directory(Path(path)) is not None
    except OSError:
        return False


def read_megatron(path: Path, *, num_heads: int | None = None, **options) -> OfficialCheckpoint:
    """A THUDM/GLM Megatron checkpoint (the tracker's directory, or the tag directory itself). Options:
    `num_heads` (not stored; default from the release shapes), `tokenizer` / `token_ids` (see `token_ids`).
    The position tables' rows give max_position_embeddings."""
    path = Path(path)
    tag = tag_directory(path)
    if tag is None or not tag.is_dir():
        raise CtxlmError(f"{path}: {TRACKER} names '{tag.name if tag else ''}', which is no directory here")
    files = sorted(
        (p for p in tag.iterdir() if SHARD.fullmatch(p.name)), key=lambda p: int(SHARD.fullmatch(p.name).group(1))
    )
    if not files or [int(SHARD.fullmatch(p.name).group(1)) for p in files] != list(range(len(files))):
        raise CtxlmError(f"{tag}: mp_rank_00_model_states.pt … are missing or not numbered from 00")
    shards = []
    for file in files:
        checkpoint = safe_torch_load(file)
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("module"), dict):
            raise CtxlmError(f"{file}: no 'module' state dict")
        shards.append(strip_prefix(checkpoint["module"], str(file)))
    state = merge_model_parallel(shards, str(tag))
    tensors = to_ctxlm(state, str(tag))
    rows, hidden = tensors["word_embeddings.weight"].shape
    heads = num_heads if num_heads is not None else RELEASE_HEADS.get(hidden)
    if heads is None:
        raise CtxlmError(
            f"{tag}: hidden size {hidden} matches no release; pass num_heads (the script's --num-attention-heads)"
        )
    if hidden % heads:
        raise CtxlmError(f"{tag}: hidden size {hidden} is not divisible by num_heads {heads}")
    ids, tokenizer, id_notes = token_ids(path, rows, options, str(path))
    config = glm_config(
        vocab_rows=rows,
        hidden=hidden,
        layers=count_layers(state),
        heads=heads,
        positions=tensors["position_embeddings.weight"].shape[0],
        activation="gelu_tanh",
        ids=ids,
    )
    notes = [
        "tanh-approximated GELU, as THUDM/GLM's gelu_impl",
        f"{heads} heads" + (" (given)" if num_heads is not None else " (from the release shapes)"),
    ]
    if len(files) > 1:
        notes.append(f"{len(files)} model-parallel shards merged as change_mp.py does")
    return OfficialCheckpoint(config, tensors, tokenizer, None, notes + id_notes + unused_note(state))
