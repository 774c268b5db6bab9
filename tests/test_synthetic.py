"""Tests for the procedurally generated (non-human) synthetic IQA demo set."""
import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from percept.data import synthetic as syn
from percept.data.synthetic import (
    DISTORTIONS,
    LEVELS,
    MANIFEST_COLUMNS,
    distort,
    generate_synthetic_iqa,
    make_reference_image,
    synthetic_quality,
)


def _hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _f(img):
    return np.asarray(img, dtype=np.float64)


def _hf_fraction(img, cutoff=0.05):
    """Share of (Hann-windowed) spectral power above ``cutoff`` cycles/pixel.

    Windowing removes the wrap-around border edge; a plain mean |Laplacian| hits an
    8-bit rounding floor at the two strongest blur levels and is not strictly monotone.
    """
    g = _f(img.convert("L"))
    g = (g - g.mean()) * np.hanning(g.shape[0])[:, None] * np.hanning(g.shape[1])[None, :]
    power = np.abs(np.fft.fft2(g)) ** 2
    radius = np.hypot(np.fft.fftfreq(g.shape[0])[:, None], np.fft.fftfreq(g.shape[1])[None, :])
    return power[radius > cutoff].sum() / power.sum()


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    return root, generate_synthetic_iqa(root, n_references=3, size=64, seed=1)


def test_reference_images():
    a, b = make_reference_image(0, size=96), make_reference_image(1, size=96)
    assert a.mode == "RGB" and a.size == (128, 96)
    assert np.abs(_f(a) - _f(b)).mean() > 10  # different content
    assert np.array_equal(_f(a), _f(make_reference_image(0, size=96)))
    assert not np.array_equal(_f(a), _f(make_reference_image(0, size=96, seed=5)))


def test_manifest_counts_columns_and_files(small_set):
    root, df = small_set
    assert tuple(df.columns) == MANIFEST_COLUMNS
    assert len(df) == 3 * len(DISTORTIONS) * len(LEVELS)
    assert df["image"].is_unique and df["reference"].nunique() == 3
    assert set(df["level"]) == set(LEVELS)
    assert all(DISTORTIONS[i] == d for d, i in zip(df["distortion"], df["distortion_id"]))
    assert df.equals(df.sort_values(["reference", "distortion_id", "level"]).reset_index(drop=True))
    assert df.equals(pd.read_csv(root / "manifest.csv"))
    for rel in pd.concat([df["image"], df["reference"]]).unique():
        assert "\\" not in rel
        with Image.open(root / rel) as im:
            assert im.mode == "RGB" and im.size == (96, 64)
    expected = [synthetic_quality(lv, d) for lv, d in zip(df["level"], df["distortion"])]
    assert np.allclose(df["synthetic_quality"], expected)
    assert not list(root.rglob("*.tmp"))


def test_determinism_and_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_synthetic_iqa(a, n_references=2, size=48, seed=3)
    generate_synthetic_iqa(b, n_references=2, size=48, seed=3)
    generate_synthetic_iqa(c, n_references=2, size=48, seed=4)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert ha == hb
    images = [k for k in ha if k.endswith(".png")]
    assert ha["manifest.csv"] == hc["manifest.csv"]  # labels depend only on the design
    assert all(ha[k] != hc[k] for k in images)  # pixels depend on the seed


def test_distortions_monotone():
    for idx in range(3):
        ref = make_reference_image(idx, size=128, seed=2)
        out = {d: [distort(ref, d, lv, seed=9) for lv in LEVELS] for d in DISTORTIONS}
        for d in DISTORTIONS:
            assert all(o.mode == "RGB" and o.size == ref.size for o in out[d])
        hf = [_hf_fraction(o) for o in out["gaussian_blur"]]
        assert all(y < 0.9 * x for x, y in zip(hf, hf[1:])) and hf[-1] < 0.1 * hf[0], hf
        std = [(_f(o) - _f(ref)).std() for o in out["gaussian_noise"]]
        assert all(y > x for x, y in zip(std, std[1:])) and std[-1] > 5 * std[0], std
        mae = [np.abs(_f(o) - _f(ref)).mean() for o in out["jpeg"]]
        # JPEG error is only roughly monotone in quality; allow small inversions
        assert all(y > x - 0.25 for x, y in zip(mae, mae[1:])) and mae[-1] > 1.5 * mae[0], mae
        ncol = [len(np.unique(np.asarray(o).reshape(-1, 3), axis=0)) for o in out["color_quantization"]]
        assert all(y <= x for x, y in zip(ncol, ncol[1:])) and ncol[0] <= 64 and ncol[-1] <= 3, ncol


def test_noise_is_seeded():
    ref = make_reference_image(0, size=32)
    assert np.array_equal(_f(distort(ref, "gaussian_noise", 3, 1)), _f(distort(ref, "gaussian_noise", 3, 1)))
    assert not np.array_equal(_f(distort(ref, "gaussian_noise", 3, 1)), _f(distort(ref, "gaussian_noise", 3, 2)))


