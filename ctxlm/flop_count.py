"""Training FLOPs as the benchmarks count them: torch's FLOP formulas (`torch.utils.flop_counter`)
for matrix multiplies and attention, added up over every op a call runs, forward and backward
(`benchmarks/harness.py` imports the counter from here). Attention's CPU kernel, which torch's
registry leaves out, is counted with the same formulas as its CUDA kernels.

Elementwise ops, norms, softmax outside fused attention and the optimizer are not counted (the
work MFU is defined by). `flops_per_token` measures a few real training steps of a model on its
own data stream and divides by the tokens the training loop counts there: `compare` scales it by
the tokens a run trains on to count the run's FLOPs (and to find the steps a FLOP budget buys).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten
# the CPU kernel of scaled_dot_product_attention, which torch's registry leaves out (it counted 0):
# the same formulas as its CUDA kernels (Q·Kᵀ and P·V forward; four such products backward)
CPU_ATTENTION = {
    aten._scaled_dot_product_flash_attention_for_cpu: lambda q, k, v, *_, **__: sdpa_flop_count(
        q.shape, k.shape, v.shape
    ),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: lambda grad, q, k, v, *_, **__: sdpa_backward_flop_count(
        grad.shape, q.shape, k.shape, v.shape
    ),
}


class FlopCounter(TorchDispatchMode):
    """Adds up torch's FLOP formulas (matmuls, attention) over every op run; unlike FlopCounterMode
    it registers no module hooks, so it also counts under no_grad / inference_mode (generation)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket) or CPU_ATTENTION.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of `fn` (matmuls and attention, forward and backward)."""
    with FlopCounter() as counter:
        fn()
    return int(counter.total)


def training_step_flops(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward and backward of `model` on `batch` (its gradients are cleared after)."""

    def step():
        model(**batch).loss.backward()

    flops = count_flops(step)
    model.zero_grad(set_to_none=True)
    return flops


def flops_per_token(model: torch.nn.Module, batches, token_keys: tuple[str, ...], pad_id: int) -> float:
    """Training FLOPs per counted token over `batches` (forward and backward of each): their FLOPs
    over their non-padding `token_keys` tokens (the tokens the training loop counts)."""
    flops = tokens = 0
    model.train()
    for batch in batches:
        flops += training_step_flops(model, batch)
        tokens += sum(int(batch[k].ne(pad_id).sum()) for k in token_keys if k in batch)
    if tokens == 0:
        raise ValueError("no tokens in the measured batches")
    return flops / tokens
