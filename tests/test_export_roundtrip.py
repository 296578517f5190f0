"""Decoding settings and the tokenizer travel with a model: `save_pretrained` / `from_pretrained`,
`ctxlm convert --to-hf` / `--from-hf`, with transformers' `AutoTokenizer` + `generate` as the
oracle on the export; partial `GenerationConfig`s over a model's saved settings; export file
permissions; a transformers directory given where a ctxlm one is expected."""

from __future__ import annotations

import dataclasses
import json
import os
import string

import pytest
import torch
from tokenizers import models
from transformers import AutoTokenizer, BartForConditionalGeneration
from transformers import GenerationConfig as HfGenerationConfig

from ctxlm import cli
from ctxlm.checkpoint import save_model_dir
from ctxlm.config import GenerationConfig, from_mapping
from ctxlm.families.palm import PalmConfig
from ctxlm.convert import model_from_hf
from ctxlm.errors import CtxlmError
from ctxlm.generation import generate
from ctxlm.layouts import prompt_example
from ctxlm.models.palm import PalmModel
from ctxlm.config import load_generation_config, save_generation_config
from ctxlm.predict import Seq2SeqPredictor
from ctxlm.tokenization import SPECIAL_TOKENS, TextTokenizer, new_wordpiece_tokenizer
from test_convert_hf import bert_tokenizer, unilm_model
from test_parity_hf import tiny_bart

pytestmark = pytest.mark.usefixtures("single_thread")

TEXTS = [
    "the actor bought the car in 1962 .",
    "he was born in london .",
    "the river flows through the city and into the sea .",
    "a new school opened .",
    "she played for the national team in the world cup .",
]
# what transformers' generate can express (the parity settings)
PLAIN = GenerationConfig(num_beams=4, max_new_tokens=10, min_new_tokens=2, no_repeat_ngram_size=2, early_stopping=True)
# and ctxlm's own settings besides
OWN = GenerationConfig(
    num_beams=3,
    max_new_tokens=9,
    min_new_tokens=1,
    length_penalty=0.8,
    length_penalty_type="gnmt",
    no_repeat_ngram_size=3,
    block_subword_loops=True,
    block_word_repeats=True,
    early_stopping=True,
)


def wordpiece_tokenizer() -> TextTokenizer:
    """ctxlm's uncased WordPiece pipeline over a fixed vocabulary (training one is not deterministic):
    the special tokens, the words of TEXTS, and letters and digits with their "##" forms."""
    pieces = sorted({word for text in TEXTS for word in text.split()} | set(string.ascii_lowercase + string.digits))
    vocab = SPECIAL_TOKENS + pieces + [f"##{c}" for c in string.ascii_lowercase + string.digits]
    backend = new_wordpiece_tokenizer()
    backend.model = models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]")
    backend.add_special_tokens(SPECIAL_TOKENS)
    return TextTokenizer(backend)


@pytest.fixture(scope="module")
def tokenizer():
    return wordpiece_tokenizer()


def palm(tokenizer, copy: bool, seed: int = 2) -> PalmModel:
    """A tiny random PALM with peaked outputs that depend on the source (weights scaled up, the
    encoder and cross-attention most) and a random final_logits_bias."""
    torch.manual_seed(seed)
    cfg = PalmConfig(
        vocab_size=tokenizer.vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        copy=copy,
        pad_token_id=tokenizer.pad_id,
        bos_token_id=tokenizer.cls_id,
        eos_token_id=tokenizer.sep_id,
        decoder_start_token_id=tokenizer.cls_id,
        mask_token_id=tokenizer.mask_id,
    )
    model = PalmModel(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" not in name and "layernorm" not in name:
                p.mul_(12.0 if name.startswith("encoder.") or "encoder_attn" in name else 3.0)
        model.final_logits_bias.normal_(0, 0.5)
        model.final_logits_bias[0, cfg.eos_token_id] += 1.0
    return model


def without_copy_head(model: PalmModel) -> PalmModel:
    plain = PalmModel(dataclasses.replace(model.config, copy=False))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("pointer.")})
    return plain.eval()


def model_dir(path, model, tokenizer, generation):
    save_model_dir(path, model, tokenizer)
    save_generation_config(path, generation)
    return path


def convert(*args):
    assert cli.main(["convert", *map(str, args)]) == 0


def hf_tokens(sequences, eos):
    """transformers' output without the decoder start, cut after the first EOS."""
    return [row[: row.index(eos) + 1] if eos in row else row for row in sequences[:, 1:].tolist()]


