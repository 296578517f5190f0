"""PALM's pointer-generator (paper §2.3, eqs. 2-8) against hand computation and limiting cases."""

import math

import pytest
import torch

from ctxlm.models import pointer_generator
from ctxlm.models.pointer_generator import PointerGenerator, additive_scores


pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------- a hand example
D, V = 2, 4
W_V = [[0.5, -0.2], [0.1, 0.3]]
B_V = [0.05, -0.1]
W_M = [[0.2, 0.4], [-0.3, 0.1]]
W_S = [[0.3, -0.1], [0.2, 0.25]]
B_C = [0.1, -0.05]
W_C = [0.7, -0.4]
GATE_W = [0.3, -0.2, 0.15, 0.1]  # [w_z; w_s]
GATE_B = 0.05  # b_m
EMB = [[0.2, -0.1], [0.4, 0.3], [-0.3, 0.5], [0.1, 0.1]]  # W_e, tied
LOGIT_BIAS = [0.0, 0.1, -0.2, 0.3]
S_T = [[0.5, -1.0], [1.2, 0.3]]  # two decoder states s_t
H = [[0.3, 0.8], [-0.5, 0.2], [1.0, -0.4]]  # encoder states h_1..h_3
X = [1, 3, 1]  # source tokens: token 1 occurs twice


def matvec(w, x, b=None):
    return [sum(wij * xj for wij, xj in zip(row, x)) + (b[i] if b else 0.0) for i, row in enumerate(w)]


def softmax(xs):
    m = max(xs)
    exps = [math.exp(x - m) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


def hand_distribution(s):
    """P(y_t) for one decoder state, eqs. (2)-(8) in plain Python."""
    hidden = matvec(W_V, s, B_V)
    p_v = softmax([sum(e * h for e, h in zip(row, hidden)) + bias for row, bias in zip(EMB, LOGIT_BIAS)])  # (2)
    query = matvec(W_S, s, B_C)
    e = [sum(wc * math.tanh(m + q) for wc, m, q in zip(W_C, matvec(W_M, h), query)) for h in H]  # (3)
    alpha = softmax(e)  # (4)
    z = [sum(a * h[k] for a, h in zip(alpha, H)) for k in range(D)]  # (5)
    p_c = [sum(a for a, x in zip(alpha, X) if x == v) for v in range(V)]  # (6)
    lam = 1 / (1 + math.exp(-(sum(w * v for w, v in zip(GATE_W, z + list(s))) + GATE_B)))  # (8)
    return [lam * pv + (1 - lam) * pc for pv, pc in zip(p_v, p_c)]  # (7)


def hand_module():
    pg = PointerGenerator(D).double()
    with torch.no_grad():
        pg.W_v.weight.copy_(torch.tensor(W_V))
        pg.W_v.bias.copy_(torch.tensor(B_V))
        pg.W_m.weight.copy_(torch.tensor(W_M))
        pg.W_s.weight.copy_(torch.tensor(W_S))
        pg.W_s.bias.copy_(torch.tensor(B_C))
        pg.w_c.copy_(torch.tensor(W_C))
        pg.gate.weight.copy_(torch.tensor([GATE_W]))
        pg.gate.bias.fill_(GATE_B)
    return pg


def run(pg, s, h, x, mask, emb, bias=None):
    return pg(s, h, pg.project_memory(h), x, mask, emb, bias)


def test_matches_hand_computation():
    """Eqs. (2)-(8) on a 3-token source with fixed weights equal a plain-Python computation."""
    pg = hand_module()
    s = torch.tensor([S_T], dtype=torch.float64)
    h = torch.tensor([H], dtype=torch.float64)
    log_p = run(
        pg,
        s,
        h,
        torch.tensor([X]),
        torch.ones(1, 3),
        torch.tensor(EMB, dtype=torch.float64),
        torch.tensor(LOGIT_BIAS, dtype=torch.float64),
    )
    assert log_p.shape == (1, 2, V)
    for t, state in enumerate(S_T):
        expected = hand_distribution(state)
        assert log_p[0, t].exp().tolist() == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------- random inputs
def random_case(seed=0, b=3, t=5, s=7, d=8, v=13, pad=0):
    """Random states, a source with right padding (pad id only at padded positions), a random head."""
    g = torch.Generator().manual_seed(seed)
    pg = PointerGenerator(d)
    with torch.no_grad():
        for p in pg.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)
    states = torch.randn(b, t, d, generator=g)
    enc = torch.randn(b, s, d, generator=g)
    ids = torch.randint(1, v, (b, s), generator=g)
    lengths = torch.tensor([s, s - 2, 3][:b])
    mask = (torch.arange(s)[None, :] < lengths[:, None]).long()
    ids = ids.masked_fill(mask == 0, pad)
    emb = torch.randn(v, d, generator=g)
    return pg, states, enc, ids, mask, emb


