"""The losses every family shares: the token NLL (with torch's label smoothing), a batch's loss as
the sum over objectives of each one's token mean, and the labelled-position counts the training
loop normalises a whole optimizer step by (`ctxlm.training`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..objectives.masking import IGNORE_INDEX


def token_nll(scores: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0):
    """The loss summed over labelled positions, the un-smoothed NLL sum (detached, for perplexity)
    and the token count. `scores` are logits or log-probabilities (B..., V): cross-entropy
    renormalises with a log-softmax, which leaves log-probabilities unchanged. Label smoothing is
    torch's: (1 − ε)·NLL + ε·mean over the vocabulary of −log p. Computed in float32 (float64 for
    float64 scores), as `linear_cross_entropy`, so a model's loss has one dtype on every path."""
    flat = scores.reshape(-1, scores.shape[-1])
    flat, target = flat.to(torch.promote_types(flat.dtype, torch.float32)), labels.reshape(-1)  # float32, or 64
    count = (target != IGNORE_INDEX).sum()
    log_p = F.log_softmax(flat, dim=-1)  # cross-entropy's own first step, shared by both losses
    nll_sum = F.nll_loss(log_p, target, ignore_index=IGNORE_INDEX, reduction="sum")
    loss = nll_sum
    if label_smoothing > 0:  # torch's cross_entropy(label_smoothing=ε), op for op, on the same log-softmax
        smooth = (-log_p.sum(-1)).masked_fill_(target == IGNORE_INDEX, 0.0).sum()
        loss = (1 - label_smoothing) * nll_sum + smooth * (label_smoothing / flat.shape[-1])
    return loss, nll_sum.detach(), count


def batch_loss(loss_sums: dict[str, torch.Tensor], counts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over objectives of each one's token mean: `loss_sums[o]` (weighted, token-summed) over
    `counts[o]`. A model's `.loss` is this with its batch's counts; the training loop divides by the
    counts of a whole optimizer step instead (all micro-batches and ranks)."""
    total = None
    for name, value in loss_sums.items():
        part = value / counts[name].clamp_min(1)
        total = part if total is None else total + part
    return total


def label_counts(batch: dict[str, torch.Tensor], fields: dict[str, str]) -> dict[str, torch.Tensor]:
    """Objective name → number of labelled positions (≠ IGNORE_INDEX) of its batch field, for the
    fields present."""
    return {name: (batch[key] != IGNORE_INDEX).sum() for name, key in fields.items() if batch.get(key) is not None}
