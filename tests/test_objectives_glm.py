"""GLM blank infilling: the paper's worked example, layouts, and sampler statistics over many draws."""

import itertools
import math

import numpy as np
import pytest

from ctxlm.errors import CtxlmError
from ctxlm.objectives.glm import (
    GlmTokens,
    blank_example,
    build_blank_infilling_example,
    build_cloze_candidates,
    build_infilling_prompt,
    build_seq2seq_example,
    choose_multitask_mode,
    document_example,
    glm_attention_allowed,
    multitask_example,
    place_spans,
    sample_blank_spans,
    sample_document_span,
    sample_sentence_spans,
    sentence_example,
)
from ctxlm.objectives.masking import IGNORE_INDEX

TOK = GlmTokens(mask=1, smask=2, gmask=3, sop=4, eop=5, cls=6, eos=7, pad=0)
M, S, E, CLS, EOS = TOK.mask, TOK.sop, TOK.eop, TOK.cls, TOK.eos
X = [11, 12, 13, 14, 15, 16]  # x1..x6 of the paper's Figure 2
PAPER_SPANS = [(2, 3), (4, 6)]  # {x3} and {x5, x6}


def as_lists(example):
    return {key: value.tolist() for key, value in example.items()}


def paper_order_example(**opts):
    """Build the worked example under many seeds; return the one with Part B order (x5 x6), (x3)."""
    seen = {}
    for seed in range(64):
        ex = build_blank_infilling_example(X, PAPER_SPANS, np.random.default_rng(seed), TOK, **opts)
        first_span = ex["input_ids"][ex["part_a_length"] + 1]
        seen.setdefault(int(first_span), ex)
    assert set(seen) == {13, 15}, "both Part B orders must occur when shuffling two spans"
    return seen[15]


def random_text(rng, n):
    return rng.integers(100, 1000, size=n)


def reassemble(example, tok=TOK, blank_ids=None):
    """Independent inverse: put each Part B block back at the Part A token sharing its position."""
    ids, pos = example["input_ids"], example["position_ids"]
    sep = int(example["part_a_length"])
    fills = {}
    starts = [i for i in range(sep, len(ids)) if example["block_position_ids"][i] == 1]
    for b, start in enumerate(starts):
        end = starts[b + 1] if b + 1 < len(starts) else len(ids)
        fills[int(pos[start])] = ids[start + 1 : end].tolist()
    out = []
    for i in range(sep):
        out.extend(fills.pop(i) if i in fills else [int(ids[i])])
    assert not fills
    return out


# ---------------------------------------------------------------- the paper's worked example


def test_paper_worked_example_with_cls_matches_figure_2_exactly():
    ex = as_lists(paper_order_example(add_cls=True, add_eos=False))
    assert ex["input_ids"] == [CLS, 11, 12, M, 14, M, S, 15, 16, S, 13]
    # Figure 2, after the [CLS] column (position 0): text positions start at 1.
    assert ex["position_ids"][1:] == [1, 2, 3, 4, 5, 5, 5, 5, 3, 3]
    assert ex["block_position_ids"][1:] == [0, 0, 0, 0, 0, 1, 2, 3, 1, 2]
    assert ex["position_ids"][0] == 0 and ex["block_position_ids"][0] == 0
    assert ex["part_a_length"] == 6
    assert ex["labels"] == [IGNORE_INDEX] * 6 + [15, 16, E, 13, E]


def test_paper_worked_example_without_cls_is_zero_based():
    ex = as_lists(paper_order_example(add_cls=False, add_eos=False))
    assert ex["input_ids"] == [11, 12, M, 14, M, S, 15, 16, S, 13]
    assert ex["position_ids"] == [p - 1 for p in [1, 2, 3, 4, 5, 5, 5, 5, 3, 3]]
    assert ex["block_position_ids"] == [0, 0, 0, 0, 0, 1, 2, 3, 1, 2]
    assert ex["part_a_length"] == 5
    assert ex["labels"] == [IGNORE_INDEX] * 5 + [15, 16, E, 13, E]


