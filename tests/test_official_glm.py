"""THUDM's GLM releases (hub and Megatron formats) load into ctxlm with the official code's outputs.

The fixtures in tests/fixtures/official/glm/ were computed by THUDM's own code (`make_fixtures.py` names
the commits): random weights under THUDM's names, the batches, the official logits and greedy ids. Each
test writes the official on-disk form into tmp_path (hub directory, Megatron tree, an MP=2 split) and
reads it through `ctxlm.official`, so the loader meets the real layout.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ctxlm.config import GenerationConfig
from ctxlm.families.glm import GlmConfig
from ctxlm.errors import CtxlmError
from ctxlm.generation import generate
from ctxlm.official import convert_from_official, detect_format, model_from_official
from ctxlm.official.glm import split_model_parallel, write_hub

pytestmark = pytest.mark.usefixtures("single_thread")

FIXTURES = Path(__file__).parent / "fixtures" / "official" / "glm"
INPUTS = json.loads((FIXTURES / "inputs.json").read_text(encoding="utf-8"))
RECORD = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
SHAPE = INPUTS["shape"]
TOLERANCE = 1e-5  # fp32


@pytest.fixture(scope="module")
def official_state() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "weights.safetensors"))


@pytest.fixture(scope="module")
def expected() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "expected.safetensors"))


def hub_config() -> dict:
    """config.json as the THUDM/glm-* hub repositories write it (configuration_glm.GLMConfig fields)."""
    return {
        "architectures": ["GLMModel"],
        "model_type": "glm",
        "auto_map": {
            "AutoConfig": "configuration_glm.GLMConfig",
            "AutoModelForSeq2SeqLM": "modeling_glm.GLMForConditionalGeneration",
        },
        "num_layers": SHAPE["layers"],
        "vocab_size": SHAPE["rows"],
        "hidden_size": SHAPE["hidden"],
        "num_attention_heads": SHAPE["heads"],
        "embedding_dropout_prob": 0.1,
        "attention_dropout_prob": 0.1,
        "output_dropout_prob": 0.1,
        "max_sequence_length": SHAPE["max_sequence_length"],
        "checkpoint_activations": False,
        "checkpoint_num_layers": 1,
        "parallel_output": True,
        "relative_encoding": False,
        "block_position_encoding": True,
        "output_predict": True,
        "spell_length": None,
        "spell_func": "lstm",
        "attention_scale": 1.0,
        "initializer_range": 0.02,
        "pool_token": "cls",
    }


def write_hub_dir(root: Path, state: dict, *, prefix: bool = False, weights: str = "bin") -> Path:
    """A hub directory: config.json, vocab.txt and the weights as `pytorch_model.bin` (a pickle),
    `model.safetensors`, or two safetensors shards with an index."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps(hub_config()), encoding="utf-8")
    shutil.copy(FIXTURES / "vocab.txt", root / "vocab.txt")
    state = {("glm." if prefix else "") + key: value for key, value in state.items()}
    if weights == "bin":
        torch.save(state, root / "pytorch_model.bin")
    elif weights == "safetensors":
        save_file(state, str(root / "model.safetensors"))
    else:
        keys = sorted(state)
        halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
        for name, part in halves.items():
            save_file({key: state[key] for key in part}, str(root / name))
        index = {"weight_map": {key: name for name, part in halves.items() for key in part}}
        (root / "model.safetensors.index.json").write_text(json.dumps(index), encoding="utf-8")
    return root


