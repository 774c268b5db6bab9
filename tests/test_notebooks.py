"""The numbered notebooks and what they rely on.

* every notebook is stored clean (valid nbformat 4, kernel python3, no outputs, a ``parameters`` cell of plain
  assignments);
* every notebook executes end to end with papermill on the smallest parameters (embedded demo data with 8
  references, the tiny random encoder, one epoch, one test crop) into a temporary folder — a failure names the
  notebook and the cell;
* the paper's reference numbers (``paper/paper_results.csv``), the paper-vs-ours comparison, the reproduction
  plan (``reproduce.yaml``) and the figure helper.
"""
import ast
import os
import re
import shutil
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from percept.data.synthetic import generate_synthetic_iqa
from percept.interface import notebooks as nb
from percept.study import figures, paper, reproduce

NOTEBOOKS = nb.notebook_paths()
# the smallest budget over the demo preset; a smaller demo set and two torch threads through the environment the
# kernels inherit (the suite runs one notebook at a time on the CI's 2 cores; the notebooks' default of one thread is
# for a CPU shared with other work)
SMALL = {"overrides": {"max_epochs": 1, "patience": 1, "test_crops": 1}}
SMALL_ENV = {"PERCEPT_DEMO_REFERENCES": "8", "PERCEPT_CPU_THREADS": "2"}
PER_NOTEBOOK = {
    "06_attention_heads": {"n_images": 4, "top_k": 2, "n_per_head": 1},
    "07_error_analysis": {"n_examples": 4},
    "08_ablations": {"variants": [{}, {"strategy": "frozen"}]},   # + the three random-init strategies (section 2)
    "10_unified_adapter": {"n_images": 4},
}


