"""Training on several processes, PyTorch's way: process group and device, DDP or FSDP2 wrapping,
gradient-sync control for accumulation, agreement and reductions, sharded checkpoints.

Under torchrun (WORLD_SIZE > 1) each process drives one device: `cuda:LOCAL_RANK` with NCCL
(`torch.cuda.set_device` first, as PyTorch's DDP tutorial does), or the CPU with gloo. Every
collective here runs on the process group's device (`Cluster.device`).

FSDP2 (`fully_shard`) shards each transformer layer, then the root (the embeddings, heads and
anything left); with bf16 the parameters are all-gathered in bfloat16 and gradients reduced in
float32 (`MixedPrecisionPolicy`). Its checkpoints go through `torch.distributed.checkpoint` (DCP):
one shard file per rank plus metadata, loadable at any world size (DCP reshards on load), and
exportable to a model directory with one `model.safetensors` (`export_model_dir`).

A lost rank stops the group: collectives wait at most `collective_timeout` seconds, and a heartbeat
over the rendezvous store (`rank_watchdog`) stops every rank, with one line naming the lost one,
within `heartbeat_timeout` seconds of a rank's death, or at once when a collective fails
(`stop_group_on_failure`). After a resume the ranks check that they hold the same state
(`check_ranks_agree`).
"""

from __future__ import annotations

import os
import secrets
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .errors import CtxlmError
from .rank_watchdog import RankWatchdog, start_watchdog


# ------------------------------------------------------------------------------ process group
@dataclass(frozen=True)
class Cluster:
    """This process's place: global rank, world size, local rank (its device index) and device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


COLLECTIVE_TIMEOUT = 600.0  # seconds (TrainConfig.collective_timeout)
HEARTBEAT_TIMEOUT = 30.0  # seconds (TrainConfig.heartbeat_timeout)
_watchdog: RankWatchdog | None = None  # this process's, once its process group exists


def setup(
    device: str | torch.device | None = None,
    collective_timeout: float = COLLECTIVE_TIMEOUT,
    heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
) -> Cluster:
    """The cluster of this process; under torchrun also `torch.cuda.set_device(LOCAL_RANK)`, the
    process group (NCCL on CUDA, gloo on the CPU; a collective waits at most `collective_timeout`
    seconds, and NCCL's asynchronous error handling tears a rank down when one times out) and the
    ranks' watchdog (a rank silent for `heartbeat_timeout` seconds stops the group). The first
    call's timeouts hold for the process. Without torchrun: one process, `device` or the first GPU
    or the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is not None:
        device = torch.device(device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    if world == 1:
        return Cluster(device=device)
    if not dist.is_initialized():
        for name, value in (("collective_timeout", collective_timeout), ("heartbeat_timeout", heartbeat_timeout)):
            if not value > 0:
                raise CtxlmError(f"{name} must be a positive number of seconds, not {value}")
        timeout = timedelta(seconds=collective_timeout)
        store = _restart_store(timeout)
        where = {} if store is None else {"store": store, "rank": int(os.environ["RANK"]), "world_size": world}
        if device.type == "cuda":
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "3")  # a timed-out collective ends the rank
            dist.init_process_group("nccl", device_id=device, timeout=timeout, **where)
        else:
            dist.init_process_group("gloo", timeout=timeout, **where)
        _watch_ranks(device, heartbeat_timeout)
    return Cluster(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _agent_store() -> bool:
    return os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"


def _restart_store(timeout: timedelta):
    """Under a one-machine torchrun that shares its store with the workers: that store, under a
    prefix per restart (`TORCHELASTIC_RESTART_COUNT`). torch 2.13's torchrun keeps one store across
    restarts, where a restarted group would read the previous group's keys and fail or hang at its
    start (pytorch issue 135712). On several machines the agents' restart counts can differ, so
    there the process group takes the store as it is (see `_watch_ranks`'s warning). None: as it is."""
    if not _agent_store() or os.environ.get("LOCAL_WORLD_SIZE") != os.environ.get("WORLD_SIZE"):
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    return dist.PrefixStore(f"ctxlm/restart-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def _watch_ranks(device: torch.device, heartbeat_timeout: float) -> None:
    """Start this rank's heartbeat and watchdog, under keys named by a number rank 0 draws (one
    broadcast); warn when torchrun's restarts on several machines would reuse one store."""
    global _watchdog
    group = torch.tensor([secrets.randbits(62)], device=device)
    dist.broadcast(group, src=0)
    several_machines = os.environ.get("LOCAL_WORLD_SIZE") != os.environ.get("WORLD_SIZE")
    if (
        dist.get_rank() == 0
        and int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0")) > 0
        and _agent_store()
        and several_machines
    ):
        warnings.warn(
            "torchrun --max-restarts on several machines shares one store across restarts, where a "
            "restarted group may read the previous group's addresses and fail or hang at its start "
            "(pytorch issue 135712): set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun"
        )
    _watchdog = start_watchdog(dist.get_rank(), dist.get_world_size(), heartbeat_timeout, int(group.item()))


@contextmanager
def stop_group_on_failure() -> Iterator[None]:
    """Around work with collectives: when it raises on this rank, a failed collective that another
    rank's loss explains ends this process with the line naming that rank (`RankWatchdog.explain`);
    any other error stops the other ranks too (they would wait for this one) and propagates."""
    try:
        yield
    except BaseException as error:
        if _watchdog is not None:
            if not isinstance(error, (CtxlmError, KeyboardInterrupt)):
                _watchdog.explain()
            _watchdog.fail()
        raise


def barrier(cluster: Cluster) -> None:
    if cluster.distributed:
        dist.barrier(device_ids=[cluster.device.index] if cluster.device.type == "cuda" else None)


@contextmanager
def main_process_first(cluster: Cluster) -> Iterator[None]:
    """Rank 0 runs the block first (e.g. building a shared cache); the others wait at a barrier,
    then run it (and find the cache)."""
    with stop_group_on_failure():
        if not cluster.is_main:
            barrier(cluster)
        yield
        if cluster.is_main:
            barrier(cluster)


def agree(flag: bool, cluster: Cluster) -> bool:
    """Rank 0's decision, shared with every rank (all stop together)."""
    if not cluster.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=cluster.device)
    dist.broadcast(value, src=0)
    return bool(value.item())


def any_rank(flag: bool, cluster: Cluster) -> bool:
    """True on every rank when it is true on some rank."""
    if not cluster.distributed:
        return flag
    value = torch.tensor([1 if flag else 0], device=cluster.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sum_over_ranks(values: dict[str, torch.Tensor], cluster: Cluster) -> dict[str, torch.Tensor]:
    """Element-wise sums over the ranks of tensors with the same keys (one all-reduce, float64)."""
    if not cluster.distributed or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].to(cluster.device, torch.float64).reshape(()) for k in keys])
    dist.all_reduce(flat)
    return dict(zip(keys, flat.unbind()))


