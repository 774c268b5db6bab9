"""percept works when pip-installed, not only from a git checkout (issue 14): a wheel built from this tree,
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
from percept import backbones
from percept.data.cards import CARDS_DIR, get_card, render_card_markdown
from percept.data.pinned import load_pinned_splits
from percept.paper import paper_table

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
    """A wheel of this tree installed with pip into a folder outside the checkout (no dependencies: the
    test's own environment provides them)."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools (the dev extra installs it)")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"   # a copy, so that the build leaves no build/ or egg-info in the checkout
    shutil.copytree(REPO / "percept", source / "percept",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=False)
    for name in ("pyproject.toml", "README.md", "LICENSE", "CITATION.cff"):
        shutil.copy2(REPO / name, source / name)
    wheels, target = work / "dist", work / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    built = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
                                  str(wheels), str(source)], capture_output=True, text=True, cwd=work)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stderr[-3000:]}"
    found = sorted(wheels.glob("perceptclip-*.whl"))
    assert len(found) == 1, f"expected one perceptclip wheel in {wheels}, found {found}"
    installed = subprocess.run(pip + ["install", "--no-deps", "--no-index", "-q", "--target", str(target),
                                      str(found[0])], capture_output=True, text=True, cwd=work)
    assert installed.returncode == 0, f"pip install of the wheel failed:\n{installed.stderr[-3000:]}"
    return target, found[0]


def test_installed_wheel_finds_its_package_data_outside_the_checkout(installed):
    target, wheel = installed
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, cwd=target.parent, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(found["percept"]).is_relative_to(target), f"imported the checkout, not the wheel: {found}"
    assert Path(found["cards"]).is_relative_to(target) and Path(found["prior"]).is_relative_to(target)
    assert found["n_images"] == 10_073 and found["columns"][:2] == ["image", "split1"]
    assert found["koniq_srcc"] == pytest.approx(0.945)   # Table 1, PerceptCLIP on KonIQ-10k
    assert found["card_matches"]


def test_wheel_holds_no_test_or_dataset_files(installed):
    import zipfile
    _, wheel = installed
    names = zipfile.ZipFile(wheel).namelist()
    assert "percept/resources/data_manifests/splits/koniq10k.csv.json" in names
    assert not [n for n in names if n.startswith("tests/") or n.endswith((".jpg", ".png", ".bmp", ".mat"))]


def test_the_distribution_is_perceptclip_with_its_licence_citation_and_version(installed):
    """`pip install perceptclip` (the name `percept` on the index is someone else's), import and command `percept`;
    the MIT licence and the citation file travel in the wheel's metadata; `percept --version` says the one version."""
    import zipfile
    import yaml
    import percept
    target, wheel = installed
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
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-m", "percept", "--version"], capture_output=True, text=True,
                         cwd=target.parent, env=env)
    assert out.returncode == 0 and out.stdout.strip() == f"percept {percept.__version__} (perceptclip)"


def test_the_installed_package_carries_the_papers_plan(installed):
    """`percept reproduce --dry-run` outside the checkout reads the plan shipped in the wheel (the checkout's
    reproduce.yaml is a link to it)."""
    import zipfile
    target, wheel = installed
    assert "percept/resources/reproduce.yaml" in zipfile.ZipFile(wheel).namelist()
    assert (REPO / "reproduce.yaml").resolve() == (REPO / "percept" / "resources" / "reproduce.yaml").resolve()
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-m", "percept", "reproduce", "--dry-run"], capture_output=True, text=True,
                         cwd=target.parent, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "total: 1472 runs" in out.stdout