def transformers_decoding(export, texts):
    """(the ids AutoTokenizer gives, its attention mask, generate's output): no argument to generate
    but the ids and the mask, so the settings are the export's generation_config.json."""
    hf_tokenizer = AutoTokenizer.from_pretrained(export)
    bart = BartForConditionalGeneration.from_pretrained(export).eval()
    batch = hf_tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = bart.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return hf_tokenizer, batch, out


def ctxlm_tokens(predictor, batch):
    return generate(
        predictor.model,
        batch["input_ids"],
        batch["attention_mask"].bool(),
        predictor.default_generation,
        continuation=predictor.continuation,
        word_start=predictor.word_start,
    ).tokens


# ----------------------------------------------------------------------------- transformers as the oracle
def test_transformers_decodes_the_export_as_ctxlm_does(tmp_path, tokenizer):
    """AutoTokenizer on the export adds ctxlm's `[CLS] … [SEP]`, and BART's generate with only the
    export's generation_config.json gives ctxlm's predictions token for token."""
    model = palm(tokenizer, copy=False, seed=10)  # seed 10: outputs of varied lengths, some to the limit
    ctx = model_dir(tmp_path / "ctx", model, tokenizer, PLAIN)
    convert("--to-hf", ctx, "--out", tmp_path / "hf")
    hf_tokenizer, batch, out = transformers_decoding(tmp_path / "hf", TEXTS)
    for text, ids, mask in zip(TEXTS, batch["input_ids"], batch["attention_mask"]):
        layout = prompt_example(model.config, tokenizer.encode(text), 64)["input_ids"].tolist()
        assert ids[mask.bool()].tolist() == layout and layout[0] == 2 and layout[-1] == 3
    predictor = Seq2SeqPredictor.load(ctx, "cpu")
    assert predictor.default_generation == PLAIN
    expected = hf_tokens(out, model.config.eos_token_id)
    assert ctxlm_tokens(predictor, batch) == expected
    assert predictor.generate(TEXTS) == hf_tokenizer.batch_decode(out, skip_special_tokens=True)
    assert len({tuple(t) for t in expected}) >= 4, "outputs depend on the source"
    assert {t[-1] == 3 for t in expected} == {True, False} and len({len(t) for t in expected}) >= 3, (
        "hypotheses end with EOS at varied lengths, and some run to max_new_tokens"
    )


def test_with_the_copy_head_the_note_says_transformers_decodes_without_it(tmp_path, tokenizer):
    model = palm(tokenizer, copy=True, seed=1)
    ctx = model_dir(tmp_path / "ctx", model, tokenizer, PLAIN)
    convert("--to-hf", ctx, "--out", tmp_path / "hf")
    note = (tmp_path / "hf/CTXLM_NOTE.md").read_text()
    assert "BART has no copy head" in note and "predictions differ" in note
    hf_tokenizer, batch, out = transformers_decoding(tmp_path / "hf", TEXTS)
    dropped = Seq2SeqPredictor(without_copy_head(model), tokenizer, "cpu", generation=PLAIN)
    assert ctxlm_tokens(dropped, batch) == hf_tokens(out, model.config.eos_token_id)
    assert dropped.generate(TEXTS) == hf_tokenizer.batch_decode(out, skip_special_tokens=True)
    assert Seq2SeqPredictor.load(ctx, "cpu").generate(TEXTS) != dropped.generate(TEXTS), "the copy head matters"