def write_megatron_dir(root: Path, state: dict, *, ranks: int = 1, tag: str = "release", vocab: bool = True) -> Path:
    """THUDM/GLM's save_checkpoint layout: the tracker file and `<tag>/mp_rank_XX_model_states.pt`, each
    {"module": ..., "iteration", rng states (a numpy tuple among them)}; the vocabulary beside them (the
    release tarballs have none: the script names the tokenizer)."""
    (root / tag).mkdir(parents=True, exist_ok=True)
    if vocab:
        shutil.copy(FIXTURES / "vocab.txt", (root / tag if tag != "release" else root) / "vocab.txt")
    (root / "latest_checkpointed_iteration.txt").write_text(tag + "\n", encoding="utf-8")
    shards = split_model_parallel(state, ranks) if ranks > 1 else [state]
    for rank, shard in enumerate(shards):
        checkpoint = {
            "iteration": 0,
            "module": shard,
            "random_rng_state": random.getstate(),
            "np_rng_state": np.random.get_state(),
            "torch_rng_state": torch.get_rng_state(),
        }
        torch.save(checkpoint, root / tag / f"mp_rank_{rank:02d}_model_states.pt")
    return root


def batch(name: str) -> dict[str, torch.Tensor]:
    values = INPUTS[name]
    return {key: torch.tensor(value) for key, value in values.items() if isinstance(value, list)}


def ctxlm_logits(model, name: str) -> torch.Tensor:
    """ctxlm's logits on fixture batch `name`: "blank" (sep = Part A length) or "matrix" ((B,1,L,L) mask)."""
    inputs = batch(name)
    with torch.no_grad():
        if name == "blank":
            hidden = model.hidden_states(
                inputs["input_ids"], inputs["position_ids"], inputs["block_position_ids"], inputs["sep"]
            )
        else:
            hidden = model.hidden_states(
                inputs["input_ids"],
                inputs["position_ids"],
                inputs["block_position_ids"],
                None,
                attention_mask=inputs["attention_matrix"],
            )
        return model.output_logits(hidden)


def max_real_row_diff(ours: torch.Tensor, theirs: torch.Tensor, name: str) -> float:
    lengths = INPUTS[name]["real_length"]
    return max(float((ours[row, :n] - theirs[row, :n]).abs().max()) for row, n in enumerate(lengths))


def greedy_ids(model) -> list[list[int]]:
    """ctxlm's own decoding API (`start_decoding` / `decode_step` through `ctxlm.generation`), greedy."""
    prompts = batch("generation")
    steps = INPUTS["generation"]["steps"]
    return generate(
        model, prompts["input_ids"], prompts["attention_mask"], GenerationConfig(num_beams=1, max_new_tokens=steps)
    ).tokens


# ------------------------------------------------------------------------------------------ hub
@pytest.mark.parametrize("prefix", [False, True], ids=["unprefixed", "glm-prefix"])
@pytest.mark.parametrize("weights", ["bin", "safetensors", "sharded"])
def test_hub_logits_equal_the_hub_code(tmp_path, official_state, expected, prefix, weights):
    """A hub directory (keys with or without `glm.`, pickle / safetensors / sharded) gives the hub
    GLMForConditionalGeneration's logits on real rows: blank infilling with a sep, and a (B,1,L,L) mask."""
    path = write_hub_dir(tmp_path / "hub", official_state, prefix=prefix, weights=weights)
    assert detect_format(path).name == "glm-hub"
    model, tokenizer, report = model_from_official(path)
    cfg = model.config
    assert (cfg.activation_function, cfg.max_position_embeddings, cfg.ffn_dim) == ("gelu", 17, 4 * SHAPE["hidden"])
    assert (cfg.sop_token_id, cfg.eop_token_id, cfg.smask_token_id, cfg.gmask_token_id) == (
        RECORD["sop"],
        RECORD["eop"],
        None,
        None,
    )
    assert tokenizer is not None and tokenizer.special_id("<|startofpiece|>") == RECORD["sop"]
    for name in ("blank", "matrix"):
        diff = max_real_row_diff(ctxlm_logits(model, name), expected[f"hub_{name}_logits"], name)
        assert diff < TOLERANCE, (name, diff)


