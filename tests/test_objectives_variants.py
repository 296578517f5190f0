"""The registry of named pre-training variants (PALM's Table 6 ablations, GLM's and UniLMv2's, MASS,
BART, none) and `pretrain_variant`: each variant does what it says."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from conftest import wiki_slice
from ctxlm.families import get_family
from ctxlm.checkpoint import build_model, load_model_dir
from ctxlm.config import FinetuneConfig, PretrainConfig, TrainConfig
from ctxlm.families.palm import PalmDataConfig
from ctxlm.config_loading import default_data_config, named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.tasks import ScratchModel
from ctxlm.tasks.seq2seq import finetune
from ctxlm.objectives.glm import GLM_TASKS
from ctxlm.objectives.unilm import OBJECTIVES as UNILM_OBJECTIVES
from ctxlm.objectives.variants import PRETRAIN_VARIANTS
from ctxlm.families import get_objective
from ctxlm.families.palm_data import PALM_STAGES
from ctxlm.pretraining import model_config_for_tokenizer, pretrain_variant
from ctxlm.run_options import CorpusSpec
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")


def test_registry_names_and_settings_are_valid():
    assert {
        "palm",
        "palm-nocopy",
        "palm-noae",
        "palm-noar",
        "mass",
        "bart",
        "glm",
        "glm-noshuffle",
        "unilm",
        "unilm-ae",
        "unilm-par",
        "none",
    } <= set(PRETRAIN_VARIANTS)
    for name, variant in PRETRAIN_VARIANTS.items():
        model_fields = {f.name for f in dataclasses.fields(get_family(variant.family).config)}
        assert set(variant.model) <= model_fields, name
        data_fields = {f.name for f in dataclasses.fields(default_data_config(variant.family))}
        for stage in variant.stages:
            assert get_objective(stage.objective).family == variant.family, name
            assert set(stage.data) <= data_fields, name
            assert stage.objective != "palm" or stage.stage in PALM_STAGES
            assert stage.data.get("objective", "ae+par") in UNILM_OBJECTIVES
            assert stage.data.get("task", "blank") in GLM_TASKS
        assert variant.description
    # what the PALM rows of Table 6 leave out
    stages = {
        name: [(s.objective, s.stage) for s in PRETRAIN_VARIANTS[name].stages]
        for name in ("palm", "palm-nocopy", "palm-noae", "palm-noar", "none")
    }
    assert stages["palm"] == stages["palm-nocopy"] == [("palm", "mlm"), ("palm", "generation")]
    assert stages["palm-noae"] == [("palm", "generation")] and stages["palm-noar"] == [("palm", "mlm")]
    assert stages["none"] == []
    assert PRETRAIN_VARIANTS["palm-nocopy"].model == {"copy": False} and PRETRAIN_VARIANTS["palm"].model == {}


def test_the_no_copy_variant_is_a_plain_bart():
    """`copy: false` leaves no copy parameter, and the model's scores are transformers' BART logits."""
    from ctxlm.models.hf import bart_from_palm

    base = named_model_config(
        "palm-tiny",
        vocab_size=64,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
    )
    with_copy = build_model(dataclasses.replace(base, **PRETRAIN_VARIANTS["palm"].model))
    torch.manual_seed(0)
    no_copy = build_model(dataclasses.replace(base, **PRETRAIN_VARIANTS["palm-nocopy"].model)).eval()
    assert any(k.startswith("pointer.") for k in with_copy.state_dict())
    assert not any(k.startswith("pointer.") for k in no_copy.state_dict())
    with torch.no_grad():
        no_copy.final_logits_bias.normal_()
    bart = bart_from_palm(no_copy).eval()
    ids = torch.randint(10, 64, (2, 9))
    dec = torch.randint(10, 64, (2, 5))
    with torch.no_grad():
        want = bart(input_ids=ids, decoder_input_ids=dec).logits
        got = no_copy.logits(ids, dec)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- running the stages
@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    corpus = wiki_slice(root / "wiki.txt", 400)
    tokenizer = train_tokenizer(corpus, 1000, root / "tok")
    model = named_model_config(
        "palm-tiny",
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=256,
    )
    config = PretrainConfig(
        model=model,
        data=PalmDataConfig(fragment_length=256, max_valid_documents=2),
        train=TrainConfig(
            max_steps=2, batch_size=4, eval_every=0, eval_batches=1, progress=False, lr=1e-3, warmup_steps=0
        ),
    )
    pairs = root / "pairs.jsonl"
    pairs.write_text(
        "".join(
            json.dumps({"source": f"the city number {i} is large .", "target": f"city {i}"}) + "\n" for i in range(8)
        ),
        encoding="utf-8",
    )
    return dict(
        root=root,
        corpus=CorpusSpec((corpus,), cache_dir=root / "cache"),
        tokenizer=tokenizer,
        config=config,
        pairs=pairs,
    )


def run_variant(setting, name):
    out = setting["root"] / name
    final = pretrain_variant(name, setting["corpus"], out, setting["config"], tokenizer=setting["tokenizer"])
    runs = {p.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("*/run.json"))}
    return final, runs


def finetune_recipe() -> FinetuneConfig:
    return FinetuneConfig(
        task="seq2seq",
        max_source_tokens=24,
        max_target_tokens=8,
        train=TrainConfig(max_steps=2, batch_size=4, eval_every=0, progress=False, select_metric=None, warmup_steps=0),
    )


def test_full_palm_runs_stage_1_then_stage_2_from_it(setting):
    final, runs = run_variant(setting, "palm")
    assert list(runs) == ["1-palm-mlm", "2-palm-generation"] and final.name == "2-palm-generation"
    assert runs["1-palm-mlm"]["stage"] == "mlm" and runs["1-palm-mlm"]["init"] is None
    assert runs["2-palm-generation"]["stage"] == "generation"
    assert runs["2-palm-generation"]["init"] == str(setting["root"] / "palm" / "1-palm-mlm")


def test_no_autoencoding_is_stage_2_from_scratch(setting):
    final, runs = run_variant(setting, "palm-noae")
    assert list(runs) == ["1-palm-generation"] and runs["1-palm-generation"]["init"] is None
    assert load_model_dir(final)[0].pointer is not None


def test_no_autoregression_fine_tunes_from_stage_1_with_an_untrained_decoder(setting):
    final, runs = run_variant(setting, "palm-noar")
    assert list(runs) == ["1-palm-mlm"]
    stage1, tokenizer = load_model_dir(final)
    # the decoder is as initialised: the model pretrain built from the same seed
    torch.manual_seed(setting["config"].train.seed)
    fresh = build_model(model_config_for_tokenizer(setting["config"].model, setting["tokenizer"]))
    trained, untouched = stage1.state_dict(), fresh.state_dict()
    assert all(torch.equal(trained[k], untouched[k]) for k in trained if k.startswith("decoder."))
    assert not all(torch.equal(trained[k], untouched[k]) for k in trained if k.startswith("encoder."))
    result = finetune(setting["pairs"], None, setting["root"] / "noar-ft", finetune_recipe(), init=final)
    assert result.step == 2 and all(map(math.isfinite, result.final_metrics.values()))
    assert json.loads((setting["root"] / "noar-ft" / "run.json").read_text())["init"] == str(final)


def test_no_pre_training_runs_nothing_and_fine_tunes_from_scratch(setting):
    out = setting["root"] / "none"
    assert pretrain_variant("none", setting["corpus"], out, setting["config"], tokenizer=setting["tokenizer"]) is None
    assert not out.exists()
    result = finetune(
        setting["pairs"],
        None,
        setting["root"] / "none-ft",
        finetune_recipe(),
        scratch=ScratchModel(setting["config"].model, setting["tokenizer"]),
    )
    assert result.step == 2


def test_unknown_variant_or_family_is_a_one_line_error(setting):
    with pytest.raises(CtxlmError, match="unknown pre-training variant 'palm-nope'"):
        pretrain_variant(
            "palm-nope", setting["corpus"], setting["root"] / "x", setting["config"], tokenizer=setting["tokenizer"]
        )
    with pytest.raises(CtxlmError, match="needs a glm model config"):
        pretrain_variant(
            "glm", setting["corpus"], setting["root"] / "x", setting["config"], tokenizer=setting["tokenizer"]
        )
