"""microsoft/unilm UniLMv2 files → ctxlm, against outputs microsoft/unilm's s2s-ft code computed
(tests/fixtures/official/unilm/make_fixtures.py: s2s-ft at 768a3c8, its `modeling.py` forward and
`modeling_decoding.py` greedy decoder). Each test writes the official on-disk form (pickled state
dict, config.json, vocab.txt) from the safetensors fixture into tmp_path and reads it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ctxlm.config import GenerationConfig
from ctxlm.families.unilm import UnilmConfig
from ctxlm.errors import CtxlmError
from ctxlm.generation import generate
from ctxlm.layouts import pair_example, prompt_example
from ctxlm.models.unilm import UnilmModel
from ctxlm.objectives.masking import IGNORE_INDEX
from ctxlm.official import FORMATS, convert_from_official, detect_format, model_from_official
from ctxlm.official.unilm import is_release, is_s2s_ft, read_release, read_s2s_ft, write_s2s_ft
from ctxlm.predict import Seq2SeqPredictor
from ctxlm.training import collate

FIXTURES = Path(__file__).parent / "fixtures" / "official" / "unilm"
INPUTS = json.loads((FIXTURES / "inputs.json").read_text())
CASES = ["rel32", "norel"]
TOLERANCE = 1e-5


def write_release(directory: Path, case: str, *, named: str | None = None, legacy: bool = False) -> Path:
    """The release on disk: pytorch_model.bin + config.json + vocab.txt, or (`named`) the
    `<name>.bin`, `<name>-config.json`, `<name>-vocab.txt` files. Returns the path to load."""
    directory.mkdir(parents=True, exist_ok=True)
    state = load_file(FIXTURES / case / "release.safetensors")
    weights, config, vocab = (
        (f"{named}.bin", f"{named}-config.json", f"{named}-vocab.txt")
        if named
        else ("pytorch_model.bin", "config.json", "vocab.txt")
    )
    torch.save(state, directory / weights, _use_new_zipfile_serialization=not legacy)
    (directory / config).write_text((FIXTURES / case / "release-config.json").read_text())
    (directory / vocab).write_text("\n".join(INPUTS["vocab"]) + "\n")
    return directory / weights if named else directory


def write_s2s_ft_dir(directory: Path, case: str) -> Path:
    """What s2s-ft's save_pretrained wrote (the decoder weight shares the word embedding's storage)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = load_file(FIXTURES / case / "s2s_ft.safetensors")
    state["cls.predictions.decoder_weight"] = state["bert.embeddings.word_embeddings.weight"]
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text((FIXTURES / case / "s2s_ft-config.json").read_text())
    (directory / "vocab.txt").write_text("\n".join(INPUTS["vocab"]) + "\n")
    return directory


def expected(case: str) -> dict[str, torch.Tensor]:
    return load_file(FIXTURES / case / "expected.safetensors")


def ctxlm_logits(model: UnilmModel) -> torch.Tensor:
    """Logits at the pseudo masks of ctxlm's seq2seq layout of the fixture batch, real targets only,
    row-major (as the official (B, T) rows under the target mask)."""
    cfg = model.eval().config
    examples = [
        pair_example(cfg, s, t, INPUTS["max_source"], INPUTS["max_target"])
        for s, t in zip(INPUTS["sources"], INPUTS["targets"])
    ]
    batch = collate(examples, cfg.pad_token_id)
    with torch.no_grad():
        states = model.hidden_states(
            batch["input_ids"], batch["position_ids"], batch["token_type_ids"], batch["attention_mask"]
        )
        return model.lm_logits(states[batch["labels"] != IGNORE_INDEX]).float()


def ctxlm_greedy(model: UnilmModel, steps: int) -> list[list[int]]:
    """ctxlm's own greedy decoding (the path `Seq2SeqPredictor.generate` takes) of the fixture sources."""
    batch = collate(
        [prompt_example(model.config, s, INPUTS["max_source"]) for s in INPUTS["sources"]], model.config.pad_token_id
    )
    ids = batch["input_ids"]
    return generate(
        model, ids, ids.ne(model.config.pad_token_id), GenerationConfig(num_beams=1, max_new_tokens=steps)
    ).tokens


