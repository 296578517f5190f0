"""The one training loop, for every objective and model.

Inputs are an `Examples` source (index, epoch → dict of numpy arrays; PALM, GLM and UniLMv2
objectives all provide one), a model whose `forward(**batch, **loss_options)` returns an object
with `.loss`, `.loss_sums` (per objective, token-summed) and `.metrics` (per-objective
`<name>_nll_sum` and `<name>_tokens`) and whose `target_counts(batch)` counts each objective's
targets, and a `TrainConfig` (`TrainingInputs` bundles the examples with the held-out ones, the pad
id and the loss options; `RunOptions` says how the run starts and where). The loop does AdamW
(fused, on CUDA and the CPU) with linear warm-up and linear decay, gradient accumulation, clipping,
optional bf16 autocast and torch.compile, validation (loss and perplexity per objective), a
progress bar, metrics as JSONL and TensorBoard, and atomic checkpoints with the full training state.

The loss of an optimizer step is, per objective, the sum of its token losses over all
micro-batches and ranks of the step divided by the step's number of targets (the counts are
summed before the first forward pass), so accumulation and data parallelism give the gradient of
one large batch whatever the sequence lengths.

Data order is a pure function of (seed, epoch): a fixed permutation of the examples per epoch,
read in micro-batches; the position is a micro-batch counter. A `DataLoader` builds micro-batches
ahead (`data/loader.py`). Dropout is seeded per step and rank (`distributed.rank_seed`); with the
saved optimizer and scheduler states this makes `resume` continue exactly where the run stopped.

Under torchrun (WORLD_SIZE > 1) each rank drives `cuda:LOCAL_RANK` (or the CPU with gloo) and the
model is wrapped in DistributedDataParallel, or sharded with FSDP2 (`cfg.fsdp`; checkpoints then
also hold a DCP directory, loadable at another world size); each rank reads its own micro-batches
of the same permutation, gradients are reduced once per step, and rank 0 alone writes.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
import warnings
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

from .checkpoint import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    SHARDED_DIR,
    RunFolderLock,
    atomic_directory,
    build_model,
    checkpoint_name,
    clear_run,
    config_differences,
    copy_model_dir,
    latest_checkpoint,
    load_trainer_state,
    load_weights_file,
    read_model_config_values,
    remove_stale_temporaries,
    restore_best,
    resume_checkpoint,
    save_model_dir,
    save_training_checkpoint,
    write_model_files,
)
from .config import TrainConfig
from .data.loader import micro_batch_loader, rank_micro_batches
from .distributed import (
    Cluster,
    agree,
    any_rank,
    barrier,
    check_ranks_agree,
    checksum,
    full_state_dict,
    gradient_sync,
    load_sharded,
    rank_seed,
    save_sharded,
    setup,
    stop_group_on_failure,
    sum_over_ranks,
    unused_parameters,
    wrap_ddp,
    wrap_fsdp,
)
from .device import resolve_device
from .errors import CtxlmError
from .extras import require
from .learning_check import LearningCheck, not_learning_in
from .models.losses import batch_loss
from .objectives.masking import IGNORE_INDEX
from .provenance import provenance
from .run_options import RunOptions


class Examples(Protocol):
    """What the loop trains on. Example `index` of `epoch` must be a pure function of them (and
    the seed), so that data order and corruption survive a resume. An objective that decides
    per batch (GLM's multi-task mixing) may also define
    `batch(indices, epoch, batch_number) -> list[dict]`, used instead of `example`."""

    def __len__(self) -> int: ...

    def example(self, index: int, epoch: int = 0) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class TrainingInputs:
    """What the loop feeds the model: the examples it trains on and validates on, the id `collate`
    pads token ids with, and the keyword arguments every forward call takes besides the batch."""

    train: Examples  # the training examples
    pad_id: int  # the tokenizer's [PAD] id (what `collate` fills token ids with)
    valid: Examples | None = None  # held-out examples: validation, and the selection of `cfg.select_metric`
    loss_options: dict[str, Any] = field(default_factory=dict)  # e.g. label_smoothing, PALM's stage


# ------------------------------------------------------------------------------------ batching
def collate(examples: list[dict[str, np.ndarray]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a list of examples into tensors: `*labels` with IGNORE_INDEX, boolean arrays with False,
    position and token-type ids with 0 (valid indices), 2-D arrays (attention matrices) in both
    dimensions, everything else with `pad_id`."""
    batch = {}
    for key in examples[0]:
        arrays = [np.asarray(e[key]) for e in examples]
        if arrays[0].ndim == 0:
            batch[key] = torch.from_numpy(np.stack(arrays))
            continue
        fill = (
            False
            if arrays[0].dtype == bool
            else IGNORE_INDEX
            if key.endswith("labels")
            else 0
            if key.endswith(("position_ids", "type_ids"))
            else pad_id
        )
        shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
        out = np.full((len(arrays), *shape), fill, dtype=arrays[0].dtype)
        for i, a in enumerate(arrays):
            out[(i, *(slice(0, n) for n in a.shape))] = a
        batch[key] = torch.from_numpy(out)
    return batch


class BatchStream:
    """Micro-batch `g` of the run (counted over all ranks: rank r of W reads g = r, r + W, ...):
    examples `perm_e[k*B:(k+1)*B]` where g falls in epoch e at batch k. A pure function of
    (seed, g), whatever the number of ranks."""

    def __init__(self, examples: Examples, batch_size: int, seed: int):
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.batches_per_epoch = len(examples) // batch_size
        if self.batches_per_epoch == 0:
            raise CtxlmError(f"only {len(examples)} training examples, fewer than one batch of {batch_size}")
        self._perm_epoch, self._perm = -1, None

    def indices(self, micro_batch: int) -> tuple[int, np.ndarray]:
        epoch, k = divmod(micro_batch, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))
            self._perm_epoch = epoch
        return epoch, self._perm[k * self.batch_size : (k + 1) * self.batch_size]

    def batch(self, micro_batch: int, pad_id: int) -> tuple[int, dict[str, torch.Tensor]]:
        epoch, idx = self.indices(micro_batch)
        if hasattr(self.examples, "batch"):
            return epoch, collate(self.examples.batch(idx, epoch, micro_batch), pad_id)
        return epoch, collate([self.examples.example(int(i), epoch) for i in idx], pad_id)