def test_default_layout_wraps_part_a_in_cls_and_eos():
    ex = as_lists(build_blank_infilling_example(X, PAPER_SPANS, None, TOK, shuffle=False))
    assert ex["input_ids"] == [CLS, 11, 12, M, 14, M, EOS, S, 13, S, 15, 16]
    assert ex["position_ids"] == [0, 1, 2, 3, 4, 5, 6, 3, 3, 5, 5, 5]
    assert ex["block_position_ids"] == [0] * 7 + [1, 2, 1, 2, 3]
    assert ex["part_a_length"] == 7


def test_labels_are_part_b_inputs_shifted_left_and_blocks_reassemble_the_text():
    rng = np.random.default_rng(0)
    for _ in range(50):
        text = random_text(rng, int(rng.integers(20, 200)))
        ex = blank_example(text, rng, TOK)
        sep = int(ex["part_a_length"])
        ids, labels, block = ex["input_ids"], ex["labels"], ex["block_position_ids"]
        assert (labels[:sep] == IGNORE_INDEX).all() and (labels[sep:] != IGNORE_INDEX).all()
        for i in range(sep, len(ids)):
            block_ends = i + 1 == len(ids) or block[i + 1] == 1
            assert labels[i] == (E if block_ends else ids[i + 1])
        assert (ids[sep:][block[sep:] == 1] == S).all()
        assert reassemble(ex) == [CLS] + text.tolist() + [EOS]


def test_shuffle_false_keeps_text_order_and_shuffle_permutes_uniformly():
    text = np.arange(100, 160)
    spans = [(2, 4), (10, 11), (20, 25), (40, 43)]
    first_counts = np.zeros(len(spans))
    for seed in range(800):
        ex = build_blank_infilling_example(text, spans, np.random.default_rng(seed), TOK, shuffle=False)
        sep = int(ex["part_a_length"])
        block_starts = np.flatnonzero(ex["block_position_ids"] == 1)
        assert ex["position_ids"][block_starts].tolist() == sorted(ex["position_ids"][block_starts].tolist())
        shuffled = build_blank_infilling_example(text, spans, np.random.default_rng(seed), TOK)
        first = int(shuffled["input_ids"][sep + 1])
        first_counts[[text[s] for s, _ in spans].index(first)] += 1
    # each span leads Part B with probability 1/4: 200 +- 5 sd (sd ~ 12)
    assert np.all(np.abs(first_counts - 200) < 60), first_counts


def test_sentinel_ablation_uses_one_id_per_span_t5_style():
    sentinels = [901, 902, 903]
    ex = as_lists(
        build_blank_infilling_example(
            X,
            PAPER_SPANS,
            None,
            TOK,
            shuffle=False,
            sentinel=True,
            sentinel_ids=sentinels,
            add_cls=False,
            add_eos=False,
        )
    )
    assert ex["input_ids"] == [11, 12, 901, 14, 902, 901, 13, 902, 15, 16]
    assert ex["labels"] == [IGNORE_INDEX] * 5 + [13, E, 15, 16, E]
    assert ex["position_ids"] == [0, 1, 2, 3, 4, 2, 2, 4, 4, 4]
    shuffled = paper_order_example(sentinel=True, sentinel_ids=sentinels, add_cls=False, add_eos=False)
    assert shuffled["input_ids"].tolist() == [11, 12, 901, 14, 902, 902, 15, 16, 901, 13]
    with pytest.raises(CtxlmError, match="sentinel"):
        build_blank_infilling_example(X, PAPER_SPANS, None, TOK, sentinel=True, sentinel_ids=[901])


