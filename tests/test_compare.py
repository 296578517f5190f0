"""`ctxlm compare`: matched model sizes, the paired bootstrap, a complete report on a tiny budget,
and resuming a killed comparison without redoing finished cells."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from conftest import wiki_slice
from ctxlm import compare as compare_module
from ctxlm import training
from ctxlm.checkpoint import build_model
from ctxlm.cli import main
from ctxlm.compare import (
    TASK_SCORING,
    Budget,
    ComparisonSpec,
    compare,
    example_nll,
    matched_model_config,
    parameter_count,
    not_learning_note,
    score_predictions,
    target_labels,
    unigram_nll,
)
from ctxlm.config_loading import named_model_config
from ctxlm.errors import CtxlmError
from ctxlm.tasks.seq2seq import read_pairs
from ctxlm.config import load_finetune_config
from ctxlm.config_loading import load_pretrain_config
from ctxlm.metrics import coco_qg, rouge
from ctxlm.predict import Seq2SeqPredictor
from ctxlm.report import corpus_bleu4, corpus_perplexity, git_commit, mean_score, paired_bootstrap

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_MODEL = dict(
    base="palm-tiny",
    d_model=32,
    encoder_layers=1,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    max_position_embeddings=128,
)


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    """A Wikipedia slice and a tokenizer trained on it, a Gigaword slice (48 train, 6 valid pairs),
    a tiny PALM config and a tiny Gigaword recipe (YAML overrides)."""
    root = tmp_path_factory.mktemp("compare")
    corpus = wiki_slice(root / "wiki.txt", 1200)
    from ctxlm.tokenization import train_tokenizer

    train_tokenizer([corpus], 1000, root / "tok")
    for name, n in (("train", 48), ("valid", 6)):
        lines = (data_dir / "summarization/gigaword" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (root / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "model": TINY_MODEL,
                "train": dict(
                    batch_size=4,
                    lr=1e-3,
                    warmup_steps=1,
                    eval_every=0,
                    eval_batches=1,
                    log_every=1,
                    save_every=0,
                    keep_checkpoints=1,
                    progress=False,
                ),
                "data": dict(fragment_length=64, valid_fraction=0.05, max_valid_documents=2),
            }
        )
    )
    (root / "recipe.yaml").write_text(
        yaml.safe_dump(
            {
                "task": "summarization",
                "max_source_tokens": 48,
                "max_target_tokens": 16,
                "max_valid_examples": 6,
                "train": dict(
                    batch_size=8,
                    lr=1e-3,
                    max_steps=3,
                    warmup_steps=1,
                    eval_every=3,
                    eval_batches=1,
                    log_every=1,
                    save_every=0,
                    keep_checkpoints=1,
                    progress=False,
                    early_stopping_patience=0,
                ),
                "decoding": dict(num_beams=1, max_new_tokens=6),
            }
        )
    )
    return root


def run_compare(
    corpus,
    tokenizer,
    recipe,
    train_path,
    valid_path,
    out_dir,
    config,
    train_limit=None,
    eval_path=None,
    eval_limit=None,
    **options,
):
    """`compare` with its files in a `TaskData` and the other options in a `ComparisonSpec`."""
    from ctxlm.tasks import TaskData

    spec = ComparisonSpec(**{k: tuple(v) if k in ("objectives", "lr_grid") else v for k, v in options.items()})
    data = TaskData(train=train_path, valid=valid_path, ref=eval_path, train_limit=train_limit, limit=eval_limit)
    return compare(corpus, tokenizer, recipe, data, out_dir, spec, config=config)


def arguments(root, out, **options):
    return {
        "corpus": [root / "wiki.txt"],
        "tokenizer": root / "tok",
        "recipe": str(root / "recipe.yaml"),
        "train_path": root / "train.jsonl",
        "valid_path": root / "valid.jsonl",
        "out_dir": out,
        "config": str(root / "config.yaml"),
        **options,
    }


# ------------------------------------------------------------------------------------ matched sizes
@pytest.mark.parametrize("family", ["glm", "unilm"])
def test_matched_model_has_palms_parameter_count(family):
    """GLM / UniLMv2 sized to a PALM config: within 2% of its parameters (counted on a real CPU
    build), at the width nearest PALM's (a multiple of its heads) where some depth comes within 2%,
    with the best depth there: found here by brute force over widths and depths."""
    palm = named_model_config("palm-tiny", vocab_size=3000, max_position_embeddings=128)
    target = sum(p.numel() for p in build_model(palm).parameters())
    assert parameter_count(palm) == target
    matched = matched_model_config(family, palm)
    real = sum(p.numel() for p in build_model(matched).parameters())
    assert abs(real - target) / target <= 0.02
    assert matched.num_heads == 4 and matched.ffn_dim == 4 * matched.d_model

    def error(width, depth):
        config = named_model_config(
            f"{family}-tiny",
            vocab_size=3000,
            max_position_embeddings=128,
            d_model=width,
            ffn_dim=4 * width,
            num_layers=depth,
        )
        return abs(parameter_count(config) - target) / target

    for width in sorted(range(128, 512, 4), key=lambda w: (abs(w - 256), w)):
        errors = {depth: error(width, depth) for depth in range(6, 14)}
        best = min(errors, key=errors.get)
        assert 6 < best < 13  # the count grows with depth: an interior minimum is the minimum over all depths
        if errors[best] <= 0.02:
            break
    assert (matched.d_model, matched.num_layers) == (width, best)


# ------------------------------------------------------------------------------------ bootstrap
def test_bootstrap_with_every_resample_is_the_exact_distribution():
    """Given all n^n resamples, the interval and p-value are those of the exact bootstrap
    distribution, computed here by brute force; 1000 random resamples come close to it."""
    rng = np.random.default_rng(3)
    a, b = rng.normal(1.0, 1.0, size=(2, 5)), rng.normal(0.0, 1.0, size=(2, 5))
    every = np.array(list(itertools.product(range(5), repeat=5)))
    exact = paired_bootstrap(a, b, indices=every)
    deltas = sorted(sum(np.mean([a[s][i] - b[s][i] for i in idx]) for s in range(2)) / 2 for idx in every)
    p = min(1.0, 2 * min(sum(d <= 0 for d in deltas), sum(d >= 0 for d in deltas)) / len(deltas))
    assert exact.p_value == pytest.approx(p)
    assert exact.difference == pytest.approx((a - b).mean())
    assert exact.ci_low == pytest.approx(np.quantile(deltas, 0.025))
    assert exact.ci_high == pytest.approx(np.quantile(deltas, 0.975))
    sampled = paired_bootstrap(a, b, resamples=1000, seed=1)
    assert sampled.resamples == 1000 and abs(sampled.p_value - exact.p_value) < 0.05


def test_bootstrap_interval_matches_scipy_and_identical_systems_give_p_one():
    rng = np.random.default_rng(0)
    a = rng.normal(0.3, 1.0, size=60)
    b = a - rng.normal(0.3, 0.5, size=60)
    ours = paired_bootstrap(a[None], b[None], resamples=4000, seed=0)
    reference = scipy_stats.bootstrap(
        (a, b), lambda x, y: np.mean(x - y), paired=True, n_resamples=4000, method="percentile", random_state=0
    ).confidence_interval
    assert ours.ci_low == pytest.approx(reference.low, abs=0.03)
    assert ours.ci_high == pytest.approx(reference.high, abs=0.03)
    assert paired_bootstrap(a[None], a[None], resamples=50).p_value == 1.0
    # a difference at floating-point noise is a tie, not p = 0
    assert paired_bootstrap(a[None] * 1e-15, a[None] * 0, resamples=50).p_value == 1.0


def test_perplexity_statistic_pools_tokens():
    nll_tokens = np.array([[2.0, 1.0], [6.0, 3.0]])  # per-token NLL 2 on both: perplexity e^2
    assert corpus_perplexity(nll_tokens) == pytest.approx(np.exp(8 / 4))
    assert mean_score(np.array([[1.0], [3.0]])) == 2.0
    with pytest.raises(CtxlmError, match="one shape"):
        paired_bootstrap(np.zeros((1, 3)), np.zeros((1, 4)))


def test_per_example_scores_average_to_the_reported_metrics(data_dir):
    """The bootstrap's per-example statistics give the table's values: ROUGE-L (summarization) as
    `metrics.rouge`, BLEU-4 from n-gram counts (qg) as `metrics.coco_qg` (pycocoevalcap); the
    baselines are the documented rules."""
    giga = read_pairs("summarization", data_dir / "summarization/gigaword/valid.jsonl", limit=20)
    scoring = TASK_SCORING["summarization"]
    predictions = [scoring.baseline(p.source) for p in giga]
    assert predictions[0] == " ".join(giga[0].source.split()[:8])
    metrics, stats = score_predictions(scoring, predictions, giga)
    assert np.mean(stats) == pytest.approx(rouge(predictions, [p.target for p in giga])["rougeL"])
    assert metrics["rougeL"] == pytest.approx(np.mean(stats))
    qg = read_pairs("qg", data_dir / "qg/squad_du2017/valid.jsonl", limit=20)
    predictions = [TASK_SCORING["qg"].baseline(p.source) for p in qg]
    assert predictions[0] == " ".join(qg[0].source.split()[:12]) + " ?"
    references = [[p.target] for p in qg]
    stats = np.array(TASK_SCORING["qg"].example_stats(predictions, references))
    reference = coco_qg(predictions, [p.target for p in qg], meteor=False)
    assert corpus_bleu4(stats) == pytest.approx(reference["bleu4"], rel=1e-9)
    assert 0 < reference["bleu4"] < 100
    written = [p.replace(" ?", "?").replace(" 's", "'s") for p in predictions]  # as a model writes them
    stats = np.array(TASK_SCORING["qg"].example_stats(written, references))
    assert corpus_bleu4(stats) == pytest.approx(coco_qg(written, [p.target for p in qg], meteor=False)["bleu4"])


def test_git_commit_is_the_checked_out_commit():
    root = Path(__file__).resolve().parents[1]
    try:
        expected = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert git_commit() == expected.stdout.strip()


# ------------------------------------------------------------------------------------ the comparison
def test_compare_writes_a_complete_report(setup, tmp_path):
    """palm and none × 2 seeds on a minutes budget, through the CLI: every cell, the three plots, the
    table with each objective and the lead-8 baseline (its ROUGE computed here independently)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "cmp"
    argv = [
        "compare",
        "--corpus",
        str(setup / "wiki.txt"),
        "--tokenizer",
        str(setup / "tok"),
        "--task",
        str(setup / "recipe.yaml"),
        "--train",
        str(setup / "train.jsonl"),
        "--valid",
        str(setup / "valid.jsonl"),
        "--config",
        str(setup / "config.yaml"),
        "--objectives",
        "palm,none",
        "--budget-minutes",
        "0.01",
        "--seeds",
        "2",
        "--resamples",
        "200",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    for cell in ("palm-seed0", "palm-seed1", "none-seed0", "none-seed1"):
        result = json.loads((out / "cells" / cell / "result.json").read_text())
        assert set(result["metrics"]) == {"rouge1", "rouge2", "rougeL"} and len(result["example_stats"]) == 6
        assert np.mean(result["example_stats"]) == pytest.approx(result["metrics"]["rougeL"])
    palm = json.loads((out / "cells/palm-seed0/result.json").read_text())
    assert [s["stage"] for s in palm["stages"]] == ["1-palm-mlm", "2-palm-generation"]
    assert palm["tokens_seen"] > 0 and palm["parameters"] == parameter_count(
        compare_module.family_configs(
            ["palm"],
            compare_module.load_pretrain_config(str(setup / "config.yaml")),
            compare_module.TextTokenizer.load(setup / "tok"),
        )["palm"].model
    )
    steps = [s["max_steps"] for s in json.loads((out / "budget/palm.json").read_text())["stages"]]
    assert [s["steps"] for s in palm["stages"]] == steps
    for name in ("scores.png", "pretrain_loss.png", "finetune_loss.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = json.loads((out / "table.json").read_text())
    assert [row["objective"] for row in table] == ["palm", "none", "baseline: lead-8 words"]
    assert table[1]["bootstrap"]["resamples"] == 200
    pairs = read_pairs("summarization", setup / "valid.jsonl")
    lead = rouge([" ".join(p.source.split()[:8]) for p in pairs], [p.target for p in pairs])
    assert table[2]["metrics"]["rougeL"][0] == pytest.approx(lead["rougeL"])
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for text in (
        "| palm |",
        "| none |",
        "baseline: lead-8 words",
        "--budget-minutes 0.01",
        "torch",
        "pretrain_loss.png",
    ):
        assert text in markdown
    assert page.count("data:image/png;base64,") == 3 and "baseline: lead-8 words" in page


def test_cells_that_did_not_learn_make_claims_not_testable():
    """A cell below the task's trivial baseline, or with a run at the unigram level, did not learn: the
    cells table says why, the results table's Δ against it reads "not testable at this scale", and so
    does a claim's verdict; cells that learned keep the bootstrap's verdict."""
    from ctxlm.report import BootstrapResult, _cell_rows, _table_rows, claim_verdict, did_not_learn

    baseline = {"name": "lead-8 words", "metrics": {"rougeL": 28.0}}  # as compare's baseline (tables: [28.0])
    cell = {
        "objective": "unilm",
        "seed": 0,
        "parameters": 10,
        "stages": [{"steps": 5, "dir": "p/unilm-seed0/1-unilm"}],
        "tokens_seen": 50,
        "pretrain_seconds": 1.0,
        "finetune_steps": 3,
        "finetune_seconds": 1.0,
        "score_seconds": 1.0,
        "metrics": {"rougeL": 30.0},
    }
    stuck = {**cell, "not_learning": {"1-unilm": {"step": 4}, "finetune": {}}}
    below = {**cell, "metrics": {"rougeL": 28.0}}
    assert did_not_learn(cell, baseline, "rougeL") is None
    assert did_not_learn(below, {**baseline, "metrics": {"rougeL": [28.0]}}, "rougeL") is not None
    assert did_not_learn(below, baseline, "rougeL") == "rougeL 28.00 does not beat lead-8 words's 28.00"
    lower = {**cell, "metrics": {"rougeL": 27.0}}  # lower is better (perplexity): 27 beats 28, 30 does not
    assert did_not_learn(lower, baseline, "rougeL", higher_is_better=False) is None
    assert did_not_learn(cell, baseline, "rougeL", higher_is_better=False) is not None
    assert did_not_learn(stuck, None, "rougeL") == "1-unilm, finetune at the unigram level"
    # PALM's stage 1 at the unigram level, left by stage 2: the scored model learned; the table notes it
    two_stages = {
        **cell,
        "objective": "palm",
        "not_learning": {"1-palm-mlm": {"step": 4}},
        "stages": [
            {"steps": 5, "dir": "p/palm-seed0/1-palm-mlm"},
            {"steps": 5, "dir": "p/palm-seed0/2-palm-generation"},
        ],
    }
    assert did_not_learn(two_stages, baseline, "rougeL") is None
    assert _cell_rows([two_stages], "rougeL", baseline)[0][-1] == "yes (1-palm-mlm at the unigram level)"
    assert not_learning_note(two_stages) == "; at the unigram level, then left by a later stage: 1-palm-mlm"
    last_stuck = {**two_stages, "not_learning": {"2-palm-generation": {"step": 5}}}
    assert did_not_learn(last_stuck, baseline, "rougeL") == "2-palm-generation at the unigram level"
    assert _cell_rows([{**cell, "finetune_best_step": 2}], "rougeL")[0][6] == "3 (best 2)"
    rows = _cell_rows([cell, stuck, below], "rougeL", baseline)
    assert rows[0][6] == "3"
    assert [r[-1] for r in rows] == [
        "yes",
        "no: 1-unilm, finetune at the unigram level",
        "no: rougeL 28.00 does not beat lead-8 words's 28.00",
    ]
    test = BootstrapResult(difference=1.5, ci_low=0.5, ci_high=2.5, p_value=0.01, resamples=100)
    assert claim_verdict(test, True) == "supports" and claim_verdict(test, False) == "contradicts"
    assert claim_verdict(test, True, ["palm seed 0: below"]) == "not testable at this scale (palm seed 0: below)"
    # issue 33: an interval spanning 0, or an adjusted p of 0.05 or more, is no detectable difference
    assert claim_verdict(dataclasses.replace(test, p_value=0.2), True) == "no detectable difference"
    assert claim_verdict(test, True, adjusted_p=0.08) == "no detectable difference"
    assert claim_verdict(dataclasses.replace(test, ci_low=-0.1), True) == "no detectable difference"
    table = [
        {
            "objective": "palm",
            "parameters": 10,
            "tokens_seen": [1],
            "metrics": {"rougeL": [30.0]},
            "bootstrap": None,
            "did_not_learn": {},
        },
        {
            "objective": "mass",
            "parameters": 10,
            "tokens_seen": [1],
            "metrics": {"rougeL": [29.0]},
            "bootstrap": dataclasses.asdict(test),
            "did_not_learn": {},
        },
        {
            "objective": "glm",
            "parameters": 10,
            "tokens_seen": [1],
            "metrics": {"rougeL": [9.0]},
            "bootstrap": dataclasses.asdict(test),
            "did_not_learn": {0: "below"},
        },
    ]
    shown = _table_rows(table, ["rougeL"], "rougeL")
    assert shown[1][-2:] == ["+1.50 [+0.50, +2.50]", "0.010"]
    assert shown[2][-2:] == ["not testable at this scale", "—"]


def test_train_sizes_share_the_pre_training_and_report_palm_against_none(setup, tmp_path, capsys):
    """`--train-limit 16,all` through the CLI: one comparison per size in train-<size>/, pre-training
    each cell once (the shared pretrain/), fine-tuning on the first 16 and on all 48 pairs; then
    train_sizes.md with each variant's ROUGE-L at each size (as in the sizes' own tables), the baseline,
    and PALM vs none at each size, and the plot embedded in train_sizes.html."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "sizes"
    argv = [
        "compare",
        "--corpus",
        str(setup / "wiki.txt"),
        "--tokenizer",
        str(setup / "tok"),
        "--task",
        str(setup / "recipe.yaml"),
        "--train",
        str(setup / "train.jsonl"),
        "--valid",
        str(setup / "valid.jsonl"),
        "--config",
        str(setup / "config.yaml"),
        "--objectives",
        "palm,none",
        "--budget-tokens",
        "2000",
        "--seeds",
        "1",
        "--resamples",
        "100",
        "--train-limit",
        "16,all",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    assert "train_sizes.md" in capsys.readouterr().out
    shared = {p.name for p in (out / "pretrain").iterdir() if p.is_dir()}
    assert "palm-seed0" in shared and not any(name.startswith("none") for name in shared)
    assert not list(out.glob("train-*/cells/palm-seed0/pretrain"))  # no second pre-training
    for size, pairs in (("16", 16), ("all", 48)):
        settings = json.loads((out / f"train-{size}" / "settings.json").read_text())
        assert settings["train_limit"] == (None if size == "all" else pairs)
    markdown = (out / "train_sizes.md").read_text()
    assert "| variant | 16 pairs | 48 pairs |" in markdown
    for size in ("16", "all"):
        table = json.loads((out / f"train-{size}" / "table.json").read_text())
        for row in table[:2]:
            assert f"| {row['objective']} |" in markdown and f"{row['metrics']['rougeL'][0]:.2f}" in markdown
    assert "baseline: lead-8 words" in markdown and "palm vs none" in markdown
    assert (out / "train_sizes.html").read_text().count("data:image/png;base64,") == 1


def test_a_killed_comparison_resumes_without_redoing_finished_cells(setup, tmp_path, monkeypatch):
    """Killed while fine-tuning the second cell: the rerun fine-tunes only that cell (its finished
    pre-training kept) and leaves the first cell's result untouched. Each stage's recorded tokens
    are those its training loop was fed."""
    calls = {"pretrain": [], "finetune": []}
    real_pretrain, real_finetune = compare_module.pretrain, compare_module.finetune
    real_batch = training.BatchStream.batch
    fed, training_in = {}, [None]  # stage folder → tokens its training loop was given

    def counting_batch(self, micro_batch, pad_id):
        epoch, batch = real_batch(self, micro_batch, pad_id)
        if training_in[0] is not None:
            fed[training_in[0]] += sum(
                int(batch[k].ne(pad_id).sum()) for k in ("input_ids", "decoder_input_ids") if k in batch
            )
        return epoch, batch

    def counting_pretrain(corpus, out_dir, *args, **kwargs):
        calls["pretrain"].append(str(out_dir))
        fed[str(out_dir)], training_in[0] = 0, str(out_dir)
        try:
            return real_pretrain(corpus, out_dir, *args, **kwargs)
        finally:
            training_in[0] = None

    def counting_finetune(train, valid, out_dir, *args, **kwargs):
        calls["finetune"].append(str(out_dir))
        if kill_at_call == len(calls["finetune"]):
            raise KeyboardInterrupt  # killed
        return real_finetune(train, valid, out_dir, *args, **kwargs)

    monkeypatch.setattr(compare_module, "pretrain", counting_pretrain)
    monkeypatch.setattr(compare_module, "finetune", counting_finetune)
    monkeypatch.setattr(training.BatchStream, "batch", counting_batch)
    kill_at_call = 2
    out = tmp_path / "cmp"
    options = arguments(
        setup, out, objectives=["palm", "mass"], budget=Budget(tokens=1500), seeds=1, plots=False, resamples=50
    )
    with pytest.raises(KeyboardInterrupt):
        run_compare(**options)
    first = out / "cells/palm-seed0/result.json"
    written = first.stat().st_mtime_ns
    assert len(fed) == 3 and not (out / "cells/mass-seed0/result.json").exists()
    palm_stages = json.loads(first.read_text())["stages"]
    assert all(s["tokens"] >= 750 for s in palm_stages)  # each of the 2 stages: half the budget
    for stage in palm_stages:  # the recorded tokens are those the loop was fed
        assert stage["tokens"] == fed[str(out / "cells/palm-seed0/pretrain" / stage["stage"])]

    calls["pretrain"].clear()
    calls["finetune"].clear()
    kill_at_call = None
    table = run_compare(**options)
    assert calls["pretrain"] == []  # mass's stage had finished: kept
    assert calls["finetune"] == [str(out / "cells/mass-seed0/finetune")]
    assert first.stat().st_mtime_ns == written
    assert (out / "cells/mass-seed0/result.json").is_file()
    assert [row["objective"] for row in table] == ["palm", "mass", "baseline: lead-8 words"]
    assert "Loss curves" not in (out / "report.md").read_text()
    # dialog's per-example (NLL, tokens) pool to `Seq2SeqPredictor.perplexity`
    recipe = load_finetune_config(str(setup / "recipe.yaml"))
    pairs = read_pairs("summarization", setup / "valid.jsonl")
    predictor = Seq2SeqPredictor.load(out / "cells/mass-seed0/finetune", max_source_tokens=recipe.max_source_tokens)
    assert corpus_perplexity(np.array(example_nll(predictor, pairs, recipe))) == pytest.approx(
        predictor.perplexity(
            [p.source for p in pairs], [p.target for p in pairs], max_target_tokens=recipe.max_target_tokens
        ),
        rel=1e-5,
    )
    # dialog's trivial baseline scores the same target tokens as the model
    labels = target_labels(predictor.model.config, predictor.tokenizer, pairs, recipe)
    assert [len(ids) for ids in labels] == [tokens for _, tokens in example_nll(predictor, pairs, recipe)]
    with pytest.raises(CtxlmError, match="another 'budget'"):
        run_compare(**{**options, "budget": Budget(tokens=999)})


def test_unigram_baseline_against_brute_force():
    """Add-one unigram NLL of each evaluation target, counted by hand."""
    train, evaluation, vocab = [np.array([1, 1, 2]), np.array([2, 3])], [np.array([1, 4]), np.array([3])], 5
    counts = {0: 0, 1: 2, 2: 2, 3: 1, 4: 0}
    total = sum(counts.values()) + vocab
    expected = [
        [-math.log((counts[1] + 1) / total) - math.log((counts[4] + 1) / total), 2.0],
        [-math.log((counts[3] + 1) / total), 1.0],
    ]
    assert np.allclose(unigram_nll(train, evaluation, vocab), expected)


def test_budget_needs_exactly_one_of_minutes_tokens_and_flops():
    with pytest.raises(CtxlmError, match="one pre-training budget"):
        Budget()
    with pytest.raises(CtxlmError, match="one pre-training budget"):
        Budget(minutes=1, tokens=5)
    with pytest.raises(CtxlmError, match="one pre-training budget"):
        Budget(tokens=5, flops=1e12)
    assert Budget(flops="palm:4000000").reference == ("palm", 4_000_000) and Budget(flops=1e12).reference is None
    for bad in ("none:1000", "palm", "palm:", "palm:-5", "nope:10"):
        with pytest.raises(CtxlmError, match="--budget-flops: a number or VARIANT:TOKENS"):
            Budget(flops=bad)
    with pytest.raises(CtxlmError, match="must be > 0"):
        Budget(flops=0.0)


def test_an_interrupted_stage_resumes_from_its_checkpoint(setup, tmp_path, monkeypatch):
    """Killed after stage 2's second checkpoint: the rerun keeps stage 1, resumes stage 2 from its
    checkpoint (the loop's resume) and runs it to its planned steps."""
    config = load_pretrain_config(str(setup / "config.yaml"))
    config.train = dataclasses.replace(config.train, save_every=1)
    real_save, real_pretrain = training.save_training_checkpoint, compare_module.pretrain

    def save_then_die(out_dir, step, *args, **kwargs):
        path = real_save(out_dir, step, *args, **kwargs)
        if Path(out_dir).name == "2-palm-generation" and step == 2:
            raise KeyboardInterrupt
        return path

    runs = []

    def recording_pretrain(corpus, out_dir, *args, **kwargs):
        runs.append((Path(out_dir).name, kwargs["run"].resume))
        return real_pretrain(corpus, out_dir, *args, **kwargs)

    monkeypatch.setattr(training, "save_training_checkpoint", save_then_die)
    monkeypatch.setattr(compare_module, "pretrain", recording_pretrain)
    options = arguments(
        setup,
        tmp_path / "cmp",
        objectives=["palm"],
        budget=Budget(tokens=4000),
        seeds=1,
        plots=False,
        config=config,
        resamples=10,
    )
    with pytest.raises(KeyboardInterrupt):
        run_compare(**options)
    monkeypatch.setattr(training, "save_training_checkpoint", real_save)
    run_compare(**options)
    assert runs == [("1-palm-mlm", False), ("2-palm-generation", False), ("2-palm-generation", True)]
    stage = json.loads((tmp_path / "cmp/cells/palm-seed0/result.json").read_text())["stages"][1]
    assert stage["steps"] > 2
    stage_dir = tmp_path / "cmp/cells/palm-seed0/pretrain/2-palm-generation"
    steps = sorted({json.loads(line)["step"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()})
    assert steps == list(range(1, stage["steps"] + 1))


def test_comparisons_sharing_a_pretrain_dir_pre_train_each_cell_once(setup, tmp_path, monkeypatch):
    """Two comparisons (two --out folders, as for two tasks) on one --pretrain-dir: the second
    fine-tunes from the first's pre-trained stages without pre-training, its loss plot reads them
    there; a third with another budget is refused before it trains anything."""
    calls, real_pretrain = [], compare_module.pretrain

    def recording_pretrain(corpus, out_dir, *args, **kwargs):
        calls.append(Path(out_dir).relative_to(tmp_path).as_posix())
        return real_pretrain(corpus, out_dir, *args, **kwargs)

    monkeypatch.setattr(compare_module, "pretrain", recording_pretrain)
    shared = tmp_path / "pretrain"
    options = dict(objectives=["mass"], budget=Budget(tokens=1000), seeds=1, resamples=10, pretrain_dir=shared)
    run_compare(**arguments(setup, tmp_path / "first", plots=False, **options))
    assert calls == ["pretrain/mass-seed0/1-mass"] and not (tmp_path / "first/cells/mass-seed0/pretrain").exists()
    run_compare(**arguments(setup, tmp_path / "second", **options))
    assert calls == ["pretrain/mass-seed0/1-mass"]
    first, second = (
        json.loads((tmp_path / f"{name}/cells/mass-seed0/result.json").read_text())["stages"]
        for name in ("first", "second")
    )
    assert first == second and Path(first[0]["dir"]) == shared / "mass-seed0/1-mass"
    assert (tmp_path / "second/pretrain_loss.png").is_file()
    with pytest.raises(CtxlmError, match="another 'budget'"):
        run_compare(**arguments(setup, tmp_path / "third", plots=False, **{**options, "budget": Budget(tokens=2000)}))
    assert calls == ["pretrain/mass-seed0/1-mass"] and not (tmp_path / "third").exists()


def test_sigterm_stops_the_comparison_and_the_rerun_resumes_the_stage(setup, tmp_path, monkeypatch):
    """SIGTERM during stage 2 (the loop ends the step and writes a checkpoint): the comparison stops
    there, the stage is not marked finished and no result is written; the rerun resumes the stage
    from its checkpoint and runs it to its planned steps."""
    import signal

    real_batch, real_pretrain, sent, runs = training.BatchStream.batch, compare_module.pretrain, [], []

    def batch_then_signal(self, micro_batch, pad_id):
        if runs and runs[-1][0] == "2-palm-generation" and micro_batch == 2 and not sent:
            sent.append(os.kill(os.getpid(), signal.SIGTERM))
        return real_batch(self, micro_batch, pad_id)

    def recording_pretrain(corpus, out_dir, *args, **kwargs):
        runs.append((Path(out_dir).name, kwargs["run"].resume))
        return real_pretrain(corpus, out_dir, *args, **kwargs)

    monkeypatch.setattr(training.BatchStream, "batch", batch_then_signal)
    monkeypatch.setattr(compare_module, "pretrain", recording_pretrain)
    options = arguments(
        setup, tmp_path / "cmp", objectives=["palm"], budget=Budget(tokens=4000), seeds=1, plots=False, resamples=10
    )
    with pytest.raises(KeyboardInterrupt, match="stopped by a signal"):
        run_compare(**options)
    stage_dir = tmp_path / "cmp/cells/palm-seed0/pretrain/2-palm-generation"
    assert (
        not (stage_dir / compare_module.DONE).exists() and not (tmp_path / "cmp/cells/palm-seed0/result.json").exists()
    )
    run_compare(**options)
    assert runs == [("1-palm-mlm", False), ("2-palm-generation", False), ("2-palm-generation", True)]
    stage = json.loads((tmp_path / "cmp/cells/palm-seed0/result.json").read_text())["stages"][1]
    steps = sorted({json.loads(line)["step"] for line in (stage_dir / "metrics.jsonl").read_text().splitlines()})
    assert stage["steps"] > 3 and steps == list(range(1, stage["steps"] + 1))


def test_dialog_comparison_has_the_unigram_baseline(setup, data_dir, tmp_path):
    """A comparison scored by perplexity gets the training responses' unigram perplexity as its
    baseline row, and a 3-step model that does not beat it did not learn."""
    for name, n in (("train", 48), ("valid", 6)):
        lines = (data_dir / "dialog/cornell" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    recipe = yaml.safe_load((setup / "recipe.yaml").read_text())
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "task": "dialog"}))
    table = run_compare(
        **arguments(
            setup,
            tmp_path / "cmp",
            recipe=str(tmp_path / "recipe.yaml"),
            train_path=tmp_path / "train.jsonl",
            valid_path=tmp_path / "valid.jsonl",
        ),
        budget=Budget(tokens=100),
        objectives=["none"],
        seeds=1,
        plots=False,
        train_limit=48,
    )
    assert [row["objective"] for row in table] == ["none", "baseline: unigram of the training targets"]
    unigram = table[1]["metrics"]["perplexity"][0]
    assert 1 < unigram < 1000  # the tokenizer has 1,000 tokens: add-one smoothing keeps it below that
    assert table[0]["did_not_learn"] == {
        0: f"perplexity {table[0]['metrics']['perplexity'][0]:.2f} does not beat "
        f"unigram of the training targets's {unigram:.2f}"
    }


def test_recipe_lexicon_decodes_as_the_demo(setup, tmp_path):
    """`lexicon: true` in the recipe: each cell decodes with a new WordLexicon of the training pairs,
    as `Seq2SeqPredictor(lexicon=WordLexicon.from_texts(...))` does (and differently from without)."""
    from ctxlm.lexicon import WordLexicon

    recipe = yaml.safe_load((setup / "recipe.yaml").read_text())
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({**recipe, "lexicon": True}))
    out = tmp_path / "cmp"
    run_compare(
        **arguments(setup, out, recipe=str(tmp_path / "recipe.yaml")),
        budget=Budget(tokens=100),
        objectives=["none"],
        seeds=1,
        plots=False,
    )
    written = json.loads((out / "cells/none-seed0/predictions.json").read_text())
    config = load_finetune_config(str(tmp_path / "recipe.yaml"))
    train = read_pairs("summarization", setup / "train.jsonl")
    valid = read_pairs("summarization", setup / "valid.jsonl")
    sources = [p.source for p in valid]
    plain = Seq2SeqPredictor.load(out / "cells/none-seed0/finetune", max_source_tokens=config.max_source_tokens)
    lexicon = WordLexicon.from_texts(plain.tokenizer, [t for p in train for t in (p.source, p.target)])
    with_lexicon = Seq2SeqPredictor.load(
        out / "cells/none-seed0/finetune", max_source_tokens=config.max_source_tokens, lexicon=lexicon
    )
    assert written == with_lexicon.generate(sources, config.decoding, batch_size=32)
    assert written != plain.generate(sources, config.decoding, batch_size=32)


def test_json_written_by_many_processes_at_once_stays_whole(tmp_path):
    """Parallel cells record the same settings.json: with one shared temporary name one process's
    rename took the other's file away (FileNotFoundError); each now writes its own."""
    script = (
        "import sys; from pathlib import Path; from ctxlm.compare import write_json_atomic\n"
        "for i in range(300): write_json_atomic(Path(sys.argv[1]), {'i': i, 'pad': 'x' * 5000})\n"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "settings.json")]) for _ in range(4)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0, 0, 0]
    assert json.loads((tmp_path / "settings.json").read_text())["i"] == 299
    assert [p.name for p in tmp_path.iterdir()] == ["settings.json"]


