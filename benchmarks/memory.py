"""Memory each named config needs for its weights and training state, from the real modules built
on the meta device (no memory allocated, nothing downloaded).

- inference: the weights (and float buffers) in float32, or in bfloat16 (`--bf16` on generate,
  evaluate, infill);
- training: float32 weights + float32 gradients + AdamW's two float32 moments (read from an
  AdamW step taken on the meta device), and with bf16 autocast also the bfloat16 copies of the
  weights autocast keeps during a step.

Activations (batch × length dependent), the KV cache and allocator slack come on top.

    python benchmarks/memory.py            # a Markdown table of every named config
"""

from __future__ import annotations

import argparse

import torch

from ctxlm.checkpoint import build_model
from ctxlm.families import NAMED_CONFIGS
from ctxlm.config_loading import named_model_config

GIB = 1024**3


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def config_memory(name: str) -> dict:
    """Parameter count and bytes of weights, gradients and AdamW state of a named config."""
    with torch.device("meta"):
        model = build_model(named_model_config(name))
    params = list(model.parameters())
    float_buffers = [b for b in model.buffers() if b.is_floating_point()]
    for p in params:
        p.grad = torch.empty_like(p)
    optimizer = torch.optim.AdamW(params, foreach=False)
    optimizer.step()  # creates the moments (meta tensors: shapes and dtypes only)
    adam = tensor_bytes(
        t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor) and t.dim() > 0
    )
    weights = tensor_bytes(params) + tensor_bytes(float_buffers)
    n = sum(p.numel() for p in params)
    return {
        "config": name,
        "parameters": n,
        "inference_fp32": weights,
        "inference_bf16": weights // 2,
        "training_fp32": weights + tensor_bytes(params) + adam,
        "training_bf16_autocast": weights + tensor_bytes(params) + adam + 2 * n,
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| config | parameters | inference fp32 | inference bf16 | training fp32 | training bf16 autocast |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['parameters'] / 1e6:.1f} M | "
            + " | ".join(
                f"{r[k] / GIB:.2f} GiB"
                for k in ("inference_fp32", "inference_bf16", "training_fp32", "training_bf16_autocast")
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", default=list(NAMED_CONFIGS), help="named configs (default: all)")
    print(markdown([config_memory(name) for name in parser.parse_args().configs]))


if __name__ == "__main__":
    main()
