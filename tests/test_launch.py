"""Cluster launch through submitit (percept.study.launch), offline: a sweep's runs as submitit jobs in the
debug executor; the SLURM job array that `percept sweep --launcher slurm` submits, read from the sbatch script a
stand-in `sbatch` receives; the requeue of a preempted job."""
from __future__ import annotations

import os
import pickle
import stat

import pytest

from percept.data.sources import DataConfig
from percept.engine.runs import RunDir
from percept.engine.train import TrainConfig
from percept.interface.cli import main
from percept.model.perceptclip import ModelConfig
from percept.study.launch import TrainJob
from percept.study.sweep import expand_grid, run_sweep

submitit = pytest.importorskip("submitit")


def _base(root, **changes):
    return TrainConfig(data=[DataConfig("synthetic_iqa", str(root / "data"))],
                       model=ModelConfig(backbone="tiny_clip", pretrained=False), max_epochs=1, batch_size=16,
                       test_crops=2, quiet=True, **changes)


def test_debug_launcher_trains_the_sweeps_runs_as_submitit_jobs(tmp_path):
    grid = expand_grid(_base(tmp_path), lrs=[1e-3], splits=[1])
    status = run_sweep(grid, tmp_path / "sweep", launcher="debug", log=lambda *a, **k: None)
    assert status == {name: "done" for name in grid}
    assert all(RunDir(tmp_path / "sweep" / name).is_complete() for name in grid)
    assert run_sweep(grid, tmp_path / "sweep", launcher="debug", log=lambda *a, **k: None) \
        == {name: "skipped" for name in grid}                            # finished runs are not resubmitted
    broken = RunDir(tmp_path / "broken").open(_base(tmp_path / "nowhere", head_finetune=True).to_dict()
                                              | {"data": [{"dataset": "livec", "root": str(tmp_path / "nowhere")}]})
    assert TrainJob(broken.path)().startswith("failed: ")                  # a job reports, never a debugger


def test_slurm_launcher_submits_one_array_with_the_requested_resources(tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "sbatch"                                           # records the script, answers like SLURM
    fake.write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\necho x >> {tmp_path}/calls\n"
                    "echo 'Submitted batch job 4242'\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")                 # submitit checks that srun exists
    for tool in (fake, bin_dir / "srun"):
        tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code = main(["sweep", "--dataset", "synthetic_iqa", "--root", str(tmp_path / "data"), "--backbone", "tiny_clip",
                 "--random-init", "--max-epochs", "1", "--lrs", "1e-3", "5e-4", "--out", str(tmp_path / "sweep"),
                 "--launcher", "slurm", "--partition", "gpu", "--time", "600", "--mem", "32", "--cpus", "4",
                 "--array-parallelism", "2", "--slurm-arg", "account=lab"])
    assert code == 0
    assert "submitted 2 job(s) to SLURM (array 4242)" in capsys.readouterr().out
    script = (tmp_path / "submitted.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=600", "#SBATCH --mem=32GB", "#SBATCH --cpus-per-task=4",
                 "#SBATCH --gpus-per-node=1", "#SBATCH --array=0-1%2", "#SBATCH --account=lab",
                 "#SBATCH --signal=USR2@90"):                              # USR2 before the limit: submitit requeues
        assert line in script, f"{line} not in the sbatch script:\n{script}"
    jobs = sorted((tmp_path / "sweep" / "slurm_logs").glob("*_submitted.pkl"))
    assert len(jobs) == 2
    submitted = [pickle.loads(p.read_bytes()) for p in jobs]
    run_dirs = {str(tmp_path / "sweep" / n) for n in ("synthetic_iqa/tiny_clip/split1/lr0.001",
                                                      "synthetic_iqa/tiny_clip/split1/lr0.0005")}
    assert {s.function.run_dir for s in submitted} == run_dirs
    requeued = submitted[0].function.checkpoint()                         # preempted: the same run again
    assert isinstance(requeued, submitit.helpers.DelayedSubmission)
    assert requeued.function.run_dir == submitted[0].function.run_dir
    assert all(RunDir(d).config_file.is_file() and not RunDir(d).is_complete() for d in run_dirs)
    # queued runs are shown as such and never submitted twice by re-running the sweep
    argv = ["sweep", "--dataset", "synthetic_iqa", "--root", str(tmp_path / "data"), "--backbone", "tiny_clip",
            "--random-init", "--max-epochs", "1", "--lrs", "1e-3", "5e-4", "--out", str(tmp_path / "sweep"),
            "--launcher", "slurm"]
    capsys.readouterr()
    assert main(argv) == 0 and "2 run(s) already queued or running" in capsys.readouterr().out
    assert (tmp_path / "calls").read_text().count("x") == 1
    assert main(["status", str(tmp_path / "sweep")]) == 0 and "2 queued" in capsys.readouterr().out


