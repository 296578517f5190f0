"""`ctxlm.flop_count` against a hand count: a tiny projection + attention + projection model,
forward and backward, counted op by op from the matrix products it runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctxlm.flop_count import count_flops, flops_per_token, training_step_flops

B, L, WIDTH, HEADS, OUT = 2, 5, 8, 2, 3
D = WIDTH // HEADS


class TinyAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(WIDTH, 3 * WIDTH)
        self.out = torch.nn.Linear(WIDTH, OUT)

    def forward(self, x):
        q, k, v = (t.reshape(B, L, HEADS, D).transpose(1, 2) for t in self.qkv(x).chunk(3, dim=-1))
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, WIDTH)
        return self.out(attended)


def matmul(m: int, k: int, n: int) -> int:
    return 2 * m * k * n  # an (m×k)·(k×n) product: m·n dot products of k multiply-adds


def test_counter_matches_a_hand_count_of_projection_and_attention():
    torch.manual_seed(0)
    model, x = TinyAttention(), torch.randn(B, L, WIDTH)  # x needs no gradient: no grad-input of qkv
    rows, pairs = B * L, B * HEADS
    forward = (
        matmul(rows, WIDTH, 3 * WIDTH)  # q, k, v
        + pairs * (matmul(L, D, L) + matmul(L, L, D))  # Q·Kᵀ, P·V
        + matmul(rows, WIDTH, OUT)
    )  # output projection
    backward = (
        2 * matmul(rows, OUT, WIDTH)  # output projection: grad input and grad weight
        + pairs * 5 * matmul(L, D, L)  # attention: Q·Kᵀ recomputed, then dP, dV, dQ, dK
        + matmul(WIDTH * 3, rows, WIDTH)
    )  # q, k, v projection: grad weight only
    assert count_flops(lambda: model(x)) == forward
    assert count_flops(lambda: model(x).sum().backward()) == forward + backward


def test_flops_per_token_divides_by_the_counted_tokens():
    """Training-step FLOPs over non-padding tokens of the counted keys (pad 0 left out)."""

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = TinyAttention()

        def forward(self, input_ids):
            x = torch.nn.functional.one_hot(input_ids, WIDTH).float()
            return type("Out", (), {"loss": self.inner(x).sum()})()

    model = Wrapped()
    ids = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 0]])  # 7 tokens, 3 pads
    step = training_step_flops(model, {"input_ids": ids})
    assert all(p.grad is None for p in model.parameters())
    assert flops_per_token(model, [{"input_ids": ids}] * 2, ("input_ids",), 0) == 2 * step / 14