CHECKSUM_MODULUS = 2**61 - 1  # a prime: the running sum of `checksum` stays exact in int64
CHECKSUM_CHUNK = 1 << 22  # bytes weighed at a time


def checksum(tensors) -> int:
    """A sum of the tensors' bytes, each weighed by its position in their concatenation (mod 65521,
    plus 1), modulo `CHECKSUM_MODULUS`; on their device. Equal for bit-identical tensors in the
    same order; one changed byte always changes it, two swapped ones unless 65521 bytes apart."""
    total, offset = None, 0
    for tensor in tensors:
        tensor = tensor.to_local() if hasattr(tensor, "to_local") else tensor  # a DTensor: this rank's shard
        data = tensor.detach().contiguous().reshape(-1).view(torch.uint8)
        for start in range(0, data.numel(), CHECKSUM_CHUNK):
            chunk = data[start : start + CHECKSUM_CHUNK].to(torch.int64)
            weights = torch.arange(offset, offset + chunk.numel(), device=chunk.device) % 65521 + 1
            part = (chunk * weights).sum()  # < 2**46
            total = part if total is None else (total + part) % CHECKSUM_MODULUS
            offset += chunk.numel()
    return 0 if total is None else int(total)


def check_ranks_agree(values: dict[str, int], cluster: Cluster, what: str) -> None:
    """Every rank must hold rank 0's `values` (name → integer: a step, a checksum); one all-gather.
    Otherwise every rank raises one line naming the first rank and value that differ."""
    if not cluster.distributed:
        return
    mine = torch.tensor([v % 2**63 for v in values.values()], dtype=torch.int64, device=cluster.device)
    gathered = [torch.empty_like(mine) for _ in range(cluster.world)]
    dist.all_gather(gathered, mine)
    rows = [row.tolist() for row in gathered]
    for rank, row in enumerate(rows):
        for name, value, expected in zip(values, row, rows[0]):
            if value != expected:
                raise CtxlmError(
                    f"rank {rank} does not hold rank 0's state {what}: its {name} is {value}, rank 0's "
                    f"{expected}; every rank must read the same checkpoint (is --out on a file system "
                    f"all nodes share?)"
                )


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed (dropout) of `rank` at optimizer step `step`: a pure function of the three,
    so ranks draw different dropout masks and a resumed run (at any world size) draws the same."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


