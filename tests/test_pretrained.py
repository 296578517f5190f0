"""`from_pretrained` / `save_pretrained` on the model classes: a thin layer over model directories."""

from __future__ import annotations

import pytest
import torch

from ctxlm.checkpoint import load_model_dir
from ctxlm.config_loading import named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.models.glm import GlmModel
from ctxlm.models.palm import PalmModel
from ctxlm.models.unilm import UnilmClassifier, UnilmModel
from ctxlm.tasks.cloze import GlmClozeModel
from ctxlm.tokenization import TextTokenizer
from test_convert_hf import bert_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")
SMALL = {
    "palm": dict(
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
    ),
    "glm": dict(d_model=16, num_layers=1, num_heads=2, ffn_dim=32),
    "unilm": dict(d_model=16, num_layers=1, num_heads=2, ffn_dim=32),
}


@pytest.mark.parametrize(
    "cls, build",
    [
        (PalmModel, lambda: PalmModel(named_model_config("palm-tiny", vocab_size=40, **SMALL["palm"]))),
        (GlmModel, lambda: GlmModel(named_model_config("glm-tiny", vocab_size=40, **SMALL["glm"]))),
        (UnilmModel, lambda: UnilmModel(named_model_config("unilm-tiny", vocab_size=40, **SMALL["unilm"]))),
        (
            UnilmClassifier,
            lambda: UnilmClassifier(named_model_config("unilm-tiny", vocab_size=40, **SMALL["unilm"]), 3),
        ),
        (
            GlmClozeModel,
            lambda: GlmClozeModel(named_model_config("glm-tiny", vocab_size=40, **SMALL["glm"]), task="RTE"),
        ),
    ],
)
def test_save_pretrained_then_from_pretrained_gives_the_same_model(tmp_path, cls, build):
    torch.manual_seed(0)
    model = build()
    path = model.save_pretrained(tmp_path / "m", tokenizer=TextTokenizer(bert_tokenizer()))
    loaded = cls.from_pretrained(path)
    assert type(loaded) is cls and not loaded.training and loaded.config == model.config
    ours, theirs = model.state_dict(), loaded.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert load_model_dir(path)[1] is not None  # the tokenizer went along


def test_from_pretrained_errors(tmp_path):
    GlmModel(named_model_config("glm-tiny", vocab_size=40, **SMALL["glm"])).save_pretrained(tmp_path / "glm")
    with pytest.raises(CtxlmError, match="holds a GlmModel, not a PalmModel"):
        PalmModel.from_pretrained(tmp_path / "glm")
    with pytest.raises(CtxlmError, match="hub cannot be reached"):
        PalmModel.from_pretrained("ctxlm-test/no-such-model")
