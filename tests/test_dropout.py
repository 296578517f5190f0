"""The models' dropout (its mask from 15-bit uniforms) and the attention that applies it, against
torch's SDPA and a direct computation in float64."""

import math

import pytest
import torch
import torch.nn.functional as F

from ctxlm.models.dropout import attention_with_dropout, drop_mask, dropout


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    n = 1_000_001  # odd: the last int32 draw serves one element
    x = torch.ones(n)
    out = dropout(x, p, True)
    dropped = out == 0
    rate = round(p * 2**15) / 2**15
    assert abs(rate - p) <= 2**-16
    for part in (dropped[0::2], dropped[1::2]):  # both 15-bit halves of each draw drop at the rate
        sd = math.sqrt(rate * (1 - rate) / part.numel())
        assert abs(part.float().mean().item() - rate) < 5 * sd
    torch.testing.assert_close(out[~dropped], torch.full_like(out[~dropped], 1 / (1 - rate)))
    assert abs(out.mean().item() - 1) < 5 * math.sqrt(rate / (1 - rate) / n)  # unbiased


def test_halves_are_independent():
    torch.manual_seed(1)
    dropped, _ = drop_mask((2_000_000,), 0.5, torch.device("cpu"))
    pairs = dropped.view(-1, 2).float()
    both = (pairs[:, 0] * pairs[:, 1]).mean().item()
    assert abs(both - 0.25) < 5 * math.sqrt(0.25 * 0.75 / pairs.shape[0])


def test_deterministic_under_the_seed_and_off_outside_training():
    x = torch.randn(64, 33)
    torch.manual_seed(3)
    a = dropout(x, 0.3, True)
    torch.manual_seed(3)
    b = dropout(x, 0.3, True)
    assert torch.equal(a, b) and not torch.equal(a, dropout(x, 0.3, True))
    assert dropout(x, 0.3, False) is x and dropout(x, 0.0, True) is x


def test_gradient_is_the_mask():
    torch.manual_seed(4)
    x = torch.randn(50, 20, requires_grad=True)
    out = dropout(x, 0.25, True)
    out.sum().backward()
    expected = torch.where(out == 0, 0.0, out.detach() / x.detach())
    torch.testing.assert_close(x.grad, expected)


def test_bf16():
    torch.manual_seed(5)
    x = torch.randn(10_000).bfloat16()
    out = dropout(x, 0.1, True)
    assert out.dtype == torch.bfloat16
    kept = out != 0
    scale = torch.tensor(1 / (1 - round(0.1 * 2**15) / 2**15)).bfloat16()  # rounded as F.dropout's
    assert torch.equal(out[kept], x[kept] * scale)


def qkv(seed=0, b=2, h=3, t=5, s=7, d=8, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype) for n in (t, s, s)]


def masks(t=5, s=7):
    g = torch.Generator().manual_seed(9)
    boolean = torch.rand(2, 1, t, s, generator=g) > 0.3
    boolean[0, 0, 1] = False  # a query row with every key masked: SDPA gives zeros
    additive = torch.randn(2, 3, t, s, generator=g, dtype=torch.float64)
    return {"none": None, "bool": boolean, "additive": additive}


@pytest.mark.parametrize("kind", ["none", "bool", "additive", "causal"])
def test_attention_without_drops_equals_sdpa(kind):
    """p below 2^-16 drops nothing: the attention itself must then be SDPA's, masks included."""
    q, k, v = qkv(s=5 if kind == "causal" else 7)
    mask = None if kind == "causal" else masks()[kind]
    got = attention_with_dropout(q, k, v, mask, kind == "causal", 1e-6)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=kind == "causal")
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    if kind == "bool":
        assert torch.all(got[0, :, 1] == 0)


def test_attention_drops_the_probabilities():
    q, k, v = qkv()
    mask = masks()["bool"]
    torch.manual_seed(7)
    got = attention_with_dropout(q, k, v, mask, False, 0.2)
    torch.manual_seed(7)
    dropped, scale = drop_mask((2, 3, 5, 7), 0.2, torch.device("cpu"))
    scores = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, -1).nan_to_num(0.0)
    ref = (probs * torch.where(dropped, 0.0, torch.tensor(scale, dtype=torch.float64))) @ v
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