def test_hub_greedy_ids_equal_the_hub_generate(tmp_path, official_state):
    """ctxlm's greedy decoding fills the FIRST blank (the hub's build_inputs_for_generation) with the ids
    of the hub code's own `generate`; filling the last blank instead gives other ids on row 0."""
    model, _, _ = model_from_official(write_hub_dir(tmp_path / "hub", official_state))
    assert model.config.decode_blank == "first"
    assert greedy_ids(model) == RECORD["greedy"]["hub"]
    model.config.decode_blank = "last"
    assert greedy_ids(model)[0] != RECORD["greedy"]["hub"][0]


# ------------------------------------------------------------------------------------- megatron
@pytest.mark.parametrize("ranks", [1, 2])
def test_megatron_logits_equal_thudm_glm(tmp_path, official_state, expected, ranks):
    """A Megatron tree (MP=1, or MP=2 shards merged as change_mp.py) gives THUDM/GLM GLMModel's logits
    (tanh GELU), on real rows; the hub's erf GELU would not."""
    path = write_megatron_dir(tmp_path / "ckpt", official_state, ranks=ranks)
    assert detect_format(path).name == "glm-megatron"
    model, _, report = model_from_official(path, num_heads=SHAPE["heads"])
    assert model.config.activation_function == "gelu_tanh"
    assert any("merged" in note for note in report.notes) == (ranks > 1)
    for name in ("blank", "matrix"):
        diff = max_real_row_diff(ctxlm_logits(model, name), expected[f"megatron_{name}_logits"], name)
        assert diff < TOLERANCE, (name, diff)
    gap = max_real_row_diff(ctxlm_logits(model, "blank"), expected["hub_blank_logits"], "blank")
    assert gap > 100 * TOLERANCE  # the activation is chosen by format


def test_megatron_greedy_ids_and_tag_directory(tmp_path, official_state):
    """The tag directory itself is accepted; greedy ids equal THUDM/GLM's generate_samples loop."""
    path = write_megatron_dir(tmp_path / "ckpt", official_state, tag="250000") / "250000"
    model, _, _ = model_from_official(path, num_heads=SHAPE["heads"])
    assert greedy_ids(model) == RECORD["greedy"]["megatron"]


def test_megatron_fine_tuned_wrapper_keys(tmp_path, official_state, expected):
    """A THUDM fine-tuning wrapper's file (`model.` prefix, a task head) loads the GLM and names what it
    left out."""
    state = {f"model.{key}": value for key, value in official_state.items()}
    state["pool_layer.weight"] = torch.zeros(2, SHAPE["hidden"])
    model, _, report = model_from_official(write_megatron_dir(tmp_path / "ckpt", state), num_heads=SHAPE["heads"])
    assert max_real_row_diff(ctxlm_logits(model, "blank"), expected["megatron_blank_logits"], "blank") < TOLERANCE
    assert "1 weights not loaded (pool_layer.weight)" in report.notes


def test_megatron_needs_the_head_count_and_token_ids_for_unknown_shapes(tmp_path, official_state):
    path = write_megatron_dir(tmp_path / "ckpt", official_state)
    with pytest.raises(CtxlmError, match="hidden size 32 matches no release; pass num_heads"):
        model_from_official(path)
    path = write_megatron_dir(tmp_path / "bare", official_state, vocab=False)
    with pytest.raises(CtxlmError, match="no vocabulary files to take the special-token ids from"):
        model_from_official(path, num_heads=4)
    with pytest.raises(CtxlmError, match="bos_token_id 101 is outside the 64 embedding rows"):
        model_from_official(path, num_heads=4, tokenizer="bert")
    ids = dict(
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        mask_token_id=4,
        sop_token_id=56,
        eop_token_id=57,
        smask_token_id=None,
        gmask_token_id=None,
    )
    model, tokenizer, _ = model_from_official(path, num_heads=4, token_ids=ids)
    assert tokenizer is None and model.config.sop_token_id == 56


