"""A run that is not learning says so (`ctxlm.learning_check`): the unigram entropy of the targets
(Grassberger's estimate) against a known distribution and brute force, the check's decision on
made-up validation histories, and a UniLMv2 run at a collapsing setting that warns in the log,
metrics.jsonl and run.json (and `compare` marks it)."""

import json
import math
import warnings
from collections import Counter

import numpy as np
import pytest

from ctxlm.learning_check import (
    CHECK_FROM,
    MIN_STEPS,
    LearningCheck,
    grassberger_entropy,
    margin,
    likely_causes,
    not_learning_in,
    not_learning_reason,
    unigram_entropy,
)
from ctxlm.objectives.masking import IGNORE_INDEX
from ctxlm.run_options import CorpusSpec, RunOptions

pytestmark = pytest.mark.usefixtures("single_thread")


class LabelExamples:
    """Examples with given `ae_labels` / `par_labels` (and an input that is not a target)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def example(self, index, epoch=0):
        ae, par = self.rows[index]
        return {"input_ids": np.arange(7), "ae_labels": np.asarray(ae), "par_labels": np.asarray(par)}


def random_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        ids = rng.zipf(1.5, size=12) % 50
        ids[rng.random(12) < 0.5] = IGNORE_INDEX
        rows.append((ids, rng.integers(0, 50, size=rng.integers(1, 6))))
    return rows


def stream_counts(rows):
    """Each stream's target counts, brute force: the AE labels, then the PAR labels."""
    streams = (
        [int(t) for ae, _ in rows for t in ae if t != IGNORE_INDEX],
        [int(t) for _, par in rows for t in par if t != IGNORE_INDEX],
    )
    return [np.array(list(Counter(s).values())) for s in streams if s]


def expected_entropy(rows):
    """`unigram_entropy` of every row, by hand: each stream's estimate weighted by its size."""
    counts = stream_counts(rows)
    sizes = [c.sum() for c in counts]
    return sum(grassberger_entropy(c) * n for c, n in zip(counts, sizes)) / sum(sizes), sum(sizes)


def zipf(vocab, exponent=1.1):
    p = 1.0 / np.arange(1, vocab + 1) ** exponent
    return p / p.sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grassberger_estimate_is_near_the_true_entropy_where_the_plug_in_is_not(seed):
    """Against a distribution whose entropy is known: 100k draws of a Zipf law over 16k tokens (text's
    shape, compare's vocabulary). The plug-in −Σ p̂ log p̂ the check once used reads 0.1 nats low,
    half the check's margin; the estimate is within 0.04."""
    p = zipf(16_000)
    true = -(p * np.log(p)).sum()
    counts = np.unique(np.random.default_rng(seed).choice(p.size, size=100_000, p=p), return_counts=True)[1]
    q = counts / counts.sum()
    assert true - -(q * np.log(q)).sum() > 0.07
    assert abs(grassberger_entropy(counts) - true) < 0.04
    # many draws of few tokens: the plug-in's value (both near exact)
    assert grassberger_entropy(np.full(50, 10_000)) == pytest.approx(math.log(50), abs=1e-4)
    assert grassberger_entropy([1]) == pytest.approx(np.euler_gamma + math.log(2))  # one draw: −G(1) = γ + log 2


def test_unigram_entropy_per_stream_over_a_sample_of_examples():
    rows = random_rows(40)
    entropy, targets = unigram_entropy(LabelExamples(rows), max_examples=1000)
    expected, n = expected_entropy(rows)
    assert targets == n and entropy == pytest.approx(expected, rel=1e-12)
    # AE and PAR labelling the same tokens: the estimate of one stream (pooled, every token would
    # look seen twice, and the estimate would differ)
    same = [(ae, ae) for ae, _ in rows]
    one = expected_entropy([(ae, []) for ae, _ in rows])[0]
    assert unigram_entropy(LabelExamples(same))[0] == pytest.approx(one, rel=1e-12)
    assert abs(grassberger_entropy(2 * stream_counts(same)[0]) - one) > 0.05
    # a sample: the examples spread evenly over the set, first and last included
    picked = [0, 13, 26, 39]
    assert unigram_entropy(LabelExamples(rows), max_examples=4, min_targets=0)[0] == pytest.approx(
        expected_entropy([rows[i] for i in picked])[0], rel=1e-12
    )
    # too few targets in that sample: as many more examples as give `min_targets` (here all 40)
    assert unigram_entropy(LabelExamples(rows), max_examples=4, min_targets=10**6) == (entropy, targets)