def test_builder_rejects_bad_spans():
    with pytest.raises(CtxlmError, match="overlaps"):
        build_blank_infilling_example(X, [(1, 3), (2, 4)], None, TOK, shuffle=False)
    with pytest.raises(CtxlmError, match="outside"):
        build_blank_infilling_example(X, [(4, 7)], None, TOK)
    with pytest.raises(CtxlmError, match="empty"):
        build_blank_infilling_example(X, [(3, 3)], None, TOK)


# ---------------------------------------------------------------- attention


def test_attention_matches_brute_force_rules():
    for sep, total in [(0, 0), (0, 4), (4, 4), (3, 9), (7, 12)]:
        got = glm_attention_allowed(sep, total)
        expected = np.zeros((total, total), dtype=bool)
        for q in range(total):
            for k in range(total):
                if q < sep:
                    expected[q, k] = k < sep
                else:
                    expected[q, k] = k < sep or k <= q
        assert got.dtype == bool and np.array_equal(got, expected)


def test_no_part_b_token_sees_the_token_it_predicts():
    rng = np.random.default_rng(1)
    for _ in range(30):
        ex = blank_example(random_text(rng, 80), rng, TOK)
        ids, labels = ex["input_ids"], ex["labels"]
        allowed = glm_attention_allowed(int(ex["part_a_length"]), len(ids))
        for q in np.flatnonzero(labels != IGNORE_INDEX):
            # the label of q is the input at q + 1 (or [eop]); nothing at or after q + 1 is visible
            assert not allowed[q, q + 1 :].any()
            assert allowed[q, : q + 1].all()


# ---------------------------------------------------------------- span samplers


def test_blank_spans_statistics_over_many_long_texts():
    lambda_ = 3.0
    ratios, lengths = [], []
    for seed in range(300):
        n = 1024
        spans = sample_blank_spans(n, np.random.default_rng(seed))
        assert spans == sorted(spans)
        assert all(0 <= s < e <= n for s, e in spans)
        assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))  # disjoint, a token apart
        lengths += [e - s for s, e in spans]
        ratios.append(sum(e - s for s, e in spans) / n)
    assert abs(np.mean(ratios) - 0.15) < 0.01
    assert min(ratios) >= 0.149 and max(ratios) < 0.17
    lengths = np.array(lengths)
    truncated_mean = lambda_ / (1 - math.exp(-lambda_))  # 3.157
    assert abs(lengths.mean() - truncated_mean) < 0.08
    for k in range(1, 7):  # shape: Poisson(3) conditioned on >= 1
        pmf = math.exp(-lambda_) * lambda_**k / math.factorial(k) / (1 - math.exp(-lambda_))
        assert abs(np.mean(lengths == k) - pmf) < 0.015, (k, np.mean(lengths == k), pmf)


def test_blank_spans_on_short_texts_stay_inside_and_mask_something():
    for n in range(1, 30):
        for seed in range(20):
            spans = sample_blank_spans(n, np.random.default_rng([n, seed]))
            assert spans and all(0 <= s < e <= n for s, e in spans)
            assert all(e1 < s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))
    assert sample_blank_spans(0, np.random.default_rng(0)) == []


def test_place_spans_is_uniform_over_all_valid_layouts():
    lengths, n = [2, 1], 7
    layouts = [
        ((a, a + 2), (b, b + 1)) for a, b in itertools.product(range(n), repeat=2) if a + 2 < b and b + 1 <= n
    ]  # brute force: every layout with a gap of at least one token
    assert len(layouts) == 10
    counts = dict.fromkeys(layouts, 0)
    rng = np.random.default_rng(7)
    draws = 5000
    for _ in range(draws):
        counts[tuple(place_spans(lengths, n, rng))] += 1
    expected = draws / len(layouts)
    assert all(abs(c - expected) < 5 * math.sqrt(expected) for c in counts.values()), counts


def random_sentences(rng, n_sentences):
    lengths = rng.integers(3, 30, size=n_sentences)
    ends = np.cumsum(lengths)
    return [(int(e - l), int(e)) for e, l in zip(ends, lengths)], int(ends[-1])


