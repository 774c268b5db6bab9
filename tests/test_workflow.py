"""Research workflow: run and sweep config files with command-line overrides, the effective config
written to the run directory, a sweep's progress lines, and `percept status` over a tree of runs."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

import percept.engine.train as train_module
from percept.core.files import write_json
from percept.engine.runs import RunDir, run_status, tree_status, write_state
from percept.engine.train import TrainConfig
from percept.interface.cli import main


def _write(path, text):
    path.write_text(text)
    return path


def _run_file(tmp_path, **extra):
    lines = [f"data:\n  - {{dataset: synthetic_iqa, root: {tmp_path / 'data'}}}",
             "model: {backbone: tiny_clip, pretrained: false, lora_r: 8}", "max_epochs: 1", "batch_size: 16",
             "test_crops: 2", "lr: 0.001", "quiet: true", *(f"{k}: {v}" for k, v in extra.items())]
    return _write(tmp_path / "run.yaml", "\n".join(lines) + "\n")


def _file_config(argv):
    """What `percept train/sweep ARGV` makes of its --config file and typed flags: (TrainConfig, sweep plan)."""
    from percept.interface.cli_config import sweep_plan, train_config
    from percept.interface.cli_options import parse_options
    options = parse_options(argv[0], argv[1:])
    return train_config(options), sweep_plan(options)


def test_typed_flags_override_the_file_and_untyped_defaults_do_not(tmp_path):
    path = _run_file(tmp_path, weight_decay=0.01)
    config, sweep = _file_config(["train", "--run-dir", "x", "--config", str(path), "--lr", "1e-4", "--lora-r", "4"])
    assert config.lr == 1e-4 and config.model.lora_r == 4                 # typed: wins, even at its default value
    assert config.weight_decay == 0.01 and config.batch_size == 16         # not typed: the file's, not the defaults
    assert config.model.backbone == "tiny_clip" and not config.model.pretrained and sweep == {}
    other = _file_config(["train", "--run-dir", "x", "--config", str(path), "--dataset", "synthetic_strength",
                          "--root", str(tmp_path)])[0]
    assert [d.dataset for d in other.data] == ["synthetic_strength"]         # --dataset replaces the file's data


def test_bad_config_files_name_the_file_and_the_fix(tmp_path):
    cases = {"list.yaml": ("- 1\n- 2\n", "expected a mapping"),
             "unknown.yaml": (_run_file(tmp_path).read_text() + "learning_rate: 0.1\n", "learning_rate"),
             "sweep.yaml": (_run_file(tmp_path).read_text() + "sweep: {lr: [1]}\n", "`sweep` takes"),
             "nodata.yaml": ("lr: 0.1\n", "no `data`"),
             "broken.yaml": ("data: [\n", "not valid YAML")}
    for name, (text, message) in cases.items():
        path = _write(tmp_path / name, text)
        with pytest.raises(ValueError, match=message) as err:
            _file_config(["train", "--run-dir", "x", "--config", str(path)])
        assert name in str(err.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _file_config(["train", "--run-dir", "x", "--config", str(tmp_path / "missing.yaml")])


def test_a_sweep_without_a_template_says_what_to_give(tmp_path, capsys):
    assert main(["sweep", "--out", str(tmp_path / "sweep")]) == 2
    assert "--dataset NAME --root DIR" in capsys.readouterr().err and not (tmp_path / "sweep").exists()


def test_a_runs_config_yaml_starts_the_same_run_again(tmp_path, capsys):
    path = _run_file(tmp_path)
    assert main(["train", "--run-dir", str(tmp_path / "first"), "--config", str(path)]) == 0
    written = (tmp_path / "first" / "config.yaml").read_text()
    assert written.startswith("# the run's configuration")
    again = _file_config(["train", "--run-dir", "x", "--config", str(tmp_path / "first" / "config.yaml")])[0]
    stored = TrainConfig.from_dict(json.loads((tmp_path / "first" / "config.json").read_text()))
    assert again.to_dict() == stored.to_dict()


def test_sweep_file_runs_its_grid_with_one_progress_line_per_run_and_status_lists_them(tmp_path, capsys):
    path = _write(tmp_path / "sweep.yaml", _run_file(tmp_path).read_text()
                  + f"sweep: {{lrs: [0.001, 0.0005], splits: [1], out: {tmp_path / 'sweep'}}}\n")
    assert main(["sweep", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[1/2] synthetic_iqa/tiny_clip_r8-a8/split1/lr0.001: done in" in out and "ETA" in out
    assert "[2/2]" in out and "all done" in out
    assert json.loads((tmp_path / "sweep" / "synthetic_iqa" / "tiny_clip_r8-a8" / "split1" / "lr0.001" /
                       "config.json").read_text())["log_group"] == "sweep"        # the trackers' group
    assert main(["status", str(tmp_path / "sweep")]) == 0
    assert "2 done below" in capsys.readouterr().out
    # --lrs typed on the command line overrides the file's sweep section
    assert main(["sweep", "--config", str(path), "--lrs", "0.001"]) == 0
    assert '"runs": 1' in capsys.readouterr().out


def test_status_tells_running_failed_interrupted_and_pending_runs_apart(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    for name in ("running", "interrupted", "failed", "pending", "other_host", "stale_host"):
        RunDir(root / name).open({"lr": 1})
    write_state(RunDir(root / "running"), "running", epoch=3)                        # this live process
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()                                                                      # a pid that no longer runs
    write_json(RunDir(root / "interrupted").state_file, {"state": "running", "pid": gone.pid, "host":
                                                         __import__("socket").gethostname(), "updated": time.time()})
    write_state(RunDir(root / "failed"), "failed", epoch=2, error="TrainingError: the loss became nan")
    write_json(RunDir(root / "other_host").state_file, {"state": "running", "pid": 1, "host": "node17",
                                                        "updated": time.time() - 60})
    write_json(RunDir(root / "stale_host").state_file, {"state": "running", "pid": 1, "host": "node17",
                                                        "updated": time.time() - 7200})
    states = dict(zip(tree_status(root)["run"], tree_status(root)["state"]))
    assert states == {"running": "running", "interrupted": "interrupted", "failed": "failed", "pending": "pending",
                      "other_host": "running", "stale_host": "interrupted"}
    assert "the loss became nan" in run_status(RunDir(root / "failed"))["detail"]
    assert main(["status", str(root), "--state", "failed"]) == 1                    # a failed run: non-zero exit
    assert main(["status", str(root), "--state", "running"]) == 0       # the exit reflects what is shown


def test_a_run_that_fails_records_its_error_for_status(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("the data loader died")
    monkeypatch.setattr(train_module, "train_one_epoch", broken)
    path = _run_file(tmp_path)
    assert main(["train", "--run-dir", str(tmp_path / "run"), "--config", str(path)]) == 2
    status = run_status(RunDir(tmp_path / "run"))
    assert status["state"] == "failed" and status["detail"] == "RuntimeError: the data loader died"
    # a failure in setup (here: a dataset folder that does not exist) is recorded too, not left "pending"
    broken = _write(tmp_path / "broken.yaml", path.read_text().replace("synthetic_iqa", "livec"))
    assert main(["train", "--run-dir", str(tmp_path / "broken"), "--config", str(broken)]) == 2
    assert run_status(RunDir(tmp_path / "broken"))["state"] == "failed"


def test_a_flat_file_is_the_flags_keys_and_print_config_gives_a_file_that_starts_the_same_run(tmp_path, capsys):
    """`dataset: NAME` + `root: DIR` (the flags' form) is the one-entry `data` list; errors name the key and the file;
    typed flags win before or after --config; --print_config prints a config file of the effective run."""
    flat = _write(tmp_path / "flat.yaml", "dataset: synthetic_iqa\nroot: data\nmodel: {backbone: tiny_clip}\nlr: 0.01\n")
    listed = _write(tmp_path / "listed.yaml", "data:\n  - {dataset: synthetic_iqa, root: data}\n"
                                               "model: {backbone: tiny_clip}\nlr: 0.01\n")
    a = _file_config(["train", "x", "--config", str(flat), "--lora-r", "4"])[0]
    b = _file_config(["train", "x", "--lora-r", "4", "--config", str(listed)])[0]
    assert a.to_dict() == b.to_dict() and a.model.lora_r == 4 and a.lr == 0.01
    assert a.data[0].root == str(tmp_path / "data")                     # from the file's folder
    for text, message in (("dataset: synthetic_iqa\n", r"flat_bad.yaml: dataset synthetic_iqa: no `root`"),
                          ("dataset: synthetic_iqa\nroot: d\nlora_r: 4\n", r"flat_bad.yaml: unknown key 'lora_r'"),
                          ("dataset: synthetic_iqa\nroot: d\nmodel: {lora_r: four}\n",
                           r"flat_bad.yaml: model.lora_r: expected a value of type int, got four")):
        _write(tmp_path / "flat_bad.yaml", text)
        assert main(["train", str(tmp_path / "r"), "--config", str(tmp_path / "flat_bad.yaml")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err), err
    assert main(["train", "x", "--config", str(flat), "--lora-r", "4", "--print_config"]) == 0
    printed = _write(tmp_path / "printed.yaml", capsys.readouterr().out)
    assert _file_config(["train", "y", "--config", str(printed)])[0].to_dict() == a.to_dict()
    assert not (tmp_path / "x").exists()                                 # printed, nothing trained


def test_typed_data_flags_over_a_file_and_the_keys_a_file_may_not_hold(tmp_path, capsys):
    """Over a flat file, a typed --root replaces its root (from the working directory) and --dataset its data; over a
    `data:` list, a lone --root is refused; a file never sets the command's own options; sections of the wrong kind
    and model keys at the top are named."""
    flat = _write(tmp_path / "flat.yaml", "dataset: synthetic_iqa\nroot: data\nmodel: {backbone: tiny_clip}\n")
    config = _file_config(["train", "x", "--config", str(flat), "--root", str(tmp_path / "elsewhere")])[0]
    assert [(d.dataset, d.root) for d in config.data] == [("synthetic_iqa", str(tmp_path / "elsewhere"))]
    config = _file_config(["train", "x", "--config", str(flat), "--dataset", "synthetic_strength", "--root", "/e"])[0]
    assert [(d.dataset, d.root) for d in config.data] == [("synthetic_strength", "/e")]
    (tmp_path / "lists").mkdir()
    listed = _write(tmp_path / "listed.yaml", "data:\n  - {dataset: csv:lists/l.csv, root: imgs, task: iqa}\n")
    config = _file_config(["train", "x", "--config", str(listed)])[0]
    assert config.data[0].csv == str(tmp_path / "lists" / "l.csv") and config.data[0].root == str(tmp_path / "imgs")
    cases = {"--root": (listed, ["--root", "d"], "lists its datasets under `data`"),
             "model": ("model: 3\n", [], "`model` must be a mapping"),
             "top-level model key": ("dataset: a\nroot: b\nlora_r: 4\n", [], "unknown key 'lora_r' .*under `model:`"),
             "command option": ("dataset: a\nroot: b\nrun_dir: c\n", [], "unknown key 'run_dir'"),
             "data": ("data: 3\n", [], "`data` must be a list")}
    for name, (text, flags, message) in cases.items():
        path = text if isinstance(text, type(flat)) else _write(tmp_path / "bad.yaml", text)
        assert main(["train", str(tmp_path / "r"), "--config", str(path), *flags]) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and re.search(message, err) and str(path) in err, (name, err)
    assert main(["train", "r", "--config", "--print_config"]) == 2
    assert "--config needs a file" in capsys.readouterr().err