# ------------------------------------------------------------------------------ wrapping
def unused_parameters(model: nn.Module, loss: torch.Tensor) -> list[str]:
    """Names of trainable parameters that `loss` does not depend on (no gradient reaches them)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
    return [n for (n, _), g in zip(named, grads) if g is None]


def transformer_layers(model: nn.Module) -> list[nn.Module]:
    """The entries of every `layers` ModuleList (encoder, decoder or the one stack): FSDP's units."""
    return [
        layer
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers"
        for layer in module
    ]


def wrap_fsdp(model: nn.Module, cluster: Cluster, bf16: bool) -> nn.Module:
    """FSDP2: `fully_shard` each transformer layer, then the root (in place; returns `model`)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    )
    mesh = dist.device_mesh.init_device_mesh(cluster.device.type, (cluster.world,))
    for layer in transformer_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def wrap_ddp(model: nn.Module, cluster: Cluster, find_unused_parameters: bool) -> nn.Module:
    """DistributedDataParallel on this rank's device; `find_unused_parameters` only when some
    trainable parameter is left out of the loss (it costs a graph traversal per backward)."""
    device_ids = [cluster.device.index] if cluster.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )


def is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def gradient_sync(model: nn.Module, enabled: bool):
    """Context for one micro-batch's forward and backward: gradients are reduced across ranks only
    when `enabled` (the last micro-batch of a step); the others accumulate locally (DDP's
    `no_sync`, FSDP2's `set_requires_gradient_sync`)."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return nullcontext() if enabled else model.no_sync()
    if is_fsdp(model):
        model.set_requires_gradient_sync(enabled)
    return nullcontext()


# ------------------------------------------------------------------------------ state
def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as CPU tensors (a collective under FSDP: every rank must call it;
    all ranks receive the full dict)."""
    if not is_fsdp(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True, broadcast_from_rank0=False)
    )


def save_sharded(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """DCP checkpoint of the (sharded) model and optimizer: every rank writes its shards."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer if optimizer is not None else [])
    state: dict[str, Any] = {"model": model_state}
    if optimizer is not None:
        state["optimizer"] = optimizer_state
    dcp.save(state, checkpoint_id=str(directory))


def load_sharded(directory: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Load a DCP checkpoint into `model` (and `optimizer`), resharding to this world size; the
    model may be FSDP-wrapped or plain (one process). Every model weight must be there; optimizer
    state may lack parameters that never had a gradient (AdamW keeps none for them)."""
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer if optimizer is not None else [])
    model_state = {"model": model_state}
    _dcp_load(model_state, directory)
    if optimizer is None:
        set_state_dict(model, [], model_state_dict=model_state["model"], optim_state_dict={})
        return
    optimizer_state = {"optimizer": optimizer_state}
    _dcp_load(optimizer_state, directory, DefaultLoadPlanner(allow_partial_load=True))
    set_state_dict(
        model, optimizer, model_state_dict=model_state["model"], optim_state_dict=optimizer_state["optimizer"]
    )


def _dcp_load(state: dict[str, Any], directory: str | Path, planner=None) -> None:
    """`dcp.load` in place; without a process group this one process reads every shard."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(state, checkpoint_id=str(directory), planner=planner, no_dist=not dist.is_initialized())


def export_model_dir(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """A model directory (one `model.safetensors`) from a training checkpoint written under FSDP:
    its DCP shards are read into a plain model, in this one process."""
    from .checkpoint import (
        SHARDED_DIR,
        TOKENIZER_NAME,
        build_model,
        read_head,
        read_model_config,
        save_model_dir,
        verify_model_dir,
    )

    checkpoint = Path(checkpoint)
    verify_model_dir(checkpoint)  # its manifest covers the DCP files too
    model = build_model(read_model_config(checkpoint), read_head(checkpoint))
    load_sharded(checkpoint / SHARDED_DIR, model)
    tokenizer = None
    if (checkpoint / TOKENIZER_NAME).is_file():
        from .tokenization import TextTokenizer

        tokenizer = TextTokenizer.load(checkpoint / TOKENIZER_NAME)
    return save_model_dir(out_dir, model, tokenizer)
