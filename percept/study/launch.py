"""Where a sweep's runs execute: on this machine (``--launcher local``, the default) or on a SLURM cluster through
submitit (``--launcher slurm``): one job per run, submitted as one job array.

Each job is a :class:`TrainJob`: it trains (or resumes) one run directory that the sweep has already configured
(its ``config.json``). Runs are idempotent and resume from their last epoch, so a job that SLURM preempts or
stops at its time limit is requeued by submitit (:meth:`TrainJob.checkpoint`) and goes on where it stopped;
a finished run is skipped by the next sweep. Submitting returns at once: follow the jobs with ``percept status
ROOT`` (and ``squeue``), then re-run the same command (finished runs are skipped, queued and running ones are
not submitted again) or ``percept results`` once they are done.

``local`` (:func:`percept.study.sweep.run_sweep`): on a CPU-only machine the runs train in this process, one after
another; on a GPU machine each run is a job of submitit's local executor (:func:`run_local`: a subprocess that
sees one GPU, ``CUDA_VISIBLE_DEVICES``), one run per GPU at a time — the sweep hands a GPU its next run when the
last one ends (submitit's local executor alone would start every run of a sweep at once).
``debug`` runs the jobs through submitit's debug executor in this process (tests; a job's errors surface here).
"""
from __future__ import annotations

import argparse
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

LAUNCHERS = ("local", "slurm", "debug")


@dataclass
class SlurmOptions:
    """The resources of one run's job (sbatch flags through submitit)."""

    partition: str | None = None
    gpus_per_node: int = 1
    time_min: int = 24 * 60          # App. A.1: "up to a day" for the largest dataset on an L40S
    mem_gb: int = 64
    cpus: int = 8
    array_parallelism: int = 32
    extra: dict = field(default_factory=dict)   # any other sbatch flag, e.g. {"account": "lab", "qos": "high"}

    def executor_parameters(self) -> dict:
        """One task per GPU: a run with ``gpus_per_node`` > 1 trains with DDP across them (:meth:`TrainJob.__call__`
        exports the torchrun variables from SLURM's), ``cpus`` cores each."""
        params = {"timeout_min": self.time_min, "gpus_per_node": self.gpus_per_node,
                  "tasks_per_node": self.gpus_per_node, "cpus_per_task": self.cpus,
                  "mem_gb": self.mem_gb, "name": "percept", "slurm_array_parallelism": self.array_parallelism,
                  "slurm_additional_parameters": dict(self.extra)}
        if self.partition:
            params["slurm_partition"] = self.partition
        return params


class TrainJob:
    """One configured run directory as a submitit job. Its result is ``"done"`` or ``"failed: <error>"`` (the
    error is also in the run's ``state.json`` for ``percept status``)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = str(run_dir)

    def __call__(self) -> str:
        from ..engine.runs import RunDir
        from ..engine.train import TrainConfig, train
        run = RunDir(self.run_dir)
        print(f"percept job: {run.path} on {socket.gethostname()} at {time.time():.3f} (unix time), "
              f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}", flush=True)
        config = TrainConfig.from_dict(run.read_config())
        config.quiet = True
        _export_torch_distributed()
        try:
            train(config, run.path, log=lambda *a, **k: None)
        except Exception as err:   # noqa: BLE001 - reported as the job's result, never a debugger in a sweep
            return f"failed: {type(err).__name__}: {err}"
        return "done"

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption or time-out: requeue the same run, which resumes from its checkpoint."""
        import submitit
        return submitit.helpers.DelayedSubmission(TrainJob(self.run_dir))


def _export_torch_distributed() -> None:
    """In a job of several tasks (``--gpus-per-node`` > 1: one task per GPU), the variables ``torchrun`` would set
    (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), from SLURM's, so that :func:`percept.engine.train.train`
    runs DDP (:mod:`percept.engine.distributed`; each task picks GPU ``LOCAL_RANK``). Nothing outside a job or in one
    of one task."""
    try:
        import submitit
        tasks = submitit.JobEnvironment().num_tasks
    except (ImportError, RuntimeError):   # not in a submitit job (a TrainJob called directly)
        return
    if tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _submitit():
    try:
        import submitit
    except ImportError as err:
        raise ImportError("percept's launchers need submitit (a dependency of percept): pip install submitit") from err
    return submitit