def test_bad_slurm_arguments_are_refused(tmp_path, capsys):
    code = main(["sweep", "--dataset", "synthetic_iqa", "--root", str(tmp_path), "--backbone", "tiny_clip",
                 "--out", str(tmp_path / "s"), "--launcher", "slurm", "--slurm-arg", "account"])
    assert code == 2 and "--slurm-arg 'account' must be KEY=VALUE" in capsys.readouterr().err



def test_local_launcher_trains_a_run_in_submitits_local_executor_on_its_gpu(tmp_path):
    """The GPU path of `percept sweep` (`local` through submitit's local executor), on the CPU: the run
    trains in a local-executor subprocess that sees only its GPU slot."""
    import re
    grid = expand_grid(_base(tmp_path), lrs=[1e-3], splits=[1])
    lines: list[str] = []
    assert run_sweep(grid, tmp_path / "sweep", gpus=[1], log=lines.append) == {name: "done" for name in grid}
    assert any("(GPU 1)" in line for line in lines)
    run = RunDir(tmp_path / "sweep" / next(iter(grid)))
    assert run.is_complete()
    logs = "".join(p.read_text() for p in run.jobs_dir.glob("*_log.out"))
    assert re.search(r"CUDA_VISIBLE_DEVICES=1\b", logs), logs       # the job saw its GPU slot only


def test_local_launcher_gives_each_gpu_one_run_at_a_time(tmp_path, monkeypatch):
    """Scheduling of the local launcher: every GPU slot takes the next run when its last one ends, all slots
    busy; the job itself stands in for the local executor here (it is tested above)."""
    import threading
    import time

    import percept.study.launch
    spans: dict[int, list[tuple[float, float]]] = {0: [], 1: []}
    lock = threading.Lock()

    def fake_run_local(run_dir, gpu):
        start = time.monotonic()
        time.sleep(0.05)
        with lock:
            spans[gpu].append((start, time.monotonic()))
        return "done"

    monkeypatch.setattr(percept.study.launch, "run_local", fake_run_local)
    grid = expand_grid(_base(tmp_path), lrs=[1e-3, 5e-4, 1e-4, 5e-5, 2e-5], splits=[1])
    assert run_sweep(grid, tmp_path / "sweep", gpus=[0, 1], log=lambda *a: None) == dict.fromkeys(grid, "done")
    assert len(spans[0]) + len(spans[1]) == 5 and spans[0] and spans[1]
    for intervals in spans.values():
        intervals.sort()
        assert all(later[0] >= earlier[1] for earlier, later in zip(intervals, intervals[1:]))


def test_a_multi_gpu_job_exports_the_torchrun_variables_from_slurms(monkeypatch):
    """--gpus-per-node 2: two tasks per job; each task's TrainJob sets what torchrun would, from SLURM's variables,
    so that train() runs DDP (percept.engine.distributed reads RANK, WORLD_SIZE, LOCAL_RANK)."""
    from percept.study.launch import SlurmOptions, _export_torch_distributed
    assert SlurmOptions(gpus_per_node=2).executor_parameters()["tasks_per_node"] == 2
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")                                # recorded, so that the test's export is undone
        monkeypatch.delenv(name)
    _export_torch_distributed()                                     # outside a job: nothing
    assert "RANK" not in os.environ
    slurm = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "0", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "gpu-node-3",
             "SUBMITIT_EXECUTOR": "slurm"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    _export_torch_distributed()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("1", "2", "1")
    assert os.environ["MASTER_ADDR"] == "gpu-node-3" and 20000 <= int(os.environ["MASTER_PORT"]) <= 60000
