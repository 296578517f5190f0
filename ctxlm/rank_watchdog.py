"""A lost rank stops the group: a heartbeat over the rendezvous store and a watchdog thread.

Under torchrun (or any launch that sets MASTER_ADDR and MASTER_PORT) every rank holds a client of
the run's TCPStore (torchrun's agent store, or rank 0's) and a daemon thread that adds 1 to the
rank's counter in it every `INTERVAL` seconds (torch releases the GIL while it computes, saves or
waits, so the thread beats through all of them). Rank 0 watches every rank; every rank watches
rank 0 and the store's `lost` record. A rank is lost when

- its counter has not moved for `timeout` seconds (killed, frozen, its node gone);
- it stopped with an error (`RankWatchdog.fail`), after `FAILED_GRACE` seconds (an error every
  rank meets ends them all by itself);
- it hosts the store (rank 0 without torchrun) and the store refuses connections or does not answer.

The first rank to find a lost one records it under `lost`, and every rank that sees the record
prints one line naming the lost rank and exits with status `LOST_RANK_EXIT` (`os._exit`: a
rank blocked in a collective cannot be interrupted otherwise, and a process group with a dead
peer aborts when the interpreter destroys it). A rank whose collective fails (gloo: "Connection
reset by peer") asks at once (`RankWatchdog.explain`): all ranks are then watched, a silence of
`SUSPECT_SILENCE` seconds suffices, and a rank that ended counts too. A rank that ends normally
says so (`left`) when its interpreter exits and is no longer watched.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import time
from datetime import timedelta

INTERVAL = 1.0  # seconds between heartbeats and checks
SUSPECT_SILENCE = 5.0  # after a failed collective: seconds of silence that make a rank lost
FAILED_GRACE = 3.0  # seconds a rank that stopped with an error is given before the others stop
STORE_OP_TIMEOUT = 5.0  # seconds one store operation may take
LOST_RANK_EXIT = 2  # the exit status of a rank stopped because another one is lost (as a one-line error)
RUNNING, LEFT, FAILED = "running", "left", "failed"


class RankWatchdog:
    """The heartbeat and watchdog of this rank (`start` begins both; see the module docstring)."""

    def __init__(self, host: str, port: int, rank: int, world: int, timeout: float, agent_store: bool, group: int):
        self.host, self.port, self.rank, self.world, self.timeout = host, port, rank, world, timeout
        self.prefix = f"ctxlm/heartbeat/{group}/"  # torchrun's store outlives a restart's group: one key set each
        self.agent_store = agent_store  # torchrun's agent hosts the store (else rank 0 does)
        self.store = self._connect()
        self.suspect = threading.Event()  # set by `explain`: a collective of this rank failed
        self.lock = threading.Lock()  # guards `leaving`
        self.store_lock = threading.Lock()  # one store operation at a time (the thread's, or `leave`'s)
        self.leaving = False  # this process ends by itself: the watchdog no longer stops it
        self.thread = threading.Thread(target=self._watch, name="ctxlm-rank-watchdog", daemon=True)

    def _connect(self):
        import torch.distributed as dist

        return dist.TCPStore(
            self.host, self.port, is_master=False, timeout=timedelta(seconds=STORE_OP_TIMEOUT), wait_for_workers=False
        )

    # ------------------------------------------------------------------ this rank
    def start(self) -> None:
        self.store.set(f"{self.prefix}info/{self.rank}", f"{socket.gethostname()} pid {os.getpid()}")
        self.store.set(f"{self.prefix}state/{self.rank}", RUNNING)
        self.store.add(f"{self.prefix}beat/{self.rank}", 1)
        atexit.register(self.leave)
        self.thread.start()

    def leave(self, state: str = LEFT) -> None:
        """This rank ends (normally: `LEFT`, at the interpreter's exit; or `FAILED`): the others stop
        watching it, or, when it failed, stop too."""
        with self.lock:
            if self.leaving:
                return
            self.leaving = True
        if not self.store_lock.acquire(timeout=STORE_OP_TIMEOUT):
            return  # the thread waits on the store (for the ranks' start): leave unsaid
        try:
            self.store.set(f"{self.prefix}state/{self.rank}", state)
        except Exception:  # noqa: BLE001 - the store may be gone with the group
            pass
        finally:
            self.store_lock.release()

    def fail(self) -> None:
        """This rank stops with an error: every other rank stops too (after `FAILED_GRACE`)."""
        self.leave(FAILED)

    def explain(self, wait: float = SUSPECT_SILENCE + 3 * INTERVAL) -> None:
        """A collective of this rank failed: if another rank is lost (silent for `SUSPECT_SILENCE`,
        ended, failed, or the store's host gone), print the line naming it and exit; else return
        after `wait` seconds (the failure was this rank's own). torchrun's SIGTERM to the survivors
        is ignored meanwhile, so that the line is printed."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, signal.SIG_IGN) if main else None
        try:
            self.suspect.set()
            self.thread.join(wait)  # the thread exits the process when it finds the lost rank
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)

    # ------------------------------------------------------------------ the thread
    def _watch(self) -> None:
        last: dict[int, tuple[bytes, float]] = {}  # rank → (its counter, when it last moved)
        failed_since: dict[int, float] = {}
        down_since = None  # when the store stopped answering
        with self.store_lock:
            found = self._wait_for_all()
        while found is None:
            time.sleep(INTERVAL)
            if self.leaving:
                return
            now = time.monotonic()
            if (down_since is not None or self.suspect.is_set()) and not self._store_reachable():
                found = self._store_lost("it refuses connections")  # checked without the store's client
                break
            try:
                with self.store_lock:
                    if self.store is None:
                        self.store = self._connect()
                    self.store.add(f"{self.prefix}beat/{self.rank}", 1)
                    found = self._recorded_loss() or self._find_lost(now, last, failed_since)
                down_since = None
            except Exception as error:  # noqa: BLE001 - the store's client raises several types
                self.store, down_since = None, down_since or now  # a failed client does not recover
                if now - down_since >= (SUSPECT_SILENCE if self.suspect.is_set() else self.timeout):
                    found = self._store_lost(f"no answer for {now - down_since:.0f} s: {first_line(error)}")
        self._stop(found)

    def _wait_for_all(self) -> str | None:
        """Wait until every rank has started its heartbeat; the first that has not within `timeout`
        seconds, as a lost rank (None when all have)."""
        keys = [f"{self.prefix}beat/{r}" for r in range(self.world)]
        try:
            self.store.wait(keys, timedelta(seconds=self.timeout))
            return None
        except Exception as error:  # noqa: BLE001 - a timeout, or the store gone
            try:
                absent = [r for r, key in enumerate(keys) if not self.store.check([key])]
            except Exception:  # noqa: BLE001
                return self._store_lost(first_line(error))
            return f"rank {absent[0] if absent else '?'} started no heartbeat within {self.timeout:g} s"

    def _store_reachable(self) -> bool:
        try:
            socket.create_connection((self.host, self.port), timeout=STORE_OP_TIMEOUT).close()
            return True
        except OSError:
            return False

    def _recorded_loss(self) -> str | None:
        if self.store.check([f"{self.prefix}lost"]):
            return self.store.get(f"{self.prefix}lost").decode("utf-8", "replace")
        return None

    def _find_lost(self, now: float, last: dict, failed_since: dict) -> str | None:
        """The first watched rank that is lost, recorded in the store for every rank; or None."""
        suspect = self.suspect.is_set()
        ranks = [r for r in (range(self.world) if self.rank == 0 or suspect else [0]) if r != self.rank]
        if not ranks:
            return None
        values = self.store.multi_get([f"{self.prefix}{kind}/{r}" for kind in ("beat", "state") for r in ranks])
        beats, states = values[: len(ranks)], [v.decode() for v in values[len(ranks) :]]
        silence = SUSPECT_SILENCE if suspect else self.timeout
        for rank, beat, state in zip(ranks, beats, states):
            if state == FAILED:
                failed_since.setdefault(rank, now)
                if suspect or now - failed_since[rank] >= FAILED_GRACE:
                    return self._record(rank, "stopped with an error (see its output)")
            elif state == LEFT:
                if suspect:
                    return self._record(rank, "ended while this rank still needed it (see its output)")
            elif rank not in last or last[rank][0] != beat:
                last[rank] = (beat, now)
            elif now - last[rank][1] >= silence:
                return self._record(rank, f"sent no heartbeat for {now - last[rank][1]:.0f} s")
        return None

    def _record(self, rank: int, reason: str) -> str:
        """Record `rank` as lost unless another rank recorded a lost one first; the record kept."""
        info = self.store.get(f"{self.prefix}info/{rank}").decode("utf-8", "replace")
        record = f"rank {rank} ({info}) {reason}"
        kept = self.store.compare_set(f"{self.prefix}lost", "", record)
        return kept.decode("utf-8", "replace") if kept else record

    def _store_lost(self, cause: str) -> str:
        where = f"the rendezvous store at {self.host}:{self.port}"
        if self.agent_store:
            return f"torchrun's agent holding {where} is lost ({cause})"
        return f"rank 0, the host of {where}, is lost ({cause})"

    def _stop(self, lost: str) -> None:
        """One line naming the lost rank; this process exits (unless it is ending by itself)."""
        with self.lock:
            if self.leaving:
                return
            self.leaving = True
            line = (
                f"error: {lost}; rank {self.rank} stops, as the group cannot go on without it (complete "
                f"checkpoints are kept: restart the same command with --resume auto)"
            )
            try:
                sys.stdout.flush()
                print(" ".join(line.split()), file=sys.stderr, flush=True)
            finally:
                os._exit(LOST_RANK_EXIT)


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:160]


def start_watchdog(rank: int, world: int, timeout: float, group: int) -> RankWatchdog | None:
    """This rank's watchdog over the store at MASTER_ADDR:MASTER_PORT, started (None without them);
    `group`: a number the ranks of this process group share, and no earlier group had."""
    host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
    if not host or not port:
        return None
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    watchdog = RankWatchdog(host, int(port), rank, world, timeout, agent_store, group)
    watchdog.start()
    return watchdog