def test_distributions_sum_to_one():
    """exp(log P) sums to 1 at every position, with padding in the source."""
    for seed in range(3):
        pg, s, h, x, mask, emb = random_case(seed)
        log_p = run(pg, s, h, x, mask, emb, torch.randn(emb.shape[0]))
        assert log_p.dtype == torch.float32
        torch.testing.assert_close(log_p.exp().sum(-1), torch.ones(log_p.shape[:2]), atol=1e-5, rtol=0)


def set_gate(pg, bias):
    with torch.no_grad():
        pg.gate.weight.zero_()
        pg.gate.bias.fill_(bias)


def test_lambda_one_is_the_vocabulary_softmax():
    """λ ≡ 1 (gate bias +1e4, weights 0): P = softmax(W_e(W_v s + b_v) + bias), eq. (2)."""
    pg, s, h, x, mask, emb = random_case(1)
    set_gate(pg, 1e4)
    bias = torch.randn(emb.shape[0])
    log_p = run(pg, s, h, x, mask, emb, bias)
    hidden = s @ pg.W_v.weight.T + pg.W_v.bias
    expected = torch.softmax(hidden @ emb.T + bias, dim=-1)
    torch.testing.assert_close(log_p.exp(), expected, atol=1e-7, rtol=1e-6)


def test_lambda_zero_is_the_copy_distribution():
    """λ ≡ 0: P = P_c, the attention mass of each token in the source (eq. 6); tokens absent from
    the source (or present only at padded positions) get probability 0."""
    pg, s, h, x, mask, emb = random_case(2)
    set_gate(pg, -1e4)
    log_p = run(pg, s, h, x, mask, emb)
    # reference α from eqs. (3)-(4), written with explicit loops over source positions
    b, t, _ = s.shape
    p_c = torch.zeros(b, t, emb.shape[0])
    for i in range(b):
        real = [l for l in range(x.shape[1]) if mask[i, l]]
        for j in range(t):
            e = torch.stack(
                [pg.w_c @ torch.tanh(pg.W_m.weight @ h[i, l] + pg.W_s.weight @ s[i, j] + pg.W_s.bias) for l in real]
            )
            alpha = torch.softmax(e, 0)
            for a, l in zip(alpha, real):
                p_c[i, j, x[i, l]] += a
    torch.testing.assert_close(log_p.exp(), p_c.detach(), atol=1e-6, rtol=1e-5)
    present = p_c > 0
    torch.testing.assert_close(log_p[present], p_c[present].log().detach(), atol=1e-5, rtol=1e-5)
    assert (log_p.exp()[:, :, 0] == 0).all(), "the pad id (only at padded positions) is never copied"


def test_repeated_source_token_gets_summed_attention():
    """With w_c = 0 attention is uniform over the m real positions, so P_c(token) = count / m."""
    pg, s, h, _, _, emb = random_case(3, b=1, s=7)
    set_gate(pg, -1e4)
    with torch.no_grad():
        pg.w_c.zero_()
    x = torch.tensor([[5, 7, 5, 5, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]])
    p = run(pg, s, h, x, mask, emb).exp()[0]
    expected = torch.zeros(emb.shape[0])
    expected[5], expected[7], expected[9] = 3 / 5, 1 / 5, 1 / 5
    torch.testing.assert_close(p, expected.expand_as(p), atol=1e-6, rtol=0)


