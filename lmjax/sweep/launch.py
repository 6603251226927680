"""Launchers: how a sweep's points run.

Both run each point as its train command (`train_command + point.args`) in an attempt that
writes `point.json` (status, attempts) and appends the command's output to `train.log`, so a
rerun skips finished points and resumes the others whichever launcher ran them:

- `LocalLauncher`: subprocesses on this machine, `parallel` at a time; SIGTERM or Ctrl-C to the
  sweep is passed on to them (train.py then saves a checkpoint and exits).
- `SubmititLauncher`: jobs through submitit, one job per point; the points that may start
  together go as one array (SLURM runs `array_parallelism` of them at a time). A job that times
  out or is preempted stops its run (a checkpoint) and is requeued; the run then resumes.

A fine-tune starts once its first-stage point has finished, before the next first-stage point
(a local sweep runs each right after its point); one whose point did not finish is skipped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import submitit

from lmjax import errors
from lmjax import workdir as workdir_lib
from lmjax.config_files import absolute_config_path
from lmjax.sweep.spec import Point

Log = Callable[[str], None]
LAUNCHERS = ("local", "slurm", "submitit_local")
STOP_TIMEOUT_S = 120  # how long a stopped run may take to save its checkpoint


#### One attempt at a point


def run_attempt(
    point: Point,
    train_command: list[str],
    log: Log = print,
    popen: Callable[..., subprocess.Popen | None] = subprocess.Popen,
) -> bool:
    """Runs the point's train command once, its output appended to its train.log; point.json
    says `running`, then `done`, `failed` or `interrupted`. Returns whether the point finished.
    `popen` may return None to start nothing (the launcher is stopping)."""
    command = point.command(train_command)
    workdir_lib.path(point.run_dir).mkdir(parents=True, exist_ok=True)
    record = workdir_lib.read_point(point.run_dir) or {
        "name": point.name,
        "stage": point.stage,
        "parent": point.parent,
        "overrides": point.recorded,
        "references": point.references,
        "config": point.config,
        "config_path": absolute_config_path(point.config),
        "command": shlex.join(command),
        "attempts": [],
    }
    resumed_from = workdir_lib.latest_step(point.run_dir)
    attempt = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumed_from_step": resumed_from}
    record["attempts"].append(attempt)
    record["status"] = "running"
    workdir_lib.write_point(point.run_dir, record)
    verb = "running" if resumed_from is None else f"resuming from step {resumed_from}"
    log(f"{verb}: {point.label}")
    start = time.time()
    proc = returncode = None
    with workdir_lib.log_file(point.run_dir).open("a") as out:
        out.write(f"# {attempt['started']}: {shlex.join(command)}\n")
        out.flush()
        try:
            proc = popen(command, stdout=out, stderr=subprocess.STDOUT)
            if proc is not None:
                returncode = proc.wait()
        except BaseException:  # the job was cancelled or is being requeued: stop the run too
            returncode = stop(proc) if proc is not None else None
            raise
        finally:
            attempt["wall_time_s"] = round(time.time() - start, 1)
            attempt["returncode"] = returncode
            wall = sum(a.get("wall_time_s") or 0 for a in record["attempts"])
            record["wall_time_s"] = round(wall, 1)
            finished = returncode == 0 and workdir_lib.is_finished(
                point.run_dir, point.num_train_steps
            )
            stopped = returncode in (None, 0, errors.Interrupted.EXIT_STATUS)  # saved, then stopped
            record["status"] = "done" if finished else ("interrupted" if stopped else "failed")
            workdir_lib.write_point(point.run_dir, record)
    log(
        f"{record['status']} in {attempt['wall_time_s']:.0f} s (exit {returncode}): {point.label}"
        + ("" if finished else f"; see {workdir_lib.log_file(point.run_dir)}")
    )
    return finished


def stop(proc: subprocess.Popen) -> int | None:
    """SIGTERM (train.py saves a checkpoint and exits), SIGKILL if it takes too long."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


#### The order points start in


class Queue:
    """The points still to run. A fine-tune is ready once its first-stage point has finished
    and goes before the first-stage points after its own; one whose point did not finish (and
    is not still to run) is dropped as failed."""

    def __init__(self, points: list[Point], all_points: list[Point], log: Log):
        self.log = log
        self.first_stage = {p.name: p for p in all_points if not p.stage}
        self.finished = {
            p.label for p in all_points if workdir_lib.is_finished(p.run_dir, p.num_train_steps)
        }
        rank = {name: i for i, name in enumerate(self.first_stage)}  # a chain per first-stage point
        chain = lambda p: rank.get(p.parent if p.stage else p.name, len(rank))
        todo = [p for p in points if p.label not in self.finished]
        self.waiting = sorted(todo, key=chain)  # stable: a chain's points in sweep order
        self.total = len(todo)
        self.active: set[str] = set()
        self.failed: list[str] = []
        self.count = itertools.count(1)

    def take(self, limit: int | None = None) -> list[Point]:
        """Removes and returns the points that may start now, at most `limit`."""
        pending = {p.label for p in self.waiting} | self.active
        ready = []
        for p in list(self.waiting):
            parent = self.first_stage.get(p.parent)
            if parent is None or parent.label in self.finished:
                if limit is None or len(ready) < limit:
                    ready.append(p)
                    self.waiting.remove(p)
            elif parent.label not in pending:
                self.log(f"skipped (its first-stage point did not finish): {p.label}")
                self.failed.append(p.label)
                self.waiting.remove(p)
        self.active.update(p.label for p in ready)
        return ready

    def ended(self, point: Point, finished: bool) -> None:
        self.active.discard(point.label)
        if finished:
            self.finished.add(point.label)
        else:
            self.failed.append(point.label)

    def drop_waiting(self) -> None:
        self.failed.extend(p.label for p in self.waiting)
        self.waiting = []

    def tagged(self, log: Log) -> Log:
        """`log` with each line tagged `[i/total]`, i counting the points started."""
        tag = f"[{next(self.count)}/{self.total}]"
        return lambda line: log(f"{tag} {line}")