def test_sentence_spans_are_whole_sentences_covering_at_least_the_ratio():
    rng = np.random.default_rng(2)
    for _ in range(200):
        bounds, n = random_sentences(rng, int(rng.integers(1, 40)))
        spans = sample_sentence_spans(bounds, rng)
        assert spans and spans == sorted(spans) and set(spans) <= set(bounds)
        covered = sum(e - s for s, e in spans)
        assert covered >= 0.15 * n
        # minimal: dropping the sentence added last (no longer than the longest) falls short
        assert covered - max(e - s for s, e in spans) < 0.15 * n


def test_sentence_spans_pick_every_sentence_equally_often():
    bounds = [(10 * i, 10 * i + 10) for i in range(10)]  # 10 equal sentences: 2 cover >= 15%
    counts = np.zeros(10)
    for seed in range(1000):
        spans = sample_sentence_spans(bounds, np.random.default_rng(seed))
        assert len(spans) == 2
        for s, _ in spans:
            counts[s // 10] += 1
    assert np.all(np.abs(counts - 200) < 60), counts  # 200 +- 5 sd


def test_document_span_is_at_the_end_and_uniform_over_half_to_all():
    n = 10
    seen = dict.fromkeys(range(5, 11), 0)
    for seed in range(3000):
        [(start, end)] = sample_document_span(n, np.random.default_rng(seed), end_prob=1.0)
        assert end == n
        seen[end - start] += 1
    assert all(abs(c - 500) < 110 for c in seen.values()), seen  # 6 lengths, 500 +- 5 sd
    fractions = []
    for seed in range(500):
        [(start, end)] = sample_document_span(1000, np.random.default_rng(seed))
        fractions.append((end - start) / 1000)
    assert min(fractions) >= 0.5 and max(fractions) <= 1.0 and abs(np.mean(fractions) - 0.75) < 0.03


def test_document_span_ends_the_text_half_the_time_else_starts_uniformly():
    """THUDM/GLM's "gpt" branch: the generated part is the text's end with probability gpt_infill_prob
    (0.5), else a block of the same length placed uniformly. n = 10, length 5: start 5 at the end,
    else uniform over 0..5."""
    n, draws = 10, 6000
    starts = np.zeros(n + 1)
    for seed in range(draws):
        [(start, end)] = sample_document_span(n, np.random.default_rng(seed), low=0.5, high=0.5)
        assert end - start == 5 and 0 <= start <= 5
        starts[start] += 1
    # P(start = 5) = 0.5 + 0.5 / 6, every other start 0.5 / 6
    assert abs(starts[5] / draws - (0.5 + 0.5 / 6)) < 0.02
    assert np.all(np.abs(starts[:5] / draws - 0.5 / 6) < 0.015), starts
    ends = [sample_document_span(1000, np.random.default_rng(s))[0][1] == 1000 for s in range(2000)]
    assert abs(np.mean(ends) - 0.5) < 0.04  # a span of >= 500 tokens ends the text by chance ~0.4%
    with pytest.raises(CtxlmError):
        sample_document_span(10, np.random.default_rng(0), end_prob=1.5)


# ---------------------------------------------------------------- objectives and multitask


def test_sentence_and_document_objectives_use_their_mask_tokens():
    rng = np.random.default_rng(3)
    bounds, n = random_sentences(rng, 12)
    text = random_text(rng, n)
    ex = sentence_example(text, bounds, rng, TOK)
    sep = int(ex["part_a_length"])
    assert TOK.smask in ex["input_ids"][:sep] and M not in ex["input_ids"][:sep]
    assert reassemble(ex) == [CLS] + text.tolist() + [EOS]

    doc = document_example(text, rng, TOK, end_prob=1.0)
    sep = int(doc["part_a_length"])
    assert doc["input_ids"][sep - 1] == TOK.gmask  # [CLS] prefix [gMASK]: nothing after the blank
    assert doc["input_ids"][0] == CLS and (doc["block_position_ids"] == 1).sum() == 1
    assert (doc["position_ids"][sep:] == sep - 1).all()
    assert reassemble(doc) == [CLS] + text.tolist()

    inside = document_example(text, np.random.default_rng(2), TOK, low=0.5, high=0.5, end_prob=0.0)
    sep = int(inside["part_a_length"])
    part_a = inside["input_ids"][:sep].tolist()
    blank = part_a.index(TOK.gmask)
    assert blank < sep - 1 and part_a[blank + 1 :] == text[-(sep - 1 - blank) :].tolist()  # text follows
    assert (inside["position_ids"][sep:] == blank).all() and inside["labels"][-1] == TOK.eop
    assert reassemble(inside) == [CLS] + text.tolist()


def test_multitask_mode_is_blank_half_the_time():
    rng = np.random.default_rng(4)
    modes = [choose_multitask_mode(rng, "sentence") for _ in range(2000)]
    assert set(modes) == {"blank", "sentence"}
    assert abs(modes.count("blank") / 2000 - 0.5) < 0.05
    text = np.arange(100, 140)
    assert TOK.gmask in multitask_example("document", text, rng, TOK)["input_ids"]
    with pytest.raises(CtxlmError):
        multitask_example("sentence", text, rng, TOK)
    with pytest.raises(CtxlmError):
        choose_multitask_mode(rng, "blank")


def test_fixed_seed_is_deterministic():
    text = np.arange(100, 400)
    a = blank_example(text, np.random.default_rng([5, 0, 17]), TOK)
    b = blank_example(text, np.random.default_rng([5, 0, 17]), TOK)
    c = blank_example(text, np.random.default_rng([5, 0, 18]), TOK)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["input_ids"], c["input_ids"])
    for key, value in a.items():
        assert value.dtype == np.int64, key