def official_greedy(case: str, eos: int, key: str = "greedy_ids") -> list[list[int]]:
    """s2s-ft's greedy ids (`key`: of the fine-tuned model, or `release_greedy_ids` of the release), cut after
    the first [SEP] (decode_seq2seq.py stops the text there)."""
    rows = []
    for row in expected(case)[key].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


# ------------------------------------------------------------------------------ detection
def test_detection_tells_release_from_s2s_ft(tmp_path):
    release = write_release(tmp_path / "release", "rel32")
    s2s = write_s2s_ft_dir(tmp_path / "s2s", "rel32")
    assert is_release(release) and not is_s2s_ft(release)
    assert is_s2s_ft(s2s) and not is_release(s2s)
    assert detect_format(release, family="unilm").name == "unilm-release"
    assert detect_format(s2s, family="unilm").name == "unilm-s2s-ft"
    assert list(FORMATS).index("unilm-s2s-ft") < list(FORMATS).index("unilm-release")
    for unrelated in (tmp_path / "missing", tmp_path, FIXTURES / "inputs.json"):
        assert not is_release(unrelated) and not is_s2s_ft(unrelated)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    (tmp_path / "broken" / "pytorch_model.bin").write_bytes(b"not a pickle")
    assert not is_release(tmp_path / "broken") and not is_s2s_ft(tmp_path / "broken")


def test_named_files_form_and_legacy_pickle(tmp_path):
    """`<name>.bin` / `<name>-config.json` / `<name>-vocab.txt`, also as a directory holding them,
    in torch's pre-zip format (older releases); the same config and tensors as the directory form."""
    path = write_release(tmp_path / "named", "rel32", named="unilm2-tiny-uncased", legacy=True)
    assert is_release(path) and is_release(path.parent)
    found = read_release(path)
    plain = read_release(write_release(tmp_path / "dir", "rel32"))
    assert found.config == plain.config
    assert sorted(found.tensors) == sorted(plain.tensors)
    assert all(torch.equal(found.tensors[k], plain.tensors[k]) for k in found.tensors)
    words = [INPUTS["vocab"].index(word) for word in ("w10", "w11")]
    assert found.tokenizer is not None and found.tokenizer.encode("W10 w11") == words  # uncased


# ------------------------------------------------------------------------------ logits
@pytest.mark.parametrize("case", CASES)
def test_release_logits_equal_official(tmp_path, case):
    model, tokenizer, report = model_from_official(write_release(tmp_path / case, case), family="unilm")
    want = expected(case)
    official = want["release_logits"][want["target_mask"].bool()]
    got = ctxlm_logits(model)
    assert got.shape == official.shape
    assert (got - official).abs().max().item() <= TOLERANCE
    assert not model.config.key_bias and model.layers[0].self_attn.k_proj.bias is None
    assert any("unused keys: bert.pooler" in note for note in report.notes)


@pytest.mark.parametrize("case", CASES)
def test_s2s_ft_logits_equal_official(tmp_path, case):
    model, _, _ = model_from_official(write_s2s_ft_dir(tmp_path / case, case), family="unilm")
    want = expected(case)
    official = want["s2s_ft_logits"][want["target_mask"].bool()]
    assert (ctxlm_logits(model) - official).abs().max().item() <= TOLERANCE
    assert model.config.key_bias and model.layers[0].self_attn.k_proj.bias.abs().sum() > 0


