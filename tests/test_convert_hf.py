"""`ctxlm convert` for every family and direction, with transformers as the oracle: tiny random
BERT / BART checkpoints written with save_pretrained to tmp_path (nothing downloaded)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BartForConditionalGeneration, BertConfig, BertForMaskedLM, BertModel

from ctxlm import cli
from ctxlm.checkpoint import load_model_dir, save_model_dir
from ctxlm.families.glm import GlmConfig
from ctxlm.families.palm import PalmConfig
from ctxlm.families.unilm import UnilmConfig
from ctxlm.convert import model_from_hf
from ctxlm.errors import CtxlmError
from ctxlm.models.glm import GlmModel
from ctxlm.models.palm import PalmModel
from ctxlm.models.unilm import UnilmModel
from ctxlm.tokenization import TextTokenizer
from test_parity_hf import BART_PAD, bart_batch, bart_tokenizer, hf_logits, padded, palm_logits, randomize, tiny_bart

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = 40
BERT_SHAPE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    max_position_embeddings=32,
    pad_token_id=0,
)


def bert_tokenizer() -> Tokenizer:
    """Word-level, BERT's special tokens ([PAD] [UNK] [CLS] [SEP] [MASK] = 0..4), no [P] / [sop]."""
    vocab = {name: i for i, name in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])}
    vocab.update({f"w{i}": i for i in range(5, VOCAB)})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return tokenizer


def bert_dir(tmp_path, head=True, seed=0, **overrides):
    hf = randomize((BertForMaskedLM if head else BertModel)(BertConfig(**{**BERT_SHAPE, **overrides})), seed)
    hf.save_pretrained(tmp_path / "bert")
    bert_tokenizer().save(str(tmp_path / "bert" / "tokenizer.json"))
    return hf, tmp_path / "bert"


def batch(seed=3):
    return padded([11, 7, 2], 0, seed=seed, low=5, high=VOCAB)


def convert(*args):
    assert cli.main(["convert", *map(str, args)]) == 0


# ----------------------------------------------------------------------------- BERT → UniLMv2 → BERT
def test_unilm_from_bert_matches_bert_and_adds_the_pseudo_token(tmp_path):
    hf, path = bert_dir(tmp_path)
    convert("--from-hf", path, "--family", "unilm", "--out", tmp_path / "unilm")
    model, tokenizer = load_model_dir(tmp_path / "unilm")
    model.eval()
    assert isinstance(model, UnilmModel) and tokenizer.token_to_id("[P]") == VOCAB == model.config.pseudo_token_id
    assert model.config.vocab_size == VOCAB + 1
    report = json.loads((tmp_path / "unilm/conversion.json").read_text())
    assert report["fresh"] == ["rel_pos_bias.embedding.weight"]
    ids, mask = batch()
    keep = mask.bool()
    with torch.no_grad():
        states = model.hidden_states(ids, attention_mask=mask)
        expected = hf.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(states[keep], expected[keep], atol=1e-4, rtol=0)
        logits = model.lm_logits(states)[..., :VOCAB]  # the added [P] row has no BERT counterpart
        torch.testing.assert_close(logits[keep], hf(input_ids=ids, attention_mask=mask).logits[keep], atol=1e-4, rtol=0)


def unilm_model(relative_position_bias, seed=1):
    cfg = UnilmConfig(
        vocab_size=VOCAB,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
        relative_position_bias=relative_position_bias,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        mask_token_id=4,
        pseudo_token_id=5,
    )
    return randomize(UnilmModel(cfg), seed)