# ---------------------------------------------------------------- fine-tuning layouts


def test_seq2seq_layout():
    ex = as_lists(build_seq2seq_example([21, 22, 23], [31, 32], TOK))
    assert ex["input_ids"] == [CLS, 21, 22, 23, TOK.gmask, S, 31, 32]
    assert ex["labels"] == [IGNORE_INDEX] * 5 + [31, 32, E]
    assert ex["position_ids"] == [0, 1, 2, 3, 4, 4, 4, 4]
    assert ex["block_position_ids"] == [0] * 5 + [1, 2, 3]
    assert ex["part_a_length"] == 5 and ex["mask_position"] == 4
    own_mask = as_lists(build_seq2seq_example([21], [31], TOK, mask_id=M))
    assert own_mask["input_ids"] == [CLS, 21, M, S, 31]


def test_seq2seq_truncation_keeps_the_mask_and_cuts_ends():
    source, target = list(range(21, 31)), [31, 32, 33, 34]
    ex = as_lists(build_seq2seq_example(source, target, TOK, max_source=5, max_target=3))
    assert ex["input_ids"] == [CLS, 21, 22, 23, TOK.gmask, S, 31, 32]
    assert ex["labels"][5:] == [31, 32, 33]  # cut target: no [eop]
    assert ex["position_ids"][5:] == [4, 4, 4] and ex["block_position_ids"][5:] == [1, 2, 3]
    prompt = as_lists(build_seq2seq_example([21, 22], None, TOK))
    assert prompt["input_ids"] == [CLS, 21, 22, TOK.gmask] and prompt["labels"] == [IGNORE_INDEX] * 4
    with pytest.raises(CtxlmError):
        build_seq2seq_example([21], [31], TOK, max_source=1)


def test_infilling_prompt_lists_mask_positions():
    ex = as_lists(build_infilling_prompt([21, M, 22, 23, M, 24], TOK))
    assert ex["input_ids"] == [CLS, 21, M, 22, 23, M, 24, EOS]
    assert ex["mask_positions"] == [2, 5]
    assert ex["position_ids"] == list(range(8)) and ex["block_position_ids"] == [0] * 8
    assert ex["part_a_length"] == 8
    with pytest.raises(CtxlmError):
        build_infilling_prompt([21, 22], TOK)


