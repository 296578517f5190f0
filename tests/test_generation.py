"""Decoding (`ctxlm.generation`): beam search and greedy token-for-token against transformers'
`generate`, beam search against exhaustive enumeration, the KV cache against full recomputation,
sampling filters, and the n-gram ban against brute force."""

import dataclasses
import itertools

import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from ctxlm.families.palm import PalmConfig
from ctxlm.generation import (
    GenerationConfig,
    ban_repeated_ngrams,
    ban_subword_loops,
    ban_unknown_words,
    ban_word_repeats,
    generate,
    sample_token,
)
from ctxlm.lexicon import WordLexicon
from ctxlm.models.hf import palm_from_bart
from ctxlm.models.palm import PalmModel

BART_EOS, BART_PAD = 2, 1


pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------- models and inputs
def peaked_bart(seed=1, vocab=24, scale=8.0, eos_bias=2.0):
    """A tiny random BART with weights scaled up (peaked distributions, source-dependent outputs)
    and a random final_logits_bias nudged towards EOS, so hypotheses end at varied lengths."""
    torch.manual_seed(seed)
    config = BartConfig(
        vocab_size=vocab,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=64,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        forced_eos_token_id=None,
    )
    bart = BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        for name, p in bart.named_parameters():
            if "layer_norm" not in name and "layernorm" not in name:
                p.mul_(scale)
        bart.final_logits_bias.normal_(0, 0.5)
        bart.final_logits_bias[0, BART_EOS] += eos_bias
    return bart


def padded_batch(lengths, pad, low, high, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(low, high, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids.masked_fill(mask == 0, pad), mask


def bart_inputs(vocab=24):
    return padded_batch([9, 6, 3, 12, 5, 7], BART_PAD, 3, vocab - 1)


def hf_tokens(sequences, eos=BART_EOS):
    """transformers' output without the decoder start, cut after the first EOS."""
    rows = []
    for row in sequences[:, 1:].tolist():
        rows.append(row[: row.index(eos) + 1] if eos in row else row)
    return rows


def both(bart, model, ids, mask, **options):
    """(transformers' tokens and scores, ctxlm's Generated) for the same options."""
    out = bart.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        forced_eos_token_id=None,
        forced_bos_token_id=None,
        return_dict_in_generate=True,
        output_scores=True,
        **options,
    )
    ours = generate(model, ids, mask, GenerationConfig(**options))
    return hf_tokens(out.sequences), out, ours


@pytest.fixture(scope="module")
def bart_pair():
    bart = peaked_bart()
    return bart, palm_from_bart(bart).eval()


# ----------------------------------------------------------------------------- transformers parity
@pytest.mark.parametrize("length_penalty", [1.7, -0.5])
@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@pytest.mark.parametrize("min_new_tokens", [2, 5])
def test_beam_search_matches_transformers(bart_pair, length_penalty, early_stopping, min_new_tokens):
    """Beam search (5 beams, 3-gram ban, length penalty, min/max length, each early-stopping mode)
    returns transformers' token ids and sequence scores."""
    bart, model = bart_pair
    ids, mask = bart_inputs()
    expected, out, ours = both(
        bart,
        model,
        ids,
        mask,
        num_beams=5,
        no_repeat_ngram_size=3,
        length_penalty=length_penalty,
        min_new_tokens=min_new_tokens,
        max_new_tokens=12,
        early_stopping=early_stopping,
    )
    assert ours.tokens == expected
    torch.testing.assert_close(torch.tensor(ours.scores), out.sequences_scores, atol=1e-4, rtol=1e-4)
    assert len({tuple(t) for t in expected}) >= 3, "outputs must depend on the source"
    assert all(len(t) >= min_new_tokens for t in expected)


def test_beam_parity_cases_are_not_trivial(bart_pair):
    """The parity settings include hypotheses that end with EOS before max length and ones that
    run to max length without EOS."""
    bart, model = bart_pair
    ids, mask = bart_inputs()
    expected, _, ours = both(
        bart,
        model,
        ids,
        mask,
        num_beams=5,
        no_repeat_ngram_size=3,
        length_penalty=1.7,
        min_new_tokens=2,
        max_new_tokens=12,
        early_stopping=False,
    )
    assert ours.tokens == expected
    early_eos = [t for t in expected if t[-1] == BART_EOS and len(t) < 12]
    no_eos = [t for t in expected if BART_EOS not in t]
    assert early_eos and no_eos
    assert len({len(t) for t in early_eos}) >= 2, "EOS at varied lengths"


@pytest.mark.parametrize("no_repeat", [0, 2])
def test_greedy_matches_transformers(bart_pair, no_repeat):
    """num_beams=1: greedy decoding equals transformers' greedy search."""
    bart, model = bart_pair
    ids, mask = bart_inputs()
    expected, _, ours = both(
        bart, model, ids, mask, num_beams=1, no_repeat_ngram_size=no_repeat, min_new_tokens=3, max_new_tokens=10
    )
    assert ours.tokens == expected
    assert len({tuple(t) for t in expected}) >= 3


# ----------------------------------------------------------------------------- exhaustive search
TINY_VOCAB, EOS, START, PAD = 5, 3, 2, 0
EXHAUSTIVE_MAX = 4  # generated tokens: 1 + 4 + 16 + 320 finished hypotheses


def tiny_model(copy, seed=0, scale=0.4):
    cfg = PalmConfig(
        vocab_size=TINY_VOCAB,
        d_model=16,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
        copy=copy,
        pad_token_id=PAD,
        bos_token_id=START,
        eos_token_id=EOS,
        decoder_start_token_id=START,
        mask_token_id=4,
    )
    model = PalmModel(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=g))
    return model.eval()