def test_gradients_finite_where_copy_probability_is_zero():
    """Tokens with P_c = 0 (log P_c = −inf) leave every gradient finite."""
    pg, s, h, x, mask, emb = random_case(4)
    s.requires_grad_(True)
    h.requires_grad_(True)
    emb.requires_grad_(True)
    log_p = run(pg, s, h, x, mask, emb)
    absent = [v for v in range(emb.shape[0]) if not (x[mask.bool()] == v).any()]
    assert absent, "the case needs tokens that are not in the source"
    present = int(x[0, 0])
    loss = -(log_p[..., absent].sum() + log_p[..., present].sum())
    loss.backward()
    grads = [p.grad for p in pg.parameters()] + [s.grad, h.grad, emb.grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert pg.gate.weight.grad.abs().sum() > 0 and pg.w_c.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- chunked eq. (3)
def direct_scores(memory, query, w_c):
    """e_tl = w_c · tanh(memory_l + query_t), one (t, l) pair at a time."""
    b, s, _ = memory.shape
    t = query.shape[1]
    return torch.stack(
        [
            torch.stack(
                [torch.stack([w_c @ torch.tanh(memory[i, l] + query[i, j]) for l in range(s)]) for j in range(t)]
            )
            for i in range(b)
        ]
    )


@pytest.mark.parametrize("chunk_elements", [40, 120, 1 << 24])
def test_chunked_scores_equal_direct_evaluation(monkeypatch, chunk_elements):
    """Chunked, checkpointed eq. (3) equals a direct evaluation in values and gradients (chunks of
    one target position, uneven chunks, and a single checkpointed chunk)."""
    monkeypatch.setattr(pointer_generator, "CHUNK_ELEMENTS", chunk_elements)
    g = torch.Generator().manual_seed(0)
    memory, query, w_c = (
        torch.randn(shape, generator=g, dtype=torch.float64) for shape in [(2, 5, 4), (2, 7, 4), (4,)]
    )
    weights = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)

    def values_and_grads(fn):
        inputs = [t.clone().requires_grad_(True) for t in (memory, query, w_c)]
        out = fn(*inputs)
        (out * weights).sum().backward()
        return out.detach(), [t.grad for t in inputs]

    out, grads = values_and_grads(additive_scores)
    ref, ref_grads = values_and_grads(direct_scores)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=1e-12)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(additive_scores(memory, query, w_c), ref)


def values_and_grads(fn, memory, query, w_c, weights):
    inputs = [t.clone().requires_grad_(True) for t in (memory, query, w_c)]
    out = fn(*inputs)
    (out * weights).sum().backward()
    return out.detach(), [t.grad for t in inputs]


def test_exp_form_is_eq_3():
    """tanh(a + b) = 1 − 2 / (1 + e^{2a} e^{2b}): the fused kernel's forward formula and its
    hand-written gradients equal eq. (3) evaluated directly and differentiated by autograd, in
    float64 (inputs up to the ±40 bound included)."""
    g = torch.Generator().manual_seed(1)
    memory, query, w_c = (
        torch.randn(shape, generator=g, dtype=torch.float64) * 3 for shape in [(2, 5, 4), (2, 7, 4), (4,)]
    )
    memory[0, 0, 0], query[0, 0, 0], query[1, 1, 1] = 40.0, -39.5, -40.0  # cancel to tanh(0.5); saturate
    weights = torch.randn(2, 7, 5, generator=g, dtype=torch.float64)
    ref, ref_grads = values_and_grads(direct_scores, memory, query, w_c, weights)
    a, b = torch.exp(2 * memory), torch.exp(2 * query)
    torch.testing.assert_close(pointer_generator.exp_form_scores(a, b, w_c), ref, atol=1e-12, rtol=1e-12)
    for mine, theirs in zip(pointer_generator.exp_form_grads(a, b, w_c, weights), ref_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-10, rtol=1e-10)


