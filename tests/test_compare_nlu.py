"""`ctxlm compare` on the NLU tasks (`ctxlm.compare.compare_nlu`): GLM cloze SuperGLUE and UniLMv2
classification end to end at a tiny size, the per-example statistics against numpy/scipy,
the majority baselines against a brute-force count, and the CLI's one-line errors."""

from __future__ import annotations

import json
import re
import types
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats

from conftest import wiki_slice
from ctxlm.cli import main
from ctxlm.compare import Budget, ClassifyTask, ClozeTask, ComparisonSpec, compare_nlu
from ctxlm.tasks import TaskData
from ctxlm.metrics import pearson
from ctxlm.report import corpus_pearson, did_not_learn, mean_score

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
TINY_FINETUNE = dict(
    batch_size=8,
    lr=1e-3,
    max_steps=4,
    warmup_steps=1,
    eval_every=2,
    eval_batches=4,
    log_every=1,
    save_every=0,
    keep_checkpoints=1,
    progress=False,
)


@pytest.fixture(scope="module")
def setup(data_dir, tmp_path_factory):
    """A Wikipedia slice, a tokenizer trained on it, a tiny PALM config (GLM and UniLMv2 are sized
    to it), a tiny cloze recipe (YAML) and a pre-training folder the classify tests share."""
    root = tmp_path_factory.mktemp("compare_nlu")
    corpus = wiki_slice(root / "wiki.txt", 1200)
    from ctxlm.tokenization import train_tokenizer

    train_tokenizer([corpus], 1000, root / "tok")
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
    (root / "cloze.yaml").write_text(
        yaml.safe_dump({"task": "cloze", "dataset": "superglue/RTE", "train": TINY_FINETUNE})
    )
    return root


def base_argv(root: Path, out: Path, *flags: str) -> list[str]:
    return [
        "compare",
        "--corpus",
        str(root / "wiki.txt"),
        "--tokenizer",
        str(root / "tok"),
        "--config",
        str(root / "config.yaml"),
        "--budget-tokens",
        "3000",
        "--seeds",
        "1",
        "--resamples",
        "100",
        "--out",
        str(out),
        *flags,
    ]