def test_unilm_exports_as_bert_with_the_relative_table_alongside(tmp_path):
    """Without the bias, transformers' BertForMaskedLM computes our logits; with it, the table is
    saved alongside and `--from-hf` on the export restores the model exactly."""
    ids, mask = batch(seed=4)
    keep = mask.bool()
    for bias in (False, True):
        model = unilm_model(bias)
        save_model_dir(tmp_path / f"ours{bias}", model, TextTokenizer(bert_tokenizer()))
        convert("--to-hf", tmp_path / f"ours{bias}", "--out", tmp_path / f"hf{bias}")
        with torch.no_grad():
            ours = model.lm_logits(model.hidden_states(ids, attention_mask=mask))
        if not bias:
            bert = BertForMaskedLM.from_pretrained(tmp_path / f"hf{bias}", local_files_only=True).eval()
            with torch.no_grad():
                theirs = bert(input_ids=ids, attention_mask=mask).logits
            torch.testing.assert_close(theirs[keep], ours[keep], atol=1e-4, rtol=0)
            continue
        assert "mask" in (tmp_path / "hfTrue/CTXLM_NOTE.md").read_text()
        table = load_file(str(tmp_path / "hfTrue/ctxlm_extra.safetensors"))["rel_pos_bias.embedding.weight"]
        assert torch.equal(table, model.rel_pos_bias.embedding.weight)
        back, _, report = model_from_hf(tmp_path / "hfTrue")
        assert report.fresh == [] and back.config == model.config
        with torch.no_grad():
            again = back.lm_logits(back.hidden_states(ids, attention_mask=mask))
        torch.testing.assert_close(again[keep], ours[keep], atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- BERT → GLM, GLM ↔ own layout
def test_glm_from_bert_maps_what_fits_and_reports_the_rest(tmp_path):
    hf, path = bert_dir(tmp_path, seed=5)
    model, tokenizer, report = model_from_hf(path, family="glm")
    assert isinstance(model, GlmModel)
    added = [tokenizer.token_to_id(t) for t in ("[sop]", "[eop]", "[sMASK]", "[gMASK]")]
    assert added == [VOCAB, VOCAB + 1, VOCAB + 2, VOCAB + 3] and model.config.gmask_token_id == VOCAB + 3
    assert report.fresh == ["block_position_embeddings.weight"]
    assert any("pre-LN" in note for note in report.notes)
    bert, ours = hf.state_dict(), model.state_dict()
    torch.testing.assert_close(ours["word_embeddings.weight"][:VOCAB], bert["bert.embeddings.word_embeddings.weight"])
    torch.testing.assert_close(
        ours["position_embeddings.weight"],
        bert["bert.embeddings.position_embeddings.weight"] + bert["bert.embeddings.token_type_embeddings.weight"][0],
    )
    assert torch.equal(ours["layers.0.input_layernorm.weight"], bert["bert.embeddings.LayerNorm.weight"])
    assert torch.equal(ours["layers.1.input_layernorm.bias"], bert["bert.encoder.layer.0.output.LayerNorm.bias"])
    assert torch.equal(ours["layers.1.attention.k_proj.weight"], bert["bert.encoder.layer.1.attention.self.key.weight"])
    assert torch.equal(ours["layers.1.fc2.bias"], bert["bert.encoder.layer.1.output.dense.bias"])
    assert torch.equal(ours["final_layernorm.weight"], bert["bert.encoder.layer.1.output.LayerNorm.weight"])
    assert not ours["block_position_embeddings.weight"].any()


def test_glm_export_is_its_own_layout_and_reads_back(tmp_path):
    cfg = GlmConfig(
        vocab_size=VOCAB,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
    )
    model = randomize(GlmModel(cfg), seed=6)
    save_model_dir(tmp_path / "ours", model, TextTokenizer(bert_tokenizer()))
    convert("--to-hf", tmp_path / "ours", "--out", tmp_path / "hf")
    config = json.loads((tmp_path / "hf/config.json").read_text())
    assert config["architectures"] == ["CtxlmGlmModel"] and config["model_type"] == "ctxlm-glm"
    convert("--from-hf", tmp_path / "hf", "--out", tmp_path / "back")
    back, _ = load_model_dir(tmp_path / "back")
    ids = torch.randint(5, VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(12).expand(2, -1)
    args = (ids, positions, torch.zeros_like(ids), torch.tensor([8, 12]))
    with torch.no_grad():
        torch.testing.assert_close(back.eval().log_probs(*args), model.log_probs(*args), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- PALM from BERT, PALM → BART
def test_palm_from_bert_with_a_decoder_from_the_encoder(tmp_path, capsys):
    hf, path = bert_dir(tmp_path, seed=7)
    convert("--from-hf", path, "--decoder", "encoder", "--out", tmp_path / "palm")
    assert "freshly initialised" in capsys.readouterr().out
    model, _ = load_model_dir(tmp_path / "palm")
    model.eval()
    ids, mask = batch(seed=8)
    keep = mask.bool()
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode(ids, mask)[keep],
            hf.bert(input_ids=ids, attention_mask=mask).last_hidden_state[keep],
            atol=1e-4,
            rtol=0,
        )
    state = model.state_dict()
    assert torch.equal(state["decoder.layers.1.fc1.weight"], state["encoder.layers.1.fc1.weight"])
    assert torch.equal(
        state["decoder.layers.0.self_attn.q_proj.weight"], state["encoder.layers.0.self_attn.q_proj.weight"]
    )
    fresh = json.loads((tmp_path / "palm/conversion.json").read_text())["fresh"]
    assert "decoder.layers.0.encoder_attn.q_proj.weight" in fresh and "decoder.layers.0.fc1.weight" not in fresh
    fresh_decoder = model_from_hf(path)[2].fresh
    assert "decoder.layers.0.fc1.weight" in fresh_decoder


def test_palm_exports_as_bart_with_the_copy_head_alongside(tmp_path):
    """BART computes PALM-without-copy; `--from-hf` on the export gives back the copy-head PALM;
    `--drop-copy-head` exports a plain BART that reads back without a copy head."""
    cfg = PalmConfig(
        vocab_size=VOCAB,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
        copy=True,
        pad_token_id=BART_PAD,
        eos_token_id=2,
        decoder_start_token_id=2,
        mask_token_id=VOCAB - 1,
    )
    model = randomize(PalmModel(cfg), seed=2)
    save_model_dir(tmp_path / "ctx", model, TextTokenizer(bart_tokenizer()))
    convert("--to-hf", tmp_path / "ctx", "--out", tmp_path / "hf")
    ids, mask, dec, dec_mask = bart_batch(seed=5)
    keep = dec_mask.bool()
    plain = PalmModel(PalmConfig(**{**cfg.__dict__, "copy": False}))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("pointer.")})
    bart = BartForConditionalGeneration.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    torch.testing.assert_close(
        hf_logits(bart, ids, mask, dec, dec_mask)[keep],
        palm_logits(plain.eval(), ids, mask, dec)[keep],
        atol=1e-4,
        rtol=0,
    )
    back, _, report = model_from_hf(tmp_path / "hf")
    assert back.config == cfg and report.fresh == []
    for key, value in model.state_dict().items():
        assert torch.equal(back.state_dict()[key], value), key
    convert("--to-hf", tmp_path / "ctx", "--out", tmp_path / "plain", "--drop-copy-head")
    assert model_from_hf(tmp_path / "plain")[0].pointer is None