def test_the_eleven_numbered_notebooks_are_there():
    assert [p.stem[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(11)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs_and_has_a_parameters_cell(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    assert book.nbformat == 4
    assert book.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(book.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name}: cell {i} is stored with outputs (clear them before committing)"
            assert cell.execution_count is None, f"{path.name}: cell {i} has an execution count"
    index = nb.parameters_cell(book)
    assert index is not None, f"{path.name} has no cell tagged 'parameters'"
    tree = ast.parse(book.cells[index].source)
    assert all(isinstance(node, ast.Assign) for node in tree.body), "parameters must be plain assignments"
    names = [target.id for node in tree.body for target in node.targets]
    assert book.cells[0].cell_type == "markdown" and book.cells[0].source.startswith(f"# {path.stem[:2]}")
    # the budget is a preset by name and its overrides, the same in every notebook (so that they share their runs:
    # a run's folder is named after its budget); at most 8 lines of code
    assert names[-3:] == ["preset", "overrides", "out_dir"], names
    values = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body}
    assert values["preset"] == "demo" and values["overrides"] == {} and values["out_dir"] is None
    code_lines = [line for line in book.cells[index].source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert len(code_lines) <= 8, f"{path.name}: its parameters cell has {len(code_lines)} lines of code"


def test_the_demo_budget_is_defined_once():
    """The demo preset's values are written in percept/engine/presets.py alone: no notebook and no other module
    restates them (a notebook names the preset; percept demo builds on it)."""
    budget = re.compile(r"\b(max_epochs|epochs|batch_size|test_crops)\s*[=:]\s*(8|16|3)\b|backbone[^\n]{0,12}?\"tiny_clip_prior\"")
    sources = [p for p in Path(nb.__file__).resolve().parents[1].rglob("*.py") if p.name != "presets.py"]
    found = [f"{p.name}: {m.group(0)}" for p in [*sources, *NOTEBOOKS] for m in budget.finditer(p.read_text())]
    assert not found, found


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Run every notebook once (shared demo data and runs, as `make demo` does), smallest parameters."""
    if os.environ.get("PERCEPT_SKIP_NOTEBOOKS") == "1":
        pytest.skip("PERCEPT_SKIP_NOTEBOOKS=1: notebook execution skipped (a few minutes on 2 CPU cores)")
    pytest.importorskip("papermill")
    out = tmp_path_factory.mktemp("notebooks")
    figures_dir = out / "figures"          # never the checkout's figures/
    saved = {k: os.environ.get(k) for k in [*SMALL_ENV, "PERCEPT_FIGURES_DIR"]}
    os.environ.update({**SMALL_ENV, "PERCEPT_FIGURES_DIR": str(figures_dir)})   # the kernels inherit it
    try:
        results = nb.run_notebooks(out_dir=out, parameters=SMALL, per_notebook=PER_NOTEBOOK, stop_on_error=False,
                                   log=print)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {r["notebook"]: r for r in results}, out, figures_dir


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, executed):
    results, out, figures_dir = executed
    record = results[path.stem]
    assert record["status"] == "ok", record["error"]          # names the notebook and the failing cell
    assert record["headline"], f"{path.name} wrote no headline (nb.headline) for the runner's line"
    book = nbformat.read(out / path.name, as_version=4)
    images = [o for c in book.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "display_data" and "image/png" in o.data]
    assert images, f"{path.name} displayed no figure"
    assert not [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]


def test_figures_are_saved_as_png_and_pdf_named_after_the_paper(executed):
    _, out, figures_dir = executed
    pngs = {p.stem for p in figures_dir.glob("*.png")}
    assert pngs == {p.stem for p in figures_dir.glob("*.pdf")}
    for name in ("table1_iqa_training_curves_demo", "fig4_attention_heads_emotion_demo",
                 "fig4_attention_gallery_iqa_demo", "fig4_attention_gallery_memorability_demo", "figA3_confusion_matrix_demo",
                 "table2_cross_dataset_demo", "table5_multi_dataset_demo", "table6_strategy_demo", "table6_prior_ablation_demo",
                 "paper_tables_coverage_demo", "fig2_parameter_counts", "unified_vs_single_demo",
                 "unified_head_importance_correlation_demo"):
        assert name in pngs, f"{name}.png missing; have {sorted(pngs)}"
    # the notebooks wrote their tables where they were told to, not into the repository
    assert (out / "09_paper_tables" / "paper_vs_ours.csv").is_file()
    compared = pd.read_csv(out / "09_paper_tables" / "paper_vs_ours.csv", dtype={"table": str})
    assert set(compared["table"]) == set(paper.TABLE_TITLES)
    assert not compared["comparable"].any()          # demo numbers are never comparable with the paper's


def test_runner_names_the_notebook_and_the_failing_cell(tmp_path):
    pytest.importorskip("papermill")
    book = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                             "language": "python"}})
    params = nbformat.v4.new_code_cell("x = 1")
    params.metadata["tags"] = ["parameters"]
    book.cells = [params, nbformat.v4.new_code_cell("y = x + 1"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    (tmp_path / "nb").mkdir()
    nbformat.write(book, tmp_path / "nb" / "00_broken.ipynb")
    with pytest.raises(nb.NotebookError, match=r"00_broken.ipynb failed in cell \d+.*raise ValueError.*boom"):
        nb.run_notebooks(out_dir=tmp_path / "out", notebooks_dir=tmp_path / "nb", log=lambda *a: None)


# ------------------------------------------------------------------------------------------ paper data
def test_paper_reference_data_has_every_table():
    frame = paper.load_paper_results()
    assert list(frame.columns) == list(paper.COLUMNS)
    assert set(paper.paper_tables()) == set(paper.TABLE_TITLES)
    assert paper.paper_tables()[:2] == ["1", "2"] and paper.paper_tables()[-1] == "A.11"
    assert not frame.duplicated(paper.KEYS + ["table"]).any()
    assert frame["value"].notna().all()
    table1 = paper.paper_table("1", wide=True)
    assert table1.loc["PerceptCLIP (3M)", ("KonIQ-10k", "SRCC")] == pytest.approx(0.945)
    assert paper.paper_table("2", wide=True).columns[0][0] == "FLIVE → KonIQ-10k"
    with pytest.raises(ValueError, match="no table"):
        paper.paper_table("99")


def _aggregated(**config):
    row = {"datasets": "synthetic_iqa", "backbone": "tiny_clip", "strategy": "lora", "head_type": "mlp", "lora_r": 16,
           "lora_alpha": 8.0, "head_finetune": False, "seed": 0, "dataset": "synthetic_iqa", "n_splits": 1,
           "median_srcc": 0.5, "mean_srcc": 0.4, "median_plcc_logistic": 0.6, "mean_plcc_logistic": 0.55,
           "median_mse": 1.0, "mean_mse": 1.0}
    return pd.DataFrame([{**row, **config}])


def test_a_pretrained_demo_run_fills_a_cell_before_the_same_run_from_random_weights():
    """Notebook 08's prior ablation puts random-init runs of the demo prior beside the pretrained ones: both are
    stand-ins (never comparable); the cell shows the pretrained one, whichever comes first."""
    both = pd.concat([_aggregated(backbone="tiny_clip_prior", weights="random", median_srcc=0.03),
                      _aggregated(backbone="tiny_clip_prior", weights="pretrained", median_srcc=0.66)])
    for frame in (both, both.iloc[::-1]):
        compared = paper.compare(paper.ours_from_results(frame, tables=["1"]), "1")
        cell = compared[(compared["method"] == "PerceptCLIP (3M)") & (compared["metric"] == "SRCC")
                        & (compared["status"] == "both")]
        assert cell["ours"].tolist() == [0.66] and not cell["comparable"].any()


def test_show_is_the_notebooks_paper_block_saved_and_displayed(tmp_path, monkeypatch):
    pytest.importorskip("IPython")
    import IPython.display
    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs: shown.append(objs))
    ours = paper.ours_from_results(_aggregated(median_srcc=0.61), tables=["1", "6"])
    result = paper.show(ours, ["1", "6"], tmp_path, caption="Table {table} ({title}): beside ours")
    assert list(result) == ["1", "6"]
    for table_id, comparison in result.items():
        saved = pd.read_csv(tmp_path / f"table_{table_id}_paper_vs_ours.csv", dtype={"table": str})
        expected = paper.compare(ours, table_id)
        assert len(saved) == len(expected) and saved["method"].tolist() == expected["method"].tolist()
        pd.testing.assert_frame_equal(comparison, expected)
    printed, caption, rows = shown[0][1], shown[0][2], shown[0][3]
    assert printed.equals(paper.format_table(paper.paper_table("1", wide=True)))   # the table as printed first
    assert caption.data == f"Table 1 ({paper.TABLE_TITLES['1']}): beside ours"
    assert set(rows["method"]) <= set(paper.fillable_methods("1")) | {"PerceptCLIP"}
    assert "0.61" in set(rows["ours"])                                             # our run is in the block
    paper.show(ours, ["6"], printed=False, perceptclip_rows=False)                  # nothing saved without out_dir
    assert len(shown[-1]) == 2 and len(shown[-1][1]) == len(paper.compare(ours, "6"))


def test_our_runs_become_paper_cells_with_stand_ins_marked():
    ours = paper.ours_from_results(_aggregated())
    table1 = ours[ours["table"] == "1"]
    assert set(table1["metric"]) == {"SRCC", "PLCC"}                   # the table's metrics only (no MSE)
    assert set(table1["test_dataset"]) == {"KADID-10k"} and table1["stand_in"].all()
    assert table1.set_index("metric").loc["SRCC", "ours"] == 0.5       # median for IQA
    compared = paper.compare(ours, "1")
    row = compared[(compared["method"] == "PerceptCLIP (3M)") & (compared["test_dataset"] == "KADID-10k")
                   & (compared["metric"] == "SRCC")].iloc[0]
    assert row["status"] == "both" and row["difference"] == pytest.approx(0.5 - 0.952) and not row["comparable"]
    assert (compared["status"] == "paper only").sum() == len(paper.paper_table("1")) - 2
    # table 6: the strategy names; a real KonIQ-10k run with ViT-L/14 is comparable
    real = _aggregated(datasets="koniq10k", dataset="koniq10k", backbone="clip_vit_l14", strategy="frozen",
                       n_splits=10)
    six = paper.compare(paper.ours_from_results(real), "6")
    hit = six[six["status"] == "both"]
    assert set(hit["method"]) == {"Frozen CLIP"} and hit["comparable"].all()
    # variants outside a table are not forced into it
    assert paper.ours_from_results(_aggregated(head_type="linear"), tables=["1"]).empty
    assert paper.method_name(_aggregated(datasets="a+b", head_finetune=True).iloc[0], "5") == "PerceptCLIP Multi-Dataset"
    assert paper.method_name(_aggregated(head_finetune=True).iloc[0], "A.9") == \
        "PerceptCLIP 2-Phase Training Single-Dataset"
    shown = paper.format_comparison(compared)
    assert (shown["ours"] == "— (not run)").sum() == (compared["status"] == "paper only").sum()


def test_reproduce_plan_matches_the_stated_gpu_hours():
    pytest.importorskip("yaml")
    config = reproduce.load_reproduce_config()
    plan = reproduce.reproduce_plan(config)
    assert (plan["gpu_hours"] == plan["stated_gpu_hours"]).all(), plan[plan["gpu_hours"] != plan["stated_gpu_hours"]]
    assert config["defaults"]["preset"] == "paper" and not config["defaults"]["model"]   # the paper's model
    assert config["defaults"]["lrs"] == [5e-5, 1e-4, 5e-4, 1e-3]
    covered = {str(t) for e in config["experiments"].values() for t in e["tables"]}
    assert covered == set(paper.TABLE_TITLES) | {"unified"}           # every table has an experiment (+ ours)
    assert reproduce.run_hours("emoset") == pytest.approx(24 * 118102 / 100_000)
    from percept.interface.cli import main as cli_main
    assert cli_main(["reproduce", "--dry-run"]) == 0                   # = percept reproduce --dry-run


def test_reproduce_runs_a_plan_end_to_end_on_cpu(tmp_path):
    """`make reproduce`'s machinery on a tiny plan: a sweep, a cross-dataset evaluation, paper-vs-ours tables."""
    yaml = pytest.importorskip("yaml")
    plan = {"version": 1, "data_root": str(tmp_path / "data"),
            "dataset_roots": {"synthetic_strength": "synthetic_iqa"},   # one generated folder serves both
            "defaults": {"model": {"backbone": "tiny_clip", "pretrained": False},
                         "train": {"max_epochs": 1, "patience": 1, "batch_size": 16, "test_crops": 1, "quiet": True},
                         "lrs": [1e-3]},
            "experiments": {"iqa": {"tables": ["1"], "kind": "single", "datasets": ["synthetic_iqa"], "splits": 1},
                            "cross": {"tables": ["2"], "kind": "cross", "uses": "iqa",
                                      "pairs": [["synthetic_iqa", "synthetic_strength"]]}}}
    (tmp_path / "data" / "synthetic_iqa").mkdir(parents=True)
    generate_synthetic_iqa(tmp_path / "data" / "synthetic_iqa", n_references=8, size=224, seed=0)
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(plan))
    done = reproduce.reproduce(tmp_path / "out", tmp_path / "plan.yaml", log=lambda *a: None)
    tables = done.tables
    assert set(tables) == {"1", "2"} and not done.failures
    one = pd.read_csv(tmp_path / "out" / "tables" / "table_1.csv")
    mine = one[(one["status"] == "both") & (one["method"] == "PerceptCLIP (3M)")]
    assert set(mine["metric"]) == {"SRCC", "PLCC"} and not mine["comparable"].any()   # demo: never comparable
    runs = list((tmp_path / "out" / "runs").rglob("config.json"))
    assert len(runs) == 1                                                  # 1 dataset x 1 split x 1 lr
    assert (runs[0].parent / "eval" / "synthetic_strength_all_test" / "predictions.csv").is_file()
    ours = tables["2"][tables["2"]["status"] != "paper only"]
    print(ours.to_string())
    assert len(ours) > 0
    # re-running skips the finished run (the sweep is idempotent) and rewrites the same table
    written = (tmp_path / "out" / "tables" / "table_1.csv").read_bytes()
    reproduce.reproduce(tmp_path / "out", tmp_path / "plan.yaml", only=["iqa"], log=lambda *a: None)
    assert (tmp_path / "out" / "tables" / "table_1.csv").read_bytes() == written
    assert len(list((tmp_path / "out" / "runs").rglob("config.json"))) == 1
    with pytest.raises(ValueError, match="unknown experiments"):
        reproduce.reproduce(tmp_path / "out", tmp_path / "plan.yaml", only=["nope"])


def test_notebooks_command_names_an_unknown_notebook(capsys, tmp_path):
    from percept.interface.cli import main as cli_main
    assert cli_main(["notebooks", "42", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "no notebook '42'" in err and "00_quickstart" in err    # lists the notebooks there are


# ------------------------------------------------------------------------------------------ figures
def test_save_figure_writes_png_and_pdf_reproducibly(tmp_path):
    from matplotlib.figure import Figure
    figures.set_style()
    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])
    first = figures.save_figure(fig, "table1_test_demo", tmp_path / "a")
    second = figures.save_figure(fig, "table1_test_demo", tmp_path / "b")
    assert [p.suffix for p in first] == [".png", ".pdf"]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in second]   # no timestamps
    with pytest.raises(ValueError, match="plain file stem"):
        figures.save_figure(fig, "../escape", tmp_path)
    assert figures.figure_name("table1_iqa", "synthetic_iqa") == "table1_iqa_demo"
    assert figures.figure_name("table1_iqa", ["koniq10k"]) == "table1_iqa_koniq10k"


def test_the_task_notebooks_show_the_method_in_code():
    # the method in visible code before the engine: the model from the preset, its LoRA configuration and
    # parameter count, one batch, the task's loss, one optimiser step; notebook 06 measures one head by hand
    for name in ("01_iqa", "02_memorability", "03_emotion"):
        code = "\n".join(c.source for c in nbformat.read(nb.NOTEBOOKS_DIR / f"{name}.ipynb", as_version=4).cells
                         if c.cell_type == "code")
        for needed in ("percept.build_model(preset=preset", "peft_config", "parameter_counts()", "get_loss(task.loss)",
                       "loss.backward()", "optimizer.step()"):
            assert needed in code, f"{name} does not show {needed!r}"
        assert code.index("optimizer.step()") < code.index("study.train("), f"{name}: the step comes before the engine"
    code = "\n".join(c.source for c in nbformat.read(nb.NOTEBOOKS_DIR / "06_attention_heads.ipynb", as_version=4).cells
                     if c.cell_type == "code")
    assert code.index("model.uniform_cls_attention({layer: [head]})") < code.index("interpret.head_importance(")


@pytest.fixture(scope="module")
def site(executed, tmp_path_factory):
    """The study's site built from the executed notebooks, as `make docs` builds it (tools/build_docs.py)."""
    pytest.importorskip("mkdocs_jupyter", reason="the docs extra (mkdocs-jupyter) is not installed")
    import build_docs
    _, out, _ = executed
    root = tmp_path_factory.mktemp("site")
    staging = build_docs.stage(out, root / "src")
    return build_docs.build(staging, root / "site"), staging


def test_the_site_holds_every_notebook_page_with_its_figures(site):
    import build_docs
    built, staging = site
    assert build_docs.check_site(built, staging) == []
    iqa = (built / "notebooks" / "01_iqa.html").read_text(encoding="utf-8")
    assert "percept.build_model" in iqa and iqa.count('src="data:image/png;base64,') >= 3
    deviations = (built / "deviations.html").read_text(encoding="utf-8")
    assert "TULIP" in deviations and "Logistic fit" in deviations
    assert "fonts.googleapis.com" not in (built / "index.html").read_text(encoding="utf-8")   # nothing fetched


def test_the_site_check_names_an_unclosed_code_block_and_a_fetched_script(site, tmp_path):
    import build_docs
    built, staging = site
    broken = tmp_path / "src"
    shutil.copytree(staging, broken)
    (broken / "usage.md").write_text("# Using\n\n```bash\nmake demo\n\n## Next\n", encoding="utf-8")
    page = tmp_path / "site"
    shutil.copytree(built, page)
    (page / "prior.html").write_text('<script src="https://cdn.example.org/x.js"></script>', encoding="utf-8")
    problems = build_docs.check_site(page, broken)
    assert any("usage.md: a code block is not closed" in p for p in problems), problems
    assert any("prior.html: loads https://cdn.example.org/x.js" in p for p in problems), problems


def test_a_missing_executed_notebook_is_named(tmp_path):
    import build_docs
    with pytest.raises(build_docs.DocsError, match="00_quickstart.ipynb: no executed notebook; run `make demo`"):
        build_docs.stage(tmp_path, tmp_path / "src")


def test_the_iqa_page_photographs_in_headless_chromium(site, tmp_path):
    import build_docs
    if build_docs.chromium() is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium): the README's screenshot is not retaken")
    built, _ = site
    png = build_docs.screenshot(built / build_docs.SCREENSHOT_PAGE, tmp_path / "iqa.png", height=900)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
