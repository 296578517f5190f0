"""PALM pre-training examples (paper §2.2, §3.1): windows against a brute-force reference, the
invariants of every fragment on real and synthetic data, and BERT masking statistics."""

import itertools

import numpy as np
import pytest

from ctxlm.data.store import TokenStore
from ctxlm.objectives.masking import IGNORE_INDEX
from ctxlm.objectives.palm import (
    PalmExamples,
    PalmTokens,
    build_mlm_example,
    build_palm_example,
    fragment_budgets,
    palm_windows,
)
from ctxlm.tokenization import train_tokenizer

SMALL_L = 60  # budgets 48 / 12: many synthetic sentences alone overflow the target budget
STORE_SMALL_L = 250  # budgets 200 / 50: about half the Wikipedia sentences overflow the target budget


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def wiki(data_dir, tmp_path_factory):
    """(store, tokenizer, tokens): a token store over the first 500 lines of a Wikipedia shard."""
    source = data_dir / "pretrain" / "wikipedia" / "sents_008.txt"
    with open(source, encoding="utf-8") as handle:
        text = "".join(itertools.islice(handle, 500))
    corpus = tmp_path_factory.mktemp("palm_corpus") / "slice.txt"
    corpus.write_text(text, encoding="utf-8")
    tokenizer = train_tokenizer(corpus, 500, tmp_path_factory.mktemp("palm_tok"))
    store = TokenStore.build(
        corpus, tokenizer, cache_dir=tmp_path_factory.mktemp("palm_cache"), num_workers=1, progress=False
    )
    assert store.num_documents >= 3, "the slice must span several documents"
    tok = PalmTokens(cls=tokenizer.cls_id, sep=tokenizer.sep_id, mask=tokenizer.mask_id, decoder_start=tokenizer.cls_id)
    return store, tokenizer, tok


def synthetic_corpus(seed=0, documents=60):
    """Sentence lengths (mostly short, some longer than any budget) and document offsets,
    including one-sentence and empty-ish documents."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 25, size=documents)
    sizes[[3, 17]] = 1  # one-sentence documents make no window
    lengths = rng.integers(1, 40, size=int(sizes.sum()))
    long = rng.random(len(lengths)) < 0.08
    lengths[long] = rng.integers(90, 450, size=int(long.sum()))  # too long for a small L's budgets
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return lengths.astype(np.int64), offsets.astype(np.int64)


def brute_force_windows(lengths, doc_offsets, documents, source_max, target_max):
    """The spec, written out sentence by sentence: from every start, the source is the most whole
    sentences whose text fits `source_max - 2` (keeping ≥ 1 sentence of the document for the
    target), the target the most following whole sentences of the document fitting `target_max - 1`;
    a start whose source or target would be empty has no window."""
    rows = []
    for d in documents:
        first, end = int(doc_offsets[d]), int(doc_offsets[d + 1])
        for start in range(first, end):
            n_src, used = 0, 0
            while start + n_src < end - 1 and used + lengths[start + n_src] <= source_max - 2:
                used += lengths[start + n_src]
                n_src += 1
            if n_src == 0:
                continue
            t0 = start + n_src
            n_tgt, used = 0, 0
            while t0 + n_tgt < end and used + lengths[t0 + n_tgt] <= target_max - 1:
                used += lengths[t0 + n_tgt]
                n_tgt += 1
            if n_tgt == 0:
                continue
            rows.append((start, n_src, n_tgt))
    return rows


def document_of(doc_offsets, sentence):
    return int(np.searchsorted(doc_offsets, sentence, side="right") - 1)


def check_window_invariants(lengths, doc_offsets, windows, source_max, target_max):
    """Every window: whole sentences, inside one document, source maximal, target maximal."""
    for first, n_src, n_tgt in windows.tolist():
        assert n_src >= 1 and n_tgt >= 1
        d = document_of(doc_offsets, first)
        end = int(doc_offsets[d + 1])
        t0, stop = first + n_src, first + n_src + n_tgt
        assert stop <= end, "source and target stay inside the document"
        src_len, tgt_len = int(lengths[first:t0].sum()), int(lengths[t0:stop].sum())
        assert src_len + 2 <= source_max and tgt_len + 1 <= target_max
        # one more source sentence overflows, unless it is the document's last (needed as target)
        assert t0 == end - 1 or src_len + lengths[t0] + 2 > source_max
        # one more target sentence overflows or crosses the document end
        assert stop == end or tgt_len + lengths[stop] + 1 > target_max


# ----------------------------------------------------------------------------- budgets
def test_fragment_budgets_are_the_papers_80_20_split():
    """L=500 gives the paper's 400/100; every L splits as floor(0.8 L) / the rest."""
    assert fragment_budgets(500, 0.8) == (400, 100)
    for length in range(10, 1200):
        source_max, target_max = fragment_budgets(length, 0.8)
        assert source_max == (4 * length) // 5 and source_max + target_max == length
    with pytest.raises(ValueError):
        fragment_budgets(3, 0.8)


