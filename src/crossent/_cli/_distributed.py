"""The process group of ``crossent train --distributed``, its collectives and its faults.

torchrun (or SLURM, Ray, Spark: anything that sets torchrun's environment, ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``) starts one process per rank; each
joins a gloo process group whose operations time out after ``--timeout`` seconds.

Faults are turned into one line naming the lost rank. Every rank runs a heartbeat thread
that writes ``"<beats> <stage>"`` to the job's key-value store (the one the group was
made with) every ``min(1 s, timeout / 10)``; when a collective fails (gloo says only
"Connection reset by peer" or "Timed out waiting 10000ms for recv"), the rank reads every
heartbeat twice, a few beats apart: a rank whose beats stopped has died (or its machine);
one that still beats but is at an earlier stage is stuck. A rank whose own error is known
(a bad shard, a file it cannot read) tells the others through :meth:`Group.agree` instead,
so that every rank prints the same line.
"""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._common import CommandError

ENVIRONMENT = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# A test hook: "RANK:ITERATION" makes that rank exit (status 1, as a crash) when its fit
# reaches that iteration; "RANK:ITERATION:hang" makes it sleep instead. With the second
# variable set to a path, the rank first writes the wall-clock time of the fault there.
FAULT_VARIABLE = "CROSSENT_TEST_FAULT"
FAULT_STAMP_VARIABLE = "CROSSENT_TEST_FAULT_STAMP"
_KEY = "crossent/heartbeat/{rank}"
# Joining waits at least this long, whatever --timeout: ranks start (import torch) at
# different speeds on a busy machine.
JOIN_TIMEOUT = 30.0
_GLOO_FAULTS = ("gloo", "connection", "timed out", "timeout", "peer", "broken pipe")


def _environment() -> tuple[int, int, str]:
    """(rank, world size, "addr:port") from torchrun's variables, each checked."""
    missing = [name for name in ENVIRONMENT if not os.environ.get(name)]
    if missing:
        raise CommandError(
            f"--distributed needs the environment torchrun sets ({', '.join(missing)} "
            "missing): launch with torchrun --nproc-per-node N -m crossent train "
            "--distributed ..."
        )
    values = {}
    for name in ("RANK", "WORLD_SIZE", "MASTER_PORT"):
        try:
            values[name] = int(os.environ[name])
        except ValueError:
            text = os.environ[name]
            raise CommandError(f"--distributed: {name}={text!r} is not an integer") from None
    rank, world = values["RANK"], values["WORLD_SIZE"]
    if not (world >= 1 and 0 <= rank < world):
        raise CommandError(f"--distributed: RANK={rank} is not in 0..WORLD_SIZE-1 ({world})")
    return rank, world, f"{os.environ['MASTER_ADDR']}:{values['MASTER_PORT']}"


def is_communication_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is torch.distributed's report of a lost peer or a timeout."""
    import torch.distributed as dist

    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(word in text for word in _GLOO_FAULTS)


