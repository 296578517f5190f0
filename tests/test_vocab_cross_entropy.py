"""The fused, chunked vocabulary cross-entropy against the plain loss of the logits in float64."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from ctxlm.models.vocab_cross_entropy import linear_cross_entropy
from ctxlm.objectives.masking import IGNORE_INDEX


def problem(rows=37, d=16, vocab=101, seed=0, ignored=0.25, bias_grad=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(rows, d, generator=g, dtype=torch.float64)
    weight = torch.randn(vocab, d, generator=g, dtype=torch.float64) * 0.5
    bias = torch.randn(vocab, generator=g, dtype=torch.float64) * 0.1
    labels = torch.randint(0, vocab, (rows,), generator=g)
    labels[torch.rand(rows, generator=g) < ignored] = IGNORE_INDEX
    return hidden, weight, bias, labels


def grads(loss_fn, hidden, weight, bias, dtype, bias_grad):
    h, w, b = (t.detach().to(dtype, copy=True) for t in (hidden, weight, bias))
    h.requires_grad_(), w.requires_grad_(), b.requires_grad_(bias_grad)
    loss, nll, count = loss_fn(h, w, b)
    (loss / count.clamp_min(1) * 3.0).backward()  # a scale other than 1 reaches the backward pass
    return loss, nll, count, h.grad, w.grad, b.grad


def plain(h, w, b, labels, smoothing):
    """torch's cross-entropy of the logits, in their dtype (token_nll's contract)."""
    logits = F.linear(h, w, b)
    count = (labels != IGNORE_INDEX).sum()
    loss = F.cross_entropy(logits, labels, reduction="sum", label_smoothing=smoothing)
    return loss, F.cross_entropy(logits.detach(), labels, reduction="sum"), count


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("chunk", [1, 5, 64])
def test_equals_the_plain_loss_in_float64(smoothing, chunk):
    hidden, weight, bias, labels = problem()
    ref = grads(lambda h, w, b: plain(h, w, b, labels, smoothing), hidden, weight, bias, torch.float64, True)
    got = grads(
        lambda h, w, b: linear_cross_entropy(h, w, b, labels, smoothing, chunk),
        hidden,
        weight,
        bias,
        torch.float64,
        True,
    )
    assert got[2] == ref[2] == (labels != IGNORE_INDEX).sum()
    for a, e in zip(got[:2] + got[3:], ref[:2] + ref[3:]):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_float32_within_rounding_of_float64():
    hidden, weight, bias, labels = problem(rows=300, d=32, vocab=3001)
    ref = grads(lambda h, w, b: plain(h, w, b, labels, 0.1), hidden, weight, bias, torch.float64, False)
    got = grads(
        lambda h, w, b: linear_cross_entropy(h, w, b, labels, 0.1, 64), hidden, weight, bias, torch.float32, False
    )
    for a, e in zip(got[:2] + got[3:5], ref[:2] + ref[3:5]):
        torch.testing.assert_close(a.double(), e, rtol=2e-5, atol=1e-6)


def test_bf16_autocast_computes_the_logits_as_f_linear_does():
    """Under autocast the logits are F.linear's bf16 ones; the loss over them is float32 in both."""
    hidden, weight, bias, labels = problem(rows=300, d=32, vocab=3001)
    h, w, b = hidden.float(), weight.float(), bias.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = F.linear(h, w, b)
        got, got_nll, _ = linear_cross_entropy(h, w, b, labels, 0.1, 64)
    assert logits.dtype == torch.bfloat16
    ref = F.cross_entropy(logits.double(), labels, reduction="sum", label_smoothing=0.1)
    ref_nll = F.cross_entropy(logits.double(), labels, reduction="sum")
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got_nll.double(), ref_nll, rtol=1e-5, atol=1e-4)


