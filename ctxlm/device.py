"""Where models, caches and batches live: one resolver for every CLI verb and Python entry point.

    resolve_device("auto")    # CUDA when available, else the CPU
    resolve_device("cuda:1")  # as asked; an error if there is no such GPU
    for_inference(model, "auto", bf16=True)  # eval mode, on the device, weights in bfloat16

Everything else follows the model: batches are moved to `next(model.parameters()).device`, and the
decoding caches are allocated next to the encoder states.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import CtxlmError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """A torch.device from "auto" (or None: CUDA when available), "cpu", "cuda", "cuda:N", or a
    torch.device (returned as is). A GPU that is not there is a CtxlmError, not a late crash."""
    if isinstance(spec, torch.device):
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise CtxlmError(f"device '{spec}': expected {DEVICE_CHOICES}") from None
    if device.type not in ("cpu", "cuda"):
        raise CtxlmError(f"device '{spec}': expected {DEVICE_CHOICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CtxlmError(f"device '{spec}': CUDA is not available here (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CtxlmError(f"device '{spec}': only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def for_inference(model: nn.Module, device: str | torch.device | None = "auto", bf16: bool = False) -> nn.Module:
    """`model` in eval mode on the resolved device, its floating-point weights and buffers in
    bfloat16 when `bf16` (the models keep softmaxes and losses in float32 themselves)."""
    model = model.eval().to(resolve_device(device))
    return model.to(torch.bfloat16) if bf16 else model