@dataclass
class Group:
    """This process's place in the job: its rank, the world size and the collectives.

    ``stage`` (a short text such as ``"iteration 7"``) and ``stage_index`` (the stages and
    collectives entered, which every rank goes through in the same order) say where the
    rank is; the heartbeat publishes them for the fault diagnosis.
    """

    rank: int
    world: int
    timeout: float
    address: str
    stage: str = "start-up"
    stage_index: int = 0
    _store: Any = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _beats: int = 0

    @property
    def writer(self) -> bool:
        """Whether this rank writes files and prints summaries (rank 0 alone)."""
        return self.rank == 0

    @property
    def interval(self) -> float:
        """Seconds between heartbeats: ten of them fit in the timeout, at most 1 s apart."""
        return max(0.05, min(1.0, self.timeout / 10))

    def at(self, stage: str) -> None:
        """Enter the next stage (published with the next heartbeat)."""
        self.stage, self.stage_index = stage, self.stage_index + 1

    def reached(self, iteration: int) -> None:
        """The fit's callback: this rank finished ``iteration`` (and the test hook fires)."""
        inject_fault(self, iteration)
        self.at(f"iteration {iteration}")

    def interrupted(self, what: str) -> str:
        """``what`` ("terminated", "interrupted") with this rank and, when the launcher
        stopped the job because a rank was lost, which one."""
        who = self.diagnose() if what == "terminated" else ""
        return f"rank {self.rank}: {what}" + (f" after losing {who}" if who else "")

    def objective(self, clf: Any, X: np.ndarray, y_index: np.ndarray, l2: float) -> float:
        """``L_total`` of ``clf``'s weights over all ranks' rows (this rank holds ``X``)."""
        from crossent.distributed import DistributedObjective

        objective = DistributedObjective(X, y_index, len(clf.classes_), l2=l2)
        loss, _, _ = objective.loss_gradient(clf.coef_, clf.intercept_)
        return float(loss)

    # ------------------------------------------------------------------ collectives
    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order."""
        from crossent.distributed import all_gather

        self.stage_index += 1  # every rank enters the same collectives in the same order
        return all_gather(value)

    def allreduce(self, values: np.ndarray, op: str = "sum") -> np.ndarray:
        """``values`` reduced over the ranks, ``op`` "sum" or "max", as float64 (the
        :data:`crossent._stats.AllReduce` signature)."""
        from crossent.distributed import allreduce

        self.stage_index += 1
        return allreduce(values, op)

    def agree(self, value: Any, error: str | None = None) -> list[Any]:
        """Gather every rank's ``value``; if any rank has an ``error``, raise it on every
        rank (the first one, naming its rank), so that no rank waits for one that failed."""
        gathered = self.all_gather((value, error))
        for rank, (_, fault) in enumerate(gathered):
            if fault is not None:
                prefix = "" if rank == self.rank else f"rank {rank}: "
                self.stopping()
                self.all_gather(None)  # no rank exits (and has the others stopped) early
                raise CommandError(f"{prefix}{fault}")
        return [v for v, _ in gathered]

    def stopping(self) -> None:
        """This rank is about to stop with an error: the launcher's SIGTERM, sent when
        another rank exits, must not cut the error line short."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)

    # ------------------------------------------------------------------ heartbeat
    def _publish(self) -> None:
        self._beats += 1
        self._store.set(
            _KEY.format(rank=self.rank), f"{self._beats} {self.stage_index} {self.stage}"
        )

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._publish()
            except Exception:  # the store is gone: the diagnosis will say so
                return

    def start(self) -> None:
        import torch.distributed as dist

        self._store = dist.distributed_c10d._get_default_store()
        self._publish()
        self._thread = threading.Thread(target=self._beat, name="crossent-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _heartbeats(self) -> dict[int, tuple[int, int, str]]:
        beats = {}
        for rank in range(self.world):
            key = _KEY.format(rank=rank)
            if self._store.check([key]):
                count, index, stage = self._store.get(key).decode().split(" ", 2)
                beats[rank] = (int(count), int(index), stage)
        return beats

    def diagnose(self) -> str:
        """Which ranks are lost, and why (``"rank 1 (its process stopped)"``), or ``""``."""
        self.stopping()
        try:
            before = self._heartbeats()
            time.sleep(3 * self.interval)
            after = self._heartbeats()
        except Exception:
            return f"the job's store at {self.address} (its machine is lost)"
        others = [r for r in range(self.world) if r != self.rank]
        stopped = [r for r in others if r not in after or after[r][0] == before.get(r, (0,))[0]]
        if stopped:
            why = "its process stopped" if len(stopped) == 1 else "their processes stopped"
            return f"{_ranks(stopped)} ({why})"
        least = min(after[r][1] for r in after)
        behind = [r for r in others if after[r][1] == least and least < self.stage_index]
        if behind:
            return f"{_ranks(behind)} (stuck at {after[behind[0]][2]})"
        return ""

    def lost(self, exc: BaseException, outcome: str = "the job stopped") -> CommandError:
        """The one-line error of a failed collective, naming the lost rank where it can."""
        who = self.diagnose()
        if who:
            return CommandError(f"rank {self.rank}: lost {who} at {self.stage}; {outcome}")
        detail = " ".join(str(exc).split())
        if "]" in detail:
            detail = detail.split("]", 1)[1].strip()  # drop gloo's source location
        return CommandError(
            f"rank {self.rank}: the other ranks did not answer within --timeout "
            f"{self.timeout:g} s at {self.stage} ({detail[:200]}); {outcome}"
        )


def _ranks(ranks: list[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


@contextmanager
def process_group(timeout: float) -> Iterator[Group]:
    """Join the job's gloo process group for the ``with`` block; leave it after.

    A communication fault inside the block (a lost rank, a timeout) is raised again as
    one :class:`CommandError` line naming the lost rank.
    """
    rank, world, address = _environment()
    import torch.distributed as dist

    joining = max(timeout, JOIN_TIMEOUT)
    try:
        dist.init_process_group(
            "gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=joining)
        )
    except (RuntimeError, ValueError) as exc:
        detail = " ".join(str(exc).split())[:200]
        raise CommandError(
            f"rank {rank}: could not join the {world} ranks at {address} within {joining:g} s "
            f"({detail})"
        ) from None
    if joining != timeout:  # joined: from now on the operations' own timeout
        try:
            dist.distributed_c10d._set_pg_timeout(datetime.timedelta(seconds=timeout))
        except (AttributeError, RuntimeError, ValueError):  # an older torch: keep the longer
            pass
    group = Group(rank, world, timeout, address)
    try:
        group.start()
        yield group
    except BaseException as exc:
        # The launcher stops the other ranks as soon as one exits: say why first, without
        # waiting to leave the group (the process ends with it).
        group.stop()
        group.stopping()
        if isinstance(exc, RuntimeError) and is_communication_fault(exc):
            raise group.lost(exc) from None
        if isinstance(exc, RuntimeError) and str(exc).startswith("distributed fit:"):
            raise CommandError(f"rank {rank}: {exc}") from None  # ranks out of lockstep
        raise
    group.stop()
    dist.destroy_process_group()


def inject_fault(group: Group | None, iteration: int) -> None:
    """The test hook of :data:`FAULT_VARIABLE`: crash or hang this rank at ``iteration``."""
    spec = os.environ.get(FAULT_VARIABLE)
    if group is None or not spec:
        return
    rank, at, *how = spec.split(":")
    if int(rank) == group.rank and int(at) == iteration:
        stamp = os.environ.get(FAULT_STAMP_VARIABLE)
        if stamp:
            with open(stamp, "w") as f:
                f.write(repr(time.time()))
        if how == ["hang"]:
            time.sleep(10 * group.timeout + 60)
        os._exit(1)
