"""GLM cloze fine-tuning: single-token scores are the verbalizer's log-probability at [sop], multi-token
scores equal step-by-step decoding, the loss is the cross-entropy over candidates, long passages
are cut around the blank, and a few fine-tuning steps write a loadable model that evaluates."""

import json
import math

import numpy as np
import pytest
import torch

from ctxlm.checkpoint import load_model_dir, save_model_dir
from ctxlm.tasks.cloze import (
    ClozeExamples,
    GlmClozeModel,
    cloze_loss,
    evaluate_cloze,
    finetune_cloze,
    fit_parts,
    predict_cloze,
)
from ctxlm.config import TrainConfig
from ctxlm.config_loading import named_model_config
from ctxlm.data.superglue import TASKS, load_superglue
from ctxlm.models.glm import GlmModel, glm_tokens
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tokenization import train_tokenizer
from ctxlm.run_options import RunOptions
from ctxlm.tasks import TaskData
from ctxlm.training import collate, evaluate

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def nlu(data_dir):
    return data_dir / "nlu"


@pytest.fixture(scope="module")
def tokenizer(nlu, tmp_path_factory):
    """A WordPiece vocabulary of the FewGLUE texts (verbalizer words are whole tokens)."""
    texts = []
    for task in TASKS:
        for split in ("train", "dev32"):
            for e in load_superglue(task, nlu, split):
                texts += [e.text.replace("[MASK]", " ")] + e.candidates
    path = tmp_path_factory.mktemp("cloze_tok") / "corpus.txt"
    path.write_text("\n".join(texts), encoding="utf-8")
    return train_tokenizer(path, 1200)


@pytest.fixture(scope="module")
def model(tokenizer):
    cfg = named_model_config(
        "glm-tiny",
        d_model=32,
        num_layers=2,
        num_heads=2,
        ffn_dim=64,
        max_position_embeddings=256,
        dropout=0.0,
        attention_dropout=0.0,
        init_std=0.2,
    )
    torch.manual_seed(0)
    return GlmModel(model_config_for_tokenizer(cfg, tokenizer)).eval()


@pytest.fixture(scope="module")
def model_dir(model, tokenizer, tmp_path_factory):
    return save_model_dir(tmp_path_factory.mktemp("glm"), model, tokenizer)


def batch_of(examples, indices):
    return collate([examples.example(i) for i in indices], examples.pad)


def inputs(batch):
    return {k: v for k, v in batch.items() if k != "gold"}


@torch.no_grad()
def decoded_score(model, context, answer, tok):
    """Sum of log P(answer token | [CLS] context [eos], [sop], previous answer tokens), decoding one
    token at a time with the KV cache (the reference for candidate scores)."""
    part_a = torch.tensor([[tok.cls, *context, tok.eos]])
    state = model.start_decoding(part_a, max_length=len(answer) + 1)
    total, fed = 0.0, tok.sop
    for token in answer:
        total += float(model.decode_step(state, torch.tensor([fed]))[0, token])
        fed = token
    return total


