"""One device story: `resolve_device` and where the predictor puts the model and every batch."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

import ctxlm.predict
from ctxlm.config import GenerationConfig
from ctxlm.families.palm import PalmConfig
from ctxlm.device import for_inference, resolve_device
from ctxlm.errors import CtxlmError
from ctxlm.generation import Generated
from ctxlm.predict import Seq2SeqPredictor
from ctxlm.tokenization import train_tokenizer


def test_resolve_device():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    assert resolve_device("CPU") == torch.device("cpu")
    assert resolve_device(torch.device("meta")) == torch.device("meta")  # a torch.device is taken as is
    for bad in ("tpu", "gpu0", "cuda:x", ""):
        with pytest.raises(CtxlmError, match="expected auto, cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(CtxlmError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_for_inference_casts_floating_weights_only():
    model = nn.Embedding(4, 2)
    model.register_buffer("ids", torch.arange(3))
    model = for_inference(model.train(), "cpu", bf16=True)
    assert not model.training and model.weight.dtype == torch.bfloat16 and model.ids.dtype == torch.int64


class RecordingModel(nn.Module):
    """Stands in for a model: records the device of every tensor the predictor hands it."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.zeros(3))
        self.seen: list[torch.device] = []

    def start_decoding(self, input_ids, attention_mask=None, *, num_beams=1, max_length=128):
        raise AssertionError("generation is stubbed")

    def forward(self, **batch):
        self.seen += [v.device for v in batch.values()]
        return SimpleNamespace(metrics={"lm_nll_sum": torch.tensor(2.0), "lm_tokens": torch.tensor(2)})


def test_predictor_puts_model_and_batches_on_the_requested_device(tmp_path, monkeypatch):
    """With torch.device("meta") standing in for a GPU: the weights and every tensor of every batch
    (scoring and generation) are on it, the bfloat16 option casts the weights."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("the cat sat on the mat .\nthe dog ran .\n" * 20, encoding="utf-8")
    tokenizer = train_tokenizer([corpus], 200, tmp_path / "tok")
    config = PalmConfig(vocab_size=tokenizer.vocab_size, d_model=8, max_position_embeddings=32)
    meta = torch.device("meta")
    predictor = Seq2SeqPredictor(RecordingModel(config), tokenizer, meta, bf16=True)
    assert predictor.model.weight.device == meta and predictor.model.weight.dtype == torch.bfloat16

    assert predictor.perplexity(["the cat sat ."], ["the dog ran ."]) == pytest.approx(2.718281828)
    assert predictor.model.seen and set(predictor.model.seen) == {meta}

    handed = []

    def recording_generate(model, input_ids, mask, cfg, **prompt):
        handed.extend(
            [input_ids.device, mask.device, *(v.device for v in prompt.values() if isinstance(v, torch.Tensor))]
        )
        return Generated(tokens=[[5]] * input_ids.shape[0], scores=[0.0] * input_ids.shape[0])

    monkeypatch.setattr(ctxlm.predict, "generate", recording_generate)
    assert len(predictor.generate(["the cat .", "the dog ran ."], GenerationConfig(num_beams=2))) == 2
    assert handed and set(handed) == {meta}
