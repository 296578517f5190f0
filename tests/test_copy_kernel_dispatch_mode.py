"""Eq. (3) under a TorchDispatchMode (a FLOP counter, as benchmarks/train_step.py runs a first step):
torch.compile does not compile there and would mark the compiled kernel's code skipped for the rest
of the process (issue 20), so the copy head must take its direct path without touching the kernel."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ctxlm.models import pointer_generator
from ctxlm.models.pointer_generator import additive_scores

pytestmark = pytest.mark.usefixtures("single_thread")


class OpLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_eq_3_under_a_dispatch_mode_takes_the_direct_path(monkeypatch):
    monkeypatch.setattr(pointer_generator, "FUSED_MIN_ELEMENTS", 0)  # a "training-sized" input
    monkeypatch.setattr(pointer_generator, "_fused_usable", None)  # undecided: no compile trial may happen
    monkeypatch.setattr(pointer_generator, "_FusedScores", None)  # must not be reached
    g = torch.Generator().manual_seed(3)
    memory, query, w_c = (torch.randn(shape, generator=g, requires_grad=True) for shape in [(2, 6, 4), (2, 3, 4), (4,)])
    with OpLog() as log:
        out = additive_scores(memory, query, w_c)
        out.sum().backward()
    assert log.ops  # the mode saw the computation
    assert pointer_generator._fused_usable is None  # nothing decided (or compiled) under the mode
    reference = torch.tanh(memory[:, None] + query[:, :, None]) @ w_c  # eq. (3), broadcast by hand
    torch.testing.assert_close(out, reference)
    grads = torch.autograd.grad(reference.sum(), (memory, query, w_c))
    torch.testing.assert_close(memory.grad, grads[0])
    torch.testing.assert_close(query.grad, grads[1])
    torch.testing.assert_close(w_c.grad, grads[2])