@torch.no_grad()
def test_single_token_scores_are_verbalizer_log_probs_at_sop(model, tokenizer, nlu):
    rows = load_superglue("CB", nlu, "dev32")[:6]
    examples = ClozeExamples(rows, tokenizer, model.config, 200)
    assert examples.single_token
    head = GlmClozeModel(model).eval()
    batch = batch_of(examples, range(len(rows)))
    assert batch["input_ids"].shape[1] == 1  # one row per example, whatever the number of candidates
    scores = head.candidate_scores(**inputs(batch))
    tok = glm_tokens(model.config)
    verbalizers = [tokenizer.encode(" " + word) for word in ("Yes", "No", "Maybe")]
    assert all(len(ids) == 1 for ids in verbalizers)
    for i in range(len(rows)):
        part_a = torch.tensor([[tok.cls, *examples.contexts[i], tok.eos]])
        state = model.start_decoding(part_a, max_length=2)  # the blank: the pattern's only [MASK]
        log_probs = model.decode_step(state, torch.tensor([tok.sop]))[0]  # what [sop] predicts
        torch.testing.assert_close(scores[i], log_probs[[ids[0] for ids in verbalizers]], atol=1e-5, rtol=1e-5)
    # the one-row path equals scoring each word as a one-token answer in its own row
    multi = ClozeExamples(rows, tokenizer, model.config, 200, single_token=False)
    assert not multi.single_token
    torch.testing.assert_close(torch.tensor(np.stack(predict_cloze(head, multi))), scores, atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("task", ["COPA", "ReCoRD"])
def test_multi_token_scores_equal_step_by_step_decoding(model, tokenizer, nlu, task):
    rows = load_superglue(task, nlu, "dev32")[:4]
    examples = ClozeExamples(rows, tokenizer, model.config, 256)
    assert not examples.single_token
    head = GlmClozeModel(model).eval()
    batch = batch_of(examples, range(len(rows)))  # examples of different lengths and candidate counts
    scores = head.candidate_scores(**inputs(batch))
    tok = glm_tokens(model.config)
    for i, row in enumerate(rows):
        assert torch.isinf(scores[i, len(row.candidates) :]).all()
        for j, candidate in enumerate(row.candidates):
            reference = decoded_score(model, examples.contexts[i], tokenizer.encode(" " + candidate), tok)
            assert float(scores[i, j]) == pytest.approx(reference, abs=2e-4)
    # scoring the closing [eop] too adds its log-probability after the answer
    with_eop = ClozeExamples(rows[:1], tokenizer, model.config, 256, score_eop=True)
    answer = tokenizer.encode(" " + rows[0].candidates[0]) + [tok.eop]
    got = GlmClozeModel(model).candidate_scores(**inputs(batch_of(with_eop, [0])))[0, 0]
    assert float(got) == pytest.approx(decoded_score(model, with_eop.contexts[0], answer, tok), abs=2e-4)


def test_cross_entropy_over_candidates_by_hand():
    inf = float("inf")
    scores = torch.tensor([[1.0, 2.0, -inf], [0.5, -1.0, 3.0], [0.0, 1.0, 2.0]], requires_grad=True)
    gold = torch.tensor([[False, True, False], [True, False, True], [False, False, False]])
    nll, has_gold = cloze_loss(scores, gold)
    expected = [
        -(2.0 - math.log(math.exp(1.0) + math.exp(2.0))),
        -math.log((math.exp(0.5) + math.exp(3.0)) / (math.exp(0.5) + math.exp(-1.0) + math.exp(3.0))),
        0.0,
    ]
    assert nll.tolist() == pytest.approx(expected, abs=1e-6)
    assert has_gold.tolist() == [True, True, False]
    nll.sum().backward()
    assert torch.isfinite(scores.grad).all() and scores.grad[2].abs().sum() == 0


@torch.no_grad()
def test_forward_loss_and_error_metrics_follow_the_scores(model, tokenizer, nlu):
    rows = load_superglue("WSC", nlu, "dev32")[:8]  # some rows have no gold candidate
    examples = ClozeExamples(rows, tokenizer, model.config, 200)
    head = GlmClozeModel(model).eval()
    batch = batch_of(examples, range(len(rows)))
    out = head(**batch)
    scores = head.candidate_scores(**inputs(batch))
    golds = [set(r.gold) for r in rows]
    scored = [i for i, g in enumerate(golds) if g]
    nll = [
        -(torch.logsumexp(scores[i, list(golds[i])], 0) - torch.logsumexp(scores[i, : len(rows[i].candidates)], 0))
        for i in scored
    ]
    assert float(out.metrics["cls_nll_sum"]) == pytest.approx(float(sum(nll)), abs=1e-4)
    assert int(out.metrics["cls_tokens"]) == len(scored) < len(rows)
    assert float(out.loss) == pytest.approx(float(sum(nll)) / len(scored), abs=1e-5)
    wrong = sum(int(scores[i].argmax()) not in golds[i] for i in scored)
    assert float(out.metrics["cls_error_sum"]) == wrong


def test_long_passages_are_cut_from_the_longest_shortenable_part(tokenizer, model, nlu):
    parts = [([1, 2, 3, 4, 5, 6], True), ([7, 8], False), ([9, 10, 11], True), ([4], False)]
    assert fit_parts(parts, 8) == [1, 2, 7, 8, 9, 10, 11, 4]  # 6 -> 3 tokens, then the tie cuts the first
    assert fit_parts(parts, 20) == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 4]
    with pytest.raises(Exception, match="do not fit"):
        fit_parts(parts, 2, "x.jsonl:3")
    rows = load_superglue("BoolQ", nlu, "dev32")
    examples = ClozeExamples(rows, tokenizer, model.config, 96)
    tok = glm_tokens(model.config)
    tail = tokenizer.encode("? Answer: ") + [tok.mask] + tokenizer.encode(".")
    for i, row in enumerate(rows):
        ex = examples.example(i)
        assert ex["input_ids"].shape[1] <= 96 and list(ex["input_ids"][0]).count(tok.mask) == 1
        passage, question = tokenizer.encode(row.parts[0][0]), tokenizer.encode(row.parts[2][0])
        middle = tokenizer.encode(" Question: ") + question + tail  # fixed text and question survive
        context = examples.contexts[i]
        assert context[-len(middle) :] == middle
        kept = context[: -len(middle)]
        assert kept == passage[: len(kept)]  # the passage lost its end, only as much as needed
        assert len(context) == min(96 - 3, len(passage) + len(middle))  # [CLS], [eos], [sop] besides