# ----------------------------------------------------------------------------- windows
@pytest.mark.parametrize("length", [500, SMALL_L, 40])
def test_synthetic_windows_match_brute_force(length):
    """palm_windows equals the sentence-by-sentence reference (stride one sentence, skips)."""
    lengths, offsets = synthetic_corpus()
    source_max, target_max = fragment_budgets(length, 0.8)
    documents = np.arange(len(offsets) - 1)
    windows = palm_windows(lengths, offsets, documents, source_max, target_max)
    expected = brute_force_windows(lengths, offsets, documents, source_max, target_max)
    assert windows.tolist() == [list(r) for r in expected]
    assert len(expected) >= 5
    check_window_invariants(lengths, offsets, windows, source_max, target_max)


def test_synthetic_windows_skip_only_impossible_starts():
    """Stride one sentence: every sentence starts a window unless it cannot: it is its document's
    last, it alone overflows the source, or the sentence after its (greedy) source overflows the
    target."""
    lengths, offsets = synthetic_corpus(seed=1)
    source_max, target_max = fragment_budgets(SMALL_L, 0.8)
    windows = palm_windows(lengths, offsets, np.arange(len(offsets) - 1), source_max, target_max)
    starts = set(windows[:, 0].tolist())
    skipped = 0
    for s in range(len(lengths)):
        end = int(offsets[document_of(offsets, s) + 1])
        if s in starts:
            continue
        skipped += 1
        if s == end - 1 or lengths[s] > source_max - 2:
            continue
        t0 = s
        used = 0
        while t0 < end - 1 and used + lengths[t0] <= source_max - 2:
            used += lengths[t0]
            t0 += 1
        assert lengths[t0] > target_max - 1, f"sentence {s} could start a window but does not"
    consecutive = sum(b == a + 1 for a, b in zip(windows[:-1, 0], windows[1:, 0]))
    assert skipped > 10 and consecutive > 10, "the corpus must exercise both cases"


def test_windows_of_a_document_subset():
    """Only the requested documents produce windows (a held-out split stays out)."""
    lengths, offsets = synthetic_corpus(seed=2)
    source_max, target_max = fragment_budgets(500, 0.8)
    chosen = np.array([0, 5, 9, 20])
    windows = palm_windows(lengths, offsets, chosen, source_max, target_max)
    assert windows.tolist() == [list(r) for r in brute_force_windows(lengths, offsets, chosen, source_max, target_max)]
    assert {document_of(offsets, s) for s in windows[:, 0].tolist()} <= set(chosen.tolist())


@pytest.mark.parametrize("length", [500, STORE_SMALL_L])
def test_store_windows_match_brute_force(wiki, length):
    """On a real token store: windows equal the reference and satisfy every invariant."""
    store, _, _ = wiki
    source_max, target_max = fragment_budgets(length, 0.8)
    lengths = np.asarray(store.sentence_lengths)
    offsets = np.asarray(store.document_offsets)
    documents = np.arange(store.num_documents)
    windows = palm_windows(lengths, offsets, documents, source_max, target_max)
    assert windows.tolist() == [
        list(r) for r in brute_force_windows(lengths, offsets, documents, source_max, target_max)
    ]
    check_window_invariants(lengths, offsets, windows, source_max, target_max)
    assert len(windows) > 100