# ------------------------------------------------------------------------------------ optimizer
def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW (torch's fused kernel when the parameters are on CUDA or the CPU: ~3× faster than its
    per-tensor loop on the CPU); no weight decay on biases, LayerNorm weights and other 1-D parameters."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = all(p.device.type in ("cuda", "cpu") for p in decay + no_decay) or None
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, fused=fused)


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up from 0 to the peak over `warmup` steps, then linear decay to 0 at `total`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


# ------------------------------------------------------------------------------------ metrics
class MetricsWriter:
    """Metrics as JSONL (one object per event, with `step`) and, optionally, TensorBoard."""

    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool = True):
        self.path = out_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [
                line
                for line in self.path.read_text(encoding="utf-8").splitlines()
                if _metrics_step(line) <= resume_step
            ]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self.tb = None
        if tensorboard:
            try:
                require("tensorboard", extra="tb", purpose="TensorBoard logs")
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tensorboard"), purge_step=resume_step)
            except (CtxlmError, ImportError) as error:
                warnings.warn(f"{error}; metrics go to metrics.jsonl only")

    def write(self, step: int, values: dict[str, float]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _metrics_step(line: str) -> float:
    """A metrics.jsonl line's step; infinity for a line a killed run left half-written."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


# per-example cross-entropies (a classifier's classes, a QA head's answer boundaries): their exp is no perplexity
PER_EXAMPLE_LOSSES = ("cls", "qa")


def summarize_nll(sums: dict[str, float], prefix: str) -> dict[str, float]:
    """Totals → means: `<name>_nll_sum` / `<name>_tokens` → `<prefix><name>_loss` and `_ppl` (no
    `_ppl` for `PER_EXAMPLE_LOSSES`); `<name>_sum` / `<name>_count` (e.g. a regression head's squared
    errors, a classifier's correct answers) → `<prefix><name>`."""
    out = {}
    for key in sorted(sums):
        if key.endswith("_nll_sum"):
            name = key[: -len("_nll_sum")]
            tokens = sums.get(f"{name}_tokens", 0)
            if tokens:
                loss = sums[key] / tokens
                out[f"{prefix}{name}_loss"] = loss
                if name not in PER_EXAMPLE_LOSSES:
                    out[f"{prefix}{name}_ppl"] = math.exp(min(loss, 50.0))
        elif key.endswith("_sum") and sums.get(f"{key[:-4]}_count"):
            out[f"{prefix}{key[:-4]}"] = sums[key] / sums[f"{key[:-4]}_count"]
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    examples: Examples,
    batch_size: int,
    pad_id: int,
    *,
    max_batches: int | None = None,
    bf16: bool = False,
    loss_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Token-averaged loss and perplexity per objective over `examples` (epoch 0), or over a fixed
    sample of `max_batches * batch_size` of them (`validation_sample`). The sums stay on the device
    until the end."""
    was_training = model.training
    model.eval()
    sums: dict[str, Any] = {}
    chosen = validation_sample(len(examples), None if max_batches is None else max_batches * batch_size)
    device = next(model.parameters()).device
    for start in range(0, len(chosen), batch_size):
        batch = collate([examples.example(int(i), 0) for i in chosen[start : start + batch_size]], pad_id)
        with autocast(device, bf16):
            out = model(**{k: v.to(device) for k, v in batch.items()}, **(loss_options or {}))
        add_metrics(sums, out.metrics)
    model.train(was_training)
    return summarize_nll(to_floats(sums), "")


def add_metrics(sums: dict[str, Any], metrics: dict[str, torch.Tensor]) -> None:
    """Add a batch's metrics to running sums, as float64 tensors on their device (no host sync)."""
    for key, value in metrics.items():
        value = torch.as_tensor(value).detach().to(torch.float64)
        sums[key] = sums[key] + value.to(sums[key].device) if key in sums else value


def to_floats(sums: dict[str, Any]) -> dict[str, float]:
    """Running sums as Python floats: one host synchronisation for all of them."""
    keys = [k for k, v in sums.items() if isinstance(v, torch.Tensor)]
    if not keys:
        return dict(sums)
    values = torch.stack([sums[k].reshape(()).to(sums[keys[0]].device) for k in keys]).tolist()
    return {**sums, **dict(zip(keys, values))}


VALIDATION_SAMPLE_SEED = 20240101


def validation_sample(n_examples: int, size: int | None) -> np.ndarray:
    """The held-out examples a validation scores: all of them, or `size` spread over all of them
    (a fixed random sample, the same at every validation and in every run; in index order)."""
    if size is None or size >= n_examples:
        return np.arange(n_examples)
    return np.sort(np.random.default_rng(VALIDATION_SAMPLE_SEED).choice(n_examples, size, replace=False))


def autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


# ------------------------------------------------------------------------------------ the loop
@dataclass
class TrainResult:
    step: int
    final_metrics: dict[str, float] = field(default_factory=dict)
    out_dir: Path | None = None
    interrupted: bool = False  # stopped by SIGTERM/SIGINT: the last checkpoint holds the run so far

    def stop_if_interrupted(self) -> "TrainResult":
        """A pipeline of runs (compare, the demo) stops at a run that SIGTERM/SIGINT stopped: that run
        is not finished (its checkpoint resumes it), so nothing after it may start from it."""
        if self.interrupted:
            raise RunStopped(self.step)
        return self


class RunStopped(KeyboardInterrupt):
    """Raised by `TrainResult.stop_if_interrupted`: a run of a pipeline stopped by SIGTERM/SIGINT
    after writing a checkpoint (`ctxlm compare` then exits 0, as a stopped training run does)."""

    def __init__(self, step: int):
        super().__init__(f"stopped by a signal at step {step}")
        self.step = step


def distributed_context() -> tuple[int, int]:
    """(rank, world size); sets up the process group under torchrun (`distributed.setup`)."""
    cluster = setup()
    return cluster.rank, cluster.world


@dataclass
class RunProgress:
    """Where a run stands; saved in every checkpoint (plain ints, floats and bools)."""

    step: int = 0  # optimizer steps taken (skipped ones included)
    micro_batch: int = 0  # micro-batches read by all ranks together (the data position)
    best_value: float = math.inf  # the best `select_metric` value so far
    best_step: int | None = None
    bad_evals: int = 0  # validations in a row without improvement
    left_unigram_level: bool = False  # a validation's held-out loss has been below the unigram level
    skipped_steps: int = 0  # steps whose update was skipped (non-finite loss or gradient norm)
    bad_steps_in_a_row: int = 0


# TrainConfig fields a resumed run may change freely (they change neither the data order nor the
# schedule), and those it may change with `allow_config_change`
RESUMABLE_CHANGES = (
    "log_every",
    "eval_every",
    "eval_batches",
    "save_every",
    "keep_checkpoints",
    "progress",
    "early_stopping_patience",
    "max_nonfinite_steps",
    "fsdp",
    "compile",
    "data_workers",
    "collective_timeout",
    "heartbeat_timeout",
)
ALLOWED_CHANGES = ("lr", "max_steps")
RUN_IDENTITY = ("objective", "stage", "task", "data")  # run_info keys a resumed run must share
TOKEN_FIELDS = ("input_ids", "decoder_input_ids")


class TrainingRun:
    """One call of `train`, in named parts, each the one place of its guarantees:

    - set-up and resume (`__init__`, `prepare_out_dir`, `resume_from`, `check_resumable`): a run
      holds its folder's lock for its life (`lock_out_dir`), never mixes with another run's
      checkpoints, resumes only under the settings it was saved with, and resumes with the `best/`
      it had at that checkpoint;
    - one optimizer step (`optimizer_step`): a step with a non-finite loss or gradient norm leaves
      the weights alone, and too many in a row stop the run;
    - validation and selection (`validate_and_select`): the best weights so far, in `best/`;
    - saving (`save_checkpoint`, `finish`): atomic checkpoints that hold the whole state, `best/`
      included; SIGTERM/SIGINT end the run with a checkpoint.

    `run()` strings them together."""

    def __init__(
        self,
        model: nn.Module,
        inputs: TrainingInputs,
        cfg: TrainConfig,
        out_dir: str | Path,
        *,
        tokenizer=None,
        run_info: dict[str, Any] | None = None,
        side_files: dict[str, dict] | None = None,
        run: RunOptions = RunOptions(),
    ):
        self.cfg, self.out_dir, self.pad_id, self.tokenizer = cfg, Path(out_dir), inputs.pad_id, tokenizer
        self.valid_examples, self.loss_options = inputs.valid, dict(inputs.loss_options or {})
        self.run_info = run_info or {}
        self.side_files = side_files or {}
        self.cluster: Cluster = setup(loop_device(run.device), cfg.collective_timeout, cfg.heartbeat_timeout)
        self.rank, self.world, self.device = self.cluster.rank, self.cluster.world, self.cluster.device
        self.model = model
        model.to(self.device).train()
        self.fsdp = cfg.fsdp and self.world > 1
        if self.fsdp:  # shard before the optimizer sees the parameters
            wrap_fsdp(model, self.cluster, cfg.bf16)
        self.optimizer = build_optimizer(model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_schedule(cfg.warmup(), cfg.max_steps))
        self.stream = BatchStream(inputs.train, cfg.batch_size, cfg.seed)
        self.learning_check = LearningCheck(inputs.train, cfg.max_steps, self.out_dir)
        self.progress = RunProgress()
        self.window: dict[str, Any] = defaultdict(float)
        self.final_metrics: dict[str, float] = {}
        self.epoch = 0
        self.stop_signal: int | None = None
        self.writer = self.bar = self.lock = None
        try:
            self.open_run(run.resume, run.overwrite, run.allow_config_change)
        except BaseException:
            self.close()  # releases the folder's lock
            raise

    def open_run(self, resume: bool | str, overwrite: bool, allow_config_change: bool) -> None:
        """Lock and prepare the folder, resume, and start the data, the model wrappers and the logs."""
        cfg = self.cfg
        checkpoint = self.prepare_out_dir(resume, overwrite)
        if checkpoint is not None:
            self.resume_from(checkpoint, allow_config_change)
            self.check_ranks_resumed_alike(checkpoint)
        mine = rank_micro_batches(
            self.progress.micro_batch, cfg.max_steps * cfg.grad_accum * self.world, self.rank, self.world
        )
        self.batches = iter(micro_batch_loader(self.stream, self.pad_id, mine, self.device, cfg.data_workers))
        self.parallel_model = self.wrap_data_parallel() if self.world > 1 and not self.fsdp else self.model
        self.forward_model = torch.compile(self.parallel_model) if cfg.compile else self.parallel_model
        if self.rank == 0:
            self.writer = MetricsWriter(self.out_dir, self.progress.step if checkpoint is not None else None)
            earlier = not_learning_in(self.out_dir) if checkpoint is not None else None
            self.learning_check.resume(earlier)  # a resumed run warns once in all
            (self.out_dir / "run.json").write_text(
                json.dumps(
                    {
                        "train": asdict(cfg),
                        **provenance(),
                        **self.run_info,
                        **({"not_learning": earlier} if earlier else {}),
                    },
                    indent=2,
                    default=str,
                )
                + "\n",
                encoding="utf-8",
            )
            for name, values in self.side_files.items():  # only now that the folder is ours
                (self.out_dir / name).write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
            if cfg.progress:
                from tqdm.auto import tqdm

                self.bar = tqdm(
                    total=cfg.max_steps, initial=self.progress.step, desc="train", unit="step", dynamic_ncols=True
                )
            if checkpoint is not None:
                self.note(f"resumed from {checkpoint} at step {self.progress.step} of {cfg.max_steps}")
            warn_long_warmup(cfg)

    # -------------------------------------------------------------------------- set-up and resume
    def prepare_out_dir(self, resume: bool | str, overwrite: bool) -> Path | None:
        """The checkpoint to resume from (None for a new run): the newest with `resume` (True: one
        must exist; "auto": if any). The folder is locked first, for the run's life. A new run
        refuses a folder holding another run's checkpoints unless `overwrite` (which clears that run
        first); temporaries a killed run left are removed."""
        out_dir = self.out_dir
        if resume and overwrite:
            raise CtxlmError("give --resume or --overwrite, not both")
        resume_checkpoint(out_dir, resume)  # a missing checkpoint is refused before the folder is made
        self.lock_out_dir()
        checkpoint = self.intact_checkpoint(resume) if resume else latest_checkpoint(out_dir)
        resume = checkpoint is not None if resume == "auto" else resume
        if not resume and checkpoint is not None and not overwrite:
            raise CtxlmError(
                f"{out_dir} holds a run's checkpoints ({checkpoint.name}); continue it with --resume "
                f"or start over with --overwrite (in Python: resume=True or overwrite=True)"
            )
        if self.rank == 0:
            if not resume and overwrite:
                clear_run(out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(out_dir)
        return checkpoint if resume else None

    def intact_checkpoint(self, resume: bool | str) -> Path | None:
        """The newest intact checkpoint (`resume_checkpoint`): rank 0 restores damaged files that have
        an intact copy and says what it restored or passed over; then the other ranks find the same."""
        checkpoint = resume_checkpoint(self.out_dir, resume, repair=True) if self.rank == 0 else None
        barrier(self.cluster)
        return checkpoint if self.rank == 0 else resume_checkpoint(self.out_dir, resume)

    def lock_out_dir(self) -> None:
        """Rank 0 locks the output folder (`RunFolderLock`) until `close`; when it cannot, every
        rank stops (none waits for it at a collective)."""
        refused = None
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            try:
                self.lock = RunFolderLock(self.out_dir)
            except CtxlmError as error:
                refused = error
        if any_rank(refused is not None, self.cluster):
            raise refused or CtxlmError(f"{self.out_dir}: rank 0 could not lock the run folder")

    def resume_from(self, checkpoint: Path, allow_config_change: bool = False) -> None:
        """Weights, optimizer, scheduler, RNG, progress and `best/` from `checkpoint`. A checkpoint
        with a DCP directory (written under FSDP) loads at any world size, sharded or not."""
        state = load_trainer_state(checkpoint)
        relaxed = self.check_resumable(state, checkpoint, allow_config_change)
        if (checkpoint / SHARDED_DIR).is_dir():
            load_sharded(checkpoint / SHARDED_DIR, self.model, self.optimizer)
        elif self.fsdp:
            raise CtxlmError(f"{checkpoint}: written without --fsdp; resume it without --fsdp")
        else:
            load_weights_file(self.model, checkpoint, self.device)
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if relaxed:  # a new peak LR or schedule length applies from this step on
            self.scheduler.base_lrs = [self.cfg.lr] * len(self.optimizer.param_groups)
            for group in self.optimizer.param_groups:
                group["initial_lr"] = self.cfg.lr
                group["lr"] = self.cfg.lr * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
            self.scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.progress = RunProgress(**{k: state[k] for k in asdict(self.progress) if k in state})
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.rank == 0:
            restore_best(checkpoint, self.out_dir)

    def check_ranks_resumed_alike(self, checkpoint: Path) -> None:
        """Every rank holds rank 0's step, data position and (replicated models, before DDP copies
        rank 0's weights to the others) weights and optimizer state checksums, else every rank stops
        naming the first difference. Under FSDP each rank holds other shards: step and position only."""
        if self.world == 1:
            return
        values = {"step": self.progress.step, "data position": self.progress.micro_batch}
        if not self.fsdp:
            optimizer_state = self.optimizer.state_dict()["state"]
            values["weights checksum"] = checksum(self.model.state_dict().values())
            values["optimizer state checksum"] = checksum(
                v for k in sorted(optimizer_state) for v in optimizer_state[k].values() if torch.is_tensor(v)
            )
        check_ranks_agree(values, self.cluster, f"after resuming from {checkpoint}")

    def check_resumable(self, state: dict[str, Any], checkpoint: Path, allow_config_change: bool) -> bool:
        """Refuse to resume under settings that change the data order, the schedule or the model,
        naming the first such key; True when an allowed change (lr, max_steps) is taken."""
        saved_world, exempt = state.get("world_size", self.world), ()
        if saved_world != self.world:  # another number of processes must read the same micro-batches per step
            saved_accum = state.get("train_config", {}).get("grad_accum", 1)
            if saved_world * saved_accum != self.world * self.cfg.grad_accum:
                raise CtxlmError(
                    f"{checkpoint}: saved with world size {saved_world} × grad_accum {saved_accum}, now "
                    f"{self.world} × {self.cfg.grad_accum}; resume with grad_accum "
                    f"{saved_world * saved_accum / self.world:g} (the same micro-batches per step)"
                )
            exempt = ("grad_accum",)
        now = asdict(self.cfg)
        changed = [
            k
            for k, v in state.get("train_config", {}).items()
            if k in now and now[k] != v and k not in RESUMABLE_CHANGES + exempt
        ]
        for key in changed:
            if key not in ALLOWED_CHANGES or not allow_config_change:
                hint = " (or pass --allow-config-change)" if key in ALLOWED_CHANGES else ""
                raise CtxlmError(
                    f"{checkpoint}: train config '{key}' was {state['train_config'][key]!r}, now "
                    f"{now[key]!r}; resume with the saved value{hint} or start over with --overwrite"
                )
        saved_run, run = state.get("run", {}), self.run_identity()
        for key in saved_run.keys() & run.keys():
            if saved_run[key] != run[key]:
                raise CtxlmError(
                    f"{checkpoint}: the run's {key} was {saved_run[key]!r}, now {run[key]!r}; "
                    f"start over with --overwrite"
                )
        differences = config_differences(read_model_config_values(checkpoint), asdict(self.model.config))
        if differences:
            raise CtxlmError(f"{checkpoint}: model config {differences[0]}; start over with --overwrite")
        return bool(changed)

    def wrap_data_parallel(self) -> nn.Module:
        """DDP, finding unused parameters only when some trainable parameter gets no gradient from
        the first micro-batch on some rank (probed once, without touching the RNG)."""
        _, batch = self.stream.batch(self.progress.micro_batch + self.rank, self.pad_id)
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            out = self.model(**{k: v.to(self.device) for k, v in batch.items()}, **self.loss_options)
            unused = unused_parameters(self.model, out.loss)
        return wrap_ddp(self.model, self.cluster, find_unused_parameters=any_rank(bool(unused), self.cluster))

    def trainer_state(self) -> dict[str, Any]:
        return {
            **asdict(self.progress),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **({} if self.fsdp else {"optimizer": self.optimizer.state_dict()}),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "train_config": asdict(self.cfg),
            "world_size": self.world,
            "run": self.run_identity(),
        }

    def run_identity(self) -> dict[str, Any]:
        """What the run trains on and for (`RUN_IDENTITY` of `run_info`), as plain JSON values."""
        return json.loads(json.dumps({k: self.run_info[k] for k in RUN_IDENTITY if k in self.run_info}, default=str))

    # -------------------------------------------------------------------------- one optimizer step
    def next_micro_batches(self) -> list[dict[str, torch.Tensor]]:
        """The step's `grad_accum` micro-batches, on the device (prepared ahead by the loader)."""
        batches = []
        for _ in range(self.cfg.grad_accum):
            self.epoch, batch = next(self.batches)
            self.progress.micro_batch += self.world
            batches.append({k: v.to(self.device, non_blocking=True) for k, v in batch.items()})
        return batches

    def step_target_counts(self, batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Targets per objective over the step's micro-batches on every rank (one all-reduce)."""
        counts: dict[str, torch.Tensor] = {}
        for batch in batches:
            for name, count in self.model.target_counts(batch).items():
                counts[name] = counts[name] + count if name in counts else count
        return {k: v.float() for k, v in sum_over_ranks(counts, self.cluster).items()}

    def optimizer_step(self) -> None:
        """`grad_accum` micro-batches forward and backward (gradients reduced across ranks on the
        last one only), the loss normalised by the whole step's targets, clipping, one update. A
        step whose loss or gradient norm is not finite (NaN/Inf) leaves weights, optimizer and
        schedule alone and is counted; `max_nonfinite_steps` of them in a row stop the run. The
        step's loss (summed over the ranks) and gradient norm reach the host together, once; the
        other metrics stay on the device until the log step."""
        cfg, progress = self.cfg, self.progress
        started = time.perf_counter()
        torch.manual_seed(rank_seed(cfg.seed, self.rank, progress.step))
        batches = self.next_micro_batches()
        counts = self.step_target_counts(batches)
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.zeros((), device=self.device)
        sums: dict[str, torch.Tensor] = {}
        for i, batch in enumerate(batches):
            with gradient_sync(self.parallel_model, enabled=i == len(batches) - 1):
                # under FSDP bf16 comes from its MixedPrecisionPolicy, not autocast
                with autocast(self.device, cfg.bf16 and not self.fsdp):
                    out = self.forward_model(**batch, **self.loss_options)
                part = batch_loss(out.loss_sums, counts)
                (part * self.world).backward()  # DDP and FSDP average the ranks' gradients
            loss = loss + part.detach()
            add_metrics(
                sums,
                {**out.metrics, "tokens": sum(v.ne(self.pad_id).sum() for k, v in batch.items() if k in TOKEN_FIELDS)},
            )
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        # the step's loss summed over the ranks (and the gradient norm, of the reduced gradients):
        # a non-finite value on any rank makes every rank skip the step
        loss = sum_over_ranks({"loss": loss}, self.cluster)["loss"]
        loss_value, norm_value = torch.stack([loss.double(), grad_norm.double()]).tolist()
        progress.step += 1
        if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
            self.skip_step(loss_value, norm_value)
            return
        self.optimizer.step()
        self.scheduler.step()
        progress.bad_steps_in_a_row = 0
        window = self.window
        window["steps"] += 1
        window["loss"] += loss_value
        window["grad_norm"] += norm_value
        window["seconds"] += time.perf_counter() - started
        for key, value in sums.items():
            window[key] += value

    def skip_step(self, loss: float, grad_norm: float) -> None:
        progress = self.progress
        progress.skipped_steps += 1
        progress.bad_steps_in_a_row += 1
        if progress.bad_steps_in_a_row >= self.cfg.max_nonfinite_steps:
            raise CtxlmError(
                f"step {progress.step}: loss or gradient norm not finite for "
                f"{progress.bad_steps_in_a_row} steps in a row; stopped without saving (the last "
                f"checkpoint is the last good state; try a lower --lr)"
            )
        if self.rank == 0:
            self.note(f"step {progress.step}: loss {loss}, gradient norm {grad_norm}; update skipped")

    def note(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, file=sys.stderr)

    def log_step(self) -> None:
        """Every `log_every` steps (and the last): the window's means to metrics.jsonl and the bar.
        The window's device sums are added over the ranks and reach the host here, once."""
        step, window = self.progress.step, self.window
        if step % self.cfg.log_every == 0 or self.last_step:
            totals = to_floats(
                {
                    **window,
                    **sum_over_ranks({k: v for k, v in window.items() if isinstance(v, torch.Tensor)}, self.cluster),
                }
            )
            window.clear()
            if self.rank == 0:
                values = {
                    "lr": self.scheduler.get_last_lr()[0],
                    "epoch": self.epoch,
                    "skipped_steps": self.progress.skipped_steps,
                }
                if totals.get("steps"):
                    steps = totals["steps"]
                    values.update(
                        loss=totals["loss"] / steps,
                        grad_norm=totals["grad_norm"] / steps,
                        tokens_per_s=totals["tokens"] / max(totals["seconds"], 1e-9),
                    )
                    values.update(summarize_nll(totals, "train/"))
                    if self.bar is not None:
                        self.bar.set_postfix(
                            loss=f"{values['loss']:.3f}",
                            lr=f"{values['lr']:.2e}",
                            tok_s=f"{values['tokens_per_s']:.0f}",
                        )
                self.writer.write(step, values)
                if self.bar is None:  # --no-progress: a line instead of the bar
                    self.note(progress_line(step, self.cfg.max_steps, values))
        if self.bar is not None:
            self.bar.update(1)

    @property
    def last_step(self) -> bool:
        return self.progress.step >= self.cfg.max_steps

    # -------------------------------------------------------------------------- validation and selection
    def validate_and_select(self) -> bool:
        """Validate (every `eval_every` steps and at the end), keep the best weights in `best/`;
        True when early stopping says stop."""
        cfg, progress = self.cfg, self.progress
        if not ((cfg.eval_every and progress.step % cfg.eval_every == 0) or self.last_step):
            return False
        if self.valid_examples is None or len(self.valid_examples) == 0:
            return False
        if self.rank != 0 and not self.fsdp:  # under FSDP every rank takes part in each forward
            return False
        values = evaluate(
            self.model,
            self.valid_examples,
            cfg.batch_size,
            self.pad_id,
            max_batches=cfg.eval_batches,
            bf16=cfg.bf16 and not self.fsdp,
            loss_options=self.loss_options,
        )
        values = {f"valid/{k}": v for k, v in values.items()}
        stop = False
        if cfg.select_metric is not None:
            if cfg.select_metric not in values:
                raise CtxlmError(
                    f"select_metric '{cfg.select_metric}' is not among the validation metrics ({', '.join(values)})"
                )
            waits = bool(cfg.early_stopping_patience) and self.still_at_unigram_level(values)
            if values[cfg.select_metric] < progress.best_value:
                progress.best_value, progress.best_step = values[cfg.select_metric], progress.step
                progress.bad_evals = 0
                model = self.writable_model()
                if self.rank == 0:
                    atomic_directory(self.out_dir / BEST_DIR, lambda tmp: write_model_files(tmp, model, self.tokenizer))
            elif not waits:
                progress.bad_evals += 1
            values["valid/best_step"] = progress.best_step
            stop = bool(cfg.early_stopping_patience and progress.bad_evals >= cfg.early_stopping_patience)
        if self.writer is not None:
            self.learning_check.check(progress.step, values, self.writer)
            self.writer.write(progress.step, values)
        self.final_metrics.update(values)
        if self.rank == 0:
            self.note(
                f"step {progress.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in values.items() if v is not None)
            )  # best_step: None before a best
        return stop

    def still_at_unigram_level(self, values: dict[str, Any]) -> bool:
        """Whether early stopping waits out this validation: its held-out loss is at the targets'
        unigram level (`LearningCheck.at_unigram_level`) and no validation before it was below, a slow
        start and not convergence. Once the run has left the level every validation counts: a loss
        back at the level later is over-fitting, which the patience is there to stop."""
        at_level = self.learning_check.at_unigram_level(values)
        self.progress.left_unigram_level |= not at_level
        return at_level and not self.progress.left_unigram_level

    # -------------------------------------------------------------------------- saving
    def writable_model(self) -> nn.Module | None:
        """The model to write files from: itself, or under FSDP (a collective: every rank calls it)
        a plain CPU copy with the gathered weights on rank 0 (None elsewhere)."""
        if not self.fsdp:
            return self.model
        state = full_state_dict(self.model)
        if self.rank != 0:
            return None
        plain = build_model(self.model.config, self.model.head_config() if hasattr(self.model, "head_config") else None)
        plain.load_state_dict(state)
        return plain

    def save_checkpoint(self) -> None:
        """`checkpoints/step-N/`: weights, the whole training state and the best weights so far;
        under FSDP also a DCP directory of the sharded model and optimizer (every rank writes its
        shards)."""
        step, sharded = self.progress.step, None
        if self.fsdp:
            # a temporary name (a killed run's is removed at the next start), moved into the checkpoint
            sharded = self.out_dir / CHECKPOINTS_DIR / f".tmp-{SHARDED_DIR}-{checkpoint_name(step)}"
            save_sharded(sharded, self.model, self.optimizer)
        model = self.writable_model()
        if self.rank == 0:
            if not all_finite(model):
                raise CtxlmError(
                    f"step {step}: the weights are not finite; not saving them over the last good checkpoint"
                )
            best = self.out_dir / BEST_DIR if self.progress.best_step is not None else None
            save_training_checkpoint(
                self.out_dir,
                step,
                model,
                self.tokenizer,
                self.trainer_state(),
                keep=self.cfg.keep_checkpoints,
                best=best,
                extra={SHARDED_DIR: sharded} if sharded is not None else None,
                model_files=best if self.progress.best_step == step else None,
            )
        barrier(self.cluster)

    def finish(self) -> TrainResult:
        """The run's directory gets the final weights: the best ones under selection, else the
        last; as an independent copy (a reflink where the file system has them) of the files of
        `best/` or of the last checkpoint, so that an in-place write to the final model never
        reaches the run's checkpoints or `best/`. A run stopped by a signal keeps only its checkpoint."""
        result = TrainResult(step=self.progress.step, final_metrics=self.final_metrics, out_dir=self.out_dir)
        if self.stop_signal is not None and not self.last_step:
            result.interrupted = True
            return result
        model = self.writable_model()
        if self.rank == 0:
            source = self.out_dir / CHECKPOINTS_DIR / checkpoint_name(self.progress.step)
            if self.cfg.select_metric is not None and self.progress.best_step is not None:
                source = self.out_dir / BEST_DIR
                load_weights_file(model, source, next(model.parameters()).device)
                self.final_metrics["best_step"] = self.progress.best_step
            if source.is_dir():
                copy_model_dir(source, self.out_dir)
            else:  # no checkpoint of the last step (a run of 0 steps)
                save_model_dir(self.out_dir, model, self.tokenizer)
        return result

    def close(self) -> None:
        """Close the logs and release the output folder's lock."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def run(self) -> TrainResult:
        """Steps until `max_steps`, early stopping or SIGTERM/SIGINT; checkpoints every
        `save_every` steps and at the stop."""
        cfg = self.cfg
        handlers = self.catch_stop_signals()
        try:
            with stop_group_on_failure():  # before the signal handlers go: torchrun's SIGTERM must not end it
                stop = self.last_step
                while not stop:
                    self.optimizer_step()
                    self.log_step()
                    early = self.validate_and_select()
                    stop = self.last_step or agree(early or self.stop_signal is not None, self.cluster)
                    if (cfg.save_every and self.progress.step % cfg.save_every == 0) or stop:
                        self.save_checkpoint()
                return self.finish()
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            self.close()

    def catch_stop_signals(self) -> dict:
        """SIGTERM and SIGINT end the run after the current step, with a checkpoint; a second one
        acts as usual. Returns the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def stop(signum, frame):
            self.stop_signal = signum
            signal.signal(signum, previous[signum])

        previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
        for signum in previous:
            signal.signal(signum, stop)
        return previous


def progress_line(step: int, max_steps: int, values: dict[str, float]) -> str:
    """A log step's line when there is no progress bar (`--no-progress`)."""
    line = f"step {step}/{max_steps}:"
    if "loss" in values:
        line += f" loss {values['loss']:.4f}, lr {values['lr']:.3g}, {values['tokens_per_s']:,.0f} tokens/s"
    else:
        line += f" lr {values['lr']:.3g}, every update skipped"
    return line


def warn_long_warmup(cfg: TrainConfig) -> None:
    """One warning when the warm-up is longer than the run: the learning rate never reaches `lr`."""
    warmup = cfg.warmup()
    if warmup > cfg.max_steps:
        peak = cfg.lr * cfg.max_steps / warmup  # `linear_schedule` at the last step
        warnings.warn(
            f"warmup_steps {warmup} is longer than max_steps {cfg.max_steps}: the learning rate "
            f"peaks at {peak:.3g}, not lr {cfg.lr:.3g} (lower --warmup-steps)",
            stacklevel=2,
        )


def loop_device(device: Any) -> torch.device | None:
    """The device `distributed.setup` gets from `RunOptions.device`: None for "auto" (setup's choice:
    `cuda:LOCAL_RANK` under torchrun, else the first GPU or the CPU), else the resolved device."""
    return (
        None
        if device is None or (isinstance(device, str) and device.strip().lower() == "auto")
        else resolve_device(device)
    )


def all_finite(model: nn.Module) -> bool:
    return bool(torch.stack([p.isfinite().all() for p in model.parameters()]).all())


def train(
    model: nn.Module,
    inputs: TrainingInputs,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    tokenizer=None,
    run_info: dict[str, Any] | None = None,
    side_files: dict[str, dict] | None = None,
    run: RunOptions = RunOptions(),
) -> TrainResult:
    """Train `model` on `inputs` (`TrainingInputs`) for `cfg.max_steps` optimizer steps; write
    checkpoints and the final model directory into `out_dir`. `run` (`RunOptions`) says how the run
    starts and where: with `run.resume`, continue from the newest checkpoint in `out_dir` (under the
    same settings; `allow_config_change` lets lr and max_steps differ); `resume="auto"` does so when
    there is one and starts a new run otherwise (the same call restarts a preempted job); without
    it, a folder holding checkpoints is refused unless `overwrite` (which clears the old run).
    `run.device` "auto": `cuda:LOCAL_RANK` under torchrun, else the first GPU or the CPU. The folder
    is locked for the run's life: a second run into it is refused.

    With `cfg.select_metric` (e.g. "valid/lm_loss", lower is better) the best weights so far are
    kept in `out_dir/best/`, training stops after `cfg.early_stopping_patience` validations without
    improvement (when > 0; validations whose held-out loss is still at the targets' unigram level,
    before any was below it, do not count: a slow start is not convergence), and `out_dir`
    ends up holding the best weights (the last ones stay in `checkpoints/`). SIGTERM/SIGINT stop
    after the current step with a checkpoint (the result says `interrupted`). `side_files` (name →
    values, e.g. a fine-tuned model's generation.json) are written as JSON into `out_dir` once the run
    holds the folder, never into a folder another run holds."""
    with stop_group_on_failure():  # under torchrun: a lost rank, or an error of this one, stops every rank
        training = TrainingRun(
            model, inputs, cfg, out_dir, tokenizer=tokenizer, run_info=run_info, side_files=side_files, run=run
        )
    return training.run()