def test_decision_on_loss_histories():
    entropy = 7.0
    level = entropy - margin(entropy)
    assert margin(7.0) == pytest.approx(0.21) and margin(2.0) == pytest.approx(0.1)
    assert not_learning_reason({"lm": 5.2}, entropy) is None  # learnt
    assert not_learning_reason({"lm": level - 1e-6}, entropy) is None
    assert "unigram level" in not_learning_reason({"lm": level + 1e-3}, entropy)
    assert "unigram level" in not_learning_reason({"lm": 8.5}, entropy)  # above it: worse than unigram
    # one objective below the level is learning
    assert not_learning_reason({"ae": 5.0, "par": 7.05}, entropy) is None
    reason = not_learning_reason({"ae": 7.0123, "par": 7.0127}, entropy)
    assert "AE and PAR losses equal" in reason
    assert "AE and PAR" not in not_learning_reason({"ae": 7.01, "par": 7.2}, entropy)
    assert not_learning_reason({"lm": float("nan")}, entropy) is None


def test_causes_name_the_run_length_unless_ae_and_par_collapsed():
    entropy = 7.0
    slow = likely_causes(not_learning_reason({"lm": 6.95}, entropy))
    assert "--max-steps" in slow and "--lr" in slow
    collapsed = likely_causes(not_learning_reason({"ae": 7.0123, "par": 7.0127}, entropy))
    assert "--max-steps" not in collapsed and "β2" in collapsed


def test_check_warns_once_from_its_point_of_the_run(tmp_path):
    rows = random_rows(200)
    entropy = expected_entropy(rows)[0]
    (tmp_path / "run.json").write_text(json.dumps({"train": {}}))
    check = LearningCheck(LabelExamples(rows), max_steps=100, out_dir=tmp_path)
    flat = {"valid/ae_loss": entropy + 0.01, "valid/par_loss": entropy + 0.0105, "valid/ae_ppl": 1.0}
    learnt = {"valid/ae_loss": entropy - 1.0, "valid/par_loss": entropy - 0.9}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may warn before the check fires
        assert check.check(int(CHECK_FROM * 100) - 1, flat) is None  # too early in the run
        assert check.check(50, learnt) is None
        assert LearningCheck(LabelExamples(rows), max_steps=10, out_dir=tmp_path).check(MIN_STEPS - 1, flat) is None
    with pytest.warns(UserWarning, match="step 60: not learning: held-out AE and PAR .*--lr"):
        record = check.check(60, flat)
    assert record["step"] == 60 and record["unigram_entropy"] == pytest.approx(entropy)
    assert json.loads((tmp_path / "run.json").read_text())["not_learning"]["step"] == 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check.check(70, flat) is None  # once


def test_a_slow_start_that_leaves_the_level_is_recorded_as_learning(tmp_path, capsys):
    """Masked-LM losses leave the unigram level late: a run warned at 30% that is below the level
    later says so once, and its record (run.json) gets `left_at_step`: compare no longer counts it."""
    from ctxlm.compare import runs_not_learning
    from ctxlm.learning_check import still_not_learning
    from ctxlm.training import MetricsWriter

    rows = random_rows(200)
    entropy = expected_entropy(rows)[0]
    (tmp_path / "run.json").write_text(json.dumps({"train": {}}))
    check = LearningCheck(LabelExamples(rows), max_steps=200, out_dir=tmp_path)
    writer = MetricsWriter(tmp_path, None, tensorboard=False)
    slow = {"valid/ae_loss": entropy - 0.05, "valid/par_loss": entropy + 0.1}
    learnt = {"valid/ae_loss": entropy - 0.5, "valid/par_loss": entropy - 0.1}
    with pytest.warns(UserWarning, match="step 60: not learning: held-out loss .*--max-steps"):
        check.check(60, slow, writer)
    assert runs_not_learning([tmp_path]) and still_not_learning(check.record)
    assert check.check(80, dict(slow), writer) is None
    assert check.check(100, dict(learnt), writer) is None
    assert "step 100: learning after all" in capsys.readouterr().err
    record = json.loads((tmp_path / "run.json").read_text())["not_learning"]
    assert record["step"] == 60 and record["left_at_step"] == 100 and not still_not_learning(record)
    assert runs_not_learning([tmp_path]) == {}
    rows_written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("note") for r in rows_written if "note" in r] == ["left_unigram_level"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check.check(120, dict(slow), writer) is None  # said once; not warned again
    assert "learning after all" not in capsys.readouterr().err


@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory):
    """A small UniLMv2 pre-trained at a peak lr far too high for it (1e-2, warm-up 10 steps, Adam β2
    0.999): every [M] and [P] gets the unigram distribution."""
    from conftest import wiki_slice

    from ctxlm.tokenization import train_tokenizer

    root = tmp_path_factory.mktemp("collapse")
    corpus = wiki_slice(root / "wiki.txt", 3000)
    train_tokenizer(corpus, 2000, root / "tok")
    return root / "run", pretrain_collapsing(root)


