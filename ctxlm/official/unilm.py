"""microsoft/unilm's UniLMv2 files ↔ ctxlm (`UnilmModel`).

Two on-disk forms, both a BERT `config.json` (no `model_type`; `rel_pos_bins` / `max_rel_pos` added)
beside a pickled state dict, told apart by their keys:

- the release (`unilm2-base-uncased`, `unilm2-large-uncased`, `unilm2-large-cased`), as a directory
  (`pytorch_model.bin`, `config.json`, `vocab.txt`) or as `<name>.bin`, `<name>-config.json`,
  `<name>-vocab.txt`: each layer's query/key/value fused into `attention.self.qkv_linear.weight`
  (rows q, k, v; no bias) plus `q_bias` / `v_bias`, the relative-position table at
  `bert.encoder.rel_pos_bias.weight` (heads × bins). s2s-ft's `convert_state_dict.unilm_to_hf_bert`
  splits it and gives the key a zero bias;
- what s2s-ft's `run_seq2seq.py` saves after fine-tuning (`modeling.py`
  `BertForSequenceToSequenceWithPseudoMask.save_pretrained`): separate `query` / `key` / `value`
  with biases, the table at `bert.rel_pos_bias.weight`, the tied word embedding saved again as
  `cls.predictions.decoder_weight`, and `crit_mask_lm_smoothed.one_hot` (the label-smoothing buffer).

The architecture is ctxlm's UniLMv2 (BERT post-LN, exact GELU, T5 buckets shared by all layers, the
bias `W[h, bucket(pos_key − pos_query)]`); the table is stored transposed (`nn.Linear(bins, heads)`
applied to one-hot buckets), the key has no bias in the release, `[MASK]` is the pseudo token and
eps is the config's `layer_norm_eps` (1e-12, BertConfig's default, when absent). s2s-ft's layout
(source `[CLS] x [SEP]` from position 0, target `y [SEP]` from position S, one pseudo `[MASK]` per
target token at its position, token types 0 / 1, mask_way v2) is ctxlm's seq2seq layout
(`objectives.unilm.build_seq2seq_example`) with these token ids. docs/official-models.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import GenerationConfig
from ..families.unilm import UnilmConfig
from ..errors import CtxlmError
from . import OfficialCheckpoint
from .safe_pickle import safe_torch_load
from .tokenizers import bert_wordpiece_tokenizer

WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE = "pytorch_model.bin", "config.json", "vocab.txt"
RELEASE_KEY = "attention.self.qkv_linear.weight"
S2S_FT_KEYS = ("cls.predictions.decoder_weight", "crit_mask_lm_smoothed.one_hot", "bert.rel_pos_bias.weight")
# s2s-ft's hidden_act names (transformers 2.x ACT2FN) → ctxlm's
ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}
# BERT's names inside one layer (after `encoder.layer.{i}.`) → ctxlm's (after `layers.{i}.`)
LAYER_NAMES = {
    "attention.output.dense": "self_attn.out_proj",
    "attention.output.LayerNorm": "self_attn_layer_norm",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
    "output.LayerNorm": "final_layer_norm",
}
TOP_NAMES = {
    "bert.embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
    "bert.embeddings.position_embeddings.weight": "embeddings.position_embeddings.weight",
    "bert.embeddings.token_type_embeddings.weight": "embeddings.token_type_embeddings.weight",
    "bert.embeddings.LayerNorm.weight": "embeddings.layer_norm.weight",
    "bert.embeddings.LayerNorm.bias": "embeddings.layer_norm.bias",
    "cls.predictions.transform.dense.weight": "mlm_head.dense.weight",
    "cls.predictions.transform.dense.bias": "mlm_head.dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "mlm_head.layer_norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "mlm_head.layer_norm.bias",
    "cls.predictions.bias": "mlm_head.bias",
}
# decode_seq2seq.py's defaults: greedy (--beam_size 1), --max_tgt_length 128, --length_penalty 0
OFFICIAL_GENERATION = dict(num_beams=1, max_new_tokens=128, length_penalty=0.0)


@dataclass(frozen=True)
class Files:
    weights: Path
    config: Path
    vocab: Path | None


# ------------------------------------------------------------------------------ finding the files
def find_files(path: Path) -> Files | None:
    """The weights, config and vocabulary of either naming (None when `path` holds neither)."""
    path = Path(path)
    if path.is_file() and path.name.endswith(".bin"):
        stem = path.name[: -len(".bin")]
        config = path.with_name(f"{stem}-config.json")
        if not config.is_file():
            config = path.with_name(CONFIG_FILE)
        vocab = next(
            (v for v in (path.with_name(f"{stem}-vocab.txt"), path.with_name(VOCAB_FILE)) if v.is_file()), None
        )
        return Files(path, config, vocab) if config.is_file() else None
    if not path.is_dir():
        return None
    if (path / WEIGHTS_FILE).is_file() and (path / CONFIG_FILE).is_file():
        vocab = path / VOCAB_FILE
        return Files(path / WEIGHTS_FILE, path / CONFIG_FILE, vocab if vocab.is_file() else None)
    named = [
        config
        for config in sorted(path.glob("*-config.json"))
        if (path / (config.name[: -len("-config.json")] + ".bin")).is_file()
    ]
    if len(named) == 1:
        return find_files(path / (named[0].name[: -len("-config.json")] + ".bin"))
    return None


def read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CtxlmError(f"{path}: not a readable JSON config ({error})") from None
    if not isinstance(values, dict):
        raise CtxlmError(f"{path}: not a JSON object")
    return values


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The pickled state dict (memory-mapped, foreign classes never run); a `{"model": ...}` or
    `{"state_dict": ...}` wrapper is opened."""
    state = safe_torch_load(path)
    for wrapper in ("model", "state_dict", "module"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CtxlmError(f"{path}: not a state dict of tensors")
    return state


def _unilm_files(path: Path) -> tuple[Files, dict] | None:
    """(files, state) when `path` holds a BERT-style config of UniLM's (no other `model_type`)."""
    try:
        files = find_files(path)
        if files is None:
            return None
        config = read_json(files.config)
        if config.get("model_type") not in (None, "bert", "unilm") or "hidden_size" not in config:
            return None
        return files, load_state(files.weights)
    except Exception:  # noqa: BLE001 - detection answers no for anything it cannot read, whatever the error
        return None


def is_release(path: Path) -> bool:
    found = _unilm_files(path)
    return found is not None and any(key.endswith(RELEASE_KEY) for key in found[1])


def is_s2s_ft(path: Path) -> bool:
    found = _unilm_files(path)
    return (
        found is not None
        and not any(key.endswith(RELEASE_KEY) for key in found[1])
        and any(key in found[1] for key in S2S_FT_KEYS)
    )


# ------------------------------------------------------------------------------ config and tokenizer
def special_ids(vocab: Path | None, vocab_size: int) -> dict[str, int]:
    """pad / bos / eos / mask ids: the vocabulary's [PAD] [CLS] [SEP] [MASK] (BERT's 0, 101, 102, 103
    without one). s2s-ft: source `[CLS] x [SEP]`, target `y [SEP]`, pseudo mask [MASK]."""
    ids = {"[PAD]": 0, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103}
    if vocab is not None:
        lines = vocab.read_text(encoding="utf-8").splitlines()
        for name in ids:
            if name not in lines:
                raise CtxlmError(f"{vocab}: no {name} token")
            ids[name] = lines.index(name)
    for name, token_id in ids.items():
        if token_id >= vocab_size:
            raise CtxlmError(f"{vocab or 'config.json'}: {name} id {token_id} is outside vocab_size {vocab_size}")
    return dict(
        pad_token_id=ids["[PAD]"],
        bos_token_id=ids["[CLS]"],
        eos_token_id=ids["[SEP]"],
        mask_token_id=ids["[MASK]"],
        pseudo_token_id=ids["[MASK]"],
    )


def unilm_config(values: dict, source: Path, vocab: Path | None, *, key_bias: bool, position_rows: int) -> UnilmConfig:
    """ctxlm's config from s2s-ft's (`config.py BertForSeq2SeqConfig`: BertConfig + rel_pos_bins,
    max_rel_pos, source_type_id, target_type_id)."""

    def field(name, default=None):
        if name not in values and default is None:
            raise CtxlmError(f"{source}: no '{name}'")
        return values.get(name, default)

    act = field("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise CtxlmError(f"{source}: hidden_act '{act}' is not one of {', '.join(ACTIVATIONS)}")
    if (field("source_type_id", 0), field("target_type_id", 1)) != (0, 1):
        raise CtxlmError(
            f"{source}: source_type_id/target_type_id {values['source_type_id']}/"
            f"{values['target_type_id']}; ctxlm's layout gives the source type 0 and the target 1"
        )
    if field("type_vocab_size", 2) < 2:
        raise CtxlmError(f"{source}: type_vocab_size {values['type_vocab_size']}; UniLMv2 needs 2 token types")
    bins, max_rel = int(field("rel_pos_bins", 0)), int(field("max_rel_pos", 0))
    if bins and (bins % 4 or max_rel <= bins // 4):
        raise CtxlmError(f"{source}: rel_pos_bins {bins} / max_rel_pos {max_rel} do not make T5 buckets")
    vocab_size = int(field("vocab_size"))
    return UnilmConfig(
        vocab_size=vocab_size,
        d_model=int(field("hidden_size")),
        num_layers=int(field("num_hidden_layers")),
        num_heads=int(field("num_attention_heads")),
        ffn_dim=int(field("intermediate_size")),
        max_position_embeddings=position_rows,
        type_vocab_size=int(field("type_vocab_size", 2)),
        dropout=float(field("hidden_dropout_prob", 0.1)),
        attention_dropout=float(field("attention_probs_dropout_prob", 0.1)),
        activation_function=ACTIVATIONS[act],
        layer_norm_eps=float(field("layer_norm_eps", 1e-12)),
        init_std=float(field("initializer_range", 0.02)),
        relative_position_bias=bins > 0,
        relative_buckets=bins or 32,
        relative_max_distance=max_rel or 128,
        key_bias=key_bias,
        **special_ids(vocab, vocab_size),
    )


# ------------------------------------------------------------------------------ reading
def _strip(state: dict) -> dict:
    """Keys with `bert.` (where the release may leave it off) and `gamma`/`beta` read as weight/bias."""
    out = {}
    for key, value in state.items():
        if not key.startswith(("bert.", "cls.", "crit_")):
            key = "bert." + key
        if key.endswith(".gamma") or key.endswith(".beta"):
            key = key.rsplit(".", 1)[0] + (".weight" if key.endswith(".gamma") else ".bias")
        out[key] = value
    return out


def _take(state: dict, key: str, source: Path) -> torch.Tensor:
    if key not in state:
        raise CtxlmError(f"{source}: no '{key}'")
    return state.pop(key)


def map_tensors(state: dict, cfg: UnilmConfig, source: Path, *, fused: bool) -> tuple[dict, list[str]]:
    """ctxlm's tensors (views of `state`) from the release (`fused`) or the s2s-ft keys; returns
    them and the names of the file's keys left unused."""
    state = _strip(state)
    tensors = {ours: _take(state, theirs, source) for theirs, ours in TOP_NAMES.items()}
    d = cfg.d_model
    for i in range(cfg.num_layers):
        theirs, ours = f"bert.encoder.layer.{i}.", f"layers.{i}."
        attention = theirs + "attention.self."
        if fused:  # s2s-ft convert_state_dict.unilm_to_hf_bert: rows q, k, v; the key has no bias
            qkv = _take(state, attention + "qkv_linear.weight", source)
            if qkv.shape != (3 * d, d):
                raise CtxlmError(
                    f"{source}: '{attention}qkv_linear.weight' has shape {tuple(qkv.shape)}, expected {(3 * d, d)}"
                )
            for name, rows in zip("qkv", qkv.split(d, dim=0)):
                tensors[f"{ours}self_attn.{name}_proj.weight"] = rows
            tensors[f"{ours}self_attn.q_proj.bias"] = _take(state, attention + "q_bias", source).view(-1)
            tensors[f"{ours}self_attn.v_proj.bias"] = _take(state, attention + "v_bias", source).view(-1)
        else:
            for name, their_name in (("q", "query"), ("k", "key"), ("v", "value")):
                tensors[f"{ours}self_attn.{name}_proj.weight"] = _take(state, f"{attention}{their_name}.weight", source)
                tensors[f"{ours}self_attn.{name}_proj.bias"] = _take(state, f"{attention}{their_name}.bias", source)
        for their_name, our_name in LAYER_NAMES.items():
            for kind in ("weight", "bias"):
                tensors[f"{ours}{our_name}.{kind}"] = _take(state, f"{theirs}{their_name}.{kind}", source)
    table_key = "bert.encoder.rel_pos_bias.weight" if fused else "bert.rel_pos_bias.weight"
    if cfg.relative_position_bias:  # stored heads × bins (nn.Linear over one-hot buckets); ctxlm: bins × heads
        tensors["rel_pos_bias.embedding.weight"] = _take(state, table_key, source).t()
    elif table_key in state:
        raise CtxlmError(f"{source}: has '{table_key}' but the config's rel_pos_bins is 0")
    tied = state.pop("cls.predictions.decoder_weight", None)
    if tied is not None and not torch.equal(tied, tensors["embeddings.word_embeddings.weight"]):
        raise CtxlmError(
            f"{source}: cls.predictions.decoder_weight differs from the word embeddings (s2s-ft ties them)"
        )
    return tensors, sorted(state)


def _read(path: Path, *, fused: bool, lowercase: bool | None) -> OfficialCheckpoint:
    files = find_files(Path(path))
    if files is None:
        raise CtxlmError(f"{path}: no {WEIGHTS_FILE} + {CONFIG_FILE} (or <name>.bin + <name>-config.json)")
    values = read_json(files.config)
    state = load_state(files.weights)
    positions = _strip(state).get("bert.embeddings.position_embeddings.weight")
    if positions is None:
        raise CtxlmError(f"{files.weights}: no 'bert.embeddings.position_embeddings.weight'")
    cfg = unilm_config(values, files.config, files.vocab, key_bias=not fused, position_rows=positions.shape[0])
    tensors, unused = map_tensors(state, cfg, files.weights, fused=fused)
    notes = []
    if int(values.get("max_position_embeddings", positions.shape[0])) != positions.shape[0]:
        notes.append(
            f"max_position_embeddings {positions.shape[0]} from the weights (the config says "
            f"{values['max_position_embeddings']})"
        )
    if unused:
        notes.append(f"unused keys: {', '.join(unused[:5])}{' …' if len(unused) > 5 else ''}")
    tokenizer = None
    if files.vocab is not None:
        if lowercase is None:  # the uncased releases are decoded with --do_lower_case
            lowercase = "-cased" not in files.weights.name and "-cased" not in str(files.weights.parent.name)
        tokenizer = bert_wordpiece_tokenizer(files.vocab, lowercase)  # s2s-ft's UnilmTokenizer = BertTokenizer
        notes.append(f"tokenizer: WordPiece from {files.vocab.name} ({'lowercased' if lowercase else 'cased'})")
    else:
        notes.append("no vocab.txt: no tokenizer")
    return OfficialCheckpoint(cfg, tensors, tokenizer, GenerationConfig(**OFFICIAL_GENERATION), notes)


def read_release(path: Path, *, lowercase: bool | None = None) -> OfficialCheckpoint:
    """A unilm2-* release (fused qkv_linear). `lowercase`: the tokenizer's; default: uncased unless
    the file or directory name says `-cased`."""
    return _read(path, fused=True, lowercase=lowercase)


def read_s2s_ft(path: Path, *, lowercase: bool | None = None) -> OfficialCheckpoint:
    """A directory s2s-ft's run_seq2seq.py saved (separate query/key/value)."""
    return _read(path, fused=False, lowercase=lowercase)


# ------------------------------------------------------------------------------ writing
def s2s_ft_state(model) -> dict[str, torch.Tensor]:
    """The model's weights under s2s-ft's fine-tuned names (`BertForSequenceToSequenceWithPseudoMask`)."""
    cfg, ours = model.config, model.state_dict()
    state = {theirs: ours[name] for theirs, name in TOP_NAMES.items()}
    for i in range(cfg.num_layers):
        theirs, own = f"bert.encoder.layer.{i}.", f"layers.{i}."
        for name, their_name in (("q", "query"), ("k", "key"), ("v", "value")):
            weight = ours[f"{own}self_attn.{name}_proj.weight"]
            state[f"{theirs}attention.self.{their_name}.weight"] = weight
            state[f"{theirs}attention.self.{their_name}.bias"] = ours.get(
                f"{own}self_attn.{name}_proj.bias", torch.zeros(cfg.d_model, dtype=weight.dtype)
            )
        for their_name, our_name in LAYER_NAMES.items():
            for kind in ("weight", "bias"):
                state[f"{theirs}{their_name}.{kind}"] = ours[f"{own}{our_name}.{kind}"]
    if cfg.relative_position_bias:
        state["bert.rel_pos_bias.weight"] = ours["rel_pos_bias.embedding.weight"].t()
    state["cls.predictions.decoder_weight"] = state["bert.embeddings.word_embeddings.weight"]
    return {key: value.detach().to("cpu").contiguous() for key, value in state.items()}


def s2s_ft_config(cfg: UnilmConfig) -> dict:
    act = {ours: theirs for theirs, ours in ACTIVATIONS.items()}.get(cfg.activation_function)
    if act is None:
        raise CtxlmError(f"activation_function '{cfg.activation_function}' has no s2s-ft name")
    return {
        "architectures": ["BertForSequenceToSequenceWithPseudoMask"],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.ffn_dim,
        "hidden_act": act,
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "initializer_range": cfg.init_std,
        "layer_norm_eps": cfg.layer_norm_eps,
        "rel_pos_bins": cfg.relative_buckets if cfg.relative_position_bias else 0,
        "max_rel_pos": cfg.relative_max_distance if cfg.relative_position_bias else 0,
        "source_type_id": 0,
        "target_type_id": 1,
        "pad_token_id": cfg.pad_token_id,
    }


def write_vocab(tokenizer, vocab_size: int, path: Path) -> None:
    """vocab.txt: one token a line, line number = id (BertTokenizer's format)."""
    tokens = [tokenizer.id_to_token(i) for i in range(len(tokenizer))]
    if any(token is None or "\n" in token for token in tokens):
        raise CtxlmError("the tokenizer's ids are not contiguous single-line tokens; vocab.txt cannot hold it")
    if len(tokens) > vocab_size:
        raise CtxlmError(f"the tokenizer has {len(tokens)} tokens, the model {vocab_size} rows")
    tokens += [f"[unused_row{i}]" for i in range(len(tokens), vocab_size)]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")


def write_s2s_ft(model, tokenizer, out_dir: Path) -> list[str]:
    """The directory s2s-ft's run_seq2seq.py takes as `--model_name_or_path` with `--model_type unilm`
    (and decode_seq2seq.py as `--model_path`): `pytorch_model.bin` with s2s-ft's fine-tuned keys
    (`unilm_to_hf_bert` leaves them as they are), `config.json`, `vocab.txt`."""
    from ..models.unilm import UnilmModel

    if not isinstance(model, UnilmModel):
        raise CtxlmError(f"s2s-ft holds a plain UniLMv2 model, not a {type(model).__name__} (a task head)")
    if model.pointer is not None:
        raise CtxlmError("s2s-ft has no copy head (UnilmConfig.copy); convert a model without it")
    cfg = model.config
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(s2s_ft_state(model), out_dir / WEIGHTS_FILE)
    (out_dir / CONFIG_FILE).write_text(json.dumps(s2s_ft_config(cfg), indent=2) + "\n", encoding="utf-8")
    notes = [f"wrote {WEIGHTS_FILE}, {CONFIG_FILE}"]
    if tokenizer is not None:
        write_vocab(tokenizer, cfg.vocab_size, out_dir / VOCAB_FILE)
        notes.append(f"wrote {VOCAB_FILE}")
    else:
        notes.append("no tokenizer: no vocab.txt (pass s2s-ft --tokenizer_name)")
    if cfg.pseudo_token_id != cfg.mask_token_id:
        notes.append(
            f"the model's pseudo token is id {cfg.pseudo_token_id}, not [MASK] {cfg.mask_token_id}: "
            "s2s-ft feeds [MASK] at the pseudo positions"
        )
    if cfg.bos_token_id != special_or(tokenizer, "[CLS]", cfg.bos_token_id) or cfg.eos_token_id != special_or(
        tokenizer, "[SEP]", cfg.eos_token_id
    ):
        notes.append("the model's start/end ids are not the vocabulary's [CLS]/[SEP], which s2s-ft uses")
    return notes


def special_or(tokenizer, name: str, default: int) -> int:
    return default if tokenizer is None or tokenizer.token_to_id(name) is None else tokenizer.token_to_id(name)
