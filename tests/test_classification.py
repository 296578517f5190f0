"""UniLMv2 NLU fine-tuning (ctxlm.tasks.classification, §3.4): the pair layout and its truncation, GLUE
metrics against hand computations, and short fine-tunes of a tiny random UniLMv2 on MRPC, STS-B and
RTE whose evaluation is re-derived one example at a time."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ctxlm.checkpoint import load_model_dir, save_model_dir
from ctxlm.tasks.classification import (
    PairExamples,
    evaluate_classifier,
    finetune_classifier,
    glue_metrics,
    glue_train_config,
    truncate_pair,
)
from ctxlm.config_loading import named_model_config
from ctxlm.data.glue import DATASETS, Row, read_split
from ctxlm.errors import CtxlmError
from ctxlm.metrics import accuracy, binary_f1, pearson, spearman
from ctxlm.models.palm import PalmModel
from ctxlm.models.unilm import UnilmClassifier, UnilmModel
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tasks import RunOptions, ScratchModel, TaskData
from ctxlm.tokenization import train_tokenizer

pytestmark = pytest.mark.usefixtures("single_thread")

QUICK = dict(max_steps=4, batch_size=16, eval_every=2, log_every=2, progress=False, save_every=0)


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory):
    """A tokenizer trained on the three datasets' first training rows and a tiny random UniLMv2."""
    root = tmp_path_factory.mktemp("classification")
    nlu = data_dir / "nlu"
    texts = [t for name in DATASETS for row in read_split(name, nlu, "train")[:200] for t in row[:2]]
    (root / "corpus.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    tokenizer = train_tokenizer(root / "corpus.txt", 1000, root / "tok")
    config = model_config_for_tokenizer(
        named_model_config(
            "unilm-tiny", d_model=32, num_layers=2, num_heads=2, ffn_dim=64, max_position_embeddings=128
        ),
        tokenizer,
    )
    torch.manual_seed(0)
    save_model_dir(root / "init", UnilmModel(config), tokenizer)
    return {"root": root, "nlu": nlu, "tokenizer": tokenizer, "config": config}


# ------------------------------------------------------------------------------ layout
def test_truncate_pair_is_longest_first():
    a, b = list(range(10)), list(range(100, 104))
    assert truncate_pair(a, b, 12) == (a[:5], b)  # 9 text tokens: only the longer one shrinks
    assert truncate_pair(list(range(5)), b + [104], 10) == ([0, 1, 2, 3], [100, 101, 102])  # ties cut b first
    assert truncate_pair(a, None, 6) == (a[:4], None)
    assert truncate_pair(a[:3], b[:2], 64) == (a[:3], b[:2])
    with pytest.raises(CtxlmError, match="max_length 4 leaves no room"):
        truncate_pair(a, b, 4)


def test_pair_layout(tiny):
    tokenizer, cfg = tiny["tokenizer"], tiny["config"]
    rows = [Row("A man is playing a flute.", "A man plays the flute loudly.", 3.8), Row("Short one.", None, 1.0)]
    a, b = tokenizer.encode(rows[0].text_a), tokenizer.encode(rows[0].text_b)
    examples = PairExamples(cfg, tokenizer, rows, max_length=12, regression=True)
    first = examples.example(0)
    keep_a, keep_b = truncate_pair(a, b, 12)
    assert len(keep_a) + len(keep_b) == 9
    expected = [cfg.bos_token_id, *keep_a, cfg.eos_token_id, *keep_b, cfg.eos_token_id]
    assert first["input_ids"].tolist() == expected
    assert first["token_type_ids"].tolist() == [0] * (len(keep_a) + 2) + [1] * (len(keep_b) + 1)
    assert first["position_ids"].tolist() == list(range(12))
    assert first["attention_mask"].tolist() == [True] * 12
    assert first["labels"].dtype == np.float32 and float(first["labels"]) == pytest.approx(3.8)
    single = examples.example(1)
    assert single["input_ids"].tolist() == [cfg.bos_token_id, *tokenizer.encode("Short one."), cfg.eos_token_id]
    assert set(single["token_type_ids"].tolist()) == {0}
    assert PairExamples(cfg, tokenizer, rows[:1], 64, regression=False).example(0)["labels"].dtype == np.int64


# ------------------------------------------------------------------------------ metrics
def test_classification_metrics_by_hand():
    predictions, labels = [1, 1, 0, 1, 0, 0], [1, 0, 0, 1, 1, 0]
    assert accuracy(predictions, labels) == pytest.approx(4 / 6)
    assert binary_f1(predictions, labels) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # TP 2, FP 1, FN 1
    assert binary_f1([0, 0], [0, 0]) == 0.0
    assert glue_metrics("glue/MRPC", predictions, labels) == pytest.approx({"accuracy": 400 / 6, "f1": 200 / 3})
    assert glue_metrics("superglue/RTE", predictions, labels) == pytest.approx({"accuracy": 400 / 6})
    with pytest.raises(CtxlmError, match="predictions for"):
        accuracy([1, 0], [1])


def test_correlations_by_hand():
    # dx = (-2, -1, 0, 1, 2), dy = (-1, -2, 1, 0, 2): Σdxdy = 8, Σdx² = Σdy² = 10
    assert pearson([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # ties share their mean rank: x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4) → 4.5 / √(4.5 · 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    # without ties: ρ = 1 − 6 Σd² / (n (n² − 1)); Pearson against numpy's corrcoef
    rng = np.random.default_rng(0)
    x, y = rng.permutation(30).astype(float), rng.normal(size=30)
    d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))
    assert spearman(x, y) == pytest.approx(1 - 6 * np.sum(d**2) / (30 * (30**2 - 1)))
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1])
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    assert glue_metrics("glue/STS-B", [1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(
        {"pearson": 80.0, "spearman": 80.0}
    )


def test_table9_defaults():
    cfg = glue_train_config(3668, 408, regression=False)
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.max_steps, cfg.warmup_steps) == (32, 2e-5, 0.01, 1140, 114)
    assert (cfg.eval_every, cfg.eval_batches, cfg.select_metric) == (114, 13, "valid/cls_loss")
    cfg = glue_train_config(5749, 1500, regression=True, overrides={"max_steps": 50, "batch_size": 8})
    assert (cfg.max_steps, cfg.warmup_steps, cfg.batch_size, cfg.select_metric) == (50, 5, 8, "valid/mse")


# ------------------------------------------------------------------------------ end to end
def one_at_a_time(model, tokenizer, rows, max_length):
    """Predictions without batching or padding, from a hand-built `[SOS] A [EOS] B [EOS]`."""
    cfg, out = model.config, []
    with torch.no_grad():
        for row in rows:
            a, b = truncate_pair(tokenizer.encode(row.text_a), tokenizer.encode(row.text_b), max_length)
            ids = [cfg.bos_token_id, *a, cfg.eos_token_id, *b, cfg.eos_token_id]
            types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
            logits = model.eval()(torch.tensor([ids]), token_type_ids=torch.tensor([types])).logits[0]
            out.append(float(logits[0]) if model.num_labels == 1 else int(logits.argmax()))
    return out


def average_ranks(values):
    """1-based ranks, tied values sharing their mean rank (written out, for reference)."""
    values = list(values)
    ordered = sorted(values)
    return [sum(i + 1 for i, v in enumerate(ordered) if v == x) / ordered.count(x) for x in values]


def reference_metrics(name, predictions, labels):
    predictions, labels = np.asarray(predictions, float), np.asarray(labels, float)
    if name == "glue/STS-B":
        rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731  (no ties among float predictions)
        return {
            "pearson": 100 * np.corrcoef(predictions, labels)[0, 1],
            "spearman": 100 * np.corrcoef(rank(predictions), [average_ranks(labels)])[0, 1],
        }
    scores = {"accuracy": 100 * np.mean(predictions == labels)}
    if name == "glue/MRPC":
        tp = np.sum((predictions == 1) & (labels == 1))
        precision, recall = tp / max(1, np.sum(predictions == 1)), tp / np.sum(labels == 1)
        scores["f1"] = 100 * 2 * precision * recall / (precision + recall) if tp else 0.0
    return scores


@pytest.mark.parametrize("name", list(DATASETS))
def test_finetune_then_evaluate(tiny, name):
    spec = DATASETS[name]
    out = tiny["root"] / name.replace("/", "_")
    rows = TaskData(dataset=name, data_dir=tiny["nlu"], train_limit=64, valid_limit=48)
    result = finetune_classifier(tiny["root"] / "init", rows, out, max_length=48, train_overrides=QUICK)
    selected = "valid/mse" if spec.num_labels == 1 else "valid/cls_loss"
    assert result.step == 4 and selected in result.final_metrics and "best_step" in result.final_metrics
    model, tokenizer = load_model_dir(out)
    assert type(model) is UnilmClassifier and model.num_labels == spec.num_labels
    assert json.loads((out / "head.json").read_text())["type"] == "unilm-classifier"
    assert json.loads((out / "classification.json").read_text())["max_length"] == 48

    scores = evaluate_classifier(out, None, tiny["nlu"], "dev", limit=48, batch_size=7)
    assert list(scores) == list(spec.metrics)
    # float32 noise between batchings and thread counts reorders the nearly constant STS-B predictions
    # of 4 steps' training (spread ~1e-4), which moves the rank correlation by up to ~0.1 points
    tolerance = 0.25 if spec.num_labels == 1 else 1e-3
    assert scores == pytest.approx(
        {k[4:]: v for k, v in result.final_metrics.items() if k.startswith("dev/")}, abs=tolerance
    )
    rows = read_split(name, tiny["nlu"], "dev")[:48]
    predictions = one_at_a_time(model, tokenizer, rows, 48)
    assert scores == pytest.approx(reference_metrics(name, predictions, [r.label for r in rows]), abs=tolerance)


def test_stsb_model_refuses_mrpc_and_errors_are_named(tiny, tmp_path):
    nlu, root = tiny["nlu"], tiny["root"]
    rte = TaskData(dataset="superglue/RTE", data_dir=nlu)
    if not (root / "glue_STS-B" / "head.json").exists():
        finetune_classifier(
            root / "init",
            TaskData(dataset="glue/STS-B", data_dir=nlu, train_limit=32, valid_limit=16),
            root / "glue_STS-B",
            train_overrides=QUICK,
        )
    with pytest.raises(CtxlmError, match="a 1-label head, but glue/MRPC has 2"):
        evaluate_classifier(root / "glue_STS-B", "glue/MRPC", nlu)
    with pytest.raises(CtxlmError, match="not a classifier"):
        evaluate_classifier(root / "init", "glue/MRPC", nlu)
    with pytest.raises(CtxlmError, match="no classification.json; give --dataset"):
        evaluate_classifier(root / "init", None, nlu)
    with pytest.raises(CtxlmError, match="--resume given but there is no checkpoint"):
        finetune_classifier(root / "init", rte, tmp_path / "fresh", run=RunOptions(resume=True))
    palm = named_model_config(
        "palm-tiny",
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
    )
    tokenizer = tiny["tokenizer"]
    save_model_dir(tmp_path / "palm", PalmModel(model_config_for_tokenizer(palm, tokenizer)), tokenizer)
    with pytest.raises(CtxlmError, match="a palm model; the NLU heads are UniLMv2's"):
        finetune_classifier(tmp_path / "palm", rte, tmp_path / "out")


def test_from_scratch_baseline_and_learning(tiny, tmp_path):
    """No --init: a new model from a config and a tokenizer; 48 steps with a high learning rate fit
    RTE's 32 training rows (the training loss falls well below ln 2)."""
    nlu = tiny["nlu"]
    config = named_model_config(
        "unilm-tiny",
        d_model=32,
        num_layers=2,
        num_heads=2,
        ffn_dim=64,
        max_position_embeddings=128,
        dropout=0.0,
        attention_dropout=0.0,
    )
    overrides = dict(QUICK, max_steps=48, batch_size=8, lr=3e-3, warmup_steps=3, eval_every=16, log_every=4)
    result = finetune_classifier(
        None,
        TaskData(dataset="superglue/RTE", data_dir=nlu),
        tmp_path / "scratch",
        scratch=ScratchModel(config, tiny["tokenizer"]),
        max_length=64,
        train_overrides=overrides,
    )
    metrics = [json.loads(line) for line in (tmp_path / "scratch" / "metrics.jsonl").read_text().splitlines()]
    train_losses = [m["train/cls_loss"] for m in metrics if "train/cls_loss" in m]
    assert train_losses[-1] < 0.5 * train_losses[0], train_losses
    assert result.final_metrics["best_step"] in (16, 32, 48)


def test_resume_continues_from_the_checkpoint_with_its_head(tiny, tmp_path):
    """--resume rebuilds the head as saved (here with BERT's pooler) and trains on to max_steps."""
    out = tmp_path / "rte"
    rte = TaskData(dataset="superglue/RTE", data_dir=tiny["nlu"])
    first = finetune_classifier(tiny["root"] / "init", rte, out, pooler=True, train_overrides=dict(QUICK, max_steps=2))
    resumed = finetune_classifier(
        None, rte, out, run=RunOptions(resume=True, allow_config_change=True), train_overrides=dict(QUICK, max_steps=4)
    )
    assert (first.step, resumed.step) == (2, 4)
    model, _ = load_model_dir(out)
    assert isinstance(model, UnilmClassifier) and model.pooler is not None
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "step-00000004"