# ------------------------------------------------------------------------------------ matched FLOPs, equal tuning
def test_flop_budget_buys_each_variant_the_fewest_steps_that_reach_it(setup, tmp_path, monkeypatch):
    """Budget(flops="palm:1500"): F is PALM's two stages' FLOPs on 1,500 tokens (750 a stage), per
    token as measured times the tokens; every variant's stage then trains the fewest steps whose
    tokens × its own FLOPs per token reach its equal share of F (checked on a replay of each stage's
    own data stream); the cell records its FLOPs, tokens and the budget it matched."""
    from ctxlm.compare import step_tokens

    planned, real_plan = [], compare_module.steps_for_tokens

    def recording(examples, train, pad_id, budget):
        steps, tokens = real_plan(examples, train, pad_id, budget)
        planned.append((examples, train, pad_id, budget, steps, tokens))
        return steps, tokens

    monkeypatch.setattr(compare_module, "steps_for_tokens", recording)
    out = tmp_path / "cmp"
    run_compare(
        **arguments(
            setup,
            out,
            objectives=["palm", "mass"],
            budget=Budget(flops="palm:1500"),
            seeds=1,
            plots=False,
            resamples=10,
        )
    )
    record = json.loads((out / "budget/flops.json").read_text())
    per_token = {
        o: [s["flops_per_token"] for s in json.loads((out / f"budget/{o}-flops.json").read_text())["stages"]]
        for o in ("palm", "mass")
    }
    assert record["flops"] == sum(round(f * s["tokens"]) for f, s in zip(per_token["palm"], record["stages"]))
    assert all(750 <= s["tokens"] for s in record["stages"])
    cells = {o: json.loads((out / f"cells/{o}-seed0/result.json").read_text()) for o in ("palm", "mass")}
    for objective, cell in cells.items():
        assert cell["budget_view"] == "flops" and cell["pretrain_flops"] == sum(s["flops"] for s in cell["stages"])
        for stage, rate in zip(cell["stages"], per_token[objective]):
            share = record["flops"] / len(cell["stages"])
            examples, train, pad_id, budget, steps, tokens = next(
                p for p in planned if p[5] == stage["tokens"] and p[3] == math.ceil(share / rate)
            )
            seen = list(itertools.islice(step_tokens(examples, train, pad_id), steps))
            assert (stage["steps"], stage["tokens"]) == (steps, sum(seen))
            assert rate * sum(seen) >= share > rate * sum(seen[:-1])  # reached with the last step, not before
            assert stage["flops"] == round(rate * stage["tokens"])
            assert stage["unigram_level"] < stage["entropy"] and isinstance(stage["curve"], list)
    mass = cells["mass"]["stages"][0]  # its held-out curve: the final validation after all its steps' tokens
    assert mass["curve"][-1][:2] == [mass["steps"], mass["tokens"]] and math.isfinite(mass["curve"][-1][2])
    assert per_token["mass"][0] != per_token["palm"][0]