def test_megatron_merge_inverts_the_split(official_state):
    from ctxlm.official.glm import merge_model_parallel

    merged = merge_model_parallel(split_model_parallel(official_state, 2), "test")
    assert all(torch.equal(merged[key], official_state[key]) for key in official_state)
    qkv = split_model_parallel(official_state, 2)[0]["transformer.layers.0.attention.query_key_value.weight"]
    h = SHAPE["hidden"]  # rank 0 holds the first half of q, then of k, then of v
    full = official_state["transformer.layers.0.attention.query_key_value.weight"]
    assert torch.equal(qkv[h // 2 : h], full[h : h + h // 2])


# -------------------------------------------------------------------------------- round trip, errors
def native_glm(seed: int = 0):
    from ctxlm.checkpoint import build_model

    torch.manual_seed(seed)
    config = GlmConfig(
        vocab_size=48,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=128,
        max_position_embeddings=33,
        dropout=0.05,
        attention_dropout=0.0,
        init_std=0.2,
    )
    return build_model(config).eval()


def test_write_hub_round_trip(tmp_path):
    """A native ctxlm GLM (its own [sMASK]/[gMASK] ids) → the hub layout → back: same config, same weights."""
    model = native_glm()
    write_hub(model, None, tmp_path / "hub")
    values = json.loads((tmp_path / "hub" / "config.json").read_text(encoding="utf-8"))
    assert values["model_type"] == "glm" and values["max_sequence_length"] == 32 and values["output_predict"]
    back, _, _ = model_from_official(tmp_path / "hub")
    assert back.config == model.config
    state = back.state_dict()
    assert all(torch.equal(value, state[key]) for key, value in model.state_dict().items())


def test_convert_release_to_ctxlm_and_back_to_the_hub_layout(tmp_path, official_state, expected):
    """hub release → ctxlm model directory → `convert_to_official` → hub layout again: the same THUDM
    weights, the release's vocab.txt, and a directory that still reads to the hub code's logits."""
    from ctxlm.official import convert_to_official

    convert_from_official(write_hub_dir(tmp_path / "hub", official_state), tmp_path / "ctxlm")
    convert_to_official(tmp_path / "ctxlm", tmp_path / "back")
    written = torch.load(tmp_path / "back" / "pytorch_model.bin", weights_only=True)
    assert sorted(written) == sorted(official_state)
    assert all(torch.equal(written[key], official_state[key]) for key in official_state)
    assert (tmp_path / "back" / "vocab.txt").read_text() == (FIXTURES / "vocab.txt").read_text()
    model, tokenizer, _ = model_from_official(tmp_path / "back")
    assert tokenizer.special_id("<|endofpiece|>") == RECORD["eop"] and model.config.gmask_token_id is None
    assert max_real_row_diff(ctxlm_logits(model, "blank"), expected["hub_blank_logits"], "blank") < TOLERANCE


def test_write_hub_refuses_what_the_hub_code_cannot_hold(tmp_path):
    model = native_glm()
    model.config.ffn_dim = 64
    with pytest.raises(CtxlmError, match="hard-codes an FFN of 4"):
        write_hub(model, None, tmp_path / "hub")


def test_unknown_directory_is_a_one_line_error(tmp_path):
    """A directory in no known format is refused in one line; detection never raises on unrelated paths."""
    from ctxlm.official.glm import is_hub, is_megatron

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}), encoding="utf-8")
    with pytest.raises(CtxlmError, match=r"in no known official format \(tried glm-hub, glm-megatron") as info:
        detect_format(tmp_path, family="glm")
    assert "\n" not in str(info.value)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_bytes(b"\xff[not json")
    for path in (tmp_path / "config.json", tmp_path / "missing", tmp_path / "bad"):
        assert not is_hub(path) and not is_megatron(path)


def test_decode_blank_is_checked_and_the_default_is_unchanged():
    from ctxlm.checkpoint import build_model

    assert GlmConfig().decode_blank == "last" and GlmConfig().gmask_token_id == 8
    with pytest.raises(CtxlmError, match="decode_blank must be 'first' or 'last', got 'middle'"):
        build_model(GlmConfig(vocab_size=16, d_model=8, num_layers=1, num_heads=2, ffn_dim=16, decode_blank="middle"))


