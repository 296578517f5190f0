"""Weight conversion with transformers as the oracle: tiny random BART / BERT / RoBERTa models built
from configs (nothing downloaded), our own model directories, and the `ctxlm convert` CLI."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    BertForMaskedLM,
    BertModel,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaModel,
)

from ctxlm import cli
from ctxlm.checkpoint import load_model_dir, save_model_dir
from ctxlm.families.palm import PalmConfig
from ctxlm.errors import CtxlmError
from ctxlm.models.hf import bart_from_palm, palm_from_bart, palm_from_encoder_checkpoint
from ctxlm.models.palm import PalmModel
from ctxlm.tokenization import TextTokenizer

VOCAB = 40
BART_PAD = 1


pytestmark = pytest.mark.usefixtures("single_thread")


def randomize(model, seed=0, scale=0.3):
    """Every parameter and float buffer (biases, layer norms, final_logits_bias) random, so loading
    each one is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for buf in model.buffers():
            if buf.is_floating_point():
                buf.copy_(torch.randn(buf.shape, generator=g) * scale)
    return model.eval()


def tiny_bart(seed=0, **overrides):
    values = dict(
        vocab_size=VOCAB,
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
        activation_dropout=0.0,
        forced_eos_token_id=None,
    )
    values.update(overrides)
    return randomize(BartForConditionalGeneration(BartConfig(**values)), seed)


def padded(lengths, pad, seed, low=3, high=VOCAB - 1):
    """Right-padded random ids (no pad/special ids inside) and the attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask


def bart_batch(seed=0):
    input_ids, attention_mask = padded([9, 6, 3], BART_PAD, seed)
    decoder_input_ids, decoder_mask = padded([7, 4, 5], BART_PAD, seed + 1)
    decoder_input_ids[:, 0] = 2  # BART's decoder start
    return input_ids, attention_mask, decoder_input_ids, decoder_mask


def hf_logits(bart, input_ids, attention_mask, decoder_input_ids, decoder_mask):
    with torch.no_grad():
        return bart(
            input_ids=input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_mask,
        ).logits


def palm_logits(model, input_ids, attention_mask, decoder_input_ids):
    with torch.no_grad():
        return model.logits(input_ids, decoder_input_ids, attention_mask)


def bart_tokenizer():
    """A word-level tokenizer.json with BART's special tokens (<s>=0, <pad>=1, </s>=2, <unk>=3,
    <mask> last) for the tiny vocabulary."""
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"w{i}": i for i in range(4, VOCAB - 1)})
    vocab["<mask>"] = VOCAB - 1
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    return tokenizer


# ----------------------------------------------------------------------------- BART ↔ PALM
@pytest.mark.parametrize("scale_embedding", [False, True])
def test_palm_from_bart_logits_match(scale_embedding):
    """A random BART loaded into ctxlm (copy off) gives transformers' logits on a padded batch."""
    bart = tiny_bart(scale_embedding=scale_embedding)
    assert bart.final_logits_bias.abs().sum() > 0
    model = palm_from_bart(bart).eval()
    assert model.pointer is None and model.config.scale_embedding == scale_embedding
    ids, mask, dec, dec_mask = bart_batch()
    expected = hf_logits(bart, ids, mask, dec, dec_mask)
    got = palm_logits(model, ids, mask, dec)
    keep = dec_mask.bool()
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-4, rtol=0)


def test_bart_from_palm_round_trip():
    """ctxlm → BART: transformers computes the same logits as ctxlm, and BART → ctxlm restores
    every weight."""
    cfg = PalmConfig(
        vocab_size=VOCAB,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        copy=False,
        pad_token_id=BART_PAD,
        bos_token_id=0,
        eos_token_id=2,
        decoder_start_token_id=2,
        mask_token_id=VOCAB - 1,
    )
    model = randomize(PalmModel(cfg), seed=1)
    bart = bart_from_palm(model).eval()
    ids, mask, dec, dec_mask = bart_batch(seed=4)
    keep = dec_mask.bool()
    torch.testing.assert_close(
        hf_logits(bart, ids, mask, dec, dec_mask)[keep], palm_logits(model, ids, mask, dec)[keep], atol=1e-5, rtol=0
    )
    back = palm_from_bart(bart, mask_token_id=VOCAB - 1)
    theirs = back.state_dict()
    for key, value in model.state_dict().items():
        if not key.startswith("mlm_head."):
            assert torch.equal(theirs[key], value), key


def test_bart_export_refuses_the_copy_head_unless_dropped():
    """A copy-head model does not export silently; with drop_copy_head the BART is the same
    model without the pointer-generator."""
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
    )
    model = randomize(PalmModel(cfg), seed=2)
    with pytest.raises(CtxlmError, match="drop-copy-head"):
        bart_from_palm(model)
    bart = bart_from_palm(model, drop_copy_head=True).eval()
    plain = PalmModel(PalmConfig(**{**cfg.__dict__, "copy": False}))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("pointer.")})
    ids, mask, dec, dec_mask = bart_batch(seed=5)
    keep = dec_mask.bool()
    torch.testing.assert_close(
        hf_logits(bart, ids, mask, dec, dec_mask)[keep],
        palm_logits(plain.eval(), ids, mask, dec)[keep],
        atol=1e-5,
        rtol=0,
    )


# ----------------------------------------------------------------------------- BERT / RoBERTa → encoder
ENCODER_SHAPE = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)
ENCODERS = {
    "roberta": (RobertaConfig, RobertaModel, RobertaForMaskedLM, "roberta", dict(max_position_embeddings=34)),
    "bert": (BertConfig, BertModel, BertForMaskedLM, "bert", dict(max_position_embeddings=32, pad_token_id=0)),
}