@pytest.mark.parametrize("case", CASES)
def test_greedy_ids_equal_official_decoder(tmp_path, case):
    model, tokenizer, _ = model_from_official(write_s2s_ft_dir(tmp_path / case, case), family="unilm")
    steps = INPUTS["decode_steps"]
    official = official_greedy(case, model.config.eos_token_id)
    assert ctxlm_greedy(model, steps) == official
    # the same through the predictor, from text
    texts = [" ".join(INPUTS["vocab"][i] for i in source) for source in INPUTS["sources"]]
    predicted = Seq2SeqPredictor(model, tokenizer, "cpu").generate(
        texts, GenerationConfig(num_beams=1, max_new_tokens=steps)
    )
    assert predicted == [tokenizer.decode(ids) for ids in official]


@pytest.mark.parametrize("case", CASES)
def test_release_greedy_ids_equal_official_decoder(tmp_path, case):
    """The release itself, decoded: ctxlm's greedy decoding of the converted release = s2s-ft's decoder on the
    release as s2s-ft loads it (beam 1, 6 steps)."""
    model, _, _ = model_from_official(write_release(tmp_path / case, case))
    assert model.config.pseudo_token_id == model.config.mask_token_id and not model.config.key_bias
    official = official_greedy(case, model.config.eos_token_id, "release_greedy_ids")
    assert ctxlm_greedy(model, INPUTS["decode_steps"]) == official
    assert official != official_greedy(case, model.config.eos_token_id)  # not the fine-tuned model's ids


# ------------------------------------------------------------------------------ config
def test_config_fields_from_the_files(tmp_path):
    rel = read_release(write_release(tmp_path / "rel32", "rel32")).config
    norel = read_release(write_release(tmp_path / "norel", "norel")).config
    assert rel.layer_norm_eps == 1e-12  # absent from the config: BertConfig's default
    assert norel.layer_norm_eps == 1e-5
    assert rel.relative_position_bias and (rel.relative_buckets, rel.relative_max_distance) == (32, 24)
    assert not norel.relative_position_bias
    assert UnilmModel(norel).rel_pos_bias is None
    vocab = INPUTS["vocab"]
    assert rel.vocab_size == len(vocab)  # no [P] row added
    assert rel.pseudo_token_id == rel.mask_token_id == vocab.index("[MASK]")
    assert (rel.pad_token_id, rel.bos_token_id, rel.eos_token_id) == (0, vocab.index("[CLS]"), vocab.index("[SEP]"))


def test_defaults_unchanged():
    cfg = UnilmConfig()
    assert cfg.key_bias and cfg.relative_position_bias and cfg.layer_norm_eps == 1e-12
    assert (
        UnilmModel(UnilmConfig(vocab_size=20, d_model=8, num_layers=1, num_heads=2, ffn_dim=16))
        .layers[0]
        .self_attn.k_proj.bias
        is not None
    )


def test_bad_config_is_one_line_error(tmp_path):
    path = write_release(tmp_path / "bad", "rel32")
    values = json.loads((path / "config.json").read_text())
    values["hidden_act"] = "tanh"
    (path / "config.json").write_text(json.dumps(values))
    with pytest.raises(CtxlmError, match="config.json: hidden_act 'tanh'"):
        read_release(path)
    del values["hidden_act"], values["num_hidden_layers"]
    (path / "config.json").write_text(json.dumps(values))
    with pytest.raises(CtxlmError, match="no 'num_hidden_layers'"):
        read_release(path)


def test_release_table_missing_is_named(tmp_path):
    path = write_release(tmp_path / "r", "rel32")
    state = torch.load(path / "pytorch_model.bin")
    del state["bert.encoder.rel_pos_bias.weight"]
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CtxlmError, match="no 'bert.encoder.rel_pos_bias.weight'"):
        read_release(path)


