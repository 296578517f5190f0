"""UniLMv2 model (Bao et al., 2020): relative positions, no leakage, one-pass PMLM, cached decoding,
NLU heads and a short pre-training run."""

from __future__ import annotations


import numpy as np
import pytest
import torch
from transformers.models.t5.modeling_t5 import T5Attention

from conftest import wiki_slice
from ctxlm.config import TrainConfig
from ctxlm.families.unilm import UnilmDataConfig
from ctxlm.config_loading import named_model_config
from ctxlm.data.store import TokenStore
from ctxlm.generation import GenerationConfig, generate
from ctxlm.models.unilm import (
    RelativePositionBias,
    UnilmClassifier,
    UnilmModel,
    UnilmQuestionAnswering,
    relative_position_bucket,
)
from ctxlm.objectives.masking import IGNORE_INDEX, example_rng
from ctxlm.objectives.unilm import (
    UnilmTokens,
    build_classification_input,
    build_pmlm_example,
    build_seq2seq_example,
    build_seq2seq_prompt,
    prepare_unilm_data,
    unilm_tokens,
)
from ctxlm.pretraining import model_config_for_tokenizer
from ctxlm.tokenization import train_tokenizer
from ctxlm.run_options import RunOptions
from ctxlm.training import TrainingInputs, collate, evaluate, train

pytestmark = pytest.mark.usefixtures("single_thread")

VOCAB = 60
TOK = UnilmTokens(sos=2, eos=3, mask=4, pseudo=9, pad=0, replace_pool=np.arange(10, VOCAB))
X = [11, 12, 13, 14, 15, 16]  # the paper's x1..x6 (Figures 3-5)


def tiny_model(seed: int = 0, **overrides) -> UnilmModel:
    """Dropout off; weights and relative biases large enough that any wrong input shows."""
    torch.manual_seed(seed)
    values = dict(
        vocab_size=VOCAB,
        d_model=32,
        num_layers=2,
        num_heads=4,
        ffn_dim=64,
        max_position_embeddings=96,
        dropout=0.0,
        attention_dropout=0.0,
        init_std=0.2,
        pad_token_id=TOK.pad,
        bos_token_id=TOK.sos,
        eos_token_id=TOK.eos,
        mask_token_id=TOK.mask,
        pseudo_token_id=TOK.pseudo,
    )
    values.update(overrides)
    model = UnilmModel(named_model_config("unilm-tiny", **values)).eval()
    if model.rel_pos_bias is not None:
        with torch.no_grad():
            model.rel_pos_bias.embedding.weight.normal_(0.0, 1.0)
    return model


def batch_of(examples: list[dict]) -> dict[str, torch.Tensor]:
    return collate([{k: v for k, v in e.items() if isinstance(v, np.ndarray)} for e in examples], TOK.pad)


def random_pmlm(seed: int, objective: str = "ae+par") -> dict:
    """A random PMLM example without the in-place 80/10/10 (every masked position is [M])."""
    r = np.random.default_rng(seed)
    a = r.integers(10, VOCAB, size=int(r.integers(6, 30)))
    b = r.integers(10, VOCAB, size=int(r.integers(0, 20)))
    return build_pmlm_example(a, b, example_rng(3, 0, seed), TOK, objective=objective, mask_frac=1.0, random_frac=0.0)


def paper_example() -> dict:
    """Figure 4: x2, x4, x5 masked, factorization order 4, 5 -> 2 (0-based positions 3, 4 then 1)."""
    return build_pmlm_example(
        X,
        [],
        np.random.default_rng(0),
        TOK,
        steps=[[3, 4], [1]],
        add_special_tokens=False,
        mask_frac=1.0,
        random_frac=0.0,
    )


def pmlm_roles(ex: dict) -> tuple[np.ndarray, np.ndarray]:
    """Factorization step (0 = in-place) and [P]-flag of every token, read off the example."""
    n, ids = ex["num_original"], ex["input_ids"]
    is_p = np.zeros(len(ids), dtype=bool)
    is_p[n:] = ids[n:] == TOK.pseudo
    step, current = np.zeros(len(ids), dtype=np.int64), 0
    for k in range(n, len(ids)):  # each step is its [P]s, then its originals
        if is_p[k] and not is_p[k - 1]:
            current += 1
        step[k] = current
    return step, is_p


