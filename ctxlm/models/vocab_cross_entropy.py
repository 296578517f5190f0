"""Cross-entropy over the vocabulary fused with the output projection, in chunks of rows.

The plain loss of a tied softmax, `token_nll(x W^T + b, y)`, materialises the B×T×V logits, casts
them to float32, runs a log-softmax over them and, backwards, its gradient, a zero-filled B×T×V
buffer and the matmuls' inputs: several passes over hundreds of MB per step. Here each chunk of
`chunk_rows` labelled rows makes its logits, its loss and its logits' gradient in one go, then folds
that gradient into the gradients of the hidden states and of W before the next chunk:

    z = h W^T + b                    (the chunk's logits; in the autocast dtype, as `F.linear` makes them)
    p = softmax(z) = exp(z − lse)    (one exp per logit, reused as the gradient)
    loss = (1 − ε)(lse − z_y) + ε(lse − mean_v z_v)         (torch's label smoothing ε)
    ∂loss/∂z = p − (1 − ε)·onehot(y) − ε/V

so no B×T×V tensor exists in float32 (one chunk's rows at a time), and rows whose label is ignored
cost nothing. The gradients are computed in the forward pass when autograd needs them (the loss is
a sum, so the backward pass only scales them by the incoming gradient); without grad only the loss
is computed. It equals `F.cross_entropy` of the logits up to float rounding (1e-12 in float64:
tests/test_vocab_cross_entropy.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..objectives.masking import IGNORE_INDEX

CHUNK_ROWS = 512  # rows of logits alive at once: 512 × V float32 (62 MB at V = 30,522); 256-1,024 within 10% here


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype `F.linear` would compute in here: autocast's when it is on, else the input's."""
    if torch.is_autocast_enabled(tensor.device.type):
        return torch.get_autocast_dtype(tensor.device.type)
    return tensor.dtype


def _loss_and_gradient(z: torch.Tensor, y: torch.Tensor, smoothing: float, gradient: bool):
    """The summed loss and NLL of one chunk's logits `z` (rows, V) at labels `y` (rows, 1); with
    `gradient`, `z` is overwritten by ∂loss/∂z (one exp per logit serves both)."""
    z_y = z.gather(1, y)
    mean_z = z.mean(1, keepdim=True) if smoothing > 0 else None
    top = z.amax(1, keepdim=True)
    p = z.sub_(top).exp_()  # in place: exp(z − max)
    total = p.sum(1, keepdim=True)
    lse = top + total.log()
    nll = (lse - z_y).sum()
    loss = nll if smoothing == 0 else (1 - smoothing) * nll + smoothing * (lse - mean_z).sum()
    if gradient:
        p.div_(total)  # softmax
        p.scatter_add_(1, y, p.new_full(y.shape, smoothing - 1))  # − (1 − ε) at the label
        if smoothing > 0:
            p.sub_(smoothing / z.shape[1])
    return loss, nll


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, smoothing, chunk_rows, compute_dtype):
        gradient = any(ctx.needs_input_grad[:3])
        w = weight.to(compute_dtype)
        b = bias.to(compute_dtype) if bias is not None else None
        acc = torch.promote_types(compute_dtype, torch.float32)  # the loss's dtype: float32, or float64
        loss, nll = hidden.new_zeros((), dtype=acc), hidden.new_zeros((), dtype=acc)
        grad_hidden = torch.empty_like(hidden) if gradient else None
        grad_weight = weight.new_zeros(weight.shape, dtype=acc) if gradient else None
        grad_bias = weight.new_zeros(weight.shape[0], dtype=acc) if gradient and ctx.needs_input_grad[2] else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                h = hidden[rows].to(compute_dtype)
                z = (torch.addmm(b, h, w.t()) if b is not None else h @ w.t()).to(acc)  # (rows, V)
                chunk_loss, chunk_nll = _loss_and_gradient(z, target[rows, None], smoothing, gradient)
                loss += chunk_loss
                nll += chunk_nll
                if not gradient:
                    continue
                g = z.to(compute_dtype)  # ∂loss/∂z
                grad_hidden[rows] = g @ w
                if g.dtype == acc:
                    grad_weight.addmm_(g.t(), h)
                else:
                    grad_weight += g.t() @ h
                if grad_bias is not None:
                    grad_bias += z.sum(0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = weight.dtype, bias.dtype if bias is not None else None
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, grad_nll):
        """The loss is a sum whose gradients `forward` made: scale them by the incoming gradient (in
        place: a graph is backpropagated once)."""
        if getattr(ctx, "backpropagated", False):
            raise RuntimeError("linear_cross_entropy: its graph can be backpropagated once")
        ctx.backpropagated = True
        grad_hidden, grad_weight, grad_bias = ctx.saved_tensors
        weight_dtype, bias_dtype = ctx.dtypes
        return (
            grad_hidden.mul_(grad_loss.to(grad_hidden.dtype)) if ctx.needs_input_grad[0] else None,
            grad_weight.mul_(grad_loss).to(weight_dtype) if ctx.needs_input_grad[1] else None,
            grad_bias.mul_(grad_loss).to(bias_dtype) if grad_bias is not None else None,
            None,
            None,
            None,
            None,
        )


def _plain_cross_entropy(rows, weight, bias, target, label_smoothing):
    """The same sums from materialised logits: what `torch.compile` gets (it fuses the loss itself)."""
    logits = F.linear(rows, weight, bias)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    loss = F.cross_entropy(logits, target, reduction="sum", label_smoothing=label_smoothing)
    return loss, F.cross_entropy(logits.detach(), target, reduction="sum")


def linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    label_smoothing: float = 0.0,
    chunk_rows: int = CHUNK_ROWS,
):
    """`token_nll(F.linear(hidden, weight, bias), labels, label_smoothing)` without the B×T×V logits:
    (the loss summed over labelled positions, the un-smoothed NLL sum (detached), the token count).
    `hidden` (..., d), `weight` (V, d), `labels` (...) with IGNORE_INDEX where no loss is taken."""
    flat = hidden.reshape(-1, hidden.shape[-1])
    target = labels.reshape(-1)
    keep = target != IGNORE_INDEX
    count = keep.sum()
    rows, target = flat[keep], target[keep]
    if torch.compiler.is_compiling():  # dynamo traces this Function's forward without its gradients
        return (*_plain_cross_entropy(rows, weight, bias, target, label_smoothing), count)
    if bias is not None and not bias.requires_grad and hidden.device.type == "cpu" and not bias.any():
        bias = None  # a zero bias (BART's and PALM's final_logits_bias): saves a pass over the logits
    loss, nll = _LinearCrossEntropy.apply(
        rows, weight, bias, target, float(label_smoothing), chunk_rows, _compute_dtype(hidden)
    )
    return loss, nll, count