@pytest.mark.parametrize("length", [500, STORE_SMALL_L])
def test_store_examples_are_consecutive_whole_sentences(wiki, length):
    """Examples: `[CLS] src [SEP]` ≤ source_max, `[CLS] tgt` and `tgt [SEP]` ≤ target_max; the source
    and target are the document's consecutive whole sentences, re-read from the store here."""
    store, tokenizer, tok = wiki
    source_max, target_max = fragment_budgets(length, 0.8)
    windows = palm_windows(
        store.sentence_lengths, store.document_offsets, np.arange(store.num_documents), source_max, target_max
    )
    examples = PalmExamples(store, windows, tok, "generation", replace_pool=tokenizer.replace_pool)
    assert len(examples) == len(windows)
    for i in range(len(examples)):
        ex = examples.example(i)
        first, n_src, n_tgt = windows[i].tolist()
        src = [t for s in range(first, first + n_src) for t in store.sentence(s).tolist()]
        tgt = [t for s in range(first + n_src, first + n_src + n_tgt) for t in store.sentence(s).tolist()]
        assert ex["input_ids"].tolist() == [tok.cls] + src + [tok.sep]
        assert ex["decoder_input_ids"].tolist() == [tok.decoder_start] + tgt
        assert ex["labels"].tolist() == tgt + [tok.sep]
        assert len(ex["input_ids"]) <= source_max
        assert len(ex["decoder_input_ids"]) <= target_max and len(ex["labels"]) <= target_max
        d = document_of(store.document_offsets, first)
        assert document_of(store.document_offsets, first + n_src + n_tgt - 1) == d


def test_build_palm_example_layout():
    """`[CLS] x [SEP]` / `[start] y` / `y [SEP]` on a hand example."""
    tok = PalmTokens(cls=2, sep=3, mask=4, decoder_start=7)
    ex = build_palm_example(np.array([10, 11]), np.array([12, 13, 14]), tok)
    assert ex["input_ids"].tolist() == [2, 10, 11, 3]
    assert ex["decoder_input_ids"].tolist() == [7, 12, 13, 14]
    assert ex["labels"].tolist() == [12, 13, 14, 3]
    assert all(v.dtype == np.int64 for v in ex.values())


# ----------------------------------------------------------------------------- masking
def test_mlm_masking_rates_on_the_store(wiki):
    """Over ≥100k maskable tokens: 15% ± 1% selected, of which 80/10/10 (± 1%) become [MASK] /
    a random non-special token / unchanged; [CLS]/[SEP] are never selected."""
    store, tokenizer, tok = wiki
    source_max, target_max = fragment_budgets(500, 0.8)
    windows = palm_windows(
        store.sentence_lengths, store.document_offsets, np.arange(store.num_documents), source_max, target_max
    )
    examples = PalmExamples(store, windows, tok, "mlm", replace_pool=tokenizer.replace_pool, seed=3)
    special = set(tokenizer.special_ids.tolist())
    maskable = selected = masked = replaced = unchanged = 0
    epoch = 0
    while maskable < 100_000:
        for i in range(len(examples)):
            ex = examples.example(i, epoch)
            source, _ = examples.fragment(i)
            original = np.concatenate([[tok.cls], source, [tok.sep]])
            inputs, labels = ex["input_ids"], ex["mlm_labels"]
            assert inputs[0] == tok.cls and inputs[-1] == tok.sep
            assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX
            chosen = labels != IGNORE_INDEX
            assert (labels[chosen] == original[chosen]).all()
            assert (inputs[~chosen] == original[~chosen]).all(), "unselected tokens are untouched"
            picked = inputs[chosen]
            is_mask = picked == tok.mask
            is_same = picked == original[chosen]
            rand = picked[~is_mask & ~is_same]
            assert not (set(rand.tolist()) & special), "random replacements are never special tokens"
            maskable += len(original) - 2
            selected += int(chosen.sum())
            masked += int(is_mask.sum())
            unchanged += int(is_same.sum())
            replaced += len(rand)
        epoch += 1
    assert abs(selected / maskable - 0.15) < 0.01
    assert abs(masked / selected - 0.8) < 0.01
    assert abs(replaced / selected - 0.1) < 0.01
    assert abs(unchanged / selected - 0.1) < 0.01


def test_mlm_random_replacements_come_from_the_pool():
    """Every random replacement is drawn from the given pool (here without any special id)."""
    tok = PalmTokens(cls=2, sep=3, mask=4, decoder_start=2)
    pool = np.arange(100, 120)
    source = np.full(400, 50)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(200):
        ex = build_mlm_example(source, tok, rng, pool)
        inputs = ex["input_ids"][1:-1]
        seen |= set(inputs[(inputs != 50) & (inputs != tok.mask)].tolist())
    assert seen and seen <= set(pool.tolist())
    assert len(seen) == len(pool), "all pool tokens get drawn"