def raw_labels(path: Path) -> list:
    return [json.loads(line)["label"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def brute_majority(labels: list):
    """The most frequent label by counting (ties: any of the tied ones is accepted by the callers)."""
    counts = Counter(labels)
    return {label for label, n in counts.items() if n == max(counts.values())}, max(counts.values())


def accuracy_score(references, predictions) -> float:
    return float(np.mean([p == r for p, r in zip(predictions, references)]))


def f1_score(references, predictions, positive=1) -> float:
    """F1 of one class by counting (0 without a true positive, as scikit-learn's zero_division=0)."""
    pairs = list(zip(predictions, references))
    tp = sum(p == positive == r for p, r in pairs)
    fp = sum(p == positive != r for p, r in pairs)
    fn = sum(r == positive != p for p, r in pairs)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def macro_f1_score(references, predictions) -> float:
    """The mean F1 over the classes in either list (scikit-learn's average="macro")."""
    classes = set(references) | set(predictions)
    return float(np.mean([f1_score(references, predictions, c) for c in classes]))


def read_json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def check_one_class(out: Path, cell: dict) -> None:
    """A cell records `one_class` exactly when its saved predictions are all one class."""
    predictions = read_json(out / "cells" / f"{cell['objective']}-seed{cell['seed']}" / "predictions.json")
    assert ("one_class" in cell) == (len(set(predictions)) == 1)


def check_claim(markdown: str, claim: str, cells: list[dict], baseline: dict) -> None:
    """The claim's row is in the report; its verdict is "not testable at this scale" exactly when a
    side did not learn: its interval against the majority baseline (two-level, issue 33) does not lie
    above 0, or a cell did not learn."""
    from ctxlm.report import untestable_reasons

    row = next(line for line in markdown.splitlines() if line.startswith(f"| {claim}"))
    scoring = types.SimpleNamespace(primary="accuracy", higher_is_better=True, statistic=mean_score)
    names = re.search(r": (\S+) vs (\S+) \|", row).groups()
    stuck = [
        r
        for name in names
        for r in untestable_reasons([c for c in cells if c["objective"] == name], baseline, scoring, 1000)
    ]
    assert ("not testable at this scale" in row) == bool(stuck), row


# ------------------------------------------------------------------------------------ end to end
def test_cloze_compare_writes_the_report_with_baseline_and_shuffling_claim(setup, data_dir, tmp_path, capsys):
    """glm, glm-noshuffle and none (a fresh GLM) on FewGLUE RTE through the CLI with a cloze YAML:
    each cell's metrics are `evaluate_cloze`'s on the first 8 dev32 rows, its per-example rows
    average to its accuracy, the majority row is a brute-force count, and the report has the
    results table, the baseline row and GLM's shuffling claim."""
    from ctxlm.tasks.cloze import evaluate_cloze

    nlu, out = data_dir / "nlu", tmp_path / "cloze"
    assert (
        main(
            base_argv(
                setup,
                out,
                "--task",
                str(setup / "cloze.yaml"),
                "--data-dir",
                str(nlu),
                "--objectives",
                "glm,glm-noshuffle,none",
                "--eval-limit",
                "8",
            )
        )
        == 0
    )
    cells = [read_json(out / "cells" / f"{o}-seed0/result.json") for o in ("glm", "glm-noshuffle", "none")]
    for cell in cells:
        expected = evaluate_cloze(out / "cells" / f"{cell['objective']}-seed0/finetune", None, nlu, limit=8)
        assert cell["metrics"] == pytest.approx({"accuracy": expected["accuracy"]})
        assert len(cell["example_stats"]) == 8
        assert mean_score(np.array(cell["example_stats"])) == pytest.approx(cell["metrics"]["accuracy"])
        assert cell["family"] == "glm" and cell["finetune_best_step"] in (2, 4)
        check_one_class(out, cell)
    assert cells[2]["stages"] == [] and cells[0]["parameters"] == cells[2]["parameters"]

    majority, count = brute_majority(raw_labels(nlu / "superglue/RTE/train.jsonl"))
    label = majority.pop()
    dev = raw_labels(nlu / "superglue/RTE/dev32.jsonl")[:8]
    table = read_json(out / "table.json")
    assert [row["objective"] for row in table] == [
        "glm",
        "glm-noshuffle",
        "none",
        f"baseline: majority class {label} ({count}/32 training rows)",
    ]
    baseline_accuracy = 100 * accuracy_score(dev, [label] * 8)
    assert table[3]["metrics"]["accuracy"] == [pytest.approx(baseline_accuracy)]

    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert "# Pre-training objectives on cloze superglue/RTE" in markdown
    assert "| Δ accuracy vs glm [95% CI] | p |" in markdown and "| glm | 65" in markdown
    assert f"| {table[3]['objective']} |" in markdown
    baseline = {
        "name": table[3]["objective"].removeprefix("baseline: "),
        "metrics": {"accuracy": baseline_accuracy},
        "example_stats": [[100.0 * (y == label)] for y in dev],
    }  # as compare's baseline: one row per example
    check_claim(markdown, "GLM's span shuffling helps", cells[:2], baseline)
    assert "UniLMv2 AE+PAR" not in markdown and "PALM beats" not in markdown  # claims of other tasks
    assert "report.md" in capsys.readouterr().out

    argv = base_argv(
        setup,
        out,
        "--task",
        str(setup / "cloze.yaml"),
        "--data-dir",
        str(nlu),
        "--objectives",
        "glm,glm-noshuffle,none",
        "--eval-limit",
        "8",
    )
    stamp = (out / "cells/glm-seed0/result.json").stat().st_mtime_ns
    assert main(argv) == 0 and (out / "cells/glm-seed0/result.json").stat().st_mtime_ns == stamp  # kept
    assert read_json(out / "table.json")[:3] == table[:3]
    assert main(argv + ["--dataset", "superglue/CB"]) == 2  # another dataset in the same folder
    assert "the comparison there was started with another 'recipe'" in capsys.readouterr().err


def test_classify_compare_tests_unilm_table_6_claims_on_mrpc(setup, data_dir, tmp_path):
    """unilm, unilm-ae and unilm-par on 32 MRPC training rows, scored on 16 dev rows (Python API):
    metrics are `evaluate_classifier`'s (accuracy, F1), the majority row's are counted here on a
    brute-force majority, and both UniLMv2 Table 6 claims have a row."""
    from ctxlm.tasks.classification import evaluate_classifier

    nlu, out = data_dir / "nlu", tmp_path / "mrpc"
    spec = ComparisonSpec(
        Budget(tokens=3000),
        objectives=tuple(["unilm", "unilm-ae", "unilm-par"]),
        seeds=1,
        pretrain_dir=setup / "pretrain",
        resamples=100,
        plots=False,
    )
    table = compare_nlu(
        [setup / "wiki.txt"],
        setup / "tok",
        "classify",
        TaskData(dataset="glue/MRPC", data_dir=nlu, train_limit=32, limit=16),
        out,
        spec,
        train=TINY_FINETUNE,
        config=str(setup / "config.yaml"),
    )
    cells = [read_json(out / "cells" / f"{o}-seed0/result.json") for o in ("unilm", "unilm-ae", "unilm-par")]
    for cell in cells:
        expected = evaluate_classifier(out / "cells" / f"{cell['objective']}-seed0/finetune", None, nlu, limit=16)
        assert cell["metrics"] == pytest.approx(expected) and set(expected) == {"accuracy", "f1"}
        assert mean_score(np.array(cell["example_stats"])) == pytest.approx(cell["metrics"]["accuracy"])
        assert cell["family"] == "unilm" and cell["stages"][0]["stage"] == "1-unilm"
        check_one_class(out, cell)

    task = ClassifyTask("glue/MRPC", nlu, {}, train_limit=32, eval_limit=16)
    majority, count = brute_majority([row.label for row in task.train_rows])  # MRPC's first 32 tie at 16
    labels = [row.label for row in task.rows]
    names = {
        f"baseline: majority class {task.spec.label_names[label]} ({count}/32 training rows)": label
        for label in majority
    }
    label = names[table[-1]["objective"]]
    assert table[-1]["metrics"]["accuracy"] == [pytest.approx(100 * accuracy_score(labels, [label] * 16))]
    assert table[-1]["metrics"]["f1"] == [pytest.approx(100 * f1_score(labels, [label] * 16))]
    markdown = (out / "report.md").read_text(encoding="utf-8")
    baseline = {
        "name": table[-1]["objective"].removeprefix("baseline: "),
        "metrics": {"accuracy": table[-1]["metrics"]["accuracy"][0]},
        "example_stats": [[100.0 * (y == label)] for y in labels],
    }
    for claim, worse in (
        ("UniLMv2 AE+PAR beats AE alone", "unilm-ae"),
        ("UniLMv2 AE+PAR beats PAR alone", "unilm-par"),
    ):
        check_claim(markdown, claim, [cells[0], next(c for c in cells if c["objective"] == worse)], baseline)
    assert "| Δ accuracy vs unilm [95% CI] |" in markdown and "GLM's span shuffling" not in markdown


def test_classify_sts_b_bootstraps_pearson_and_none_is_a_new_unilm(setup, data_dir, tmp_path):
    """STS-B: cells' Pearson and Spearman are `evaluate_classifier`'s; `corpus_pearson` of their
    (prediction, label) rows is the same Pearson; the baseline is the training mean (correlations
    shown as 0); `none` is a new UniLMv2 model fine-tuned without pre-training."""
    from ctxlm.tasks.classification import evaluate_classifier

    nlu, out = data_dir / "nlu", tmp_path / "stsb"
    spec = ComparisonSpec(
        Budget(tokens=3000),
        objectives=tuple(["unilm", "none"]),
        seeds=1,
        pretrain_dir=setup / "pretrain",
        resamples=100,
        plots=False,
    )
    table = compare_nlu(
        [setup / "wiki.txt"],
        setup / "tok",
        "classify",
        TaskData(dataset="glue/STS-B", data_dir=nlu, train_limit=32, limit=16),
        out,
        spec,
        train=TINY_FINETUNE,
        config=str(setup / "config.yaml"),
    )
    for objective in ("unilm", "none"):
        cell = read_json(out / "cells" / f"{objective}-seed0/result.json")
        expected = evaluate_classifier(out / "cells" / f"{objective}-seed0/finetune", None, nlu, limit=16)
        assert cell["metrics"] == pytest.approx(expected, nan_ok=True) and set(expected) == {"pearson", "spearman"}
        assert corpus_pearson(np.array(cell["example_stats"])) == pytest.approx(cell["metrics"]["pearson"], nan_ok=True)
        assert cell["family"] == "unilm"
    none = read_json(out / "cells/none-seed0/result.json")
    assert none["stages"] == [] and not (out / "cells/none-seed0/pretrain").exists()
    scores = [row.label for row in ClassifyTask("glue/STS-B", nlu, {}, train_limit=32).train_rows]
    assert table[-1]["objective"].startswith(f"baseline: training mean {np.mean(scores):.2f}")
    assert table[-1]["metrics"] == {"pearson": [0.0], "spearman": [0.0]}
    assert table[0]["objective"] == "unilm" and table[1]["bootstrap"] is not None


# ------------------------------------------------------------------------------------ statistics
def test_per_example_statistics_give_the_evaluators_values():
    """Accuracy: the mean of per-example 0/100 rows is the counted accuracy × 100. Pearson:
    `corpus_pearson` of (prediction, label) rows is scipy's r × 100 and `ctxlm.metrics.pearson`'s
    (the evaluator), on the full set and on every resample of a batch; NaN for a constant side."""
    rng = np.random.default_rng(0)
    predicted, labels = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    stats = [[100.0 * (p == y)] for p, y in zip(predicted, labels)]
    assert mean_score(np.array(stats)) == pytest.approx(100 * accuracy_score(labels, predicted))

    scores = rng.uniform(0, 5, 300)
    guesses = scores + rng.normal(0, 1.5, 300)
    rows = np.stack([guesses, scores], axis=-1)
    assert corpus_pearson(rows) == pytest.approx(100 * scipy_stats.pearsonr(guesses, scores)[0], rel=1e-12)
    assert corpus_pearson(rows) == pytest.approx(100 * pearson(guesses, scores), rel=1e-12)
    draws = rng.integers(0, 300, size=(5, 300))
    expected = [100 * scipy_stats.pearsonr(guesses[d], scores[d])[0] for d in draws]
    assert corpus_pearson(rows[draws]) == pytest.approx(expected, rel=1e-12)
    assert np.isnan(corpus_pearson(np.stack([np.full(300, 2.5), scores], axis=-1)))


def test_a_cell_predicting_one_class_did_not_learn():
    """Above the majority baseline (the dev split's classes can be the other way round from the
    training split's) but one class for every row: "did not learn"."""
    baseline = {"name": "majority class not_entailment", "metrics": {"accuracy": [34.4]}}
    cell = {"metrics": {"accuracy": 65.6}}
    assert did_not_learn(cell, baseline, "accuracy") is None
    assert did_not_learn({**cell, "one_class": "entailment"}, baseline, "accuracy") == (
        "predicts entailment for every example"
    )


@pytest.mark.parametrize("dataset", ["RTE", "CB", "COPA", "BoolQ"])
def test_cloze_majority_baseline_is_a_brute_force_count(data_dir, dataset):
    """The most frequent label of the training file (COPA: the gold choice), predicted for every dev32
    row, and its accuracy (CB: macro-F1 too), counted here."""
    nlu = data_dir / "nlu"
    task = ClozeTask(f"superglue/{dataset}", nlu, {})
    name, predicted, metrics = task.majority()
    majority, count = brute_majority(raw_labels(nlu / f"superglue/{dataset}/train.jsonl"))
    dev = raw_labels(nlu / f"superglue/{dataset}/dev32.jsonl")
    label = majority.pop()
    assert not majority and name == f"majority class {label} ({count}/32 training rows)"
    chosen = [row.candidate_labels[p] if row.candidate_labels else p for row, p in zip(task.rows, predicted)]
    assert chosen == [label] * len(task.rows)
    assert metrics["accuracy"] == pytest.approx(100 * accuracy_score(dev, [label] * len(dev)))
    if dataset == "CB":
        assert metrics["f1"] == pytest.approx(100 * macro_f1_score(dev, [label] * len(dev)))


def test_classify_majority_baseline_on_rte_is_a_brute_force_count(data_dir):
    nlu = data_dir / "nlu"
    name, predicted, metrics = ClassifyTask("superglue/RTE", nlu, {}).majority()
    train, dev = (raw_labels(nlu / f"superglue/RTE/{split}.jsonl") for split in ("train", "dev32"))
    majority, count = brute_majority(train)
    label = majority.pop()
    assert name == f"majority class {label} ({count}/32 training rows)"
    assert metrics["accuracy"] == pytest.approx(100 * accuracy_score(dev, [label] * len(dev)))


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--task", "cloze", "--dataset", "superglue/RTE", "--objectives", "glm,unilm"],
            "error: --task cloze fine-tunes glm models: 'unilm' is a unilm variant (choose from glm, glm-noshuffle, ",
        ),
        (
            ["--task", "classify", "--dataset", "glue/MRPC", "--objectives", "unilm,palm"],
            "error: --task classify fine-tunes unilm models: 'palm' is a palm variant (choose from unilm, ",
        ),
        (["--task", "cloze", "--objectives", "glm"], "error: --task cloze needs --dataset"),
        (["--task", "classify", "--dataset", "superglue/CB"], "error: unknown dataset 'superglue/CB'"),
        (["--task", "cloze", "--dataset", "superglue/WSC"], "error: compare --task cloze scores superglue/RTE, "),
    ],
)
def test_nlu_errors_are_one_line(setup, data_dir, tmp_path, capsys, flags, message):
    """A variant of another family, a missing --dataset, a dataset the task does not score: one
    `error:` line, exit 2, before any run."""
    out = tmp_path / "out"
    assert main(base_argv(setup, out, "--data-dir", str(data_dir / "nlu"), *flags)) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not (out / "cells").exists()


def test_seq2seq_compare_without_train_file_is_one_line(setup, tmp_path, capsys):
    assert main(base_argv(setup, tmp_path / "out", "--task", "gigaword", "--valid", str(setup / "wiki.txt"))) == 2
    assert capsys.readouterr().err == "error: --task gigaword needs --train\n"