LOCAL_TIMEOUT_MIN = 14 * 24 * 60     # submitit's local executor kills a job at its timeout; a run has no limit here


def run_local(run_dir: str | Path, gpu: int) -> str:
    """Train (or resume) one configured run directory as a job of submitit's local executor on GPU ``gpu`` and
    wait for it: ``"done"`` or ``"failed: ..."``. The job's stdout/stderr and submission files are in
    ``RUN/submitit/``."""
    from ..engine.runs import RunDir
    submitit = _submitit()
    executor = submitit.LocalExecutor(folder=str(RunDir(run_dir).jobs_dir))
    executor.update_parameters(gpus_per_node=1, visible_gpus=[int(gpu)], timeout_min=LOCAL_TIMEOUT_MIN)
    job = executor.submit(TrainJob(run_dir))
    try:
        return job.result()
    except Exception as err:   # noqa: BLE001 - the process died (killed, out of memory): name it and its log
        last = (str(err).strip().splitlines() or [""])[-1]
        return f"failed: {type(err).__name__}: {last} (log: {job.paths.stderr})"


def submit(run_dirs: Mapping[str, str | Path], folder: str | Path, launcher: str = "slurm",
           options: SlurmOptions | None = None, log=print) -> dict[str, str]:
    """Submit one :class:`TrainJob` per run (a job array); logs and submission scripts in ``folder``. Returns
    ``{name: "submitted: job ID"}`` (slurm) or each job's result (debug)."""
    if launcher not in ("slurm", "debug"):
        raise ValueError(f"submit() is for the slurm and debug launchers, not {launcher!r}")
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=str(folder), cluster=launcher)
    executor.update_parameters(**(options or SlurmOptions()).executor_parameters())
    names = list(run_dirs)
    with executor.batch():
        jobs = [executor.submit(TrainJob(run_dirs[name])) for name in names]
    if launcher == "debug":
        return {name: job.result() for name, job in zip(names, jobs)}
    from ..engine.runs import RunDir, write_state
    for name, job in zip(names, jobs):   # `percept status` shows it queued; a sweep does not submit it twice
        write_state(RunDir(run_dirs[name]), "queued", job=job.job_id)
    log(f"submitted {len(jobs)} job(s) to SLURM (array {jobs[0].job_id.split('_')[0] if jobs else '-'}); "
        f"logs in {folder}; follow with `percept status`")
    return {name: f"submitted: job {job.job_id}" for name, job in zip(names, jobs)}


# ------------------------------------------------------------------------------------------ command line
def add_launcher_args(parser) -> None:
    group = parser.add_argument_group("launcher (percept.study.launch)")
    group.add_argument("--launcher", choices=LAUNCHERS[:2], default="local", help="local: here (one run per GPU, "
                       "or in this process on a CPU); slurm: one job per run through submitit (default: local)")
    group.add_argument("--partition", default=None, help="SLURM partition")
    group.add_argument("--gpus-per-node", type=int, default=1, help="GPUs per run's job, one task each: more than 1 "
                       "trains each run with DDP across them (default: 1)")
    group.add_argument("--time", type=int, default=24 * 60, help="a job's time limit in minutes; a run stopped by "
                       "it is requeued and resumes (default: 1440)")
    group.add_argument("--mem", type=int, default=64, help="memory per job in GB (default: 64)")
    group.add_argument("--cpus", type=int, default=8, help="CPU cores per job (default: 8)")
    group.add_argument("--array-parallelism", type=int, default=32, help="jobs of the array running at once")
    group.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="any other sbatch flag, e.g. --slurm-arg account=lab --slurm-arg qos=high")


def slurm_options(args: argparse.Namespace) -> SlurmOptions:
    extra = {}
    for item in args.slurm_arg:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--slurm-arg {item!r} must be KEY=VALUE (e.g. account=lab)")
        extra[key.strip().replace("-", "_")] = value
    return SlurmOptions(partition=args.partition, gpus_per_node=args.gpus_per_node, time_min=args.time,
                        mem_gb=args.mem, cpus=args.cpus, array_parallelism=args.array_parallelism, extra=extra)