def test_hub_without_block_positions_is_refused(tmp_path, official_state):
    path = write_hub_dir(tmp_path / "hub", official_state)
    values = json.loads((path / "config.json").read_text(encoding="utf-8"))
    (path / "config.json").write_text(json.dumps({**values, "block_position_encoding": False}), encoding="utf-8")
    with pytest.raises(CtxlmError, match="block_position_encoding false"):
        model_from_official(path)


# ----------------------------------------------------------------------- releases without sMASK / gMASK
def test_layouts_cope_without_smask_and_gmask(tmp_path, official_state):
    """glm-large has no [sMASK]/[gMASK]: seq2seq prompts end in [MASK] (THUDM without --task-mask), the
    sentence / document objectives refuse in one line, decoding and infilling still run."""
    from ctxlm.layouts import pair_example, prompt_example
    from ctxlm.models.glm import glm_tokens
    from ctxlm.objectives.glm import document_example
    from ctxlm.tasks.infilling import encode_with_blanks

    model, tokenizer, _ = model_from_official(write_hub_dir(tmp_path / "hub", official_state))
    cfg = model.config
    example = pair_example(cfg, [7, 8, 9], [10, 11], 16, 8)
    assert example["input_ids"][4] == cfg.mask_token_id and example["input_ids"][5] == cfg.sop_token_id
    assert prompt_example(cfg, [7, 8], 16)["input_ids"][-1] == cfg.mask_token_id
    with pytest.raises(CtxlmError, match=r"no \[gMASK\] token"):
        document_example(np.arange(5, 30), np.random.default_rng(0), glm_tokens(cfg))
    with pytest.raises(CtxlmError, match=r"\[sMASK\], which this model's vocabulary lacks"):
        encode_with_blanks(tokenizer, "the cat [sMASK] home", glm_tokens(cfg))
    assert len(encode_with_blanks(tokenizer, "the cat [MASK] home", glm_tokens(cfg))) == 4


# ------------------------------------------------------------------- BPE releases' tokenizers
@pytest.mark.parametrize(
    "kind, base, vocab_fixture", [("roberta", 50265, "roberta-vocab.json"), ("gpt2", 50257, "gpt2-vocab.json")]
)
def test_bpe_releases_get_their_tokenizer_with_glm_tokens(
    tmp_path, official_state, data_dir, kind, base, vocab_fixture
):
    """glm-roberta-large and glm-10b directories (vocab.json + merges.txt, the files THUDM/GLM ships) convert
    with their release tokenizer: GLM's tokens at the release ids (THUDM's data_utils/tokenization.py), the
    config's special ids on those tokens, and the ids of THUDM's own tokenizer on corpus lines."""
    import lzma

    from ctxlm.checkpoint import load_model_dir
    from ctxlm.official.tokenizers import GLM_GPT2_TOKENS, GLM_ROBERTA_TOKENS

    tokens = Path(__file__).parent / "fixtures" / "official" / "tokenizers"
    root = tmp_path / kind
    root.mkdir()
    (root / "vocab.json").write_bytes(lzma.decompress((tokens / f"{vocab_fixture}.xz").read_bytes()))
    (root / "merges.txt").write_bytes(lzma.decompress((tokens / "gpt2-merges.txt.xz").read_bytes()))
    rows = 50304  # the release's rows: the vocabulary and GLM's tokens, padded to a multiple of 128
    state = {**official_state, "word_embeddings.weight": torch.randn(rows, SHAPE["hidden"]) * 0.02}
    save_file(state, str(root / "model.safetensors"))
    (root / "config.json").write_text(json.dumps({**hub_config(), "vocab_size": rows}), encoding="utf-8")

    convert_from_official(root, tmp_path / "converted")
    model, tokenizer = load_model_dir(tmp_path / "converted")
    glm_tokens = GLM_ROBERTA_TOKENS if kind == "roberta" else GLM_GPT2_TOKENS
    assert {token: tokenizer.token_to_id(token) for token in glm_tokens} == glm_tokens
    cfg = model.config
    assert (cfg.sop_token_id, cfg.eop_token_id) == (base, base + 1)
    mask = "<mask>" if kind == "roberta" else "[MASK]"
    assert tokenizer.token_to_id(mask) == cfg.mask_token_id
    if kind == "gpt2":
        assert (cfg.bos_token_id, cfg.gmask_token_id, cfg.smask_token_id) == (50259, 50263, 50264)
    lines = (data_dir / "pretrain/wikipedia/sents_000.txt").read_text(encoding="utf-8").split("\n")
    official = json.loads(lzma.decompress((tokens / "official_ids.json.xz").read_bytes()))[kind]
    texts = [line for line in lines if line.strip()][:20]
    assert [tokenizer.encode(text) for text in texts] == official[:20]
    assert tokenizer.encode(f"the cat {mask}")[-1] == cfg.mask_token_id