# ----------------------------------------------------------------------------- errors, pretrain --init-from-hf
def test_conversion_errors_are_one_line(tmp_path, capsys):
    cases = [
        (["--from-hf", "ctxlm-test/no-such-model"], "the Hugging Face hub cannot be reached"),
        (["--from-hf", str(tmp_path / "nowhere" / "x" / "y")], "no such directory"),
        (["--from-hf", str(tmp_path)], "no config.json with a model_type"),
    ]
    for args, message in cases:
        capsys.readouterr()
        assert cli.main(["convert", *args, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and message in err, err
    tiny_bart().save_pretrained(tmp_path / "bart")
    with pytest.raises(CtxlmError, match="a 'bart' checkpoint does not convert to glm"):
        model_from_hf(tmp_path / "bart", family="glm")


def test_pretrain_init_from_hf_converts_on_the_fly(tmp_path):
    _, path = bert_dir(tmp_path, seed=9)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "".join(
            " ".join(f"w{(i * 7 + j) % 30 + 5}" for j in range(6)) + " .\n" + ("\n" if i % 4 == 3 else "")
            for i in range(80)
        ),
        encoding="utf-8",
    )
    config = tmp_path / "c.yaml"
    config.write_text("model: unilm-tiny\ndata:\n  max_length: 24\n  valid_fraction: 0.2\n", encoding="utf-8")
    assert (
        cli.main(
            [
                "pretrain",
                "--objective",
                "unilm",
                "--init-from-hf",
                str(path),
                "--config",
                str(config),
                "--corpus",
                str(corpus),
                "--out",
                str(tmp_path / "run"),
                "--max-steps",
                "1",
                "--batch-size",
                "2",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 0
    )
    run = json.loads((tmp_path / "run/run.json").read_text())
    assert run["init_from_hf"].startswith("bert → unilm")
    model, tokenizer = load_model_dir(tmp_path / "run")
    assert isinstance(model, UnilmModel) and tokenizer.token_to_id("[P]") == VOCAB
