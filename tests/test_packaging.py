"""percept works when pip-installed, not only from a git checkout: a wheel built from this tree,
installed into a throw-away folder outside the checkout, finds its package data (pinned splits, dataset cards,
the paper's numbers, the demo prior's weights) through importlib.resources."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

CHECK = r"""
import json, sys
from pathlib import Path
import percept
from percept.model import backbones
from percept.data.cards import CARDS_DIR, get_card, render_card_markdown
from percept.data.pinned import load_pinned_splits
from percept.study.paper import paper_table

splits = load_pinned_splits("koniq10k")          # verified against its sidecar (checksum, counts)
table1 = paper_table("1")
card = (CARDS_DIR / "koniq10k.md").read_text()
spec = backbones.get_spec("tiny_clip_prior")
print(json.dumps({
    "percept": percept.__file__, "cards": str(CARDS_DIR), "n_images": len(splits), "columns": list(splits.columns),
    "koniq_srcc": float(table1[(table1.method == "PerceptCLIP (3M)") & (table1.test_dataset == "KonIQ-10k")
                               & (table1.metric == "SRCC")].value.iloc[0]),
    "card_matches": card == render_card_markdown(get_card("koniq10k")),
    "prior": str(backbones.shipped_weights_path(spec)),
}))
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel of this tree installed with pip into a fresh virtual environment outside the checkout. Its
    dependencies are borrowed from the test's own environment through a ``.pth`` line (a plain path: the
    ``.pth`` files there, among them the editable install of this checkout, are not run), so that ``percept``
    itself can only come from the wheel. Returns (the venv's bin folder, the wheel, the environment to run in)."""
    import sysconfig
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (the dev extra installs it)")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"   # a copy, so that the build leaves no build/ or egg-info in the checkout; links kept, as
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")   # a clone has them
    shutil.copytree(REPO / "percept", source / "percept", ignore=ignore, symlinks=True)
    shutil.copytree(REPO / "notebooks", source / "notebooks", ignore=ignore)   # the source: package data by a link
    for name in ("pyproject.toml", "README.md", "LICENSE", "CITATION.cff"):
        shutil.copy2(REPO / name, source / name)
    wheels, venv = work / "dist", work / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
                                  str(wheels), str(source)], capture_output=True, text=True, cwd=work)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stderr[-3000:]}"
    found = sorted(wheels.glob("perceptclip-*.whl"))
    assert len(found) == 1, f"expected one perceptclip wheel in {wheels}, found {found}"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run(pip + ["--python", str(python), "install", "--no-deps", "--no-index", "-q",
                                      str(found[0])], capture_output=True, text=True, cwd=work)
    assert installed.returncode == 0, f"pip install of the wheel failed:\n{installed.stderr[-3000:]}"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "_borrowed_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PERCEPT_HOME")}
    env["PERCEPT_HOME"] = str(work / "home")   # the workspace of an installed percept; never the checkout's outputs/
    return venv / "bin", found[0], env