@contextlib.contextmanager
def on_stop_signal(handler: Callable[[], None]) -> Iterator[None]:
    """Calls `handler` on SIGTERM or the first Ctrl-C while inside (a second Ctrl-C stops at
    once); only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupted = []

    def handle(signum, frame):
        if signum == signal.SIGINT:
            if interrupted:
                raise KeyboardInterrupt
            interrupted.append(True)
        handler()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


#### Launchers


class LocalLauncher:
    """Subprocesses on this machine, `parallel` at a time, each started from a thread."""

    def __init__(self, parallel: int = 1):
        self.parallel = max(1, parallel)
        self.stopping = False
        self._lock = threading.Lock()
        self._procs: list[subprocess.Popen] = []

    def stop(self) -> None:
        self.stopping = True
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    def _popen(self, command: list[str], **kwargs) -> subprocess.Popen | None:
        with self._lock:  # no run starts after stop() has signalled the others
            if self.stopping:
                return None
            proc = subprocess.Popen(command, **kwargs)
            self._procs.append(proc)
            return proc

    def launch(self, queue: Queue, train_command: list[str], log: Log) -> None:
        futures = {}
        with (
            on_stop_signal(self.stop),
            concurrent.futures.ThreadPoolExecutor(self.parallel) as pool,
        ):
            while True:
                if not self.stopping:
                    for p in queue.take(self.parallel - len(futures)):
                        tagged = queue.tagged(log)
                        future = pool.submit(run_attempt, p, train_command, tagged, self._popen)
                        futures[future] = p
                if not futures:
                    break
                # Wait in short slices: Python runs the signal handler only when the main
                # thread executes.
                done, _ = concurrent.futures.wait(
                    futures, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in done:
                    queue.ended(futures.pop(future), future.result())


class PointJob(submitit.helpers.Checkpointable):
    """What a submitit job runs: one attempt at a point, from the sweep's working directory.
    On a timeout or preemption submitit requeues the job (Checkpointable: the same point
    again) and ends this attempt, which stops the run (a checkpoint); the next one resumes."""

    def __init__(self, train_command: list[str], cwd: str):
        self.train_command = train_command
        self.cwd = cwd

    def __call__(self, point: Point) -> bool:
        os.chdir(self.cwd)
        return run_attempt(point, self.train_command)


class SubmititLauncher:
    """One submitit job per point: `cluster="slurm"`, or `"local"` (submitit's local executor:
    the same jobs as processes here, for tests). `parameters` go to
    `submitit.AutoExecutor.update_parameters` (`timeout_min`, `gpus_per_node`,
    `slurm_partition`, `slurm_array_parallelism`, ...); `max_running` caps the jobs submitted
    at once (for the local executor, which has no queue)."""

    def __init__(
        self,
        folder: str,
        cluster: str = "slurm",
        parameters: dict | None = None,
        max_running: int | None = None,
        poll_s: float | None = None,
    ):
        self.folder = folder
        self.cluster = cluster
        self.parameters = parameters or {}
        self.max_running = max_running
        self.poll_s = poll_s if poll_s is not None else (1.0 if cluster == "local" else 30.0)
        self.stopping = False

    def executor(self) -> submitit.AutoExecutor:
        executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        executor.update_parameters(**self.parameters)
        return executor

    def submit(
        self, executor: submitit.AutoExecutor, points: list[Point], train_command: list[str]
    ) -> list[submitit.Job]:
        """The points as jobs: one array when there are several."""
        return executor.map_array(PointJob(train_command, os.getcwd()), points)

    def stop(self) -> None:
        self.stopping = True

    def launch(self, queue: Queue, train_command: list[str], log: Log) -> None:
        executor = self.executor()
        jobs = {}  # job -> point
        cancelled = False
        with on_stop_signal(self.stop):
            while True:
                if not self.stopping:
                    room = None if self.max_running is None else self.max_running - len(jobs)
                    batch = queue.take(room)
                    if batch:
                        submitted = self.submit(executor, batch, train_command)
                        jobs.update(zip(submitted, batch, strict=True))
                        ids = ", ".join(j.job_id for j in submitted)
                        log(f"submitted {len(batch)} point(s) as job(s) {ids}")
                elif not cancelled:  # the runs save a checkpoint (SIGTERM) and stop
                    for job in jobs:
                        job.cancel(check=False)
                    cancelled = True
                if not jobs:
                    break
                done = [job for job in jobs if job.done()]
                for job in done:
                    point = jobs.pop(job)
                    queue.ended(point, self._ended(job, point, queue.tagged(log)))
                if not done:
                    self._sleep()

    def _sleep(self) -> None:
        """`poll_s` seconds, in slices: a stop signal is acted on within one."""
        stopping, end = self.stopping, time.monotonic() + self.poll_s
        while time.monotonic() < end and self.stopping == stopping:
            time.sleep(min(0.5, self.poll_s))

    def _ended(self, job: submitit.Job, point: Point, log: Log) -> bool:
        finished = workdir_lib.is_finished(point.run_dir, point.num_train_steps)
        record = workdir_lib.read_point(point.run_dir)
        if record and record.get("status") == "running":  # the job died inside its attempt
            record["status"] = "interrupted"
            workdir_lib.write_point(point.run_dir, record)
        status = "done" if finished else (record or {}).get("status", "failed")
        where = f"; see {workdir_lib.log_file(point.run_dir)} and {job.paths.stderr}"
        log(
            f"{status} (job {job.job_id}, {job.state}): {point.label}" + ("" if finished else where)
        )
        return finished


def make_launcher(
    kind: str = "local",
    *,
    parallel: int = 1,
    folder: str | None = None,
    slurm_partition: str | None = None,
    slurm_gpus_per_node: int | None = None,
    slurm_cpus_per_task: int | None = None,
    slurm_time: int = 60,
    slurm_array_parallelism: int = 256,
    job_name: str = "lmjax_sweep",
) -> LocalLauncher | SubmititLauncher:
    """The launcher experiments/sweep.py's flags name: `local` (`parallel` subprocesses),
    `slurm` (an array per batch of points, `slurm_array_parallelism` running at once, each job
    `slurm_time` minutes) or `submitit_local` (submitit's local executor, `parallel` at once)."""
    if kind == "local":
        return LocalLauncher(parallel)
    if kind not in LAUNCHERS:
        raise errors.InputError(f"launcher must be one of {', '.join(LAUNCHERS)}, not {kind!r}")
    if folder is None:
        raise errors.InputError(f"launcher {kind!r} needs a folder for submitit's files")
    parameters = {
        "name": job_name,
        "timeout_min": slurm_time,
        "gpus_per_node": slurm_gpus_per_node,
        "cpus_per_task": slurm_cpus_per_task,
        "slurm_partition": slurm_partition,
        "slurm_array_parallelism": slurm_array_parallelism,
    }
    parameters = {k: v for k, v in parameters.items() if v is not None}
    if kind == "slurm":
        return SubmititLauncher(folder, "slurm", parameters)
    return SubmititLauncher(folder, "local", parameters, max_running=max(1, parallel))


def define_launcher_flags() -> Callable[..., LocalLauncher | SubmititLauncher]:
    """Defines a script's --launcher, --parallel, --slurm_* and --submitit_dir flags (absl);
    returns `launcher(workdir, job_name=...)`, the `make_launcher` of their values."""
    from absl import flags

    kind = flags.DEFINE_enum(
        "launcher", "local", list(LAUNCHERS), "local: subprocesses here; slurm: one submitit "
        "job per point (arrays); submitit_local: submitit's local executor (the slurm path, on "
        "this machine)."
    )  # fmt: skip
    parallel = flags.DEFINE_integer(
        "parallel", 1, "Runs at the same time (--launcher=local or submitit_local)."
    )
    partition = flags.DEFINE_string("slurm_partition", None, "SLURM partition of the jobs.")
    gpus = flags.DEFINE_integer("slurm_gpus_per_node", None, "GPUs per job.")
    cpus = flags.DEFINE_integer("slurm_cpus_per_task", None, "CPUs per job.")
    minutes = flags.DEFINE_integer(
        "slurm_time", 60, "Minutes per job; a run that needs longer is checkpointed and requeued."
    )
    array_parallelism = flags.DEFINE_integer(
        "slurm_array_parallelism", 256, "Jobs of an array that SLURM runs at once."
    )
    folder = flags.DEFINE_string(
        "submitit_dir", None, "submitit's job files and logs (default: WORKDIR/submitit)."
    )

    def launcher(workdir: str, job_name: str = "lmjax_sweep") -> LocalLauncher | SubmititLauncher:
        return make_launcher(
            kind.value,
            parallel=parallel.value,
            folder=folder.value or os.path.join(workdir, "submitit"),
            slurm_partition=partition.value,
            slurm_gpus_per_node=gpus.value,
            slurm_cpus_per_task=cpus.value,
            slurm_time=minutes.value,
            slurm_array_parallelism=array_parallelism.value,
            job_name=job_name,
        )

    return launcher


def train_command(script: str) -> list[str]:
    """`[python, script]`, the script relative to the current folder when it lies below it (the
    printed commands read better)."""
    rel = os.path.relpath(script)
    return [sys.executable, script if rel.startswith("..") else rel]
