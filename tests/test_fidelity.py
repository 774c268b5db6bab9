"""Fidelity: each protocol point checked against an independent source of truth - the official
LaMem split files, the paper's table specifications, the split rules the paper states."""
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from percept.data.prepare import prepare
from percept.data.sources import DataConfig, open_source
from percept.engine.evaluate import evaluate_run
from percept.engine.train import TrainConfig, train
from percept.model.perceptclip import ModelConfig

pytestmark = pytest.mark.filterwarnings("ignore:.*(partial manifest|but the paper uses).*:UserWarning")


def _official_scores(path) -> dict[str, float]:
    table = pd.read_csv(path, sep=r"\s+", header=None, names=["file", "score"], dtype={"file": str})
    return dict(zip(table["file"], table["score"]))


@pytest.fixture(scope="module")
def lamem_standin(tmp_path_factory):
    """The real LaMem split files (../shared/data/lamem/splits, copied into tmp) with generated stand-in
    images for a few images of split 2's train/val/test parts, prepared with allow_partial."""
    from conftest import shared_data_root
    data = shared_data_root()
    if data is None or not (data / "lamem" / "splits").is_dir():
        pytest.skip("LaMem split files not found: set PERCEPT_DATA_ROOT or place them in ../shared/data/lamem")
    root = tmp_path_factory.mktemp("lamem")
    shutil.copytree(data / "lamem" / "splits", root / "splits")
    rng = np.random.default_rng(0)
    chosen = {}
    for part, n in (("train", 24), ("val", 6), ("test", 10)):
        names = sorted(_official_scores(root / "splits" / f"{part}_2.txt"))
        chosen[part] = [names[i] for i in rng.choice(len(names), n, replace=False)]
    (root / "images").mkdir()
    for i, name in enumerate(sum(chosen.values(), [])):
        pixels = (rng.random((40, 48, 3)) * 255 * (0.3 + 0.7 * (i % 5) / 4)).astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / name)
    prepare("lamem", root, allow_partial=True)
    return root, chosen


def test_lamem_split_k_trains_and_tests_on_split_k_scores(lamem_standin, tmp_path):
    root, chosen = lamem_standin
    test_2 = _official_scores(root / "splits" / "test_2.txt")
    config = TrainConfig(data=[DataConfig("lamem", str(root))], model=ModelConfig(backbone="tiny_clip",
                         pretrained=False), split=2, lr=1e-3, batch_size=8, max_epochs=1, patience=1, quiet=True)
    train(config, tmp_path / "run")
    predictions = pd.read_csv(tmp_path / "run" / "predictions.csv")
    files = predictions["id"].str.removeprefix("images/")
    assert sorted(files) == sorted(chosen["test"])
    np.testing.assert_allclose(predictions["label"], [test_2[f] for f in files], atol=1e-6)
    # the old target (the mean over the 5 split files) differs for these images: the check has teeth
    means = open_source(DataConfig("lamem", str(root))).frame.set_index("image")["memorability"]
    assert np.abs(means.loc[predictions["id"]].to_numpy() - predictions["label"].to_numpy()).max() > 1e-3

    # percept evaluate (Table A.1's machinery) reads split k's scores of the dataset it evaluates on
    test_3 = _official_scores(root / "splits" / "test_3.txt")
    record = evaluate_run(tmp_path / "run", DataConfig("lamem", str(root)), split=3, part="test",
                          out=tmp_path / "eval3", device="cpu")
    evaluated = pd.read_csv(tmp_path / "eval3" / "predictions.csv")
    assert record["metrics"]["n_images"] == len(evaluated) > 0
    np.testing.assert_allclose(evaluated["label"], [test_3[f.removeprefix("images/")] for f in evaluated["id"]],
                               atol=1e-6)
    # without a split (the whole dataset) the summary column is the target, as the card says
    whole = open_source(DataConfig("lamem", str(root))).dataset(None, "test")
    np.testing.assert_allclose(whole.labels, means.loc[whole.ids].to_numpy(), atol=1e-6)