# ----------------------------------------------------------------------------- relative positions
@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (16, 64), (64, 256)])
def test_buckets_equal_t5(buckets, max_distance):
    relative = torch.arange(-300, 301)[None, :]
    ours = relative_position_bucket(relative, buckets, max_distance)
    ref = T5Attention._relative_position_bucket(
        relative, bidirectional=True, num_buckets=buckets, max_distance=max_distance
    )
    assert torch.equal(ours, ref)
    # every bucket is reached except "distance 0 to the right" (T5's bidirectional quirk)
    assert set(ours.flatten().tolist()) == set(range(buckets)) - {buckets // 2}


def test_bias_reads_key_minus_query_of_position_ids():
    """bias[b, h, q, k] = table[bucket(pos[k] − pos[q]), h], positions taken from the ids, not indices."""
    torch.manual_seed(0)
    module = RelativePositionBias(32, 3, 128)
    positions = torch.randint(0, 400, (2, 9))
    bias = module(positions, positions)
    for b in range(2):
        for q in range(9):
            for k in range(9):
                bucket = T5Attention._relative_position_bucket(positions[b, k] - positions[b, q], True, 32, 128)
                torch.testing.assert_close(bias[b, :, q, k], module.embedding.weight[bucket])


def test_relative_bias_is_used_and_one_shared_table():
    on, off = tiny_model(1), tiny_model(1, relative_position_bias=False)
    names = [n for n, _ in on.named_parameters() if n not in dict(off.named_parameters())]
    assert names == ["rel_pos_bias.embedding.weight"]  # one table for all layers
    assert on.rel_pos_bias.embedding.weight.shape == (32, 4)
    off.load_state_dict({k: v for k, v in on.state_dict().items() if k not in names})
    batch = batch_of([random_pmlm(0), random_pmlm(1)])
    with torch.no_grad():
        h_on, h_off = on.hidden_states(**_inputs(batch)), off.hidden_states(**_inputs(batch))
        assert (h_on - h_off).abs().max() > 1e-2
        on.rel_pos_bias.embedding.weight.zero_()  # a zero bias is exactly the model without it
        torch.testing.assert_close(on.hidden_states(**_inputs(batch)), h_off, atol=1e-5, rtol=0)
    # and it is trained
    on.rel_pos_bias.embedding.weight.data.normal_()
    on(**batch).loss.backward()
    assert on.rel_pos_bias.embedding.weight.grad.abs().sum() > 0


def _inputs(batch):
    return {k: batch[k] for k in ("input_ids", "position_ids", "token_type_ids", "attention_mask")}


# ----------------------------------------------------------------------------- leakage (§3.2)
def influence(model: UnilmModel, ex: dict, query: int, attention_mask=None) -> torch.Tensor:
    """|d (random projection of the logits at `query`) / d (input vector of each token)|, (L,)."""
    ids = torch.tensor(ex["input_ids"])[None]
    emb = model.embeddings.word_embeddings(ids).detach().requires_grad_()
    mask = torch.tensor(ex["attention_mask"] if attention_mask is None else attention_mask)[None]
    states = model.hidden_states(
        ids,
        torch.tensor(ex["position_ids"])[None],
        torch.tensor(ex["token_type_ids"])[None],
        mask,
        token_embeddings=emb,
    )
    logits = model.lm_logits(states[0, query])
    direction = torch.randn(logits.shape, generator=torch.Generator().manual_seed(int(query)))
    (grad,) = torch.autograd.grad((logits * direction).sum(), emb)
    return grad[0].abs().sum(-1)


@pytest.mark.parametrize("which", ["paper", 0, 1, 2, 3])
def test_no_leak_by_gradients(which):
    model = tiny_model(2)
    ex = paper_example() if which == "paper" else random_pmlm(which)
    n = ex["num_original"]
    step, is_p = pmlm_roles(ex)
    originals = np.flatnonzero((step > 0) & ~is_p)
    for q in np.flatnonzero(is_p):  # PAR: never its own original, nor those of its or later steps
        g = influence(model, ex, q)
        assert (g[originals[step[originals] >= step[q]]] == 0).all()
        assert (g[originals[step[originals] < step[q]]] > 0).all()  # earlier steps are its context
        assert (g[:n] > 0).all()
    for q in np.flatnonzero(ex["ae_labels"] != IGNORE_INDEX):  # AE: no appended token at all
        g = influence(model, ex, q)
        assert (g[n:] == 0).all() and (g[:n] > 0).all()
    # the check can fail: with everyone attending everyone, a [P] sees its own original
    q = int(np.flatnonzero(is_p)[0])
    own = originals[ex["position_ids"][originals] == ex["position_ids"][q]]
    full = np.ones_like(ex["attention_mask"])
    assert (influence(model, ex, q, full)[own] > 0).all()


@pytest.mark.parametrize("which", ["paper", 0, 1])
def test_no_leak_by_gradients_with_kept_and_random_tokens_in_place(which):
    """With BERT's kept/random tokens in place (no [M] at all here), a [P] of step i gets no gradient
    from any in-place position masked at step >= i, over both layers; earlier steps' are its context."""
    model = tiny_model(4)
    corruption = dict(mask_frac=0.0, random_frac=0.5)
    if which == "paper":
        ex = build_pmlm_example(
            X, [], np.random.default_rng(0), TOK, steps=[[3, 4], [1]], add_special_tokens=False, **corruption
        )
    else:
        r = np.random.default_rng(which)
        ex = build_pmlm_example(
            r.integers(10, VOCAB, size=24), r.integers(10, VOCAB, size=12), example_rng(3, 0, which), TOK, **corruption
        )
    n, pos = ex["num_original"], ex["position_ids"]
    step, is_p = pmlm_roles(ex)
    in_place_step = np.zeros(n, dtype=np.int64)
    originals = np.flatnonzero((step > 0) & ~is_p)
    in_place_step[pos[originals]] = step[originals]
    for q in np.flatnonzero(is_p):
        g = influence(model, ex, q)[:n]
        assert (g[in_place_step >= step[q]] == 0).all()
        assert (g[in_place_step < step[q]] > 0).all()
    # the check can fail: Figure 5's mask as written (every in-place token visible to every [P])
    figure_5 = ex["attention_mask"].copy()
    figure_5[n:, :n] |= figure_5[n:, :1]  # every appended query sees the whole in-place part
    figure_5[:n, :n] = True
    q = int(np.flatnonzero(is_p)[0])
    assert (influence(model, ex, q, figure_5)[:n][in_place_step >= step[q]] > 0).all()


# ----------------------------------------------------------------------------- one pass (Figure 3)
def step_instance(ex: dict, i: int) -> tuple[dict, np.ndarray]:
    """The separate instance that predicts factorization step i (Figure 3's PAR row), laid out in a
    different array order: [P]s of step i, then the originals of steps < i (latest step first),
    then the in-place part. Every token keeps its position id and segment. Attention, from the roles
    alone: in-place tokens see the in-place part (bidirectional, as the cloze input x with all of
    M masked); an original of step s sees the in-place part and the originals of steps <= s; a [P]
    sees the whole instance. Returns the instance and the index of each [P] in it."""
    step, is_p = pmlm_roles(ex)
    pseudo = np.flatnonzero(is_p & (step == i))
    earlier = [k for s in range(i - 1, 0, -1) for k in np.flatnonzero(~is_p & (step == s))]
    order = np.concatenate([pseudo, np.array(earlier, dtype=np.int64), np.arange(ex["num_original"])])
    s, p = step[order], is_p[order]
    mask = np.where(p[:, None], True, (s[None, :] == 0) | ((s[None, :] <= s[:, None]) & (s[:, None] > 0)))
    mask &= ~p[None, :] | p[:, None]  # only [P]s see [P]s
    instance = {k: ex[k][order] for k in ("input_ids", "position_ids", "token_type_ids")}
    instance["attention_mask"] = mask
    return instance, np.arange(len(pseudo))


@pytest.mark.parametrize("which", ["paper", 4, 5, 6])
def test_one_pass_equals_one_instance_per_step(which):
    model = tiny_model(3)
    ex = paper_example() if which == "paper" else random_pmlm(which)
    step, is_p = pmlm_roles(ex)
    with torch.no_grad():
        one_pass = model.lm_logits(model.hidden_states(**_inputs(batch_of([ex])))[0])
        for i in range(1, step.max() + 1):
            instance, rows = step_instance(ex, i)
            separate = model.lm_logits(model.hidden_states(**_inputs(batch_of([instance])))[0])
            torch.testing.assert_close(separate[rows], one_pass[is_p & (step == i)], atol=1e-5, rtol=0)
    # and the loss reads those logits: PAR NLL = −log p of the original at every [P]
    out = model(**batch_of([ex]))
    labels = torch.tensor(ex["par_labels"])
    expected = torch.nn.functional.cross_entropy(
        one_pass[labels != IGNORE_INDEX], labels[labels != IGNORE_INDEX], reduction="sum"
    )
    torch.testing.assert_close(out.metrics["par_nll_sum"], expected, atol=1e-4, rtol=1e-5)
    assert int(out.metrics["par_tokens"]) == int(is_p.sum())


# ----------------------------------------------------------------------------- seq2seq decoding (§3.4)
SOURCES = [[11, 12, 13, 14, 15, 16, 17], [20, 21, 22], [30, 31, 32, 33, 34]]


def prompts() -> tuple[torch.Tensor, torch.Tensor]:
    rows = [build_seq2seq_prompt(s, TOK)["input_ids"] for s in SOURCES]
    width = max(map(len, rows))
    ids = torch.tensor(np.array([np.r_[r, np.full(width - len(r), TOK.pad)] for r in rows]))
    return ids, ids.ne(TOK.pad)


def full_log_probs(model, sources, targets) -> list[torch.Tensor]:
    """Per row, log P of every target token (TGT [EOS]) from one forward over the fine-tuning layout."""
    examples = [build_seq2seq_example(s, t, TOK) for s, t in zip(sources, targets)]
    out = model(**batch_of(examples), return_log_probs=True)
    return list(out.log_probs.split([len(t) + 1 for t in targets]))


@torch.no_grad()
def cached_steps_with_reorder(model, ids, mask, beams: int, steps: int, words: tuple[int, int]):
    """`decode_step` fed random words of range `words` for `steps` steps from the start token,
    the rows reordered by hand before step 3: (the log-probs of every step stacked (N, steps, V),
    the targets each row was fed, its last token left out)."""
    g = torch.Generator().manual_seed(0)
    history = torch.full((len(ids) * beams, 1), model.decoder_start_token_id)
    state = model.start_decoding(ids, mask, num_beams=beams, max_length=steps + 1)
    cached = []
    for step in range(steps):
        if step == 3:
            index = torch.tensor([1, 1, 3, 2, 4, 4])
            model.reorder(state, index)
            history, cached = history[index], [c[index] for c in cached]
        cached.append(model.decode_step(state, history[:, -1]))
        history = torch.cat([history, torch.randint(*words, (len(history), 1), generator=g)], dim=1)
    return torch.stack(cached, 1), [h[1:-1].tolist() for h in history]


def test_cached_steps_equal_full_recomputation():
    """decode_step's log-probs (padded batch, beams, rows reordered mid-way) equal one forward pass
    of `build_seq2seq_example` with `labels` over the same target."""
    model = tiny_model(4)
    ids, mask = prompts()
    beams = 2
    cached, targets = cached_steps_with_reorder(model, ids, mask, beams, 6, (10, VOCAB))
    sources = [s for s in SOURCES for _ in range(beams)]  # targets: steps − 1 tokens; the last label is [EOS]
    with torch.no_grad():
        full = full_log_probs(model, sources, targets)
    torch.testing.assert_close(cached, torch.stack(full), atol=1e-5, rtol=0)


def eos_friendly(seed: int) -> UnilmModel:
    model = tiny_model(seed)
    with torch.no_grad():
        model.mlm_head.bias[TOK.eos] += 2.0  # hypotheses of different lengths end with [EOS]
    return model


def test_greedy_matches_recomputation():
    model = eos_friendly(7)
    ids, mask = prompts()
    out = generate(model, ids, mask, GenerationConfig(num_beams=1, max_new_tokens=8))
    assert len({len(t) for t in out.tokens}) > 1  # rows end at different steps
    with torch.no_grad():
        full = full_log_probs(model, SOURCES, [t[:-1] if t[-1] == TOK.eos else t for t in out.tokens])
    for tokens, score, lp in zip(out.tokens, out.scores, full):
        lp = lp[: len(tokens)]
        assert lp.argmax(-1).tolist() == tokens
        assert score == pytest.approx(float(lp.max(-1).values.sum()), abs=1e-4)


def test_beam_search_scores_match_recomputation():
    model = eos_friendly(10)
    ids, mask = prompts()
    cfg = GenerationConfig(num_beams=3, max_new_tokens=8, length_penalty=1.0)
    out = generate(model, ids, mask, cfg)
    assert len({len(t) for t in out.tokens}) == 3 and TOK.eos in out.tokens[1]
    with torch.no_grad():
        full = full_log_probs(model, SOURCES, [t[:-1] if t[-1] == TOK.eos else t for t in out.tokens])
    for tokens, score, lp in zip(out.tokens, out.scores, full):
        total = lp[torch.arange(len(tokens)), torch.tensor(tokens)].sum()
        assert score == pytest.approx(float(total) / len(tokens), abs=1e-4)
    greedy = generate(model, ids, mask, GenerationConfig(num_beams=1, max_new_tokens=8))
    assert out.tokens != greedy.tokens  # beams explored something else


# ----------------------------------------------------------------------------- NLU heads
def test_classifier_learns_a_separable_task_and_shapes():
    torch.manual_seed(0)
    model = UnilmClassifier(tiny_model(7, init_std=0.02), num_labels=3).train()  # the paper's linear head
    r = np.random.default_rng(0)
    examples = []
    for i in range(24):
        label = i % 3
        text = r.integers(20, VOCAB, size=int(r.integers(3, 9)))
        text[r.integers(len(text))] = 10 + label  # the class is the marker token 10, 11 or 12
        examples.append({**build_classification_input(text, [13, 14], TOK), "labels": np.array(label)})
    batch = collate(examples, TOK.pad)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = model(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert out.logits.shape == (24, 3)
    assert set(out.metrics) == {"cls_nll_sum", "cls_tokens", "cls_accuracy_sum", "cls_accuracy_count"}
    assert int(out.metrics["cls_tokens"]) == int(out.metrics["cls_accuracy_count"]) == 24
    assert losses[-1] < 0.1 * losses[0]
    assert (out.logits.argmax(-1) == batch["labels"]).all() and int(out.metrics["cls_accuracy_sum"]) == 24
    regression = UnilmClassifier(tiny_model(7).config, num_labels=1, pooler=True)
    batch["labels"] = torch.rand(24)
    out = regression(**batch)
    assert out.logits.shape == (24, 1)
    torch.testing.assert_close(out.metrics["mse_sum"] / 24, out.loss.detach())


def test_question_answering_head():
    model = UnilmQuestionAnswering(tiny_model(8))
    ex = build_classification_input([11, 12], [20, 21, 22, 23], TOK)  # [SOS] q q [EOS] p p p p [EOS]
    answer = np.zeros(len(ex["input_ids"]), dtype=bool)
    answer[4:8] = True
    batch = collate([{**ex, "answer_mask": answer, "start_positions": np.array(5), "end_positions": np.array(6)}], 0)
    out = model(**batch)
    assert out.logits.shape == (1, 9, 2)
    assert torch.isinf(out.logits[0, ~torch.tensor(answer)]).all()
    log_p = out.logits[0].log_softmax(0)
    torch.testing.assert_close(out.loss, -(log_p[5, 0] + log_p[6, 1]) / 2)
    out.loss.backward()


# ----------------------------------------------------------------------------- pre-training
@pytest.mark.slow
def test_short_pretraining_lowers_held_out_ae_and_par_losses(data_dir, tmp_path):
    corpus = wiki_slice(tmp_path / "wiki.txt", 3000)
    tokenizer = train_tokenizer(corpus, 1000)
    store = TokenStore.build(corpus, tokenizer, cache_dir=tmp_path / "cache", num_workers=1, progress=False)
    data = UnilmDataConfig(max_length=64, valid_fraction=0.05)
    train_set, valid_set, info = prepare_unilm_data(store, unilm_tokens(tokenizer), data, seed=0, max_positions=64)
    assert info["train_chunks"] > 100 and len(valid_set) >= 16
    cfg = model_config_for_tokenizer(
        named_model_config(
            "unilm-tiny", d_model=64, num_layers=2, num_heads=4, ffn_dim=128, max_position_embeddings=64
        ),
        tokenizer,
    )
    torch.manual_seed(0)
    model = UnilmModel(cfg)
    before = evaluate(model, valid_set, 16, tokenizer.pad_id, max_batches=4)
    train(
        model,
        TrainingInputs(train_set, tokenizer.pad_id),
        TrainConfig(
            max_steps=100,
            batch_size=16,
            lr=2e-3,
            warmup_steps=10,
            eval_every=0,
            save_every=0,
            keep_checkpoints=0,
            progress=False,
        ),
        tmp_path / "run",
        run=RunOptions(device="cpu"),
    )
    after = evaluate(model, valid_set, 16, tokenizer.pad_id, max_batches=4)
    # from ln(1000) = 6.9 nats (uniform) towards the unigram entropy (6.0 on this slice) and below
    for name in ("ae", "par"):
        assert after[f"{name}_loss"] < before[f"{name}_loss"] - 0.5, (before, after)
