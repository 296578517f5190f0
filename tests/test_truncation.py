"""Fine-tuning layouts never end a cut target with the end token, and cuts are counted (issue 8)."""

import warnings

import numpy as np
import pytest

from ctxlm.config import FinetuneConfig
from ctxlm.config_loading import named_model_config
from ctxlm.layouts import pair_example
from ctxlm.objectives.masking import IGNORE_INDEX
from ctxlm.checkpoint import build_model
from ctxlm.tasks.seq2seq import PairExamples, pair_examples, report_truncation, truncation_counts
from ctxlm.data.tasks import Pair
from ctxlm.training import collate

END = {"palm": "eos_token_id", "glm": "eop_token_id", "unilm": "eos_token_id"}


def labelled(example) -> list[int]:
    labels = np.asarray(example["labels"])
    return labels[labels != IGNORE_INDEX].tolist()


@pytest.mark.parametrize("family", ["palm", "glm", "unilm"])
def test_a_cut_target_keeps_max_target_tokens_and_no_end_token(family):
    cfg = named_model_config(f"{family}-tiny", vocab_size=500)
    end = getattr(cfg, END[family])
    target = list(range(200, 210))
    assert labelled(pair_example(cfg, [100, 101], target, 16, 11)) == target + [end]  # fits exactly
    assert labelled(pair_example(cfg, [100, 101], target, 16, 10)) == target  # one too long: cut, no end
    assert labelled(pair_example(cfg, [100, 101], target, 16, 4)) == target[:4]


def test_palm_decoder_input_is_the_labels_shifted_right_when_cut():
    cfg = named_model_config("palm-tiny", vocab_size=500)
    example = pair_example(cfg, [100], list(range(200, 210)), 16, 4)
    assert example["decoder_input_ids"].tolist() == [cfg.decoder_start_token_id, 200, 201, 202]
    assert example["labels"].tolist() == [200, 201, 202, 203]


def test_truncation_counts_and_one_warning_line():
    cfg = named_model_config("palm-tiny", vocab_size=500)
    sources = [[1] * 3, [1] * 4, [1] * 9]  # budget 6 − 2 = 4 source tokens: the last is cut
    targets = [[2] * 2, [2] * 3, [2] * 5]  # max_target 3: targets of 3 or more tokens are cut
    counts = truncation_counts(PairExamples(cfg, sources, targets, 6, 3))
    assert counts == {"examples": 3, "sources_cut": 1, "targets_cut": 2}
    recipe = FinetuneConfig(task="summarization", max_source_tokens=6, max_target_tokens=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report_truncation("train", counts, recipe)
        report_truncation("valid", {"examples": 3, "sources_cut": 0, "targets_cut": 0}, recipe)
    assert len(caught) == 1 and "1 of 3 sources" in str(caught[0].message) and "2 targets" in str(caught[0].message)


@pytest.mark.parametrize("family", ["palm", "glm", "unilm"])
def test_training_pairs_fit_the_models_positions(family):
    """Recipe limits that add up to more than the model's 64 positions: GLM and UniLMv2 (source
    and target in one sequence) keep of each source what its target leaves, and of a target at most
    61 positions; PALM's encoder and decoder each keep at most their 64 positions; so every pair runs
    through the model (PALM's 100-token target raised before). Cuts are counted against each pair's
    limits."""
    cfg = named_model_config(f"{family}-tiny", vocab_size=500, max_position_embeddings=64)

    class Words:  # token ids are the words
        pad_id = 0

        def encode_batch(self, texts):
            return [[int(w) for w in text.split()] for text in texts]

    pairs = [
        Pair(" ".join(map(str, range(10, 80))), " ".join(map(str, range(100, 130)))),  # 70 + 30 tokens
        Pair("5 6 7", " ".join(map(str, range(100, 200)))),
    ]  # a target longer than the positions
    recipe = FinetuneConfig(task="summarization", max_source_tokens=96, max_target_tokens=128)
    examples = pair_examples(cfg, Words(), pairs, recipe)
    one_sequence = family != "palm"
    assert examples.limits(0) == ((64 - 31, 61) if one_sequence else (64, 64))
    assert examples.limits(1) == ((3, 61) if one_sequence else (64, 64))
    assert truncation_counts(examples) == {"examples": 2, "sources_cut": 1 + one_sequence, "targets_cut": 1}
    model = build_model(cfg)
    for index in range(2):
        batch = collate([examples.example(index)], 0)
        assert np.isfinite(float(model(**batch).loss.detach()))


@pytest.mark.parametrize("family", ["palm", "glm"])
def test_a_decoded_source_keeps_at_most_the_models_positions(family):
    """A recipe's max_source_tokens beyond the model's positions: decoding keeps what fits."""
    from ctxlm.layouts import decoding_source_budget

    cfg = named_model_config(f"{family}-tiny", vocab_size=500, max_position_embeddings=64)
    assert decoding_source_budget(cfg, 256, 32) == 64 and decoding_source_budget(cfg, 40, 32) == 40
