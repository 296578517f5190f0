"""AliceMind's PALM release (`ctxlm.official.palm`) against outputs the official code computed.

The fixture (`tests/fixtures/official/palm/`, made by its `make_fixtures.py` from alibaba/AliceMind
a6d5afe's `AbsSummarizer` and `Translator`) holds a tiny release's weights under the official names;
each test writes the release as the official trainer saves it — `torch.save({"model", "opt":
argparse.Namespace, "optims": [Optimizer]})` beside a `roberta-base/` folder — and reads that.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ctxlm.cli import main
from ctxlm.config import GenerationConfig
from ctxlm.errors import CtxlmError
from ctxlm.generation import generate
from ctxlm.official import convert_from_official, detect_format, model_from_official
from ctxlm.official.palm import is_alicemind, read_alicemind
from ctxlm.official.safe_pickle import safe_torch_load

FIXTURES = Path(__file__).parent / "fixtures" / "official" / "palm"
CASES = json.loads((FIXTURES / "cases.json").read_text())
EXPECTED = load_file(FIXTURES / "expected.safetensors")
FAKE_MODULE = "alicemind_palm_stand_in.optimizers"  # not importable when the release is read


class Optimizer:
    """Stands for AliceMind's `models.optimizers.Optimizer`, pickled under a module that is gone at load time."""

    def __init__(self):
        self.method, self.lr, self.state = "adam", 0.1, {"step": torch.zeros(2)}


def save_with_fake_module(payload, file: Path) -> None:
    """`torch.save` with `Optimizer` findable under FAKE_MODULE (pickle looks it up), then forgotten."""
    package, module = types.ModuleType(FAKE_MODULE.split(".")[0]), types.ModuleType(FAKE_MODULE)
    module.Optimizer = Optimizer
    Optimizer.__module__ = FAKE_MODULE
    sys.modules[package.__name__], sys.modules[FAKE_MODULE] = package, module
    try:
        torch.save(payload, file)
    finally:
        del sys.modules[FAKE_MODULE], sys.modules[package.__name__]
        Optimizer.__module__ = __name__


def write_release(root: Path, head: str, *, buffers: bool = False, roberta: bool = True) -> Path:
    """The official on-disk release of fixture `head` ("plain" or "pgen") in `root`: returns the .pt."""
    state = load_file(FIXTURES / f"{head}.safetensors")
    tied = "generator.gen_proj.weight" if "generator.prob_proj.weight" in state else "generator.0.weight"
    state[tied] = state["decoder.embeddings.weight"]  # one tensor under both names, as AbsSummarizer's state_dict
    if buffers:  # the official 5000-row buffers, at a reduced size
        d = state["decoder.embeddings.weight"].shape[1]
        state["decoder.pos_emb.pe"] = torch.randn(1, 50, d)
        for i in range(2):
            state[f"decoder.transformer_layers.{i}.mask"] = torch.ones(1, 50, 50, dtype=torch.uint8).triu(1)
    opt = argparse.Namespace(**json.loads((FIXTURES / f"{head}.json").read_text()))
    root.mkdir(parents=True, exist_ok=True)
    pt = root / "model_palm_en_base.pt"
    save_with_fake_module({"model": state, "opt": opt, "optims": [Optimizer()]}, pt)
    if roberta:
        shutil.copytree(FIXTURES / "roberta-base", root / "roberta-base")
    return pt