def test_installed_wheel_finds_its_package_data_outside_the_checkout(installed):
    target, wheel, env = installed
    out = subprocess.run([str(target / "python"), "-c", CHECK], capture_output=True, text=True, cwd=target.parent,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    venv = target.parent
    assert Path(found["percept"]).is_relative_to(venv), f"imported the checkout, not the wheel: {found}"
    assert Path(found["cards"]).is_relative_to(venv) and Path(found["prior"]).is_relative_to(venv)
    assert found["n_images"] == 10_073 and found["columns"][:2] == ["image", "split1"]
    assert found["koniq_srcc"] == pytest.approx(0.945)   # Table 1, PerceptCLIP on KonIQ-10k
    assert found["card_matches"]


def test_wheel_holds_no_test_or_dataset_files(installed):
    import zipfile
    _, wheel, _ = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "percept/core/resources/data_manifests/splits/koniq10k.csv.json" in names
    assert not [n for n in names if n.startswith("tests/") or n.endswith((".jpg", ".png", ".bmp", ".mat"))]


def test_the_distribution_is_perceptclip_with_its_licence_citation_and_version(installed):
    """`pip install perceptclip` (the name `percept` on the index is someone else's), import and command `percept`;
    the MIT licence and the citation file travel in the wheel's metadata; `percept --version` says the one version."""
    import zipfile

    import yaml

    import percept
    target, wheel, env = installed
    archive = zipfile.ZipFile(wheel)
    info = f"perceptclip-{percept.__version__}.dist-info/"
    metadata = archive.read(info + "METADATA").decode()
    assert "\nName: perceptclip\n" in metadata and f"\nVersion: {percept.__version__}\n" in metadata
    assert "License-Expression: MIT" in metadata
    assert {info + "licenses/LICENSE", info + "licenses/CITATION.cff"} <= set(archive.namelist())
    assert archive.read(info + "licenses/LICENSE").startswith(b"MIT License")
    citation = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert citation["version"] == percept.__version__ and citation["license"] == "MIT"
    assert citation["preferred-citation"]["title"].startswith("Don't Judge Before You CLIP")
    out = subprocess.run([str(target / "percept"), "--version"], capture_output=True, text=True,
                         cwd=target.parent, env=env)
    assert out.returncode == 0 and out.stdout.strip() == f"percept {percept.__version__} (perceptclip)"


def test_the_installed_package_carries_the_papers_plan(installed):
    """`percept reproduce --dry-run` outside the checkout reads the plan shipped in the wheel (the checkout's
    reproduce.yaml is a link to it)."""
    import zipfile
    target, wheel, env = installed
    assert "percept/core/resources/reproduce.yaml" in zipfile.ZipFile(wheel).namelist()
    assert (REPO / "reproduce.yaml").resolve() == (REPO / "percept" / "core" / "resources" / "reproduce.yaml").resolve()
    out = subprocess.run([str(target / "percept"), "reproduce", "--dry-run"], capture_output=True, text=True,
                         cwd=target.parent, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "total: 1472 runs" in out.stdout


def test_every_command_works_from_the_wheel_outside_the_checkout(installed, tmp_path):
    """The installed commands need nothing of the checkout: the paper's plan runs on fixture datasets, a notebook
    (shipped in the wheel) runs in a kernel that imports the wheel's percept and trains a fresh demo run, which
    then scores an image; what they make goes to --out or the workspace ($PERCEPT_HOME), never the checkout."""
    import zipfile
    target, wheel, env = installed
    shipped = [n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("percept/core/resources/notebooks/")]
    assert sorted(Path(n).name for n in shipped if n.endswith(".ipynb")) == \
        sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))

    def percept(*args):
        done = subprocess.run([str(target / "percept"), *map(str, args)], capture_output=True, text=True,
                              cwd=tmp_path, env=env, timeout=600)
        assert done.returncode == 0, f"percept {' '.join(map(str, args))}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
        return done.stdout

    out = percept("reproduce", "--smoke", "--only", "table1_iqa")
    assert "table 1:" in out and (Path(env["PERCEPT_HOME"]) / "reproduce_smoke" / "tables" / "table_1.csv").is_file()
    env = {**env, "PERCEPT_DEMO_REFERENCES": "8", "PERCEPT_CPU_THREADS": "2"}   # the smallest demo set
    out = percept("notebooks", "00", "--out", tmp_path / "nb", "-p", 'overrides={"max_epochs": 1, "test_crops": 1}')
    assert "1 notebooks, 1 ok" in out
    executed = (tmp_path / "nb" / "00_quickstart.ipynb").read_text()
    assert str(target.parent / "lib") in executed and str(REPO) not in executed   # the kernel imported the wheel
    assert list((tmp_path / "nb" / "figures").glob("*.png"))                         # not the checkout's figures/
    run = next((tmp_path / "nb" / "runs").rglob("best.safetensors")).parent
    image = next((tmp_path / "nb" / "data").rglob("*.png"))
    table = percept("predict", image, "--model", run, "--csv", "--quiet")
    assert table.splitlines()[0].startswith("image,score") and len(table.splitlines()) == 2
    percept("notebooks", "--copy", "--out", tmp_path / "copies")
    assert len(list((tmp_path / "copies").glob("*.ipynb"))) == len(shipped) - 1           # all but the README
    bare = {**{k: v for k, v in env.items() if k != "PERCEPT_HOME"}, "HOME": str(tmp_path / "home")}
    where = subprocess.run([str(target / "python"), "-c", "from percept.core.resources import checkout_root, workspace; "
                            "print(checkout_root(), workspace())"], capture_output=True, text=True, cwd=tmp_path,
                           env=bare)
    assert where.stdout.split() == ["None", str(tmp_path / "home" / "percept")]      # installed: ~/percept
    no_runs = subprocess.run([str(target / "python"), "-c", "from percept.interface.app_models import demo_runs; demo_runs()"],
                             capture_output=True, text=True, cwd=tmp_path, env=env)
    assert "percept notebooks 01 02 03" in no_runs.stderr and "make" not in no_runs.stderr.splitlines()[-1]


def test_a_checkout_is_found_and_its_outputs_folder_is_the_workspace(monkeypatch):
    """From a checkout, what commands make without --out goes to its outputs/ (make demo's runs are where
    `percept app` looks) and figures to its figures/; $PERCEPT_HOME wins over both."""
    from percept.core.resources import checkout_root, workspace
    from percept.interface import notebooks as nb
    monkeypatch.delenv("PERCEPT_HOME", raising=False)
    assert checkout_root() == REPO and workspace() == REPO / "outputs"
    assert nb.default_out() == REPO / "outputs" / "notebooks" and nb.CHECKOUT == REPO
    monkeypatch.setenv("PERCEPT_HOME", "/somewhere/else")
    assert workspace() == Path("/somewhere/else")