def test_finetune_writes_a_cloze_model_that_evaluates(model_dir, nlu, tmp_path):
    cfg = TrainConfig(
        max_steps=3, batch_size=4, lr=1e-3, warmup_steps=1, eval_every=2, save_every=0, log_every=1, progress=False
    )
    out = tmp_path / "cb"
    result = finetune_cloze(model_dir, TaskData(dataset="superglue/CB", data_dir=nlu), out, cfg, max_length=160)
    model, tokenizer = load_model_dir(out)
    assert isinstance(model, GlmClozeModel) and tokenizer is not None
    assert model.head_config() == {"type": "glm-cloze", "task": "CB", "max_length": 160, "score_eop": False}
    scores = evaluate_cloze(out, "CB", nlu, "dev32")
    assert 0.0 <= scores["accuracy"] <= 100.0 and 0.0 <= scores["f1"] <= 100.0 and scores["examples"] == 32
    assert result.final_metrics["dev32/accuracy"] == pytest.approx(scores["accuracy"])
    assert json.loads((out / "eval_dev32.json").read_text())["f1"] == pytest.approx(scores["f1"])
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    valid = [m for m in logged if "valid/cls_error" in m]
    assert valid and all(0.0 <= m["valid/cls_error"] <= 1.0 for m in valid)
    assert result.final_metrics["best_step"] in (2, 3)
    # multi-token answers through the training loop; a plain GLM directory evaluates zero-shot
    finetune_cloze(model_dir, TaskData(dataset="COPA", data_dir=nlu), tmp_path / "copa", cfg, max_length=96)
    assert 0.0 <= evaluate_cloze(tmp_path / "copa", "COPA", nlu)["accuracy"] <= 100.0
    zero_shot = evaluate_cloze(model_dir, "superglue/MultiRC", nlu, max_length=256)
    assert {"accuracy", "f1a", "em"} <= set(zero_shot)


def test_finetuning_fits_the_training_questions(model, tokenizer, nlu, tmp_path):
    train_rows = load_superglue("RTE", nlu, "train")[:16]
    examples = ClozeExamples(train_rows, tokenizer, model.config, 96)
    head = GlmClozeModel(GlmModel(model.config), max_length=96)
    head.glm.load_state_dict(model.state_dict())
    before = evaluate(head, examples, 16, tokenizer.pad_id)
    from ctxlm.training import TrainingInputs, train

    train(
        head,
        TrainingInputs(examples, tokenizer.pad_id),
        TrainConfig(
            max_steps=30,
            batch_size=8,
            lr=3e-3,
            warmup_steps=2,
            eval_every=0,
            save_every=0,
            progress=False,
            weight_decay=0.0,
        ),
        tmp_path,
        run=RunOptions(device="cpu"),
    )
    after = evaluate(head, examples, 16, tokenizer.pad_id)
    assert after["cls_loss"] < 0.5 * before["cls_loss"]
    assert after["cls_error"] <= 0.25