def pretrain_collapsing(root, resume: bool = False) -> list[str]:
    """Pre-train (or resume) the small UniLMv2 of `collapsed_run` in `root/run`; the warnings' texts."""
    from ctxlm.config import PretrainConfig, TrainConfig
    from ctxlm.families.unilm import UnilmDataConfig
    from ctxlm.config_loading import named_model_config
    from ctxlm.pretraining import pretrain
    from ctxlm.tokenization import TextTokenizer

    config = PretrainConfig(
        model=named_model_config(
            "unilm-tiny", d_model=64, num_layers=2, num_heads=2, ffn_dim=256, max_position_embeddings=128
        ),
        train=TrainConfig(**COLLAPSE, batch_size=16, eval_every=20, eval_batches=4, progress=False, save_every=0),
        data=UnilmDataConfig(max_length=64, valid_fraction=0.05),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pretrain(
            CorpusSpec((root / "wiki.txt",), cache_dir=root / "cache"),
            root / "run",
            config,
            objective="unilm",
            tokenizer=TextTokenizer.load(root / "tok"),
            train_given=COLLAPSE,
            run=RunOptions(resume=resume),
        )
    return [str(w.message) for w in caught]


COLLAPSE = dict(max_steps=60, lr=1e-2, warmup_steps=10, adam_beta2=0.999, adam_eps=1e-8)


@pytest.mark.slow
def test_collapsing_run_warns_in_all_three_places(collapsed_run):
    from ctxlm.compare import NOT_LEARNING, not_learning_note, runs_not_learning

    run_dir, messages = collapsed_run
    assert sum("not learning" in m for m in messages) == 1
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    flagged = [row for row in rows if row.get("warning") == "not_learning"]
    assert len(flagged) == 1 and flagged[0]["step"] >= max(CHECK_FROM * COLLAPSE["max_steps"], MIN_STEPS)
    valid = next(row for row in rows if row["step"] == flagged[0]["step"] and "valid/ae_loss" in row)
    assert rows[-1] == valid  # the warning comes before its validation's row (readers take the last row)
    assert valid["valid/ae_loss"] > flagged[0]["unigram_entropy"] - margin(flagged[0]["unigram_entropy"])
    assert valid["valid/unigram_entropy"] == flagged[0]["unigram_entropy"]  # logged beside the losses
    record = json.loads((run_dir / "run.json").read_text())["not_learning"]
    assert record == not_learning_in(run_dir) and record["step"] == flagged[0]["step"]
    assert "--lr" in record["causes"] and "β2" in record["causes"]
    cell = {"not_learning": runs_not_learning([run_dir, run_dir.parent / "absent"])}
    assert list(cell["not_learning"]) == ["run"] and not_learning_note(cell) == f"; {NOT_LEARNING}: run"
    assert not_learning_note({"not_learning": {}}) == ""


@pytest.mark.slow
def test_a_resumed_run_keeps_its_warning(collapsed_run):
    """Resuming (here: the finished run, from its last checkpoint) rewrites run.json; the earlier
    `not_learning` record stays, and the check does not warn a second time."""
    run_dir, _ = collapsed_run
    before = not_learning_in(run_dir)
    assert before is not None
    assert not any("not learning" in message for message in pretrain_collapsing(run_dir.parent, resume=True))
    assert not_learning_in(run_dir) == before
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert sum(row.get("warning") == "not_learning" for row in rows) == 1