def all_hypotheses(max_new):
    """Every finished sequence: non-EOS tokens then EOS, or max_new tokens with no earlier EOS."""
    others = [v for v in range(TINY_VOCAB) if v != EOS]
    for length in range(1, max_new + 1):
        for body in itertools.product(others, repeat=length - 1):
            if length < max_new:
                yield list(body) + [EOS]
            else:
                yield from (list(body) + [last] for last in range(TINY_VOCAB))


def full_prefix_scores(model, ids, mask, hypotheses):
    """Σ_t log P(y_t | y_<t, x) of every hypothesis, recomputing each whole prefix without a cache
    (one batched forward; later positions of shorter rows are padding the causal decoder ignores)."""
    width = max(len(h) for h in hypotheses)
    dec = torch.tensor([[START] + h[:-1] + [PAD] * (width - len(h)) for h in hypotheses])
    labels = torch.tensor([h + [-100] * (width - len(h)) for h in hypotheses])
    n = len(hypotheses)
    with torch.no_grad():
        out = model(ids.expand(n, -1), mask.expand(n, -1), decoder_input_ids=dec, labels=labels, return_log_probs=True)
    picked = out.log_probs.gather(-1, labels.clamp_min(0)[..., None]).squeeze(-1)
    return picked.masked_fill(labels < 0, 0.0).sum(-1).tolist()