def test_cloze_candidates_share_part_a_and_score_only_answer_tokens():
    rows = build_cloze_candidates([21, M, 22], [[31], [41, 42, 43]], TOK)
    one, three = (as_lists(r) for r in rows)
    assert one["input_ids"] == [CLS, 21, M, 22, EOS, S]
    assert one["labels"] == [IGNORE_INDEX] * 5 + [31]
    assert three["input_ids"] == [CLS, 21, M, 22, EOS, S, 41, 42]
    assert three["labels"] == [IGNORE_INDEX] * 5 + [41, 42, 43]
    assert three["position_ids"][5:] == [2, 2, 2] and three["block_position_ids"][5:] == [1, 2, 3]
    assert three["mask_position"] == 2 and three["part_a_length"] == 5
    with_eop = as_lists(build_cloze_candidates([21, M, 22], [[41, 42]], TOK, score_eop=True)[0])
    assert with_eop["input_ids"][5:] == [S, 41, 42] and with_eop["labels"][5:] == [41, 42, E]
    with pytest.raises(CtxlmError, match="exactly one"):
        build_cloze_candidates([21, 22], [[31]], TOK)


# ---------------------------------------------------------------- pretraining data (GlmExamples)

from dataclasses import replace  # noqa: E402

from ctxlm.families.glm import GlmDataConfig  # noqa: E402
from ctxlm.data.store import TokenStore  # noqa: E402
from ctxlm.objectives.chunks import sentence_chunks  # noqa: E402
from ctxlm.objectives.glm import GlmExamples, glm_text_budget, prepare_glm_data  # noqa: E402


class ArrayStore:
    """The parts of a `TokenStore` the GLM examples read, over in-memory sentences."""

    def __init__(self, documents):
        sentences = [np.asarray(s, dtype=np.int64) for doc in documents for s in doc]
        self.tokens = np.concatenate(sentences)
        self.sentence_offsets = np.concatenate([[0], np.cumsum([len(s) for s in sentences])]).astype(np.int64)
        self.document_offsets = np.concatenate([[0], np.cumsum([len(d) for d in documents])]).astype(np.int64)
        self.directory = "array-store"

    num_documents = property(lambda self: len(self.document_offsets) - 1)
    sentence_lengths = property(lambda self: np.diff(self.sentence_offsets))
    split_documents = TokenStore.split_documents


