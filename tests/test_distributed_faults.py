"""Faults of a two-process (gloo) run: a rank SIGKILLed mid-step or mid-checkpoint-write (DDP and
FSDP) stops the survivor within 60 s with one line naming the lost rank and leaves only complete
checkpoints; a frozen rank is caught by the heartbeat; torchrun's restart with --resume auto ends
bit-identical to an uninterrupted run; ranks that resume different states are refused; only rank
0 prints warnings and the result.

The ranks of the direct launches are forked from this process (`main(argv)` with torchrun's
environment variables; rank 0 hosts the store, as under srun), which skips their import time."""

from __future__ import annotations

import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import TWO_PROCESS_PALM, wiki_slice
from ctxlm import checkpoint
from ctxlm.checkpoint import list_checkpoints
from ctxlm.cli import main
from ctxlm.tokenization import train_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread", "optimizer_imports")]

CONFIG = (
    TWO_PROCESS_PALM
    + """  save_every: 2
data:
  fragment_length: 96
  valid_fraction: 0.05
"""
)
DEADLINE = 60.0  # seconds the survivor may take to exit after the kill
SLOW_WRITE = 3.0  # seconds a checkpoint write lasts in a run whose write is to be killed


@pytest.fixture(scope="module")
def optimizer_imports():
    """The first optimizer of a process imports torch._dynamo (seconds); do it once, before forking."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


@pytest.fixture(scope="module")
def common(tmp_path_factory) -> list[str]:
    """The pretrain arguments every run here shares (one corpus, tokenizer and token store)."""
    root = tmp_path_factory.mktemp("faults")
    corpus = wiki_slice(root / "wiki.txt", 1500)
    train_tokenizer(corpus, 600, root / "tok")
    (root / "tiny.yaml").write_text(CONFIG, encoding="utf-8")
    return [
        "pretrain",
        "--stage",
        "generation",
        "--config",
        str(root / "tiny.yaml"),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(root / "tok"),
        "--cache-dir",
        str(root / "cache"),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, port: int, argv: list[str], log: Path, slow_write: bool) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = sys.stderr = open(fd, "w", buffering=1, encoding="utf-8")  # pytest had replaced them
    torch.set_num_threads(1)
    if slow_write:  # every checkpoint write (DDP: rank 0's files; FSDP: each rank's DCP shard) lasts SLOW_WRITE s
        from torch.distributed.checkpoint import FileSystemWriter

        fsync_tree, write_data = checkpoint._fsync_tree, FileSystemWriter.write_data

        def slow_fsync_tree(path):
            time.sleep(SLOW_WRITE)
            fsync_tree(path)

        def slow_write_data(self, *args, **kwargs):
            written = write_data(self, *args, **kwargs)
            time.sleep(SLOW_WRITE)  # this rank's shard is on disk, the checkpoint's metadata not yet
            return written

        checkpoint._fsync_tree, FileSystemWriter.write_data = slow_fsync_tree, slow_write_data
    sys.exit(main(argv))


def launch(argvs: list[list[str]], logs: list[Path], slow_write: bool = False) -> list[multiprocessing.Process]:
    """Rank r runs `main(argvs[r])` in a forked process, its output in `logs[r]`."""
    port, context = free_port(), multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_rank, args=(rank, port, argv, log, slow_write))
        for rank, (argv, log) in enumerate(zip(argvs, logs))
    ]
    for process in processes:
        process.start()
    return processes


def wait_for(condition, processes, limit: float = 240.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert all(p.is_alive() for p in processes), "a rank ended before the kill"
        assert time.monotonic() < deadline, "the condition never came"
        time.sleep(0.005)


def kill_and_time_survivor(processes, victim: int, log: Path) -> str:
    """SIGKILL rank `victim`; the other rank must exit non-zero within DEADLINE with one line
    naming the lost rank as its last, and no traceback. Returns that line."""
    os.kill(processes[victim].pid, signal.SIGKILL)
    killed = time.monotonic()
    survivor = processes[1 - victim]
    survivor.join(DEADLINE + 30)
    took = time.monotonic() - killed
    processes[victim].join()
    if survivor.is_alive():
        os.kill(survivor.pid, signal.SIGKILL)
    assert took < DEADLINE and survivor.exitcode not in (0, None), (took, survivor.exitcode)
    output = log.read_text(encoding="utf-8", errors="replace")
    assert "Traceback" not in output, output[-2000:]
    line = output.strip().splitlines()[-1]
    lost = rf"error: rank {victim} \(.*pid {processes[victim].pid}\)|error: rank 0, the host of the rendezvous store"
    assert re.match(lost, line) and f"rank {1 - victim} stops" in line, line
    return line


def temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp-")] if folder.is_dir() else []


def assert_complete_checkpoints(out: Path, sharded: bool) -> None:
    """Every checkpoint a resume would see is whole (weights, state and, under FSDP, every shard)."""
    for found in list_checkpoints(out):
        assert (found / "model.safetensors").is_file() and (found / "trainer_state.pt").is_file()
        if sharded:
            assert (found / "dcp/.metadata").is_file() and len(list((found / "dcp").glob("*.distcp"))) == 2


@pytest.mark.parametrize(
    "fsdp, victim, moment", [(False, 1, "step"), (False, 0, "write"), (True, 0, "step"), (True, 1, "write")]
)
def test_a_killed_rank_stops_the_survivor_with_one_line(common, tmp_path, fsdp, victim, moment):
    """Rank `victim` SIGKILLed mid-step (once a checkpoint exists) or while a checkpoint is being
    written (the DDP writer rank 0, or an FSDP rank with its DCP shard on disk and the metadata
    not yet written): the survivor is out within 60 s, naming it; no partial checkpoint is listed."""
    out = tmp_path / "run"
    argv = [*common, "--max-steps", "400", "--out", str(out), *(["--fsdp"] if fsdp else [])]
    logs = [tmp_path / "rank0.log", tmp_path / "rank1.log"]
    processes = launch([argv, argv], logs, slow_write=moment == "write")
    if moment == "step":
        wait_for(lambda: len(list_checkpoints(out)) >= 1, processes)
        time.sleep(0.05)
    else:
        wait_for(lambda: temporaries(out / "checkpoints"), processes)
    kill_and_time_survivor(processes, victim, logs[1 - victim])
    assert_complete_checkpoints(out, fsdp)
    if moment == "write":
        assert temporaries(out / "checkpoints")  # the partial write stays a temporary (removed at the next start)


def test_a_frozen_rank_is_caught_by_the_heartbeat(common, tmp_path):
    """SIGSTOP (a node gone without closing its connections): the survivor waits in a collective
    that never fails; after --heartbeat-timeout seconds without a heartbeat it names the rank."""
    out = tmp_path / "run"
    argv = [*common, "--max-steps", "400", "--out", str(out), "--heartbeat-timeout", "8"]
    logs = [tmp_path / "rank0.log", tmp_path / "rank1.log"]
    processes = launch([argv, argv], logs)
    wait_for(lambda: len(list_checkpoints(out)) >= 1, processes)
    os.kill(processes[1].pid, signal.SIGSTOP)
    stopped = time.monotonic()
    processes[0].join(DEADLINE)
    took = time.monotonic() - stopped
    os.kill(processes[1].pid, signal.SIGKILL)
    processes[1].join()
    assert processes[0].exitcode == 2 and 8 <= took < DEADLINE, (processes[0].exitcode, took)
    line = logs[0].read_text(encoding="utf-8").strip().splitlines()[-1]
    assert line.startswith("error: rank 1 (") and "sent no heartbeat for" in line and "rank 0 stops" in line, line


@pytest.fixture(scope="module")
def uninterrupted(common, tmp_path_factory) -> Path:
    """A 2-process run of 8 steps, checkpoints every 2, never killed; its ranks' output beside it."""
    root = tmp_path_factory.mktemp("uninterrupted")
    argv = [*common, "--max-steps", "8", "--out", str(root / "run")]
    processes = launch([argv, argv], [root / "rank0.log", root / "rank1.log"])
    for process in processes:
        process.join(300)
        assert process.exitcode == 0, (root / "rank0.log").read_text()[-3000:]
    return root / "run"