# ------------------------------------------------------------------------------------------ point 6: sampling
def test_proportional_sampling_counts_images_not_replicas():
    from percept.engine.sampling import ProportionalBatchSampler
    # a TID2013-like set (25 images x 10 replicas) beside a KADID-like one (100 images x 3 replicas)
    images, replicas = [25, 100], [10, 3]
    sizes = [n * r for n, r in zip(images, replicas)]
    sampler = ProportionalBatchSampler(sizes, 20, seed=3, images=images)
    flat = np.concatenate(sampler.batches())
    tid = flat[flat < sizes[0]]
    assert len(flat) == sum(sizes)                                    # the epoch keeps its length
    assert abs(len(tid) / len(flat) - 25 / 125) < 0.01                # images' share (0.2), not items' (0.45)
    per_image = np.bincount(tid % 25, minlength=25)                   # passes over the images, evenly
    assert per_image.max() - per_image.min() <= 1
    assert len(set(tid.tolist())) == len(tid) <= sizes[0]            # distinct replicas while there are enough
    kadid = flat[flat >= sizes[0]] - sizes[0]
    assert np.ptp(np.bincount(kadid % 100, minlength=100)) <= 1
    # one dataset: exactly every item once, as before
    single = np.concatenate(ProportionalBatchSampler([250], 20, seed=3, images=[25]).batches())
    assert sorted(single.tolist()) == list(range(250))


def test_small_plcc_dataset_enters_batches_with_at_least_min_items():
    from percept.engine.sampling import ProportionalBatchSampler, batch_composition
    images = [1162, 10073, 11125]      # the authentic-IQA group: LIVEC, KonIQ-10k, SPAQ (x5, x3, x3 replicas)
    sizes = [1162 * 5, 10073 * 3, 11125 * 3]
    plain = batch_composition(sizes, 32, images=images, names=["livec", "koniq", "spaq"])
    assert plain.loc[0, "share_ge3"] < 0.05 and plain.loc[0, "min_when_present"] <= 2   # the problem
    fixed = batch_composition(sizes, 32, images=images, min_items=[3, 3, 3], names=["livec", "koniq", "spaq"])
    livec = fixed.loc[0]
    assert livec["min_when_present"] >= 3 and livec["share_ge3"] == livec["present"] > 0.4
    assert abs(livec["item_share"] - 1162 / sum(images)) < 0.002     # its share of the epoch is unchanged
    assert (fixed["min_when_present"] >= 3).all()
    batches = ProportionalBatchSampler(sizes, 32, seed=0, images=images, min_items=3).batches()
    assert max(len(b) for b in batches) <= 32 + 2 and np.mean([len(b) for b in batches]) == pytest.approx(32, abs=0.5)


# ------------------------------------------------------------------------------------------ point 2: table cells
def _variants(dataset="koniq10k", **extra):
    """Aggregated results of several model variants on one real dataset (the columns of percept.study.results)."""
    paper_model = {"datasets": dataset, "dataset": dataset, "backbone": "clip_vit_l14", "weights": "pretrained",
                   "strategy": "lora", "head_type": "mlp", "lora_r": 16, "lora_alpha": 8.0, "head_finetune": False,
                   "seed": 0, "n_splits": 10}
    variants = [({"backbone": "clip_vit_b16"}, 0.80),                 # Table A.7, listed before the paper model
                ({}, 0.95),                                            # the paper's configuration
                ({"backbone": "clip_vit_b32"}, 0.78), ({"backbone": "mae_vit_l16"}, 0.70),
                ({"head_type": "linear"}, 0.91), ({"strategy": "frozen", "lora_r": 16}, 0.85),
                ({"strategy": "full"}, 0.93), ({"lora_r": 8, "lora_alpha": 4.0}, 0.94),
                ({"lora_r": 32, "lora_alpha": 16.0}, 0.96), ({"head_finetune": True}, 0.90),
                ({"weights": "random"}, 0.10)]                        # a random-weights run of the paper model
    rows = [{**paper_model, **change, "median_srcc": value, "median_plcc_logistic": value + 0.005,
             "mean_srcc": value - 0.01, "mean_plcc_logistic": value, **extra} for change, value in variants]
    return pd.DataFrame(rows)


