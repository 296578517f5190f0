"""Dropout for every model, and the attention that applies it to the attention probabilities.

On a CPU, `F.dropout` draws its mask with `bernoulli_` in the tensor's dtype, then divides and
multiplies: ~5.5 ns an element forward and backward on this machine's cores, ~15% of a bf16 PALM
step at d256, most of it on the B×H×T×S attention probabilities. Here the mask comes from torch's
own generator as 31-bit integers (`random_`), each giving two 15-bit uniforms u; an element is kept
when u ≥ round(p · 2^15), a keep rate 1 − p' with p' within 2^-16 of p, and kept elements are scaled
by 1 / (1 − p') (rounded to the tensor's dtype, as `F.dropout` rounds its scale). The multiplier
tensor serves both passes: ~3 ns an element. Deterministic under `torch.manual_seed`; its state is
the generator's, which checkpoints save, so resumed runs draw the same masks. On other devices
`F.dropout` is one fused kernel and is used as is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LEVELS = 1 << 15  # 15 uniform bits per element


def drop_mask(shape, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A boolean tensor of `shape`, True where an element is dropped (at rate p'), and the scale
    1 / (1 − p') of the kept ones."""
    n = math.prod(shape)
    bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=device).random_()  # uniform on [0, 2^31)
    halves = bits.view(torch.int16)[:n].bitwise_and(_LEVELS - 1)  # each int16 half: 15 uniform bits
    threshold = round(p * _LEVELS)
    return (halves < threshold).view(shape), _LEVELS / (_LEVELS - threshold)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """`F.dropout(x, p, training)`, with the mask drawn as above on a CPU."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    dropped, scale = drop_mask(x.shape, p, x.device)
    return x * (~dropped).to(x.dtype).mul_(scale)  # one multiplier, reused by the backward pass


def attention_with_dropout(q, k, v, mask: torch.Tensor | None, is_causal: bool, p: float) -> torch.Tensor:
    """What `F.scaled_dot_product_attention(q, k, v, mask, p, is_causal)` computes on a CPU, where
    dropout makes it take its math path (softmax((q k^T)/√d + mask), dropped out, times v; a row
    with every key masked gives zeros, as SDPA's safe softmax), with `dropout`'s mask."""
    scale = 1 / math.sqrt(q.shape[-1])
    scores = (q * scale) @ k.transpose(-2, -1)
    if is_causal:
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.ops.aten._safe_softmax(scores, -1)
    return dropout(probs, p, True) @ v