def test_only_rank_0_prints_the_result(uninterrupted):
    """(Warnings: in the torchrun test, whose processes are not under pytest's warning capture.)"""
    rank0, rank1 = (uninterrupted.parent / f"rank{r}.log" for r in (0, 1))
    assert "done: 8 steps" in rank0.read_text() and rank1.read_text() == ""


def worker_of_rank(launcher: int, rank: int) -> int | None:
    """The pid of the worker of `rank` that the torchrun process `launcher` started, if running."""
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == launcher:
                if f"RANK={rank}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                    return int(pid)
        except (OSError, IndexError, ValueError):
            continue
    return None


def test_torchrun_restarts_a_killed_rank_and_ends_bit_identical(common, uninterrupted, tmp_path):
    """`torchrun --max-restarts 3 ... --resume auto`, one worker SIGKILLed after the first
    checkpoint: torchrun restarts the group, which resumes and ends with the uninterrupted run's
    weights, bit for bit."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "3",
        "-m",
        "ctxlm",
        *common,
        "--max-steps",
        "8",
        "--out",
        str(out),
        "--resume",
        "auto",
    ]
    with open(tmp_path / "torchrun.log", "w") as log:
        torchrun = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not list_checkpoints(out) or (victim := worker_of_rank(torchrun.pid, 1)) is None:
            assert torchrun.poll() is None and time.monotonic() < deadline, (tmp_path / "torchrun.log").read_text()
            time.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        assert torchrun.wait(300) == 0, (tmp_path / "torchrun.log").read_text()[-3000:]
    finally:
        if torchrun.poll() is None:
            torchrun.kill()
    output = (tmp_path / "torchrun.log").read_text()
    starts = output.count("resumed from") + 1
    assert starts >= 2 and output.count("done: ") == 1  # only rank 0 prints its warnings and the result
    assert output.count("warning: skipped while building examples") == starts
    final, expected = load_file(str(out / "model.safetensors")), load_file(str(uninterrupted / "model.safetensors"))
    assert final.keys() == expected.keys() and all(torch.equal(final[k], expected[k]) for k in final)


@pytest.mark.parametrize("difference", ["weights", "step"])
def test_ranks_that_resume_different_states_are_refused(common, uninterrupted, tmp_path, difference):
    """Two ranks whose --out folders differ (node-local disks): rank 1's newest checkpoint has one
    weight changed, or is an older one; every rank stops with one line naming rank 1 and the value."""
    mine, other = tmp_path / "rank0-out", tmp_path / "rank1-out"
    shutil.copytree(uninterrupted, mine)
    shutil.copytree(uninterrupted, other)
    newest = list_checkpoints(other)[-1]
    if difference == "weights":
        with safe_open(str(newest / "model.safetensors"), framework="pt") as handle:
            weights, metadata = {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()
        name = sorted(weights)[0]
        weights[name] = weights[name] + 1e-3
        save_file(weights, str(newest / "model.safetensors"), metadata=metadata)
    else:
        shutil.rmtree(newest)
    argvs = [[*common, "--max-steps", "8", "--resume", "--out", str(folder)] for folder in (mine, other)]
    logs = [tmp_path / "rank0.log", tmp_path / "rank1.log"]
    for process in launch(argvs, logs):
        process.join(120)
        assert process.exitcode == 2
    expected = "weights checksum" if difference == "weights" else "step is 6, rank 0's 8"
    line = logs[0].read_text().strip().splitlines()[-1]
    assert line.startswith("error: rank 1 does not hold rank 0's state after resuming from") and expected in line, line