def official_log_probs(model, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(ctxlm's log-probabilities, the official ones) on the decoder rows whose input is not padding."""
    src, tgt = torch.tensor(CASES["src"]), torch.tensor(CASES["tgt"])
    decoder_input, labels = tgt[:, :-1], tgt[:, 1:].masked_fill(tgt[:, 1:] == 1, -100)
    with torch.no_grad():
        ours = model(src, src.ne(1), decoder_input_ids=decoder_input, labels=labels, return_log_probs=True).log_probs
    real = decoder_input.ne(1)
    return ours[real], EXPECTED[f"{head}.log_probs"][real]


def until_eos(ids: list[int], eos: int = 2) -> list[int]:
    return ids[: ids.index(eos) + 1] if eos in ids else ids


# ------------------------------------------------------------------------------------------------ parity
@pytest.mark.parametrize("head, heads, copy", [("plain", 2, False), ("pgen", 8, True)])
def test_log_probs_equal_the_official_code(tmp_path, head, heads, copy):
    model, tokenizer, report = model_from_official(write_release(tmp_path, head), family="palm")
    cfg = model.config
    assert (cfg.decoder_attention_heads, cfg.copy, cfg.decoder_style, cfg.tie_decoder_embedding) == (
        heads,
        copy,
        "presumm",
        False,
    )
    assert (cfg.decoder_ffn_dim, cfg.encoder_ffn_dim, cfg.layer_norm_eps, cfg.decoder_layer_norm_eps) == (
        48,
        64,
        1e-5,
        1e-6,
    )
    assert "format palm-alicemind" in report.notes
    ours, official = official_log_probs(model, head)
    assert ours.shape == official.shape and ours.shape[0] == 13
    assert (ours - official).abs().max().item() < 1e-5


@pytest.mark.parametrize("head", ["plain", "pgen"])
def test_greedy_ids_equal_the_official_predictor(tmp_path, head):
    """ctxlm's greedy decoding = `Translator._fast_translate_batch` at beam 1 (which decodes past EOS;
    its ids up to the first EOS are the greedy path)."""
    model, _, _ = model_from_official(write_release(tmp_path, head), family="palm")
    src = torch.tensor(CASES["src"])
    out = generate(model, src, src.ne(1), GenerationConfig(num_beams=1, max_new_tokens=CASES["max_steps"]))
    assert out.tokens == [until_eos(ids) for ids in CASES[f"{head}.greedy"]]
    assert any(ids[-1] == 2 for ids in out.tokens)  # the fixture has paths that end, and (plain) that do not


def test_beam_reordering_keeps_each_history(tmp_path):
    """Beam search's `reorder` moves the presumm decoder's cache; each row's next-token log-probs (copy head
    included) then equal the teacher-forced ones of its history."""
    model, _, _ = model_from_official(write_release(tmp_path, "pgen"), family="palm")
    src = torch.tensor(CASES["src"])
    first, second = torch.tensor([5, 9, 12, 30, 41, 7]), torch.tensor([20, 21, 22, 23, 24, 25])
    swap = torch.tensor([1, 0, 3, 2, 5, 4])  # the two beams of each source trade places
    with torch.no_grad():
        state = model.start_decoding(src, src.ne(1), num_beams=2, max_length=4)
        model.decode_step(state, torch.zeros(6, dtype=torch.long))
        model.decode_step(state, first)
        model.reorder(state, swap)
        stepped = model.decode_step(state, second)
        histories = torch.stack([torch.zeros(6, dtype=torch.long), first[swap], second], dim=1)
        sources = src.repeat_interleave(2, dim=0)
        forced = model(
            sources, sources.ne(1), decoder_input_ids=histories, labels=histories, return_log_probs=True
        ).log_probs[:, -1]
    assert (stepped - forced).abs().max().item() < 1e-5
    beams = generate(model, src, src.ne(1), GenerationConfig(num_beams=3, max_new_tokens=4))
    assert len(beams.tokens) == 3 and all(1 <= len(ids) <= 4 for ids in beams.tokens)


# ------------------------------------------------------------------------------------------------ reading
def test_the_reader_accepts_the_official_buffers(tmp_path):
    """`decoder.pos_emb.pe` and the per-layer `mask` buffers of the official state dict are ignored."""
    model, _, _ = model_from_official(write_release(tmp_path, "plain", buffers=True), family="palm")
    ours, official = official_log_probs(model, "plain")
    assert (ours - official).abs().max().item() < 1e-5


def test_a_directory_or_a_pt_with_roberta_dir(tmp_path):
    pt = write_release(tmp_path / "release", "plain")
    assert is_alicemind(pt) and is_alicemind(tmp_path / "release")
    assert detect_format(tmp_path / "release", family="palm").name == "palm-alicemind"
    elsewhere = tmp_path / "alone" / "palm.pt"
    elsewhere.parent.mkdir()
    shutil.copy(pt, elsewhere)
    assert not is_alicemind(elsewhere)
    found = read_alicemind(elsewhere, roberta_dir=tmp_path / "release" / "roberta-base")
    assert found.config.decoder_attention_heads == 2
    assert found.tokenizer is not None and (
        found.tokenizer.pad_id,
        found.tokenizer.cls_id,
        found.tokenizer.sep_id,
        found.tokenizer.mask_id,
    ) == (1, 0, 2, 63)
    assert found.generation.num_beams == 1 and found.generation.length_penalty_type == "gnmt"
    assert (
        read_alicemind(
            elsewhere, roberta_dir=tmp_path / "release" / "roberta-base", dec_heads=4
        ).config.decoder_attention_heads
        == 4
    )


def test_unrelated_paths_are_not_the_release(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    assert not is_alicemind(tmp_path / "x.pt") and not is_alicemind(tmp_path / "missing")
    assert not is_alicemind(tmp_path)
    (tmp_path / "roberta-base").mkdir()
    (tmp_path / "roberta-base" / "config.json").write_text("{}")
    assert is_alicemind(tmp_path / "x.pt")
    with pytest.raises(CtxlmError, match="x.pt"):
        read_alicemind(tmp_path / "x.pt")


def test_a_release_without_generator_is_refused(tmp_path):
    pt = write_release(tmp_path, "plain")
    checkpoint = safe_torch_load(pt, mmap=False)  # the file is rewritten below
    model = {k: v for k, v in checkpoint["model"].items() if not k.startswith("generator.")}
    torch.save({"model": model}, pt)
    with pytest.raises(CtxlmError, match="no generator"):
        read_alicemind(pt)


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_runs_nothing(tmp_path):
    """A `.pt` whose object unpickles by calling `os.system` loads with nothing run."""
    marker = tmp_path / "pwned"
    pt = write_release(tmp_path, "plain")
    checkpoint = safe_torch_load(pt, mmap=False)  # the file is rewritten below
    checkpoint["optims"] = [Exploit(marker)]
    checkpoint["opt"] = Exploit(marker)
    torch.save(checkpoint, pt)
    loaded = safe_torch_load(pt)
    assert not marker.exists()
    assert "system" in repr(loaded["optims"][0])
    found = read_alicemind(pt)  # the opt is a placeholder: heads fall back to 8
    assert not marker.exists() and found.config.decoder_attention_heads == 8


# ------------------------------------------------------------------------------------------------ training
def test_finetune_from_the_converted_release(tmp_path):
    """`ctxlm convert --from-official` keeps the release's outputs; `finetune --init` on it trains a few
    summarization steps with the release's architecture."""
    from ctxlm.checkpoint import load_model_dir

    convert_from_official(write_release(tmp_path / "release", "pgen"), tmp_path / "converted", family="palm")
    converted, tokenizer = load_model_dir(tmp_path / "converted")
    ours, official = official_log_probs(converted.eval(), "pgen")
    assert (ours - official).abs().max().item() < 1e-5 and tokenizer.mask_id == 63
    rows = [
        {"document": "the cat sat on a mat. a dog ran", "summary": "cat sat"},
        {"document": "big rain fell all day in the old town", "summary": "rain fell"},
    ] * 4
    for name in ("train", "valid"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "run"
    assert (
        main(
            [
                "finetune",
                "--init",
                str(tmp_path / "converted"),
                "--train",
                str(tmp_path / "train.jsonl"),
                "--valid",
                str(tmp_path / "valid.jsonl"),
                "--out",
                str(out),
                "--max-steps",
                "3",
                "--batch-size",
                "4",
                "--task",
                "summarization",
                "--warmup-steps",
                "1",
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    saved = json.loads((out / "config.json").read_text())
    assert (saved["decoder_style"], saved["copy_head"], saved["tie_decoder_embedding"]) == (
        "presumm",
        "attention",
        False,
    )
    losses = [
        row["train/lm_loss"]
        for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if "train/lm_loss" in row
    ]
    assert losses and all(0 < loss < 20 for loss in losses)


def test_the_release_architecture_is_not_exported_as_bart(tmp_path):
    from ctxlm.models.hf import bart_from_palm

    model, _, _ = model_from_official(write_release(tmp_path, "plain"), family="palm")
    with pytest.raises(CtxlmError, match="AliceMind release's decoder"):
        bart_from_palm(model, drop_copy_head=True)


@pytest.mark.parametrize(
    "options, field",
    [
        (dict(decoder_style="fairseq"), "decoder_style"),
        (dict(copy_head="pgen"), "copy_head"),
        (dict(copy_head="attention"), "copy_head 'attention'"),
        (dict(decoder_layer_norm_eps=1e-6), "decoder_layer_norm_eps"),
    ],
)
def test_release_options_are_checked(options, field):
    from ctxlm.families.palm import PalmConfig
    from ctxlm.models.palm import PalmModel

    with pytest.raises(CtxlmError, match=field):
        PalmModel(
            PalmConfig(
                vocab_size=16,
                d_model=8,
                encoder_layers=1,
                decoder_layers=1,
                encoder_attention_heads=2,
                decoder_attention_heads=2,
                encoder_ffn_dim=8,
                decoder_ffn_dim=8,
                **options,
            )
        )


def test_the_mlm_head_comes_from_roberta_base_when_it_has_one(tmp_path):
    """The release's model has no MLM head; RoBERTa's `lm_head` in `roberta-base/` supplies ctxlm's."""
    from safetensors.torch import save_file

    pt = write_release(tmp_path, "plain")
    head = {
        "lm_head.dense.weight": torch.randn(32, 32),
        "lm_head.dense.bias": torch.randn(32),
        "lm_head.layer_norm.weight": torch.randn(32),
        "lm_head.layer_norm.bias": torch.randn(32),
        "lm_head.bias": torch.randn(64),
        "lm_head.decoder.weight": torch.randn(64, 32),
    }
    save_file(head, str(tmp_path / "roberta-base" / "model.safetensors"))
    found = read_alicemind(pt)
    assert torch.equal(found.tensors["mlm_head.dense.weight"], head["lm_head.dense.weight"])
    assert torch.equal(found.tensors["mlm_head.bias"], head["lm_head.bias"])
    assert any("MLM head from" in note for note in found.notes)


def test_the_tokenizer_encodes_as_the_official_roberta_tokenizer(tmp_path):
    """vocab.json + merges.txt → ctxlm's tokenizer; ids as transformers 2.1.1's `RobertaTokenizer.encode`
    (unknown pieces → <unk>)."""
    found = read_alicemind(write_release(tmp_path, "plain"))
    assert {text: found.tokenizer.encode(text) for text in CASES["tokenized"]} == CASES["tokenized"]
    assert 3 in CASES["tokenized"]["xyz zebra Hi"]  # 'H' is not in the vocabulary
