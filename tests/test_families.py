"""The family registry: a fourth family registered from outside the package pre-trains through the
CLI, saves, reloads and fine-tunes a seq2seq layout with no edit to ctxlm's own modules."""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from conftest import wiki_slice
from ctxlm import families
from ctxlm.checkpoint import build_model, load_model_dir
from ctxlm.cli import main
from ctxlm.config_loading import named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.layouts import pair_example, prompt_example
from ctxlm.models.losses import batch_loss, label_counts, token_nll
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass
class ToyConfig:
    family: str = "toy"
    vocab_size: int = 100
    d_model: int = 8
    max_position_embeddings: int = 64
    pad_token_id: int = 0
    eos_token_id: int = 3


@dataclass
class ToyDataConfig:
    max_length: int = 32


class ToyModel(nn.Module):
    """A bigram language model: the next token from the current one."""

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.vocab_size)

    def target_counts(self, batch):  # what the loop normalises each objective's summed loss by
        return label_counts(batch, {"lm": "labels"})

    def forward(self, input_ids, labels, label_smoothing: float = 0.0):
        keep = labels != -100
        loss_sum, nll_sum, count = token_nll(self.out(self.embed(input_ids[keep])), labels[keep], label_smoothing)
        sums = {"lm": loss_sum}
        return SimpleNamespace(
            loss=batch_loss(sums, {"lm": count}), loss_sums=sums, metrics={"lm_nll_sum": nll_sum, "lm_tokens": count}
        )


class ToyExamples:
    def __init__(self, store, sentences, length):
        self.store, self.sentences, self.length = store, sentences, length

    def __len__(self):
        return len(self.sentences)

    def example(self, index, epoch=0):
        ids = self.store.sentence(int(self.sentences[index]))[: self.length].astype(np.int64)
        return {"input_ids": ids[:-1], "labels": ids[1:]}


def prepare_toy(store, tokenizer, model_config, data, stage, seed):
    from ctxlm.families import PreparedData

    usable = np.flatnonzero(store.sentence_lengths >= 2)
    return PreparedData(
        ToyExamples(store, usable[10:], data.max_length),
        ToyExamples(store, usable[:10], data.max_length),
        {"objective": "toy-lm"},
    )


def toy_pair(cfg, source, target, max_source, max_target):
    ids = np.concatenate([source[:max_source], target[:max_target]])
    labels = np.full(len(ids), -100)
    labels[len(ids) - len(target[:max_target]) - 1 : -1] = target[:max_target]
    return {"input_ids": ids, "labels": labels}


@pytest.fixture
def toy_family():
    saved = (dict(families.FAMILIES), dict(families.OBJECTIVES), dict(families.HEADS))
    family = families.register(
        families.Family(
            name="toy",
            config=ToyConfig,
            model=ToyModel,
            objectives=(families.Objective("toy-lm", "toy", ToyDataConfig, prepare_toy),),
            pair_example=toy_pair,
            named_configs={"toy-tiny": {"d_model": 8}},
        )
    )
    yield family
    from ctxlm.families import NAMED_CONFIGS

    for store, old in zip((families.FAMILIES, families.OBJECTIVES, families.HEADS), saved):
        store.clear()
        store.update(old)
    NAMED_CONFIGS.pop("toy-tiny")


def test_a_registered_family_pretrains_one_step_through_the_cli(toy_family, data_dir, tmp_path):
    corpus = wiki_slice(tmp_path / "wiki.txt", 400)
    train_tokenizer(corpus, 300, tmp_path / "tok")
    code = main(
        [
            "pretrain",
            "--config",
            "toy-tiny",
            "--corpus",
            str(corpus),
            "--tokenizer",
            str(tmp_path / "tok"),
            "--out",
            str(tmp_path / "run"),
            "--max-steps",
            "1",
            "--batch-size",
            "4",
            "--eval-every",
            "1",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-progress",
        ]
    )
    assert code == 0
    run = json.loads((tmp_path / "run/run.json").read_text())
    assert run["objective"] == "toy-lm" and run["stage"] is None
    assert run["versions"]["torch"] and "git_commit" in run
    model, tokenizer = load_model_dir(tmp_path / "run")
    assert isinstance(model, ToyModel) and model.config.vocab_size == tokenizer.vocab_size
    logged = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert any("valid/lm_loss" in row for row in logged)


def test_registry_lookups_and_their_errors(toy_family):
    cfg = named_model_config("toy-tiny")
    assert isinstance(build_model(cfg), ToyModel)
    example = pair_example(cfg, [5, 6, 7], [8, 9], 10, 10)
    assert example["input_ids"].tolist() == [5, 6, 7, 8, 9] and example["labels"].tolist() == [-100, -100, 8, 9, -100]
    with pytest.raises(CtxlmError, match="no seq2seq layout for model family 'toy'"):
        prompt_example(cfg, [5], 10)
    with pytest.raises(CtxlmError, match="unknown objective 'nope'"):
        families.get_objective("nope")
    with pytest.raises(CtxlmError, match="unknown task head 'nope'"):
        build_model(cfg, {"type": "nope"})
    # the built-in families each own their objective and heads
    assert {o.family for o in families.OBJECTIVES.values()} >= {"palm", "glm", "unilm", "toy"}
    assert families.head_class("glm-cloze").__name__ == "GlmClozeModel"
    assert torch.is_tensor(build_model(named_model_config("glm-tiny", num_layers=1)).word_embeddings.weight)