def _cell(compared, method, dataset, metric="SRCC"):
    hit = compared[(compared["method"] == method) & (compared["test_dataset"] == dataset)
                   & (compared["metric"] == metric)]
    assert len(hit) == 1, hit
    return hit.iloc[0]


def test_each_paper_row_is_filled_by_its_own_configuration_only():
    from percept.study import paper
    ours = paper.ours_from_results(_variants())
    table1 = _cell(paper.compare(ours, "1"), "PerceptCLIP (3M)", "KonIQ-10k")
    assert table1["ours"] == 0.95 and table1["comparable"]           # not the B/16 run's 0.80 listed first
    a7 = paper.compare(ours, "A.7")
    assert [_cell(a7, m, "KonIQ-10k")["ours"] for m in ("ViT-B/32", "ViT-B/16", "ViT-L/14")] == [0.78, 0.80, 0.95]
    a8 = paper.compare(ours, "A.8")
    assert _cell(a8, "MAE", "KonIQ-10k")["ours"] == 0.70 and "ViT-L/16" in _cell(a8, "MAE", "KonIQ-10k")["note"]
    assert _cell(a8, "TULIP", "KonIQ-10k")["status"] == "paper only"
    six = paper.compare(ours, "6")
    assert [_cell(six, m, "KonIQ-10k")["ours"] for m in ("Full Fine-tuning CLIP", "Frozen CLIP", "LoRA for CLIP")] \
        == [0.93, 0.85, 0.95]
    seven = paper.compare(ours, "7")
    assert [_cell(seven, m, "KonIQ-10k")["ours"] for m in ("Linear Layer", "MLP")] == [0.91, 0.95]
    a10, a11 = paper.compare(ours, "A.10"), paper.compare(ours, "A.11")
    assert _cell(a10, "PerceptCLIP r=8 alpha=4", "KonIQ-10k")["ours"] == 0.94
    assert _cell(a10, "PerceptCLIP r=16 alpha=8", "KonIQ-10k")["ours"] == 0.95
    assert _cell(a11, "PerceptCLIP r=32 alpha=16", "KonIQ-10k", "PLCC")["ours"] == pytest.approx(0.965)
    assert _cell(a10, "PerceptCLIP r=8 alpha=8", "KonIQ-10k")["status"] == "paper only"
    # the random-weights run fills no comparable cell and never displaces the pretrained one
    assert not ours[ours["source"].str.contains("random weights")]["comparable"].any()
    # statistic: the median for IQA (Table 1), the mean for memorability (Table 3)
    lamem = paper.ours_from_results(_variants("lamem").assign(mean_mse=0.01, median_mse=0.02))
    assert _cell(paper.compare(lamem, "3"), "PerceptCLIP", "LaMem")["ours"] == pytest.approx(0.94)
    # an unfinished sweep is not comparable with a median over 10 splits
    short = paper.compare(paper.ours_from_results(_variants().iloc[[1]].assign(n_splits=4)), "1")
    assert not _cell(short, "PerceptCLIP (3M)", "KonIQ-10k")["comparable"]
    assert "only 4 of 10 splits" in _cell(short, "PerceptCLIP (3M)", "KonIQ-10k")["note"]
    # two comparable results for one cell are an error, not a silent choice
    twice = pd.concat([_variants().iloc[[1]], _variants().iloc[[1]].assign(seed=1, median_srcc=0.5)])
    with pytest.raises(ValueError, match="2 comparable results fill the cell PerceptCLIP \\(3M\\) / KonIQ-10k / SRCC"):
        paper.compare(paper.ours_from_results(twice), "1")