def random_store(seed=0, documents=40, long_every=9):
    """Documents of 1-30 sentences of 1-25 tokens (ids >= 20), with some sentences of 200 tokens."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(documents):
        sizes = rng.integers(1, 26, size=int(rng.integers(1, 31)))
        sizes[rng.random(len(sizes)) < 1 / long_every] = 200
        docs.append([rng.integers(20, 500, size=int(n)) for n in sizes])
    return ArrayStore(docs)


def brute_force_chunks(lengths, doc_offsets, documents, max_text):
    """Sentence by sentence: append while the chunk stays within max_text; a sentence longer than
    max_text closes the chunk and is dropped."""
    rows = []
    for d in documents:
        chunk = []
        for s in range(doc_offsets[d], doc_offsets[d + 1]):
            if lengths[s] > max_text:
                if chunk:
                    rows.append((chunk[0], len(chunk)))
                chunk = []
            elif sum(lengths[i] for i in chunk) + lengths[s] <= max_text:
                chunk.append(s)
            else:
                rows.append((chunk[0], len(chunk)))
                chunk = [s]
        if chunk:
            rows.append((chunk[0], len(chunk)))
    return rows


def test_chunks_are_greedy_runs_of_whole_sentences_within_documents():
    store = random_store()
    lengths = store.sentence_lengths
    for max_text in (1, 7, 25, 60, 199, 400):
        documents = np.arange(store.num_documents)[::2]
        got = sentence_chunks(lengths, store.document_offsets, documents, max_text)
        assert got.dtype == np.int64 and got.shape[1] == 2
        assert [tuple(r) for r in got.tolist()] == brute_force_chunks(
            lengths.tolist(), store.document_offsets.tolist(), documents.tolist(), max_text
        )


def worst_case_length(mode, n, ratio=0.15):
    """Length of the longest example a text of n tokens can give: every span / sentence one token."""
    rng = np.random.default_rng(0)
    text = np.arange(100, 100 + n)
    if mode == "document":
        return max(len(document_example(text, np.random.default_rng(s), TOK)["input_ids"]) for s in range(3))
    if mode == "sentence":
        return len(sentence_example(text, [(i, i + 1) for i in range(n)], rng, TOK, ratio=ratio)["input_ids"])
    k = max(1, int(ratio * n))  # sample_span_lengths stops at this many masked tokens
    spans = place_spans([1] * k, n, rng)  # so k one-token spans is the most spans it can draw
    worst = len(build_blank_infilling_example(text, spans, rng, TOK)["input_ids"])
    drawn = [blank_example(text, np.random.default_rng(s), TOK, ratio=ratio, poisson_lambda=0.05) for s in range(5)]
    assert max(len(ex["input_ids"]) for ex in drawn) <= worst
    return worst


@pytest.mark.parametrize(
    "task,long_mode",
    [
        ("blank", "document"),
        ("sentence", "document"),
        ("document", "document"),
        ("multitask", "document"),
        ("multitask", "sentence"),
    ],
)
def test_text_budget_is_the_largest_that_always_fits(task, long_mode):
    modes = {"multitask": ["blank", long_mode]}.get(task, [task])
    for max_length in list(range(6, 80)) + [128, 333, 512]:
        for ratio in (0.15, 0.3):
            n = glm_text_budget(max_length, task, ratio=ratio, long_mode=long_mode)
            assert max(worst_case_length(m, n, ratio) for m in modes) <= max_length
            assert max(worst_case_length(m, n + 1, ratio) for m in modes) > max_length
    with pytest.raises(CtxlmError):
        glm_text_budget(4, "blank")


def mode_of(example):
    blank = example["input_ids"][: int(example["part_a_length"])]
    found = {TOK.mask: "blank", TOK.smask: "sentence", TOK.gmask: "document"}
    return {found[t] for t in blank.tolist() if t in found}.pop()


@pytest.mark.parametrize("task", ["blank", "sentence", "document", "multitask"])
def test_examples_fit_max_length_and_reassemble_their_chunk(task):
    store = random_store(1)
    data = GlmDataConfig(max_length=64, task=task, long_mode="sentence" if task == "multitask" else "document")
    max_text = glm_text_budget(64, task, long_mode=data.long_mode)
    chunks = sentence_chunks(store.sentence_lengths, store.document_offsets, np.arange(store.num_documents), max_text)
    examples = GlmExamples(store, chunks, TOK, data, seed=3)
    assert len(examples) == len(chunks)
    modes = set()
    for index in range(len(examples)):
        tokens, bounds = examples.text(index)
        first, count = chunks[index]
        start, end = store.sentence_offsets[first], store.sentence_offsets[first + count]
        assert tokens.tolist() == store.tokens[start:end].tolist() and len(tokens) <= max_text
        assert [b - a for a, b in bounds] == store.sentence_lengths[first : first + count].tolist()
        ex = examples.example(index, epoch=2)
        n = len(ex["input_ids"])
        assert n <= 64 and ex["position_ids"].max() < 64 and ex["block_position_ids"].max() < 64
        modes.add(mode_of(ex))
        expected = [CLS] + tokens.tolist() + ([] if mode_of(ex) == "document" else [EOS])
        assert reassemble(ex) == expected
        again = examples.example(index, epoch=2)
        assert all(np.array_equal(ex[k], again[k]) for k in ex)
    assert modes == ({"blank", "sentence"} if task == "multitask" else {task})


def test_document_examples_follow_the_configured_gmask_end_prob():
    store = random_store(3)
    max_text = glm_text_budget(64, "document")
    chunks = sentence_chunks(store.sentence_lengths, store.document_offsets, np.arange(store.num_documents), max_text)
    share = {}
    for end_prob in (1.0, 0.5, 0.0):
        data = GlmDataConfig(max_length=64, task="document", gmask_end_prob=end_prob)
        examples = GlmExamples(store, chunks, TOK, data, seed=1)
        at_end = [
            ex["input_ids"][int(ex["part_a_length"]) - 1] == TOK.gmask
            for ex in (examples.example(i, epoch) for epoch in range(4) for i in range(len(examples)))
        ]
        share[end_prob] = np.mean(at_end)
    # a uniform start still ends the text by chance (1 in n - length + 1): P(end) = p + (1 - p) q
    q = share[0.0]
    assert share[1.0] == 1.0 and 0.05 < q < 0.6
    assert abs(share[0.5] - (0.5 + 0.5 * q)) < 0.06, share


def test_multitask_batch_hook_draws_one_mode_per_batch_half_the_time():
    store = random_store(2)
    data = GlmDataConfig(max_length=96, task="multitask", long_mode="document")
    chunks = sentence_chunks(
        store.sentence_lengths, store.document_offsets, np.arange(store.num_documents), glm_text_budget(96, "multitask")
    )
    examples = GlmExamples(store, chunks, TOK, data, seed=5)
    modes = []
    for batch_number in range(200):
        indices = np.arange(batch_number, batch_number + 6) % len(examples)
        batch = examples.batch(indices, 1, batch_number)
        batch_modes = {mode_of(ex) for ex in batch}
        assert len(batch_modes) == 1, "every example of a batch has the batch's objective"
        (mode,) = batch_modes
        modes.append(mode)
        # deterministic, and the same examples the per-example path builds with that mode
        again = examples.batch(indices, 1, batch_number)
        assert all(np.array_equal(a[k], b[k]) for a, b in zip(batch, again) for k in a)
        assert np.array_equal(batch[0]["input_ids"], examples.example(int(indices[0]), 1, mode)["input_ids"])
    assert set(modes) == {"blank", "document"}
    assert abs(modes.count("blank") / len(modes) - 0.5) < 0.12
    single = GlmExamples(store, chunks, TOK, replace(data, task="sentence"), seed=5)
    assert {mode_of(ex) for ex in single.batch(np.arange(8), 0, 0)} == {"sentence"}


def test_prepare_splits_by_documents_and_checks_the_budget():
    store = random_store(3, documents=60)
    data = GlmDataConfig(max_length=80, task="multitask", valid_fraction=0.2, max_valid_documents=5)
    train, valid, info = prepare_glm_data(store, TOK, data, seed=7, max_positions=80)
    train_docs, valid_docs = store.split_documents(0.2, 7)
    doc_of = lambda chunks: {  # noqa: E731
        int(np.searchsorted(store.document_offsets, s, side="right") - 1) for s, _ in chunks
    }
    assert doc_of(train.chunks) <= set(train_docs.tolist())
    assert doc_of(valid.chunks) <= set(valid_docs[:5].tolist())
    assert info["valid_documents"] == 5 and info["max_text"] == glm_text_budget(80, "multitask")
    assert info["train_chunks"] == len(train) and info["objective"] == "glm/multitask+document"
    with pytest.raises(CtxlmError, match="max_position_embeddings"):
        prepare_glm_data(store, TOK, data, seed=7, max_positions=64)
    with pytest.raises(CtxlmError, match="sentinel"):
        prepare_glm_data(store, TOK, replace(data, sentinel=True), seed=7)
    with pytest.raises(CtxlmError, match="task"):
        prepare_glm_data(store, TOK, replace(data, task="blanks"), seed=7)
