"""Presets (percept.engine.presets) and a run's identity (percept.study.run_key): one definition each, used by the
command line, the notebooks, run names, results tables and the paper's cells."""
import dataclasses
import json

import pytest

import percept

from percept.data.sources import DataConfig
from percept.engine.presets import (
    get_preset,
    preset_config,
    register_preset,
    split_overrides,
)
from percept.engine.train_config import TrainConfig
from percept.interface.cli import main
from percept.model.config import MODEL_KEY_FIELDS, NOT_IN_RUN_KEY, ModelConfig
from percept.study.paper_specs import get_table_spec, run_configuration
from percept.study.results import aggregate, collect_runs, select_by_validation, wide_table
from percept.study.run_key import PAPER_MODEL, RUN_KEY_FIELDS, run_key
from percept.study.sweep import run_name

DATA = [DataConfig("livec", "/data/livec")]


def test_the_paper_preset_is_the_dataclasses_defaults_and_demo_changes_only_its_budget():
    assert preset_config("paper", DATA).to_dict() == TrainConfig(data=DATA).to_dict()
    demo = preset_config("demo", DATA)
    changed = {k for k, v in demo.to_dict().items() if v != TrainConfig(data=DATA).to_dict()[k]}
    assert changed == {"model", "lr", "batch_size", "max_epochs", "test_crops"}
    assert demo.model.backbone == "tiny_clip_prior" and demo.patience == 12     # the paper's patience (§3.1)
    assert ModelConfig().lora_r == 16 and ModelConfig().lora_alpha == 8          # the paper's model (§3.1)


def test_overrides_take_model_fields_flat_or_nested_and_name_an_unknown_field():
    config = preset_config("demo", DATA, lora_r=8, max_epochs=2, model={"head_type": "linear"})
    assert (config.model.lora_r, config.model.head_type, config.max_epochs, config.lr) == (8, "linear", 2, 1e-3)
    assert split_overrides({"lr": 1e-4, "lora_alpha": 4}) == ({"lr": 1e-4}, {"lora_alpha": 4})
    with pytest.raises(ValueError, match=r"overrides: unknown field\(s\) epochs"):
        preset_config("demo", DATA, epochs=3)
    with pytest.raises(ValueError, match="unknown preset 'tiny'; choose one of paper, demo"):
        get_preset("tiny")
    with pytest.raises(ValueError, match=r"preset 'lab': unknown field\(s\) model.rank"):
        register_preset("lab", "a lab's budget", model={"rank": 4})


def test_the_command_line_takes_a_preset_under_a_file_and_the_typed_flags(tmp_path, capsys):
    run = tmp_path / "run"
    base = ["train", str(run), "--dataset", "synthetic_iqa", "--root", str(tmp_path), "--print_config"]
    assert main([*base, "--preset", "demo", "--lr", "5e-4"]) == 0
    printed = capsys.readouterr().out
    assert "backbone: tiny_clip_prior" in printed and "lr: 0.0005" in printed and "max_epochs: 8" in printed
    plan = tmp_path / "plan.yaml"
    plan.write_text("preset: demo\nmax_epochs: 3\n")
    assert main([*base, "--config", str(plan), "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "max_epochs: 3" in printed and "batch_size: 4" in printed and "lr: 0.001" in printed
    plan.write_text("preset: tiny\n")
    assert main([*base, "--config", str(plan)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "plan.yaml" in err and "tiny" in err


# ------------------------------------------------------------------------------------------ a run's identity
def test_every_model_field_is_in_the_key_unless_it_says_why_not():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert set(MODEL_KEY_FIELDS) == (fields - set(NOT_IN_RUN_KEY)) | {"weights"}
    assert set(PAPER_MODEL) == set(MODEL_KEY_FIELDS)
    key = run_key(preset_config("paper", DATA))
    assert tuple(key) == RUN_KEY_FIELDS and key["weights"] == "pretrained" and key["head_hidden"] == "512x256"
    assert run_key(json.loads(json.dumps(preset_config("paper", DATA).to_dict()))) == key   # config.json, same key


def _finished_run(root, name, lora_dropout, val, test):
    run = root / name
    run.mkdir(parents=True)
    config = TrainConfig(data=[DataConfig("livec", str(root))], model=ModelConfig(lora_dropout=lora_dropout))
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    (run / "metrics.json").write_text(json.dumps({
        "status": "complete", "select_metric": "srcc", "val_score": val, "best_epoch": 3, "epochs_run": 10,
        "test": {"livec": {"srcc": test, "plcc_logistic": test, "n_images": 10}}}))
    return config


def test_runs_that_differ_in_any_model_field_are_different_experiments(tmp_path):
    # LoRA dropout was once outside the tables' configuration: two such runs were one "variant", and the better
    # validation score silently chose between them
    paper = _finished_run(tmp_path, "a", 0.1, val=0.5, test=0.70)
    other = _finished_run(tmp_path, "b", 0.3, val=0.9, test=0.95)
    assert run_name(paper) == "livec/split1/lr0.0001"
    assert run_name(other) == "livec/lora-dropout-0.3/split1/lr0.0001"
    aggregated = aggregate(select_by_validation(collect_runs(tmp_path)))
    assert sorted(aggregated["lora_dropout"]) == [0.1, 0.3] and list(aggregated["median_srcc"].sort_values()) == [0.70, 0.95]
    row = get_table_spec("1").rows[0]                                         # PerceptCLIP (3M)
    filled = [r for _, r in aggregated.iterrows() if row.matches(run_configuration(r.to_dict())[0])]
    assert [r["lora_dropout"] for r in filled] == [0.1]                        # the paper's model only
    wide = wide_table(aggregated)
    assert list(wide.index) == ["lora_dropout=0.1", "lora_dropout=0.3"]
    assert list(wide[("livec", "srcc")]) == [0.70, 0.95]


def test_build_model_takes_a_preset_and_refuses_training_fields():
    model = percept.build_model(preset="demo")
    assert model.config.backbone == get_preset("demo").model["backbone"]
    assert (model.config.lora_r, model.config.lora_alpha) == (16, 8)          # the paper's LoRA, kept by the preset
    small = percept.build_model(preset="paper", backbone="tiny_clip", pretrained=False, lora_r=4)
    assert small.config.lora_r == 4 and small.config.head_type == "mlp"
    with pytest.raises(ValueError, match="max_epochs configure training"):
        percept.build_model(preset="demo", max_epochs=3)
    with pytest.raises(ValueError, match="a preset or a config, not both"):
        percept.build_model(small.config, preset="demo")