# ------------------------------------------------------------------------------ writing
@pytest.mark.parametrize("case", CASES)
def test_round_trip_ctxlm_s2s_ft_ctxlm(tmp_path, case):
    model, tokenizer, _ = model_from_official(write_release(tmp_path / "release", case), family="unilm")
    write_s2s_ft(model, tokenizer, tmp_path / "s2s")
    assert is_s2s_ft(tmp_path / "s2s")
    back = read_s2s_ft(tmp_path / "s2s")
    again, tokenizer_again, _ = model_from_official(tmp_path / "s2s", family="unilm")
    ours, theirs = model.state_dict(), again.state_dict()
    assert set(theirs) - set(ours) == {f"layers.{i}.self_attn.k_proj.bias" for i in range(model.config.num_layers)}
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert all(theirs[k].abs().sum() == 0 for k in set(theirs) - set(ours))  # the release's key bias: zero
    assert (tmp_path / "s2s" / "vocab.txt").read_text().splitlines() == INPUTS["vocab"]
    assert tokenizer_again.encode("w10 w11") == tokenizer.encode("w10 w11")
    assert torch.equal(ctxlm_logits(model), ctxlm_logits(again))
    assert back.config.key_bias


def test_convert_from_official_writes_a_model_dir(tmp_path):
    report = convert_from_official(write_release(tmp_path / "release", "rel32"), tmp_path / "out", family="unilm")
    assert report.family == "unilm" and "format unilm-release" in report.notes
    model, tokenizer = __import__("ctxlm.checkpoint", fromlist=["load_model_dir"]).load_model_dir(tmp_path / "out")
    want = expected("rel32")
    official = want["release_logits"][want["target_mask"].bool()]
    assert (ctxlm_logits(model) - official).abs().max().item() <= TOLERANCE
    assert tokenizer is not None and len(tokenizer) == len(INPUTS["vocab"])


# ------------------------------------------------------------------------------ the BERT path
def test_from_hf_refuses_the_official_files(tmp_path):
    """`convert --from-hf` would add a [P] row and zero the trained bias table: it points to --from-official."""
    from ctxlm.models.hf_unilm import unilm_from_bert

    path = write_release(tmp_path / "release", "rel32")
    tokenizer = read_release(path).tokenizer
    with pytest.raises(CtxlmError, match="--from-official"):
        unilm_from_bert(path, tokenizer)


def test_export_to_bert_without_key_bias(tmp_path):
    """A converted release (no key bias) still exports to transformers' BERT (key bias 0 there)."""
    pytest.importorskip("transformers")
    from ctxlm.models.hf_unilm import export_unilm

    model, tokenizer, _ = model_from_official(write_release(tmp_path / "release", "norel"), family="unilm")
    export_unilm(model, tokenizer, tmp_path / "bert")
    import transformers

    bert = transformers.BertForMaskedLM.from_pretrained(tmp_path / "bert").eval()
    ids = torch.tensor([[3, 10, 11, 12, 4]])
    with torch.no_grad():
        want = bert(input_ids=ids).logits
        got = model.lm_logits(model.hidden_states(ids))
    assert (got - want).abs().max().item() <= 1e-4
    assert all(layer.attention.self.key.bias.abs().sum() == 0 for layer in bert.bert.encoder.layer)


