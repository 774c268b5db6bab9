"""Sweeps: many runs (datasets x splits x learning rates x variants), spread over the local GPUs.

``expand_grid`` turns a template :class:`~percept.engine.train.TrainConfig` into named runs; ``run_sweep`` runs
them under ``OUT/<name>`` — in this process, one after another, on a CPU-only machine; on a GPU machine
as jobs of submitit's local executor (``percept.study.launch.run_local``: a subprocess that sees one GPU through
``CUDA_VISIBLE_DEVICES``), one per GPU at a time, output in ``RUN/submitit/``. Finished runs (``metrics.json``
with ``status: complete``) are skipped and interrupted ones resume, so re-running a sweep only does what is left. Model selection over the
learning rates happens afterwards, on validation scores only (:func:`percept.study.results.select_by_validation`).

Outgrowing one machine: ``launcher="slurm"`` (``percept sweep --launcher slurm``, :mod:`percept.study.launch`) submits
one submitit job per run as a job array; a job preempted or stopped at its time limit is requeued and resumes
from its last epoch.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import queue
import threading
import time
from pathlib import Path
from typing import Iterable

import torch

from ..core.options import upgrade_model_fields
from ..engine.runs import IncompatibleRunError, RunDir, eta_text, run_status
from ..engine.train import EXECUTION_FIELDS, TrainConfig, train
from ..model.backbones import get_spec
from . import launch   # launch.run_local / launch.submit, looked up when called (tests stand in for them)
from .run_key import MODEL_KEY_FIELDS, PAPER_MODEL, run_key, same_value

LR_GRID = (5e-5, 1e-4, 5e-4, 1e-3)   # paper §3.1


def run_name(config: TrainConfig) -> str:
    """``<datasets>/split<k>/lr<lr>`` (+ the model variant where its identity, :mod:`percept.study.run_key`, is not
    the paper's model, e.g. ``r8-a4`` or ``lora-dropout-0.2``; ``random-init`` when a backbone that has weights is trained from random ones, as in the prior ablation)."""
    m, key = config.model, run_key(config)
    differs = {name: not same_value(key[name], PAPER_MODEL[name]) for name in PAPER_MODEL}
    variant = [m.backbone] if differs["backbone"] else []
    if not m.pretrained and m.weights_path is None and get_spec(m.backbone).has_pretrained:
        variant.append("random-init")
    if differs["strategy"]:
        variant.append(m.strategy)
    if differs["head_type"]:
        variant.append(f"{m.head_type}-head")
    if m.strategy == "lora" and (differs["lora_r"] or differs["lora_alpha"]):
        variant.append(f"r{m.lora_r}-a{m.lora_alpha:g}")
    named = ("backbone", "weights", "strategy", "head_type", "lora_r", "lora_alpha")
    variant += [f"{name.replace('_', '-')}-{key[name]}" for name in MODEL_KEY_FIELDS if name not in named and differs[name]]
    if config.head_finetune:
        variant.append("2phase")
    if config.task_weights:   # a mixed-task run's loss weights (percept.engine.multitask)
        variant.append("weights-" + "-".join(f"{k}{v:g}" for k, v in sorted(config.task_weights.items())))
    datasets = "+".join(d.dataset for d in config.data)
    return "/".join([datasets, *(["_".join(variant)] if variant else []), f"split{config.split}", f"lr{config.lr:g}"])


def expand_grid(base: TrainConfig, lrs: Iterable[float] = LR_GRID, splits: Iterable[int] = (1,),
                model_variants: Iterable[dict] = ({},)) -> dict[str, TrainConfig]:
    """Named configs for every (model variant, split, lr). ``model_variants`` are ModelConfig overrides,
    e.g. ``[{"strategy": "frozen"}, {"head_type": "linear"}, {"lora_r": 8, "lora_alpha": 4}]``."""
    grid = {}
    for variant in map(upgrade_model_fields, model_variants):   # {"head": ...} of older scripts = head_type
        for split in splits:
            for lr in lrs:
                config = copy.deepcopy(base)
                config.split, config.lr = int(split), float(lr)
                for key, value in variant.items():
                    if not hasattr(config.model, key):
                        raise ValueError(f"unknown model setting {key!r} in variant {variant}")
                    setattr(config.model, key, value)
                config.model.__post_init__()
                grid[run_name(config)] = config
    return grid


def run_sweep(grid: dict[str, TrainConfig], out: str | os.PathLike, gpus: list[int] | None = None,
              log=print, launcher: str = "local", slurm=None) -> dict[str, str]:
    """Run every config of ``grid`` under ``out/<name>``; returns ``{name: "done" | "skipped" | "failed: ..."}``
    (``"submitted: job ID"`` with the slurm launcher).

    ``gpus``: GPU indices to use (default: every visible GPU; none → in-process on CPU). ``launcher``: ``local``
    (here), ``slurm`` or ``debug`` (:mod:`percept.study.launch`, submitit; ``slurm``: a
    :class:`~percept.study.launch.SlurmOptions`)."""
    out = Path(out)
    gpus = list(range(torch.cuda.device_count())) if gpus is None else list(gpus)
    status: dict[str, str] = {}
    todo = []
    # the trackers group a sweep's runs under its folder's name (unless the runs name a group themselves)
    grid = {name: config if config.log_group else dataclasses.replace(config, log_group=out.resolve().name)
            for name, config in grid.items()}
    for name, config in grid.items():
        run = RunDir(out / name)
        try:   # a run directory of another configuration (or an older protocol) is never reused, finished or not
            run.open(config.to_dict(), ignore=EXECUTION_FIELDS)
        except IncompatibleRunError as err:
            status[name] = f"failed: {err}"
            log(f"  {name}: {status[name]}")
            continue
        if run.is_complete():
            status[name] = "skipped"
            continue
        todo.append(name)
    refused = sum(v.startswith("failed") for v in status.values())
    log(f"sweep: {len(grid)} runs, {len(grid) - len(todo) - refused} already finished, {refused} refused, "
        f"{len(todo)} to run"
        f"{f' on GPUs {gpus}' if gpus and todo else ''}")
    if launcher != "local" and todo:
        busy = {name: run_status(RunDir(out / name)) for name in todo}
        busy = {name: s for name, s in busy.items() if s["state"] in ("queued", "running")}
        for name, state in busy.items():
            status[name] = f"skipped: {state['state']} ({state['detail']})"
        todo = [name for name in todo if name not in busy]
        if busy:
            log(f"  {len(busy)} run(s) already queued or running, not submitted again (percept status {out})")
        jobs = {name: out / name for name in todo}
        status.update(launch.submit(jobs, out / "slurm_logs", launcher, slurm, log=log))
        return status
    durations: list[float] = []

    def finished(name: str, started: float, where: str = "") -> None:   # one line per run, with the ETA
        durations.append(time.time() - started)
        left = len(todo) - len(durations)
        log(f"[{len(durations)}/{len(todo)}] {name}{where}: {status[name]} in {durations[-1]:.0f} s; "
            f"{eta_text(durations, left, max(1, len(gpus)))}")

    if not gpus:
        for name in todo:
            started = time.time()
            try:
                train(grid[name], out / name, log=lambda *a, **k: None)
                status[name] = "done"
            except (ValueError, RuntimeError, FileNotFoundError) as err:
                status[name] = f"failed: {err}"
            finished(name, started)
        return status

    jobs: queue.Queue = queue.Queue()
    for name in todo:
        jobs.put(name)
    lock = threading.Lock()

    def worker(gpu: int) -> None:
        while True:
            try:
                name = jobs.get_nowait()
            except queue.Empty:
                return
            started = time.time()
            result = launch.run_local(out / name, gpu)          # submitit's local executor, this GPU only
            with lock:
                status[name] = result
                finished(name, started, f" (GPU {gpu})")

    threads = [threading.Thread(target=worker, args=(g,)) for g in gpus]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return status