def test_two_phase_and_multi_rows_of_table_a9_and_5():
    from percept.study import paper
    single = _variants("livec").iloc[[1, 9]]                          # one stage and two-phase, LIVEC alone
    multi = _variants("livec").iloc[[1, 9]].assign(datasets="livec+koniq10k+spaq", median_srcc=[0.70, 0.97])
    ours = paper.ours_from_results(pd.concat([single, multi]))
    a9 = paper.compare(ours, "A.9")
    assert _cell(a9, "PerceptCLIP Single-Dataset", "LIVEC")["ours"] == 0.95
    assert _cell(a9, "PerceptCLIP 2-Phase Training Single-Dataset", "LIVEC")["ours"] == 0.90
    assert _cell(a9, "PerceptCLIP 2-Phase Training Multi-Dataset", "LIVEC")["ours"] == 0.97
    five = paper.compare(ours, "5")
    assert _cell(five, "PerceptCLIP", "LIVEC")["ours"] == 0.95
    assert _cell(five, "PerceptCLIP Multi-Dataset", "LIVEC")["ours"] == 0.97   # not the one-stage multi run (0.70)
    # a unified run (datasets of several tasks) is beyond the paper: it fills none of its cells, and
    # neither displaces the within-task multi-dataset model nor collides with it
    unified = _variants("livec").iloc[[9]].assign(datasets="livec+lamem+emoset", median_srcc=0.99)
    both = paper.ours_from_results(pd.concat([single, multi, unified]))
    assert not (both["ours"] == 0.99).any()
    assert _cell(paper.compare(both, "5"), "PerceptCLIP Multi-Dataset", "LIVEC")["ours"] == 0.97
    assert _cell(paper.compare(both, "A.9"), "PerceptCLIP 2-Phase Training Multi-Dataset", "LIVEC")["ours"] == 0.97


def test_cross_dataset_table_takes_the_paper_configuration_only(tmp_path):
    import json

    from percept.study import paper

    def record(name, value, **model):
        run = tmp_path / name
        run.mkdir()
        m = {"backbone": "clip_vit_l14", "strategy": "lora", "head_type": "mlp", "lora_r": 16, "lora_alpha": 8.0,
             "pretrained": True, "weights_path": None, "backbone_kwargs": {}, **model}
        (run / "config.json").write_text(json.dumps({"model": m, "head_finetune": False}))
        return {"run": str(run), "trained_on": ["koniq10k"], "dataset": "livec", "metrics": {"srcc": value}}

    l14 = [record(f"l14_split{k}", 0.80 + 0.01 * k) for k in range(1, 11)]
    records = [record("b16", 0.50, backbone="clip_vit_b16"), record("linear", 0.60, head_type="linear"), *l14,
               record("random", 0.05, pretrained=False)]
    two = paper.compare(paper.ours_from_cross(records), "2")
    cell = two[(two["train_dataset"] == "KonIQ-10k") & (two["test_dataset"] == "LIVEC") & (two["status"] == "both")]
    assert len(cell) == 1 and cell.iloc[0]["ours"] == pytest.approx(0.855) and cell.iloc[0]["comparable"]
    assert "10 runs over splits" in cell.iloc[0]["source"]            # the median over the ten L/14 split models
    # an unfinished sweep (3 of LoDa's 10 split models) fills the cell but is not comparable, and says why
    partial = paper.compare(paper.ours_from_cross(l14[:3]), "2")
    cell = partial[(partial["train_dataset"] == "KonIQ-10k") & (partial["status"] == "both")].iloc[0]
    assert not cell["comparable"] and "only 3 of 10 splits" in cell["note"]


