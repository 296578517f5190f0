"""What every benchmark shares: interleaved timing with medians, the machine's measured matmul peak,
model FLOPs (torch's FLOP formulas for matmuls and attention, the work MFU is defined by),
and the report (a table, then one JSON line).

Contenders run A B C A B C ... so that a slow spell of a shared machine hits each about equally.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ctxlm.flop_count import count_flops  # noqa: F401  (the benchmarks import it from here)


def precision_context(device: torch.device, bf16: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of an n×n by n×n torch.matmul on this machine: the fastest of `repeats` (a peak; the
    median let a slow spell of a shared machine put MFU above 100%)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


@dataclass
class Contender:
    name: str
    run: object  # a callable doing one unit of work (a training step, a generate call)
    flops: int = 0
    times: list[float] = field(default_factory=list)


def interleaved_medians(contenders: list[Contender], rounds: int, device: torch.device, warmup: int = 1) -> None:
    """Time `rounds` calls of each contender, interleaved; `warmup` untimed calls each first."""
    for contender in contenders:
        for _ in range(warmup):
            contender.run()
    for _ in range(rounds):
        for contender in contenders:
            synchronize(device)
            start = time.perf_counter()
            contender.run()
            synchronize(device)
            contender.times.append(time.perf_counter() - start)


def machine(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = (
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}"
        )
    return {"device": str(device), "name": name, "torch": torch.__version__}


def report(title: str, rows: list[dict], columns: list[tuple[str, str, str]], info: dict) -> None:
    """Print `rows` as a table (columns: key, header, format) and then one JSON line with everything."""
    print(title)
    print(
        "  ".join(
            f"{header:>{max(len(header), 10)}}" if i else f"{header:34s}" for i, (_, header, _) in enumerate(columns)
        )
    )
    for row in rows:
        cells = []
        for i, (key, header, fmt) in enumerate(columns):
            value = row.get(key)
            text = "—" if value is None else format(value, fmt)
            cells.append(f"{text:>{max(len(header), 10)}}" if i else f"{text:34s}")
        print("  ".join(cells))
    print(json.dumps({**info, "results": rows}))


def median(values: list[float]) -> float:
    return statistics.median(values)
