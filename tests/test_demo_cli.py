"""The offline demo (README's first command) and the CLI."""
import json

import pandas as pd
import pytest

from percept.core.files import read_json
from percept.interface.cli import main
from percept.model.perceptclip import load_model
from percept.study.demo import run_demo


def test_demo_is_one_engine_run_reproducible_and_loadable(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "a"), "--epochs", "1", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    first = read_json(tmp_path / "a" / "run" / "metrics.json")
    assert printed["test"] == first["test"]
    second = run_demo(tmp_path / "b", epochs=1, log=None)
    assert second["test"] == first["test"]                  # deterministic
    config = read_json(tmp_path / "a" / "run" / "config.json")
    assert config["data"][0]["dataset"] == "synthetic_iqa" and config["model"]["lora_r"] == 16
    # the notebooks' budget (percept.interface.notebooks.demo_config) with the paper's 15 IQA test crops and patience 12
    assert (config["test_crops"], config["patience"], config["max_epochs"], config["batch_size"]) == (15, 12, 1, 16)
    # split by reference: no reference image in two parts
    table = pd.read_csv(tmp_path / "a" / "synthetic" / "manifest.csv")
    preds = pd.read_csv(tmp_path / "a" / "run" / "predictions.csv")
    test_refs = set(table.set_index("image").loc[preds["id"], "reference"])
    assert test_refs and len(preds) == 20 * len(test_refs)
    assert load_model(tmp_path / "a" / "run" / "best.safetensors").config.backbone == "tiny_clip_prior"


def test_cli_demo_has_the_notebooks_budget_with_the_papers_test_crops(tmp_path):
    """`percept demo` and the notebooks both start from the demo preset: the same run but for the IQA test crops
    (the paper's 15; the notebooks keep the preset's 3) and the notebooks' quiet output."""
    from dataclasses import asdict

    from percept.interface import notebooks as nb
    from percept.study.demo import demo_config
    for epochs, seed in ((None, 0), (2, 3)):
        cli = asdict(demo_config(tmp_path, epochs=epochs, seed=seed, quiet=True))
        budget = {} if epochs is None else {"max_epochs": epochs}
        notebook = asdict(nb.demo_config("synthetic_iqa", tmp_path / "synthetic", seed=seed, test_crops=15, **budget))
        assert cli == notebook
    default = asdict(demo_config(tmp_path))
    assert default["test_crops"] == 15 and default["patience"] == 12           # the paper's (§3.1, App. A.1)
    assert (default["max_epochs"], default["batch_size"], default["lr"]) == (8, 16, 1e-3)
    assert default["model"]["backbone"] == "tiny_clip_prior"


def test_cli_params_counts(capsys):
    assert main(["params", "--backbone", "tiny_clip", "--head-type", "linear", "--outputs", "8"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["heads"] == 64 * 8 + 8 and counts["trainable"] == counts["heads"] + counts["lora"]


def test_cli_reports_bad_names_without_traceback(capsys):
    """The flags' choices come from the config fields (percept.core.options): one line names the valid ones."""
    for flag, value in (("--backbone", "resnet"), ("--strategy", "adapter"), ("--head-type", "transformer")):
        assert main(["params", flag, value]) == 2
        err = capsys.readouterr().err.strip()
        assert f"invalid choice: '{value}'" in err and len(err.splitlines()) == 1, err
    assert "mlp" in err and "linear" in err
    assert main(["params", "--backbone", "tiny_clip", "--lora-r", "0"]) == 2     # the config's own check
    assert "LoRA needs r >= 1" in capsys.readouterr().err


def test_cli_bench_passes_options_through(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--backbone", "tiny_clip", "--batch-size", "4", "--steps", "1", "--warmup", "0",
                 "--no-reference", "--no-data", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["measurements"]["train_synthetic"]["images_per_s"] > 0


def test_every_config_field_declared_as_an_option_is_a_train_flag_with_its_default():
    """percept train's flags are generated from ModelConfig and TrainConfig: parsing no flags gives back the
    dataclasses' own defaults, and a new option field is a new flag (and a config-file key)."""
    from percept.core.options import flag_fields
    from percept.engine.train_config import TrainConfig
    from percept.interface.cli_config import model_values, train_config
    from percept.interface.cli_options import parse_options
    from percept.model.perceptclip import ModelConfig
    options = parse_options("train", ["x", "--dataset", "synthetic_iqa", "--root", "."])
    config, defaults = train_config(options), TrainConfig(data=[{"dataset": "synthetic_iqa", "root": "."}])
    assert config.model == ModelConfig() and len(flag_fields(TrainConfig)) >= 20
    assert {f.name: getattr(config, f.name) for f in flag_fields(TrainConfig)} == \
        {f.name: getattr(defaults, f.name) for f in flag_fields(TrainConfig)}
    options = parse_options("train", ["--run-dir", "x", "--two-phase", "--workers", "3", "--random-init",
                                      "--head-hidden", "64", "32", "--lora-alpha", "4", "--logger", "csv", "wandb"])
    model = model_values(options)
    assert (options.head_finetune, options.num_workers, model["pretrained"], model["head_hidden"], model["lora_alpha"],
            options.loggers) == (True, 3, False, (64, 32), 4.0, ["csv", "wandb"])
    assert options.run_dir == "x" and train_config(options) is None          # no data: `percept train RUN` resumes
    assert {"head_finetune", "num_workers", "model.pretrained", "model.head_hidden"} <= options.typed


def test_one_grammar_the_run_or_the_root_right_after_the_command(capsys):
    """Every command that takes a run directory takes it right after its name (`--run-dir` names it too), and every
    command that reads a folder of runs likewise (`--root`); neither given: one line saying the form."""
    from percept.interface.cli import TAKES_RUN_OR_ROOT, build_parser, main
    from percept.interface.cli_options import parse_options
    rest = {"evaluate": ["--dataset", "livec"], "export": ["--format", "hub", "--out", "o"],
            "push": ["user/repo"], "status": [], "results": []}
    assert set(rest) == set(TAKES_RUN_OR_ROOT)
    assert parse_options("train", ["some/where"]).run_dir == parse_options("train", ["--run-dir", "some/where"]).run_dir
    assert main(["train", "--lr", "1e-3"]) == 2
    assert capsys.readouterr().err.strip().endswith("percept train RUN ...")
    for command, dest in TAKES_RUN_OR_ROOT.items():
        flag = "--run-dir" if dest == "run_dir" else "--root"
        parser = build_parser()
        positional = parser.parse_args([command, "some/where", *rest[command]])
        named = parser.parse_args([command, flag, "some/where", *rest[command]])
        assert getattr(positional, dest) == getattr(named, dest) == "some/where", command
        if command == "push":
            assert positional.repo_id == named.repo_id == "user/repo"
        with pytest.raises(SystemExit):                                   # two different places: refused
            parser.parse_args([command, "some/where", *rest[command], flag, "else/where"])
        assert "give one, after the command" in capsys.readouterr().err
        assert main([command, *rest[command]]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"percept {command} {'RUN' if dest == 'run_dir' else 'ROOT'} ...") and "\n" not in err
    assert "default: official-iqa" in build_parser().commands.choices["predict"].format_help()