def test_compiled_kernel_matches_the_direct_path(monkeypatch):
    """The torch.compile'd kernels (training shapes) give eq. (3)'s float32 values and gradients; an
    input beyond the ±40 bound goes the direct way, so large activations stay exact."""
    monkeypatch.setattr(pointer_generator, "FUSED_MIN_ELEMENTS", 0)
    g = torch.Generator().manual_seed(2)
    memory, query, w_c = (torch.randn(shape, generator=g) for shape in [(2, 33, 16), (2, 9, 16), (16,)])
    weights = torch.randn(2, 9, 33, generator=g)
    direct = pointer_generator._AdditiveScores.apply
    out, grads = values_and_grads(additive_scores, memory, query, w_c, weights)
    assert pointer_generator._fused_usable and set(pointer_generator._kernels) == {"forward", "backward"}
    ref, ref_grads = values_and_grads(direct, memory, query, w_c, weights)
    torch.testing.assert_close(out, ref, atol=2e-6, rtol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)
    memory[1, 2, 3] = 50.0
    query[1, 4, 3] = -49.0  # tanh(1): e^{100} would overflow the exp form
    monkeypatch.setattr(pointer_generator, "_FusedScores", None)  # must not be reached
    torch.testing.assert_close(additive_scores(memory, query, w_c), direct(memory, query, w_c))


def test_head_output_independent_of_chunk_size(monkeypatch):
    """The whole head gives the same log-probs and parameter gradients with tiny chunks."""

    def forward_backward():
        pg, s, h, x, mask, emb = random_case(5)
        log_p = run(pg, s, h, x, mask, emb)
        log_p[torch.isfinite(log_p)].sum().backward()
        return log_p.detach(), [p.grad.clone() for p in pg.parameters()]

    full, full_grads = forward_backward()
    monkeypatch.setattr(pointer_generator, "CHUNK_ELEMENTS", 3 * 7 * 8 * 2)  # 2 of the 5 target positions a chunk
    small, small_grads = forward_backward()
    torch.testing.assert_close(small, full, atol=1e-6, rtol=1e-6)
    for a, b in zip(small_grads, full_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_training_loss_at_the_labels_equals_the_full_mixture(smoothing):
    """PalmModel's training loss (log P at the labels, and its vocabulary mean for label smoothing,
    without a B×T×V mixture) equals cross-entropy over the full eq. (7) distribution, with gradients."""
    from ctxlm.families.palm import PalmConfig
    from ctxlm.models.palm import PalmModel

    torch.manual_seed(0)
    cfg = PalmConfig(
        vocab_size=50,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        dropout=0.0,
        attention_dropout=0.0,
        copy=True,
    )
    model = PalmModel(cfg).double().eval()
    source = torch.randint(5, 15, (3, 9))  # a narrow range: many repeated source tokens
    source[1, 6:] = cfg.pad_token_id
    decoder = torch.randint(5, 50, (3, 7))
    labels = torch.randint(5, 50, (3, 7))
    labels[:, :3] = source[:, :3]  # some labels can be copied
    labels[2, 5:] = -100
    fast = model(source, decoder_input_ids=decoder, labels=labels, label_smoothing=smoothing)
    full = model(source, decoder_input_ids=decoder, labels=labels, label_smoothing=smoothing, return_log_probs=True)
    assert full.log_probs is not None
    # both paths take the vocabulary scores in float32
    torch.testing.assert_close(fast.loss, full.loss, rtol=1e-6, atol=1e-6)
    params = [model.pointer.W_s.weight, model.pointer.gate.weight, model.shared.weight]
    for a, b in zip(torch.autograd.grad(fast.loss, params), torch.autograd.grad(full.loss, params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