# ------------------------------------------------------------------------------ fine-tuning a converted release
def test_finetune_init_converted_release(tmp_path, data_dir):
    """`finetune --init <converted release>` for UniLMv2's three tasks: seq2seq (squad_qg), classify
    (MRPC), squad; a few steps each, a loadable model of the right head."""
    from ctxlm.checkpoint import load_model_dir
    from ctxlm.cli import main

    convert_from_official(write_release(tmp_path / "release", "rel32"), tmp_path / "init", family="unilm")
    common = ["--init", str(tmp_path / "init"), "--no-progress", "--device", "cpu", "--max-steps", "2"]
    qg = data_dir / "qg" / "squad_du2017"
    for split, rows in (("train", 8), ("valid", 4)):
        lines = (qg / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()[:rows]
        (tmp_path / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert (
        main(
            [
                "finetune",
                "--recipe",
                "squad_qg",
                "--train",
                str(tmp_path / "train.jsonl"),
                "--valid",
                str(tmp_path / "valid.jsonl"),
                "--out",
                str(tmp_path / "qg"),
                "--batch-size",
                "4",
                "--eval-every",
                "2",
                *common,
            ]
        )
        == 0
    )
    model, _ = load_model_dir(tmp_path / "qg")
    assert isinstance(model, UnilmModel) and not model.config.key_bias
    assert (
        main(
            [
                "finetune",
                "--task",
                "classify",
                "--dataset",
                "glue/MRPC",
                "--data-dir",
                str(data_dir / "nlu"),
                "--out",
                str(tmp_path / "mrpc"),
                "--train-limit",
                "8",
                "--valid-limit",
                "4",
                "--max-length",
                "48",
                "--batch-size",
                "4",
                *common,
            ]
        )
        == 0
    )
    assert type(load_model_dir(tmp_path / "mrpc")[0]).__name__ == "UnilmClassifier"
    context = "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19"
    squad = {
        "version": "1.1",
        "data": [
            {
                "title": "t",
                "paragraphs": [
                    {
                        "context": context,
                        "qas": [
                            {
                                "id": f"q{i}",
                                "question": f"w2{i} w3{i}",
                                "answers": [{"text": f"w1{i} w1{i + 1}", "answer_start": context.index(f"w1{i}")}],
                            }
                            for i in range(4)
                        ],
                    }
                ],
            }
        ],
    }
    (tmp_path / "squad.json").write_text(json.dumps(squad), encoding="utf-8")
    assert (
        main(
            [
                "finetune",
                "--task",
                "squad",
                "--train",
                str(tmp_path / "squad.json"),
                "--valid",
                str(tmp_path / "squad.json"),
                "--out",
                str(tmp_path / "qa"),
                "--max-length",
                "32",
                "--max-query-length",
                "8",
                "--doc-stride",
                "16",
                "--batch-size",
                "2",
                *common,
            ]
        )
        == 0
    )
    assert type(load_model_dir(tmp_path / "qa")[0]).__name__ == "UnilmQuestionAnswering"


def test_convert_to_official_writes_s2s_ft(tmp_path):
    """A ctxlm model directory → s2s-ft's layout through the registry (`--to-official`), read back equal."""
    from ctxlm.official import convert_to_official

    convert_from_official(write_s2s_ft_dir(tmp_path / "s2s", "norel"), tmp_path / "model", family="unilm")
    notes = convert_to_official(tmp_path / "model", tmp_path / "back")
    assert "wrote vocab.txt" in notes and is_s2s_ft(tmp_path / "back")
    original = load_file(FIXTURES / "norel" / "s2s_ft.safetensors")
    written = torch.load(tmp_path / "back" / "pytorch_model.bin")
    assert set(original) - set(written) == {"crit_mask_lm_smoothed.one_hot"}  # a training buffer, not a weight
    assert all(torch.equal(original[key], written[key]) for key in written)


def test_pretrain_init_converted_release(tmp_path, data_dir):
    """Continued pre-training from a release (no [P] in its vocabulary): the pseudo mask is the
    model's pseudo_token_id ([MASK]); a few steps, a loadable model."""
    from ctxlm.checkpoint import load_model_dir
    from ctxlm.cli import main

    convert_from_official(write_release(tmp_path / "release", "rel32"), tmp_path / "init", family="unilm")
    (tmp_path / "c.yaml").write_text("model:\n  base: unilm-tiny\ndata:\n  max_length: 48\n", encoding="utf-8")
    assert (
        main(
            [
                "pretrain",
                "--config",
                str(tmp_path / "c.yaml"),
                "--init",
                str(tmp_path / "init"),
                "--corpus",
                str(data_dir / "pretrain/wikipedia/sents_008.txt"),
                "--out",
                str(tmp_path / "run"),
                "--max-steps",
                "2",
                "--batch-size",
                "2",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    model, _ = load_model_dir(tmp_path / "run")
    assert model.config.pseudo_token_id == INPUTS["vocab"].index("[MASK]") and model.config.vocab_size == 48