def test_lr_chosen_once_by_held_out_loss_and_kept_for_every_seed_and_size(setup, tmp_path, monkeypatch):
    """lr_grid: each variant's lr is chosen once (seed 0, the largest size) by the lowest held-out
    loss on the selection file, kept in lr/<objective>.json, and used by every seed and size; seed 0
    at the largest size is that selection run (not fine-tuned again); result.json has the contract's
    keys (issue 33)."""
    from ctxlm.compare import compare_train_sizes
    from ctxlm.tasks import TaskData

    calls, real_finetune = [], compare_module.finetune

    def recording(train, valid, out_dir, recipe, **kwargs):
        calls.append((Path(out_dir).relative_to(tmp_path).as_posix(), recipe.train.lr, kwargs["train_limit"]))
        return real_finetune(train, valid, out_dir, recipe, **kwargs)

    monkeypatch.setattr(compare_module, "finetune", recording)
    spec = ComparisonSpec(
        Budget(tokens=100), objectives=("none",), seeds=2, lr_grid=(1e-5, 3e-3), plots=False, resamples=10
    )
    compare_train_sizes(
        [setup / "wiki.txt"],
        setup / "tok",
        str(setup / "recipe.yaml"),
        TaskData(train=setup / "train.jsonl", valid=setup / "valid.jsonl"),
        tmp_path / "cmp",
        spec,
        train_limits=[24, 40],
        config=str(setup / "config.yaml"),
    )
    choice = json.loads((tmp_path / "cmp/lr/none.json").read_text())
    losses = {}
    for lr in ("1e-05", "0.003"):
        rows = [json.loads(line) for line in (tmp_path / f"cmp/lr/none/lr-{lr}/metrics.jsonl").read_text().splitlines()]
        losses[lr] = min(row["valid/lm_loss"] for row in rows if "valid/lm_loss" in row)
    assert choice["selection_loss"] == pytest.approx(losses) and choice["train_pairs"] == 40
    assert choice["chosen"] == min((1e-5, 3e-3), key=lambda lr: losses[f"{lr:g}"])
    assert sorted(calls) == sorted(
        [
            ("cmp/lr/none/lr-1e-05", 1e-5, 40),
            ("cmp/lr/none/lr-0.003", 3e-3, 40),
            ("cmp/train-40/cells/none-seed1/finetune", choice["chosen"], 40),
            ("cmp/train-24/cells/none-seed0/finetune", choice["chosen"], 24),
            ("cmp/train-24/cells/none-seed1/finetune", choice["chosen"], 24),
        ]
    )
    assert (tmp_path / "cmp/train-40/cells/none-seed0/finetune").resolve() == (
        tmp_path / f"cmp/lr/none/lr-{choice['chosen']:g}"
    ).resolve()
    contract = {
        "train_pairs",
        "budget_view",
        "pretrain_flops",
        "finetune_flops",
        "finetune_tokens",
        "finetune_lr",
        "finetune_step_cap",
        "finetune_stopped_early",
        "finetune_curve",
        "finetune_unigram_level",
    }
    for size, seed in itertools.product((24, 40), (0, 1)):
        cell = json.loads((tmp_path / f"cmp/train-{size}/cells/none-seed{seed}/result.json").read_text())
        assert contract <= set(cell) and cell["train_pairs"] == size and cell["finetune_lr"] == choice["chosen"]
        assert cell["finetune_step_cap"] == 3 and cell["finetune_stopped_early"] is False
        assert cell["finetune_curve"] == [[3, pytest.approx(cell["finetune_curve"][0][1])]]
        assert cell["finetune_tokens"] > 0 and cell["finetune_flops"] > cell["finetune_tokens"]
        assert cell["pretrain_flops"] == 0 and cell["budget_view"] == "tokens"