@pytest.fixture(scope="module", params=[(False, 2), (True, 1)], ids=["copy-off", "copy-on"])
def exhaustive_case(request):
    """A vocabulary-5 model (copy off / on), two padded sources, and every hypothesis' summed
    log-probability under each source."""
    copy, seed = request.param
    model = tiny_model(copy, seed=seed)
    hypotheses = list(all_hypotheses(EXHAUSTIVE_MAX))
    sources = torch.tensor([[1, 4, 4, 2, 1, 4], [4, 1, 2, PAD, PAD, PAD]])
    masks = (sources != PAD).long()
    scores = [full_prefix_scores(model, sources[i : i + 1], masks[i : i + 1], hypotheses) for i in range(2)]
    return model, sources, masks, hypotheses, scores


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_search_finds_the_exhaustive_optimum(exhaustive_case, length_penalty):
    """With a beam as large as the hypothesis space (nothing pruned) and early_stopping="never",
    beam search returns the best of all sequences scored by full-prefix log-probs / len^α."""
    model, sources, masks, hypotheses, scores = exhaustive_case
    cfg = GenerationConfig(
        num_beams=len(hypotheses), max_new_tokens=EXHAUSTIVE_MAX, length_penalty=length_penalty, early_stopping="never"
    )
    result = generate(model, sources, masks, cfg)  # both sources in one padded batch
    optimum_lengths = []
    for i in range(2):
        scored = sorted((s / len(h) ** length_penalty, h) for s, h in zip(scores[i], hypotheses))
        (runner_up, _), (best_score, best) = scored[-2:]
        assert best_score - runner_up > 1e-4, "the optimum must be unique for the test to be meaningful"
        assert result.tokens[i] == best
        assert result.scores[i] == pytest.approx(best_score, abs=1e-4)
        optimum_lengths.append(len(best))
    assert max(optimum_lengths) > 1, "the optimum must not be just the one-token EOS"