def test_bf16_gradients_close_to_float64():
    hidden, weight, bias, labels = problem(rows=300, d=32, vocab=3001, ignored=0.0)
    ref = grads(lambda h, w, b: plain(h, w, b, labels, 0.0), hidden, weight, bias, torch.float64, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = grads(
            lambda h, w, b: linear_cross_entropy(h, w, b, labels, 0.0, 64), hidden, weight, bias, torch.float32, False
        )
    for a, e in zip(got[3:5], ref[3:5]):
        assert a.dtype == torch.float32
        assert (a.double() - e).norm() / e.norm() < 2e-2  # bf16 logits and gradient: ~3 significant digits


def test_without_grad_only_the_loss():
    hidden, weight, bias, labels = problem()
    with torch.no_grad():
        got = linear_cross_entropy(hidden, weight, bias, labels, 0.1, 8)
    ref = plain(hidden, weight, bias, labels, 0.1)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-12, atol=1e-12)


def test_every_label_ignored():
    hidden, weight, bias, labels = problem(ignored=1.0)
    h = hidden.clone().requires_grad_()
    loss, nll, count = linear_cross_entropy(h, weight, bias, labels)
    loss.backward()
    assert count == 0 and loss == 0 and nll == 0 and torch.all(h.grad == 0)


@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 20),
    vocab=st.integers(2, 40),
    chunk=st.integers(1, 25),
    smoothing=st.sampled_from([0.0, 0.2]),
    seed=st.integers(0, 10_000),
)
def test_fuzz_shapes_and_chunks(rows, vocab, chunk, smoothing, seed):
    hidden, weight, bias, labels = problem(rows=rows, d=4, vocab=vocab, seed=seed)
    ref = grads(lambda h, w, b: plain(h, w, b, labels, smoothing), hidden, weight, bias, torch.float64, True)
    got = grads(
        lambda h, w, b: linear_cross_entropy(h, w, b, labels, smoothing, chunk),
        hidden,
        weight,
        bias,
        torch.float64,
        True,
    )
    for a, e in zip(got[:2] + got[3:], ref[:2] + ref[3:]):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_a_zero_bias_without_grad_is_skipped_exactly():
    hidden, weight, _, labels = problem()
    zero = torch.zeros(weight.shape[0], dtype=torch.float64)
    ref = grads(lambda h, w, b: plain(h, w, b, labels, 0.1), hidden, weight, zero, torch.float64, False)
    got = grads(
        lambda h, w, b: linear_cross_entropy(h, w, b, labels, 0.1, 8), hidden, weight, zero, torch.float64, False
    )
    for a, e in zip(got[:2] + got[3:5], ref[:2] + ref[3:5]):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_backpropagated_twice_is_an_error():
    hidden, weight, bias, labels = problem()
    h = hidden.clone().requires_grad_()
    loss, _, _ = linear_cross_entropy(h, weight, bias, labels)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="once"):
        loss.backward()


@pytest.mark.slow
def test_a_compiled_model_trains_with_the_loss():
    """Under `torch.compile` (inductor) the fused Function's loss came out of the compiled PALM with no
    grad_fn, so `--compile` could not train; compiled code takes the plain loss, with the same value
    and gradients as the eager model's fused one."""
    from ctxlm.families.palm import PalmConfig
    from ctxlm.models.palm import PalmModel

    torch.manual_seed(0)
    cfg = PalmConfig(
        vocab_size=50,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=1,
        decoder_attention_heads=1,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        copy=False,
        max_position_embeddings=32,
        dropout=0.0,
        attention_dropout=0.0,
    )
    eager = PalmModel(cfg).train()
    compiled_model = PalmModel(cfg).train()
    compiled_model.load_state_dict(eager.state_dict())
    src, dec = torch.randint(10, 50, (2, 8)), torch.randint(10, 50, (2, 4))
    losses = []
    for model in (eager, torch.compile(compiled_model)):
        loss = model(src, decoder_input_ids=dec, labels=dec).loss
        assert loss.grad_fn is not None
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(compiled_model.named_parameters(), eager.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)