def encoder_batch(pad):
    ids, mask = padded([11, 7, 2], pad, seed=3, low=4)
    return ids, mask


@pytest.mark.parametrize("family", ["roberta", "bert"])
@pytest.mark.parametrize("with_head", [False, True])
def test_encoder_checkpoint_outputs_match(family, with_head):
    """PALM's encoder initialised from BERT/RoBERTa reproduces last_hidden_state on non-pad tokens,
    and the loaded MLM head reproduces the masked-LM logits."""
    config_cls, base_cls, mlm_cls, attr, extra = ENCODERS[family]
    hf_config = config_cls(**ENCODER_SHAPE, **extra)
    hf = randomize((mlm_cls if with_head else base_cls)(hf_config), seed=6)
    encoder = getattr(hf, attr) if with_head else hf
    model = palm_from_encoder_checkpoint(hf, decoder_layers=1).eval()
    assert model.config.max_position_embeddings == 32
    ids, mask = encoder_batch(hf_config.pad_token_id)
    keep = mask.bool()
    with torch.no_grad():
        expected = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        states = model.encode(ids, mask)
    torch.testing.assert_close(states[keep], expected[keep], atol=1e-4, rtol=0)
    if with_head:
        with torch.no_grad():
            hf_mlm = hf(input_ids=ids, attention_mask=mask).logits
            ours = model.mlm_logits(states)
        torch.testing.assert_close(ours[keep], hf_mlm[keep], atol=1e-4, rtol=0)


def test_bert_mlm_head_uses_the_configured_activation():
    """BERT's MLM head transform applies `hidden_act` (RoBERTa's always GELU): a BERT with
    hidden_act="relu" converts to the same encoder states and MLM logits."""
    hf_config = BertConfig(**ENCODER_SHAPE, max_position_embeddings=32, pad_token_id=0, hidden_act="relu")
    hf = randomize(BertForMaskedLM(hf_config), seed=12)
    model = palm_from_encoder_checkpoint(hf, decoder_layers=1).eval()
    ids, mask = encoder_batch(0)
    keep = mask.bool()
    with torch.no_grad():
        states = model.encode(ids, mask)
        torch.testing.assert_close(
            states[keep], hf.bert(input_ids=ids, attention_mask=mask).last_hidden_state[keep], atol=1e-4, rtol=0
        )
        torch.testing.assert_close(
            model.mlm_logits(states)[keep], hf(input_ids=ids, attention_mask=mask).logits[keep], atol=1e-4, rtol=0
        )


def test_encoder_checkpoint_uses_all_positions():
    """The last usable position works too (the position table is shifted, not truncated)."""
    hf_config = RobertaConfig(**ENCODER_SHAPE, max_position_embeddings=34)
    hf = randomize(RobertaModel(hf_config), seed=7)
    model = palm_from_encoder_checkpoint(hf, decoder_layers=1).eval()
    ids = torch.randint(4, VOCAB, (1, 32), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode(ids, mask), hf(input_ids=ids, attention_mask=mask).last_hidden_state, atol=1e-4, rtol=0
        )


# ----------------------------------------------------------------------------- ctxlm model directories
def test_model_dir_round_trip(tmp_path):
    """save_model_dir / load_model_dir: the three files, the same state dict, the same outputs."""
    cfg = PalmConfig(
        vocab_size=VOCAB,
        d_model=16,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
        copy=True,
        pad_token_id=BART_PAD,
    )
    model = randomize(PalmModel(cfg), seed=8)
    tokenizer = TextTokenizer(bart_tokenizer())
    save_model_dir(tmp_path / "model", model, tokenizer)
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (tmp_path / "model" / name).is_file()
    assert json.loads((tmp_path / "model" / "config.json").read_text())["copy"] is True
    loaded, loaded_tok = load_model_dir(tmp_path / "model")
    loaded.eval()
    assert loaded.config == cfg
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    ids, mask, dec, _ = bart_batch(seed=9)
    assert torch.equal(palm_logits(model, ids, mask, dec), palm_logits(loaded, ids, mask, dec))
    assert loaded_tok.backend.to_str() == tokenizer.backend.to_str()
    assert loaded_tok.mask_id == VOCAB - 1


# ----------------------------------------------------------------------------- the convert CLI
def test_convert_cli_round_trip(tmp_path):
    """`ctxlm convert --from-hf` then `--to-hf`: both directions keep transformers' logits."""
    bart = tiny_bart(seed=10)
    hf_dir, ctx_dir, out_dir = tmp_path / "hf", tmp_path / "ctx", tmp_path / "hf_again"
    bart.save_pretrained(hf_dir)
    bart_tokenizer().save(str(hf_dir / "tokenizer.json"))
    ids, mask, dec, dec_mask = bart_batch(seed=11)
    keep = dec_mask.bool()
    expected = hf_logits(bart, ids, mask, dec, dec_mask)

    assert cli.main(["convert", "--from-hf", str(hf_dir), "--out", str(ctx_dir)]) == 0
    model, tokenizer = load_model_dir(ctx_dir)
    assert tokenizer is not None and model.config.mask_token_id == tokenizer.mask_id == VOCAB - 1
    torch.testing.assert_close(palm_logits(model.eval(), ids, mask, dec)[keep], expected[keep], atol=1e-4, rtol=0)

    assert cli.main(["convert", "--to-hf", str(ctx_dir), "--out", str(out_dir)]) == 0
    again = BartForConditionalGeneration.from_pretrained(out_dir, local_files_only=True).eval()
    torch.testing.assert_close(hf_logits(again, ids, mask, dec, dec_mask)[keep], expected[keep], atol=1e-5, rtol=0)