def test_mlm_examples_are_deterministic(wiki):
    """(seed, epoch, index) fixes an example; another epoch or seed masks differently."""
    store, tokenizer, tok = wiki
    source_max, target_max = fragment_budgets(500, 0.8)
    windows = palm_windows(
        store.sentence_lengths, store.document_offsets, np.arange(store.num_documents), source_max, target_max
    )
    make = lambda seed: PalmExamples(  # noqa: E731
        store,
        windows,
        tok,
        "generation+mlm",
        replace_pool=tokenizer.replace_pool,
        seed=seed,
    )
    a, b, other_seed = make(7), make(7), make(8)
    differ_epoch = differ_seed = 0
    for i in range(0, len(a), 7):
        x = a.example(i, epoch=2)
        y = b.example(i, epoch=2)
        assert x.keys() == y.keys() >= {"input_ids", "mlm_labels", "decoder_input_ids", "labels"}
        for key in x:
            assert np.array_equal(x[key], y[key])
        # the decoder side is the clean continuation whatever the masking
        plain = build_palm_example(*a.fragment(i), tok)
        assert np.array_equal(x["labels"], plain["labels"])
        assert np.array_equal(x["decoder_input_ids"], plain["decoder_input_ids"])
        differ_epoch += not np.array_equal(x["input_ids"], a.example(i, epoch=3)["input_ids"])
        differ_seed += not np.array_equal(x["input_ids"], other_seed.example(i, epoch=2)["input_ids"])
    count = len(range(0, len(a), 7))
    assert differ_epoch == count and differ_seed == count


# ----------------------------------------------------------------------------- stage 2 + MLM: what the copy head copies
def test_generation_with_mlm_gives_the_copy_head_the_original_source(wiki):
    """The encoder reads the masked source; `copy_source_ids` is the unmasked `[CLS] x [SEP]`."""
    store, tokenizer, tok = wiki
    source_max, target_max = fragment_budgets(500, 0.8)
    windows = palm_windows(
        store.sentence_lengths, store.document_offsets, np.arange(store.num_documents), source_max, target_max
    )
    examples = PalmExamples(store, windows, tok, "generation+mlm", replace_pool=tokenizer.replace_pool, seed=1)
    for i in range(0, len(examples), 11):
        ex = examples.example(i)
        original = build_palm_example(*examples.fragment(i), tok)["input_ids"]
        np.testing.assert_array_equal(ex["copy_source_ids"], original)
        chosen = ex["mlm_labels"] != IGNORE_INDEX
        np.testing.assert_array_equal(ex["mlm_labels"][chosen], original[chosen])
        assert (ex["input_ids"][chosen] == tok.mask).any()
    assert "copy_source_ids" not in PalmExamples(
        store, windows, tok, "generation", replace_pool=tokenizer.replace_pool
    ).example(0)


def test_copy_head_copies_a_masked_word_from_copy_source_ids():
    """A word w present in the source only at a [MASK]ed position: with `copy_source_ids` the copy mass
    of that position moves from [MASK] to w (eq. 6), and the training loss is −log P(w)."""
    import torch

    from ctxlm.families.palm import PalmConfig
    from ctxlm.models.palm import PalmModel

    torch.manual_seed(0)
    cfg = PalmConfig(
        vocab_size=40,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        dropout=0.0,
        attention_dropout=0.0,
        mask_token_id=4,
        copy=True,
    )
    model = PalmModel(cfg).double().eval()
    original = torch.tensor([[2, 10, 11, 30, 12, 3]])  # w = 30 at position 3
    masked = original.clone()
    masked[0, 3] = cfg.mask_token_id
    decoder, labels = torch.tensor([[2]]), torch.tensor([[30]])
    new = (
        model(masked, decoder_input_ids=decoder, labels=labels, copy_source_ids=original, return_log_probs=True)
        .log_probs[0, 0]
        .exp()
    )
    old = model(masked, decoder_input_ids=decoder, labels=labels, return_log_probs=True).log_probs[0, 0].exp()
    moved = new[30] - old[30]
    assert moved > 1e-3
    torch.testing.assert_close(old[cfg.mask_token_id] - new[cfg.mask_token_id], moved)
    keep = torch.ones(cfg.vocab_size, dtype=torch.bool)
    keep[[30, cfg.mask_token_id]] = False
    torch.testing.assert_close(new[keep], old[keep])
    loss = model(masked, decoder_input_ids=decoder, labels=labels, copy_source_ids=original).loss
    torch.testing.assert_close(loss, -new[30].log())