def test_synthetic_quality():
    for d in (None,) + DISTORTIONS:
        q = [synthetic_quality(lv, d) for lv in LEVELS]
        assert all(y < x for x, y in zip(q, q[1:])) and 1.0 <= min(q) and max(q) <= 5.0
    assert synthetic_quality(1) == 5.0
    assert len({synthetic_quality(3, d) for d in DISTORTIONS}) == len(DISTORTIONS)


@pytest.mark.parametrize("kwargs, match", [
    (dict(distortion="motion_blur", level=1), "unknown distortion.*gaussian_blur"),
    (dict(distortion="jpeg", level=0), "1..5"),
    (dict(distortion="jpeg", level=6), "1..5"),
])
def test_bad_distort_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        distort(make_reference_image(0, size=32), seed=0, **kwargs)


def test_bad_quality_level():
    with pytest.raises(ValueError, match="1..5"):
        synthetic_quality(0)
    with pytest.raises(ValueError, match="unknown distortion"):
        synthetic_quality(2, "blur")


def test_reuse_without_rewriting(tmp_path):
    df = generate_synthetic_iqa(tmp_path, n_references=2, size=32, seed=0)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    df2 = generate_synthetic_iqa(tmp_path, n_references=2, size=32, seed=0)
    assert df2.equals(df)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes


def test_param_mismatch_and_overwrite(tmp_path):
    generate_synthetic_iqa(tmp_path, n_references=2, size=32, seed=0)
    before = _hashes(tmp_path)
    with pytest.raises(ValueError, match="overwrite=True"):
        generate_synthetic_iqa(tmp_path, n_references=1, size=32, seed=0)
    with pytest.raises(ValueError, match="overwrite=True"):
        generate_synthetic_iqa(tmp_path, n_references=2, size=32, seed=1)
    assert _hashes(tmp_path) == before  # refused runs leave the set intact
    df = generate_synthetic_iqa(tmp_path, n_references=1, size=32, seed=0, overwrite=True)
    assert len(df) == len(DISTORTIONS) * len(LEVELS)
    assert len(list((tmp_path / "images").glob("*.png"))) == len(df)  # stale images removed
    assert len(list((tmp_path / "references").glob("*.png"))) == 1


def test_bad_generation_args(tmp_path):
    with pytest.raises(ValueError, match="n_references"):
        generate_synthetic_iqa(tmp_path, n_references=0)
    with pytest.raises(ValueError, match="size"):
        generate_synthetic_iqa(tmp_path, size=4)


def test_interrupted_run_leaves_no_manifest(tmp_path, monkeypatch):
    real, calls = syn.distort, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(syn, "distort", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_iqa(tmp_path, n_references=2, size=32)
    assert not (tmp_path / "manifest.csv").exists() and not list(tmp_path.rglob("*.tmp"))
    monkeypatch.setattr(syn, "distort", real)
    df = generate_synthetic_iqa(tmp_path, n_references=2, size=32)  # resumes cleanly
    assert len(df) == 2 * len(DISTORTIONS) * len(LEVELS)


def test_missing_image_triggers_regeneration(tmp_path):
    df = generate_synthetic_iqa(tmp_path, n_references=1, size=32)
    (tmp_path / df["image"][0]).unlink()
    generate_synthetic_iqa(tmp_path, n_references=1, size=32)
    assert (tmp_path / df["image"][0]).exists()


def test_interrupted_overwrite_invalidates_old_manifest(tmp_path, monkeypatch):
    generate_synthetic_iqa(tmp_path, n_references=1, size=32, seed=0)
    real = syn.distort
    monkeypatch.setattr(syn, "distort", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        generate_synthetic_iqa(tmp_path, n_references=1, size=32, seed=1, overwrite=True)
    assert not (tmp_path / "manifest.csv").exists()  # no stale manifest pointing at mixed images
    monkeypatch.setattr(syn, "distort", real)
    fresh = tmp_path.parent / "fresh"
    generate_synthetic_iqa(tmp_path, n_references=1, size=32, seed=0)
    generate_synthetic_iqa(fresh, n_references=1, size=32, seed=0)
    assert _hashes(tmp_path) == _hashes(fresh)


def test_manifest_write_is_atomic(tmp_path, monkeypatch):
    from percept.core import files
    real_replace = files.os.replace

    def failing_replace(src, dst):
        if str(dst).endswith("manifest.csv"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError):
        generate_synthetic_iqa(tmp_path, n_references=1, size=32)
    assert not (tmp_path / "manifest.csv").exists() and not list(tmp_path.rglob("*.tmp"))
    monkeypatch.undo()
    generate_synthetic_iqa(tmp_path, n_references=1, size=32)
    (tmp_path / "plain.txt").write_text("x")           # the permissions of a file written with open()
    plain = (tmp_path / "plain.txt").stat().st_mode
    assert {p.stat().st_mode for p in (tmp_path / "manifest.csv", *tmp_path.glob("images/*.png"))} == {plain}