def test_plan_reports_the_batch_composition_of_every_multi_dataset_group():
    pytest.importorskip("yaml")
    from percept.study.reproduce import load_reproduce_config, sampling_report
    config = load_reproduce_config()
    report = sampling_report(config)
    groups = {n for n, e in config["experiments"].items() if e["kind"] in ("multi", "unified")}
    assert set(report["experiment"]) == groups
    livec = report[(report["experiment"] == "multi_iqa_authentic") & (report["dataset"] == "livec")].iloc[0]
    assert livec["batches_ge3_plain"] < 0.5                            # ~1.7 items per batch of 32 without a remedy
    assert livec["batches_ge3"] == livec["batches_present"] > 0.5 and livec["fewest_items_when_present"] >= 3
    plcc = report[report["loss"] == "plcc"]
    # every PLCC dataset: at least 3 items whenever it enters (the trailing partial batch aside)
    assert ((plcc["batches_ge3"] == plcc["batches_present"]) | (plcc["batches_ge3"] >= 0.99)).all()


def test_runs_of_an_older_protocol_are_neither_reused_nor_tabled(tmp_path):
    """A finished run directory written by an older percept (its config.json has no `protocol`: LaMem runs
    then trained on the mean of the 5 split files) must not count as this version's result."""
    import json

    from percept.engine.runs import PROTOCOL
    from percept.study.results import collect_runs
    from percept.study.sweep import expand_grid, run_sweep
    base = TrainConfig(data=[DataConfig("lamem", str(tmp_path))], model=ModelConfig(backbone="tiny_clip",
                       pretrained=False), max_epochs=1)
    (name, config), = expand_grid(base, lrs=[1e-3], splits=[1]).items()
    for tree, protocol in (("old", None), ("new", PROTOCOL)):
        run = tmp_path / tree / name
        run.mkdir(parents=True)
        saved = config.to_dict()
        if protocol is None:
            del saved["protocol"]
        (run / "config.json").write_text(json.dumps(saved, default=str))
        (run / "metrics.json").write_text(json.dumps({
            "status": "complete", "select_metric": "srcc", "val_score": 0.5, "best_epoch": 1, "epochs_run": 1,
            "test": {"lamem": {"srcc": 0.6, "mse": 0.01, "n_images": 10}}}))
    status = run_sweep({name: config}, tmp_path / "old", gpus=[], log=lambda *a: None)
    assert status[name].startswith("failed") and "different configuration" in status[name] and "protocol" in status[name]
    assert run_sweep({name: config}, tmp_path / "new", gpus=[], log=lambda *a: None)[name] == "skipped"
    with pytest.warns(UserWarning, match="another percept protocol"):
        with pytest.raises(FileNotFoundError, match="no finished runs"):
            collect_runs(tmp_path / "old")
    assert len(collect_runs(tmp_path / "new")) == 1
    with pytest.raises(ValueError, match="protocol 1"):
        TrainConfig.from_dict({**config.to_dict(), "protocol": 1})


def test_a_run_written_before_the_head_type_rename_is_tabled_and_reused(tmp_path):
    """Its config.json says ``"head": "linear"`` (renamed ``head_type`` since): the results table reads
    it as a linear-head run and the sweep recognises the finished run as this configuration's."""
    import json

    from percept.study.results import collect_runs
    from percept.study.sweep import expand_grid, run_sweep
    base = TrainConfig(data=[DataConfig("lamem", str(tmp_path))], model=ModelConfig(backbone="tiny_clip",
                       pretrained=False, head_type="linear"), max_epochs=1)
    (name, config), = expand_grid(base, lrs=[1e-3], splits=[1]).items()
    run = tmp_path / name
    run.mkdir(parents=True)
    saved = config.to_dict()
    saved["model"]["head"] = saved["model"].pop("head_type")
    (run / "config.json").write_text(json.dumps(saved, default=str))
    (run / "metrics.json").write_text(json.dumps({
        "status": "complete", "select_metric": "srcc", "val_score": 0.5, "best_epoch": 1, "epochs_run": 1,
        "test": {"lamem": {"srcc": 0.6, "mse": 0.01, "n_images": 10}}}))
    assert collect_runs(tmp_path)["head_type"].tolist() == ["linear"]
    assert run_sweep({name: config}, tmp_path, gpus=[], log=lambda *a: None)[name] == "skipped"