# ----------------------------------------------------------------------------- KV cache
@pytest.mark.parametrize("copy", [False, True])
def test_cached_steps_equal_full_recomputation(copy):
    """decode_step's log-probs (cached, rows reordered mid-way as beam search does) equal
    output_log_probs over the full decoder input without a cache, copy head off and on."""
    model = tiny_model(copy, seed=3)
    ids, mask = padded_batch([7, 4], PAD, 1, TINY_VOCAB, seed=2)
    beams, steps = 3, 6
    g = torch.Generator().manual_seed(5)
    history = torch.full((2 * beams, 1), START)
    with torch.no_grad():
        state = model.start_decoding(ids, mask, num_beams=beams, max_length=steps + 1)
        cached = []
        for step in range(steps):
            if step == 3:  # beam search keeps rows, within each source
                index = torch.tensor([1, 1, 0, 5, 3, 3])
                model.reorder(state, index)
                history = history[index]
                cached = [c[index] for c in cached]
            cached.append(model.decode_step(state, history[:, -1]))
            history = torch.cat([history, torch.randint(0, TINY_VOCAB, (2 * beams, 1), generator=g)], dim=1)
        rows_ids, rows_mask = ids.repeat_interleave(beams, 0), mask.repeat_interleave(beams, 0)
        enc = model.encode(rows_ids, rows_mask)
        dec = model.decoder(model.embed(history[:, :-1]), model.decoder.cross_kv(enc), rows_mask)
        full = model.output_log_probs(dec, enc, rows_ids, rows_mask)
    torch.testing.assert_close(torch.stack(cached, 1), full, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- sampling
def test_top_k_one_sampling_is_greedy(bart_pair):
    """Sampling restricted to the single best token reproduces greedy decoding."""
    _, model = bart_pair
    ids, mask = bart_inputs()
    greedy = generate(model, ids, mask, GenerationConfig(num_beams=1, max_new_tokens=10))
    sampled = generate(
        model, ids, mask, GenerationConfig(num_beams=1, do_sample=True, top_k=1, seed=3, max_new_tokens=10)
    )
    assert sampled.tokens == greedy.tokens


def test_sampling_is_reproducible_for_a_seed():
    """The same seed draws the same sequences; another seed draws different ones."""
    model = tiny_model(copy=True, seed=4, scale=0.3)
    ids, mask = padded_batch([6, 3, 5, 4], PAD, 1, TINY_VOCAB, seed=3)

    def draw(seed):
        cfg = GenerationConfig(num_beams=1, do_sample=True, temperature=1.5, top_p=0.95, seed=seed, max_new_tokens=12)
        return generate(model, ids, mask, cfg).tokens

    assert draw(11) == draw(11)
    assert draw(11) != draw(12)


def draws(probs, n=20000, **options):
    log_probs = torch.tensor(probs, dtype=torch.float32).log()[None].repeat(n, 1)
    cfg = GenerationConfig(num_beams=1, do_sample=True, **options)
    return torch.bincount(sample_token(log_probs, cfg, torch.Generator().manual_seed(0)), minlength=len(probs))


def test_top_p_samples_only_the_nucleus():
    """Nucleus sampling draws only from the smallest top set whose mass reaches p, in proportion."""
    probs = [0.1, 0.5, 0.05, 0.2, 0.15]  # sorted: 0.5, 0.2, 0.15 | 0.1, 0.05 → nucleus {1, 3, 4} for p=0.8
    counts = draws(probs, top_p=0.8)
    assert counts[0] == 0 and counts[2] == 0
    share = counts[[1, 3, 4]].float() / counts.sum()
    torch.testing.assert_close(share, torch.tensor([0.5, 0.2, 0.15]) / 0.85, atol=0.015, rtol=0)


def test_top_p_exact_boundary_excludes_the_next_token():
    """When the top tokens reach exactly p (dyadic, so exact in floating point), the nucleus stops
    there: {0.5, 0.25} for p = 0.75 (transformers' TopPLogitsWarper keeps the same set)."""
    counts = draws([0.5, 0.25, 0.125, 0.125], top_p=0.75)
    assert counts[2] == 0 and counts[3] == 0, f"sampled outside the nucleus: {counts.tolist()}"


def test_top_k_samples_only_the_k_best():
    """top_k=2 never draws outside the two most probable tokens."""
    counts = draws([0.1, 0.4, 0.05, 0.3, 0.15], top_k=2)
    assert counts[[0, 2, 4]].sum() == 0 and counts[1] > 0 and counts[3] > 0


# ----------------------------------------------------------------------------- n-gram ban
def brute_force_banned(sequence, n):
    """Tokens w such that (last n−1 tokens, w) already occurs as an n-gram of the sequence."""
    if len(sequence) < n:
        return set()
    prefix = tuple(sequence[len(sequence) - n + 1 :]) if n > 1 else ()
    grams = {tuple(sequence[i : i + n]) for i in range(len(sequence) - n + 1)}
    return {gram[-1] for gram in grams if gram[:-1] == prefix}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_ban_repeated_ngrams_matches_brute_force(n):
    """Exactly the tokens completing an n-gram already in the row are set to −inf."""
    g = torch.Generator().manual_seed(n)
    vocab = 6
    for length in range(1, 13):
        sequences = torch.randint(0, 4, (40, length), generator=g)  # a small alphabet makes repeats common
        log_probs = torch.randn(40, vocab, generator=g).log_softmax(-1)
        banned = ban_repeated_ngrams(sequences, log_probs, n)
        for row in range(40):
            expected = brute_force_banned(sequences[row].tolist(), n)
            got = {v for v in range(vocab) if banned[row, v] == float("-inf")}
            assert got == expected, (sequences[row].tolist(), n)
            keep = [v for v in range(vocab) if v not in expected]
            assert torch.equal(banned[row, keep], log_probs[row, keep])


def brute_force_word_pieces(sequence: list[int], continuation: set[int]) -> set[int]:
    """The continuation pieces of the word the sequence ends in (the word: its last non-piece token on)."""
    start = max((i for i, t in enumerate(sequence) if t not in continuation), default=0)
    return {t for t in sequence[start:] if t in continuation}


def check_against_brute_force(ban, expected, vocab: int, max_length: int):
    """`ban(sequences, log_probs)` sets exactly `expected(sequence)` to −inf in each row of random
    sequences (lengths 1 to max_length) and leaves every other score as it was."""
    g = torch.Generator().manual_seed(0)
    for length in range(1, max_length + 1):
        sequences = torch.randint(0, vocab, (50, length), generator=g)
        log_probs = torch.randn(50, vocab, generator=g).log_softmax(-1)
        banned = ban(sequences, log_probs.clone())
        for row in range(50):
            want = expected(sequences[row].tolist())
            assert {v for v in range(vocab) if banned[row, v] == float("-inf")} == want, sequences[row].tolist()
            keep = [v for v in range(vocab) if v not in want]
            assert torch.equal(banned[row, keep], log_probs[row, keep])


def test_ban_subword_loops_matches_brute_force():
    """Exactly the '##' pieces already in the current word are set to −inf."""
    continuation = {3, 4, 5}  # ids 3-5 continue a word ("##ps"), the rest start one
    mask = torch.tensor([i in continuation for i in range(8)])
    check_against_brute_force(
        lambda seqs, lp: ban_subword_loops(seqs, lp, mask),
        lambda seq: brute_force_word_pieces(seq, continuation),
        8,
        11,
    )


class ScriptedModel:
    """A model of the decoding protocol whose next-token scores are `scores(last tokens)`."""

    eos_token_id, decoder_start_token_id = 0, 1

    def __init__(self, scores):
        self.scores = scores

    def start_decoding(self, input_ids, attention_mask, num_beams, max_length):
        return {}

    def decode_step(self, state, tokens):
        return self.scores(tokens).log_softmax(-1)

    def reorder(self, state, index):
        pass


def test_ban_word_repeats_matches_brute_force():
    """After a one-piece word, exactly that token is set to −inf; after a "##" piece or a token
    without a letter, nothing is."""
    word_start = {2, 5, 6}  # ids 2, 5, 6 begin a word with a letter; the rest are pieces, "#", ","
    mask = torch.tensor([i in word_start for i in range(8)])
    check_against_brute_force(
        lambda seqs, lp: ban_word_repeats(seqs, lp, mask),
        lambda seq: {seq[-1]} if seq[-1] in word_start else set(),
        8,
        7,
    )


def test_block_word_repeats_stops_share_share():
    """A model that prefers "share" after anything writes "share share ..." (bigram blocking still
    lets a word follow itself once); with `block_word_repeats` no word follows itself, and a word
    of several pieces may still begin with the last word ("share ##holders" after "share")."""

    def scores(tokens):
        scores = torch.full((tokens.shape[0], 5), -5.0)
        scores[:, 2] = -0.1  # "share" is always the best next token
        scores[:, 3] = torch.where(tokens == 2, -0.5, -9.0)  # "##holders", after "share"
        scores[:, 4] = -2.0  # "prices"
        scores[:, 0] = -3.0
        return scores

    words = torch.tensor([False, False, True, False, True])
    ids = torch.ones(1, 2, dtype=torch.long)
    for beams in (1, 3):
        cfg = GenerationConfig(num_beams=beams, max_new_tokens=6, no_repeat_ngram_size=2)
        repeated = generate(ScriptedModel(scores), ids, None, cfg, word_start=words).tokens[0]
        assert [2, 2] in [repeated[i : i + 2] for i in range(len(repeated))], repeated
        cfg = dataclasses.replace(cfg, block_word_repeats=True)
        blocked = generate(ScriptedModel(scores), ids, None, cfg, word_start=words).tokens[0]
        assert all(not (a == b and words[a]) for a, b in zip(blocked, blocked[1:])), blocked
        assert [2, 3] in [blocked[i : i + 2] for i in range(len(blocked))], blocked


def test_word_lexicon_holds_the_words_of_several_pieces():
    lexicon = WordLexicon(continuation_ids={5, 6, 7})  # 5-7 are "##" pieces
    assert lexicon.words([1, 5, 2, 3, 6, 7, 4]) == [(1, 5), (2,), (3, 6, 7), (4,)]
    lexicon.add([1, 5, 2, 3, 6, 7, 4])
    assert lexicon.allowed_after((1,)) == {5} and lexicon.allowed_after((3, 6)) == {7}
    assert lexicon.allowed_after((2,)) == set() and lexicon.allowed_after((3, 6, 7)) == set()


def test_ban_unknown_words_matches_brute_force():
    """Exactly the "##" pieces that would not continue the current word along a known word are −inf."""
    continuation = {5, 6, 7, 8}
    known = [(0, 5), (1, 6), (2, 5, 7), (2, 6, 8), (3, 7, 7, 5), (4, 8, 6, 6), (0, 5, 5)]
    lexicon = WordLexicon(continuation)
    for word in known:
        lexicon.add(list(word))

    def expected(sequence):
        start = max((i for i, t in enumerate(sequence) if t not in continuation), default=0)
        word = tuple(sequence[start:])
        return {p for p in continuation if not any(k[: len(word) + 1] == word + (p,) for k in known)}

    check_against_brute_force(lambda seqs, lp: ban_unknown_words(seqs, lp, lexicon), expected, 9, 6)


def test_a_lexicon_stops_pieces_glued_onto_another_word():
    """A model that always wants "##us" next writes "nigeria ##us" without a lexicon; with one that
    knows "fest ##us" it writes "nigeria", and may still write "fest ##us"."""

    def scores(tokens):  # ids: 2 "nigeria", 3 "fest", 4 "##us"
        scores = torch.full((tokens.shape[0], 5), -6.0)
        scores[:, 4] = torch.where(tokens == 1, -9.0, -0.1)
        scores[:, 2] = torch.where(tokens == 1, -0.1, -3.0)
        scores[:, 3] = -2.0
        scores[:, 0] = -2.5
        return scores

    lexicon = WordLexicon(continuation_ids={4})
    lexicon.add([3, 4])
    ids = torch.ones(1, 2, dtype=torch.long)
    for beams in (1, 3):
        cfg = GenerationConfig(num_beams=beams, max_new_tokens=4)
        assert generate(ScriptedModel(scores), ids, None, cfg).tokens[0][:2] == [2, 4]
        written = generate(ScriptedModel(scores), ids, None, cfg, lexicon=lexicon).tokens[0]
        assert all(b != 4 or a == 3 for a, b in zip([1] + written, written)), written


def test_block_subword_loops_stops_a_copy_loop():
    """A model that always prefers '##ps' after 'ms' writes 'ms ##ps ##ps ...' unless loops are blocked."""
    from ctxlm.predict import Seq2SeqPredictor  # noqa: F401 (the predictor passes the tokenizer's pieces)

    def scores(tokens):
        scores = torch.full((tokens.shape[0], 5), -5.0)
        scores[:, 3] = -0.1  # "##ps" is always the best next token
        scores[:, 2] = -1.0  # then "ms"
        scores[:, 0] = -3.0  # then the end
        return scores

    mask = torch.tensor([False, False, False, True, False])
    ids = torch.ones(1, 2, dtype=torch.long)
    for beams in (1, 3):
        cfg = GenerationConfig(num_beams=beams, max_new_tokens=6)
        looped = generate(ScriptedModel(scores), ids, None, cfg, continuation=mask).tokens[0]
        assert looped.count(3) >= 5
        cfg = dataclasses.replace(cfg, block_subword_loops=True)
        blocked = generate(ScriptedModel(scores), ids, None, cfg, continuation=mask).tokens[0]
        words = " ".join({3: "##ps", 2: "ms", 0: "[end]"}.get(t, "?") for t in blocked).split("ms")
        assert all(word.count("##ps") <= 1 for word in words), blocked


def test_cli_decoding_flags_reach_the_generation_config():
    """`--block-subword-loops` and `--no-repeat-ngram` override the model's generation.json defaults."""
    from ctxlm.cli import build_parser
    from ctxlm.cli_parser import _generation_config

    args = build_parser().parse_args(
        ["generate", "--model", "m", "--text", "t", "--block-subword-loops", "true", "--no-repeat-ngram", "2"]
    )
    cfg = _generation_config(args, GenerationConfig(num_beams=3))
    assert (cfg.block_subword_loops, cfg.no_repeat_ngram_size, cfg.num_beams) == (True, 2, 3)
    args = build_parser().parse_args(["generate", "--model", "m", "--text", "t", "--block-subword-loops", "false"])
    assert _generation_config(args, GenerationConfig(block_subword_loops=True)).block_subword_loops is False
    args = build_parser().parse_args(["generate", "--model", "m", "--text", "t", "--block-word-repeats", "true"])
    assert _generation_config(args, GenerationConfig()).block_word_repeats is True