# ----------------------------------------------------------------------------------- fine-tuning
def test_finetune_init_from_a_converted_release(tmp_path, official_state, data_dir, capsys):
    """A converted hub release is a `finetune --init` model for GLM's tasks: seq2seq (a few steps, then
    decoding), cloze (RTE, `ctxlm finetune --task cloze --init`) and text infilling (`ctxlm infill`)."""
    import dataclasses

    from ctxlm.cli import main
    from ctxlm.config import load_finetune_config
    from ctxlm.tasks.seq2seq import decode_pairs, finetune, read_pairs

    convert_from_official(write_hub_dir(tmp_path / "hub", official_state), tmp_path / "converted")
    assert (tmp_path / "converted" / "conversion.json").is_file()
    words = (FIXTURES / "vocab.txt").read_text(encoding="utf-8").split()[5:40]
    rng = random.Random(0)
    for split, n in (("train", 16), ("valid", 4)):
        lines = []
        for _ in range(n):
            source = " ".join(rng.choice(words) for _ in range(6))
            lines.append(json.dumps({"document": source, "summary": " ".join(source.split()[:2])}))
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = load_finetune_config("gigaword")
    recipe.max_source_tokens, recipe.max_target_tokens = 10, 4
    recipe.train = dataclasses.replace(
        recipe.train,
        batch_size=4,
        max_steps=2,
        warmup_steps=1,
        eval_every=2,
        eval_batches=1,
        log_every=2,
        progress=False,
        save_every=2,
        keep_checkpoints=0,
        early_stopping_patience=0,
    )
    recipe.decoding = dataclasses.replace(recipe.decoding, num_beams=2, max_new_tokens=3)
    result = finetune(
        tmp_path / "train.jsonl", tmp_path / "valid.jsonl", tmp_path / "seq2seq", recipe, init=tmp_path / "converted"
    )
    assert result.step == 2
    valid = read_pairs("summarization", tmp_path / "valid.jsonl", limit=2)
    assert len(decode_pairs(tmp_path / "seq2seq", valid, max_source_tokens=10)) == 2

    assert (
        main(
            [
                "finetune",
                "--task",
                "cloze",
                "--dataset",
                "superglue/RTE",
                "--data-dir",
                str(data_dir / "nlu"),
                "--init",
                str(tmp_path / "converted"),
                "--out",
                str(tmp_path / "rte"),
                "--max-steps",
                "1",
                "--eval-every",
                "1",
                "--warmup-steps",
                "0",
                "--max-length",
                "16",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            [
                "infill",
                "--model",
                str(tmp_path / "converted"),
                "--text",
                "the cat [MASK] on the mat",
                "--beam",
                "1",
                "--max-length",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    filled = capsys.readouterr().out.strip().splitlines()[-1]
    assert "[MASK]" not in filled and filled.startswith("the cat")