def test_generation_config_from_a_transformers_checkpoint(tmp_path):
    """A BART whose generation_config.json counts lengths with the start token (max_length /
    min_length): ctxlm's converted model decodes as transformers does with it."""
    bart = tiny_bart(seed=3)
    bart.generation_config = HfGenerationConfig(
        num_beams=3,
        max_length=12,
        min_length=4,
        no_repeat_ngram_size=2,
        length_penalty=1.3,
        decoder_start_token_id=2,
        eos_token_id=2,
        pad_token_id=1,
        bos_token_id=0,
    )
    bart.save_pretrained(tmp_path / "bart")
    model, _, report = model_from_hf(tmp_path / "bart")
    cfg = model.generation_config
    assert (cfg.num_beams, cfg.max_new_tokens, cfg.min_new_tokens, cfg.no_repeat_ngram_size, cfg.length_penalty) == (
        3,
        11,
        3,
        2,
        1.3,
    )
    assert any("generation_config.json" in note for note in report.notes)
    ids = torch.randint(3, 39, (4, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:], mask[3, 4:] = 0, 0
    ids = ids.masked_fill(mask == 0, 1)
    with torch.no_grad():
        out = bart.generate(input_ids=ids, attention_mask=mask)
    assert generate(model, ids, mask.bool(), cfg).tokens == hf_tokens(out, 2)
    (tmp_path / "bart/generation_config.json").write_text(json.dumps({"num_beams": 2, "forced_bos_token_id": 0}))
    model, _, report = model_from_hf(tmp_path / "bart")
    assert model.generation_config == GenerationConfig(num_beams=2)
    assert any("does not follow forced_bos_token_id=0" in note for note in report.notes)


# ----------------------------------------------------------------------------- round trips
def test_settings_survive_to_hf_and_back(tmp_path, tokenizer):
    """ctxlm dir → --to-hf → --from-hf: the same settings, the same predictions by default; the
    settings transformers cannot express are named in CTXLM_NOTE.md."""
    model = palm(tokenizer, copy=True, seed=2)
    ctx = model_dir(tmp_path / "ctx", model, tokenizer, OWN)
    convert("--to-hf", ctx, "--out", tmp_path / "hf")
    hf = json.loads((tmp_path / "hf/generation_config.json").read_text())
    assert {
        k: hf[k]
        for k in (
            "num_beams",
            "max_new_tokens",
            "min_new_tokens",
            "length_penalty",
            "no_repeat_ngram_size",
            "early_stopping",
            "decoder_start_token_id",
            "eos_token_id",
            "pad_token_id",
        )
    } == dict(
        num_beams=3,
        max_new_tokens=9,
        min_new_tokens=1,
        length_penalty=0.8,
        no_repeat_ngram_size=3,
        early_stopping=True,
        decoder_start_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    note = (tmp_path / "hf/CTXLM_NOTE.md").read_text()
    assert all(
        name in note for name in ("block_subword_loops true", "block_word_repeats true", "length_penalty_type gnmt")
    )
    convert("--from-hf", tmp_path / "hf", "--out", tmp_path / "back")
    assert load_generation_config(tmp_path / "back") == OWN
    before, after = Seq2SeqPredictor.load(ctx, "cpu"), Seq2SeqPredictor.load(tmp_path / "back", "cpu")
    assert after.default_generation == OWN and after.generate(TEXTS) == before.generate(TEXTS)
    plain = dataclasses.replace(OWN, block_subword_loops=False, block_word_repeats=False, length_penalty_type="hf")
    assert before.generate(TEXTS, plain) != before.generate(TEXTS), "the ctxlm-only settings matter here"
    # an edit to generation_config.json is followed; without generation.json the rest are ctxlm's defaults
    hf["num_beams"] = 2
    (tmp_path / "hf/generation_config.json").write_text(json.dumps(hf))
    assert model_from_hf(tmp_path / "hf")[0].generation_config == dataclasses.replace(OWN, num_beams=2)
    (tmp_path / "hf/generation.json").unlink()
    assert model_from_hf(tmp_path / "hf")[0].generation_config == GenerationConfig(
        num_beams=2, max_new_tokens=9, min_new_tokens=1, length_penalty=0.8, no_repeat_ngram_size=3, early_stopping=True
    )


def test_save_pretrained_keeps_the_decoding_settings(tmp_path, tokenizer):
    model = palm(tokenizer, copy=True, seed=4)
    model.save_pretrained(tmp_path / "a", tokenizer, generation_config=OWN)
    loaded = PalmModel.from_pretrained(tmp_path / "a")
    assert loaded.generation_config == OWN
    loaded.save_pretrained(tmp_path / "b", tokenizer)  # the loaded model's own settings
    assert load_generation_config(tmp_path / "b") == OWN
    expected = Seq2SeqPredictor.load(tmp_path / "a", "cpu").generate(TEXTS)
    assert Seq2SeqPredictor.load(tmp_path / "b", "cpu").generate(TEXTS) == expected
    assert Seq2SeqPredictor(loaded, tokenizer, "cpu").generate(TEXTS) == expected
    assert Seq2SeqPredictor(model, tokenizer, "cpu").generate(TEXTS) != expected, "defaults decode differently"


# ----------------------------------------------------------------------------- partial configs
def test_a_partial_config_keeps_the_saved_fields(tmp_path, tokenizer):
    """`generate(texts, GenerationConfig(num_beams=2))` changes the beam only, as `--beam 2` does."""
    ctx = model_dir(tmp_path / "ctx", palm(tokenizer, copy=True, seed=5), tokenizer, OWN)
    predictor = Seq2SeqPredictor.load(ctx, "cpu")
    expected = predictor.generate(TEXTS, dataclasses.replace(OWN, num_beams=2))
    assert predictor.generate(TEXTS, GenerationConfig(num_beams=2)) == expected
    assert predictor.generate(TEXTS, num_beams=2) == expected
    assert predictor.generate(TEXTS, from_mapping(GenerationConfig, {"num_beams": 2})) == expected
    assert (
        predictor.generate(TEXTS, GenerationConfig(num_beams=2, max_new_tokens=64, block_subword_loops=False))
        != expected
    ), "explicit values, defaults among them, replace the saved ones"
    args = cli.build_parser().parse_args(["generate", "--model", str(ctx), "--text", "x", "--beam", "2"])
    assert (
        cli._generation_config(args, OWN)
        == OWN.with_overrides(GenerationConfig(num_beams=2))
        == dataclasses.replace(OWN, num_beams=2)
    )


def test_given_fields_and_the_sampling_rule():
    assert GenerationConfig(num_beams=2).given_fields == {"num_beams"}
    assert GenerationConfig(3, 20).given_fields == {"num_beams", "max_new_tokens"}
    replaced = dataclasses.replace(GenerationConfig(num_beams=2), max_new_tokens=5)
    assert (replaced.num_beams, replaced.max_new_tokens) == (2, 5)
    assert OWN.with_overrides(replaced) == replaced  # a replace()d config is complete
    sampled = OWN.with_overrides(do_sample=True, top_k=5)
    assert (sampled.do_sample, sampled.num_beams, sampled.top_k, sampled.max_new_tokens) == (True, 1, 5, 9)
    assert sampled.with_overrides(num_beams=4) == dataclasses.replace(sampled, num_beams=4, do_sample=False)
    with pytest.raises(CtxlmError, match="sampling is supported with num_beams=1"):
        OWN.with_overrides(do_sample=True, num_beams=3)
    with pytest.raises(CtxlmError, match="unknown key 'num_beam'"):
        OWN.with_overrides(num_beam=3)


# ----------------------------------------------------------------------------- other families, files, errors
def test_unilm_and_glm_exports_add_their_own_special_tokens(tmp_path):
    """UniLMv2 → BERT: `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]` with BERT's type ids; GLM's own
    layout: `[CLS] A [gMASK]`, as ctxlm lays out a source for decoding."""
    save_model_dir(tmp_path / "unilm", unilm_model(False), TextTokenizer(bert_tokenizer()))
    convert("--to-hf", tmp_path / "unilm", "--out", tmp_path / "bert")
    bert = AutoTokenizer.from_pretrained(tmp_path / "bert")
    assert bert("w7 w8")["input_ids"] == [2, 7, 8, 3]
    pair = bert("w7 w8", "w9")
    assert (pair["input_ids"], pair["token_type_ids"]) == ([2, 7, 8, 3, 9, 3], [0, 0, 0, 0, 1, 1])
    assert "does not generate" in (tmp_path / "bert/CTXLM_NOTE.md").read_text()
    from ctxlm.families.glm import GlmConfig
    from ctxlm.models.glm import GlmModel

    glm_tokenizer = bert_tokenizer()
    glm_tokenizer.add_special_tokens(["[sop]", "[eop]", "[sMASK]", "[gMASK]"])
    cfg = GlmConfig(
        vocab_size=44,
        d_model=16,
        num_layers=1,
        num_heads=2,
        ffn_dim=32,
        max_position_embeddings=32,
        sop_token_id=40,
        eop_token_id=41,
        smask_token_id=42,
        gmask_token_id=43,
    )
    save_model_dir(tmp_path / "glm", GlmModel(cfg), TextTokenizer(glm_tokenizer))
    convert("--to-hf", tmp_path / "glm", "--out", tmp_path / "glm_hf")
    assert AutoTokenizer.from_pretrained(tmp_path / "glm_hf")("w7")["input_ids"] == [2, 7, 43]


def test_export_files_follow_the_umask(tmp_path, tokenizer):
    ctx = model_dir(tmp_path / "ctx", palm(tokenizer, copy=True), tokenizer, PLAIN)
    previous = os.umask(0o027)
    try:
        convert("--to-hf", ctx, "--out", tmp_path / "hf")
    finally:
        os.umask(previous)
    modes = {path.name: oct(path.stat().st_mode & 0o777) for path in (tmp_path / "hf").iterdir()}
    assert {"model.safetensors", "ctxlm_extra.safetensors", "generation_config.json"} <= set(modes)
    assert set(modes.values()) == {oct(0o640)}, modes


def test_a_transformers_directory_is_named_with_the_command_that_converts_it(tmp_path, capsys):
    tiny_bart().save_pretrained(tmp_path / "bart")
    with pytest.raises(CtxlmError, match="a transformers checkpoint .*ctxlm convert --from-hf"):
        PalmModel.from_pretrained(tmp_path / "bart")
    capsys.readouterr()
    assert cli.main(["generate", "--model", str(tmp_path / "bart"), "--text", "w5", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"ctxlm convert --from-hf {tmp_path / 'bart'} --out" in err
