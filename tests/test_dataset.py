"""ManifestDataset (split selection, replicas, labels, errors, worker-independent IQA test crops) and the image cache."""
import os

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from percept.core.images import load_rgb
from percept.data.cache import ImageCache, StaleCacheError
from percept.data.cards import CARDS
from percept.data.dataset import LODA_IQA_PRESETS, ManifestDataset
from percept.data.preprocessing import build_transform, deterministic_resize

SIZES = [(300, 400), (400, 300), (100, 150), (256, 256), (240, 500), (500, 240)]   # (height, width)


def write_image(path, height, width, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)   # smooth-ish content
    Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR).save(path, quality=90)


@pytest.fixture
def tiny(tmp_path):
    """Six generated JPEGs under tmp_path/images and a manifest with two splits."""
    root = tmp_path / "images"
    names = [f"sub{i % 2}/img{i}.jpg" for i in range(len(SIZES))]
    for i, (name, (h, w)) in enumerate(zip(names, SIZES)):
        write_image(root / name, h, w, seed=i)
    manifest = pd.DataFrame({
        "image": names,
        "quality": np.linspace(1.0, 5.0, len(names)),
        "memorability": np.linspace(0.4, 0.9, len(names)),
        "label": [0, 1, 2, 3, 4, 5],
        "split1": ["train", "train", "train", "val", "test", "test"],
        "split2": ["test", "test", "train", "train", "train", ""],
    })
    return root, manifest


def test_split_selection_counts_and_rows(tiny):
    root, manifest = tiny
    counts = {part: len(ManifestDataset(manifest, root, 1, part, task="iqa")) for part in ("train", "val", "test")}
    assert counts == {"train": 3, "val": 1, "test": 2}
    ds = ManifestDataset(manifest, root, 2, "train", task="memorability")
    assert [ds[i]["index"] for i in range(len(ds))] == [2, 3, 4]
    assert ds[0]["id"] == "sub0/img2.jpg"
    assert len(ManifestDataset(manifest, root, None, task="memorability")) == 6


def test_replicas_repeat_rows(tiny):
    root, manifest = tiny
    ds = ManifestDataset(manifest, root, 1, "train", task="iqa", replicas=4)
    assert len(ds) == 12 and ds.n_rows == 3 and len(ds.labels) == 3
    assert [ds[i]["index"] for i in range(12)] == [0, 1, 2] * 4
    item = ds[5]
    assert item["image"].shape == (3, 224, 224) and item["id"] == "sub0/img2.jpg"
    with pytest.raises(IndexError):
        ds[12]
    with pytest.raises(ValueError, match="replicas"):
        ManifestDataset(manifest, root, task="iqa", replicas=0)


def test_label_dtypes(tiny):
    root, manifest = tiny
    iqa = ManifestDataset(manifest, root, 1, "train", task="iqa")
    assert iqa.labels.dtype == np.float32 and np.allclose(iqa.labels, [1.0, 1.8, 2.6])
    assert iqa[1]["label"].dtype == torch.float32 and iqa[1]["label"].shape == ()
    emo = ManifestDataset(manifest, root, 1, "test", task="emotion")
    assert emo.labels.dtype == np.int64 and list(emo.labels) == [4, 5] and emo[0]["label"].dtype == torch.int64
    mem = ManifestDataset(manifest, root, 1, "test", task="memorability")
    assert mem.labels.dtype == np.float32 and mem[0]["image"].shape == (3, 224, 224)
    bad = manifest.assign(label=[0, 1, 2.5, 3, 4, 5])
    with pytest.raises(ValueError, match="integer class"):
        ManifestDataset(bad, root, 1, "train", task="emotion")


def test_manifest_csv_path(tiny, tmp_path):
    root, manifest = tiny
    manifest.to_csv(tmp_path / "m.csv", index=False)
    ds = ManifestDataset(tmp_path / "m.csv", root, 2, "train", task="iqa")
    assert len(ds) == 3 and ds.labels.dtype == np.float32


def test_bad_split_and_part_names(tiny):
    root, manifest = tiny
    with pytest.raises(ValueError, match=r"split7.*split1, split2"):
        ManifestDataset(manifest, root, 7, task="iqa")
    with pytest.raises(ValueError, match="split must be a split number"):
        ManifestDataset(manifest, root, "split1", task="iqa")     # one meaning of `split`: its number
    with pytest.raises(ValueError, match=r"'validation'.*test, train, val"):
        ManifestDataset(manifest, root, 1, "validation", task="iqa")
    with pytest.raises(ValueError, match="iqa, memorability, emotion"):
        ManifestDataset(manifest, root, task="quality")
    with pytest.raises(ValueError, match="no column 'mos'"):
        ManifestDataset(manifest, root, task="iqa", label_column="mos")


def test_missing_and_corrupt_files(tiny):
    root, manifest = tiny
    (root / "sub1/img1.jpg").unlink()
    ds = ManifestDataset(manifest, root, 1, "train", task="iqa")
    with pytest.raises(FileNotFoundError, match=r"sub1/img1\.jpg.*manifest row 1"):
        ds[1]
    path = root / "sub0/img0.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="img0.jpg"):
        ds[0]


def collect(ds, **loader_kwargs):
    out = {}
    for batch in DataLoader(ds, **loader_kwargs):
        for key, image in zip(batch["id"], batch["image"]):
            out[key] = image
    return out


def test_iqa_test_crops_independent_of_workers_and_order(tiny):
    root, manifest = tiny
    ds = ManifestDataset(manifest, root, None, "test", task="iqa")
    assert ds[2]["image"].shape == (15, 3, 224, 224)                      # the 100x150 image is scaled up
    torch.manual_seed(0)
    serial = collect(ds, batch_size=1, num_workers=0)
    torch.manual_seed(1)
    parallel = collect(ds, batch_size=2, num_workers=2, shuffle=True)
    assert serial.keys() == parallel.keys() and len(serial) == 6
    assert all(torch.equal(serial[k], parallel[k]) for k in serial)
    assert not torch.equal(serial["sub0/img4.jpg"][0], ds[4]["image"][1])  # crops within an image differ


# ---- image cache ------------------------------------------------------------------------------------------
CASES = [("memorability", False, None), ("emotion", False, None), ("iqa", False, (240, 320)),
         ("iqa", False, None), ("iqa", False, 384)]


@pytest.mark.parametrize("task,train,resize", CASES)
def test_cached_pixels_give_identical_tensors(tiny, tmp_path, task, train, resize):
    root, manifest = tiny
    transform = build_transform(task, train, resize)
    cache = ImageCache.build(root, manifest["image"], transform.pre_resize, tmp_path / "cache", num_workers=2)
    assert len(cache) == 6
    for name in manifest["image"]:
        assert cache.get_array(name).dtype == np.uint8
        direct = load_rgb(root / name)
        assert np.array_equal(cache.get_array(name), np.asarray(transform.pre_resize(direct)))
        assert torch.equal(transform(cache.get(name)), transform(direct))


def test_dataset_with_cache_matches_files(tiny, tmp_path):
    root, manifest = tiny
    plain = ManifestDataset(manifest, root, 2, "test", task="iqa", transform=build_transform("iqa", False, 384))
    cache = ImageCache.build(root, manifest["image"], plain.transform.pre_resize, tmp_path / "cache")
    cached = ManifestDataset(manifest, root, 2, "test", task="iqa", transform=plain.transform, cache=cache)
    for i in range(len(plain)):
        assert torch.equal(plain[i]["image"], cached[i]["image"])
    assert collect(cached, num_workers=2, batch_size=1).keys() == {"sub0/img0.jpg", "sub1/img1.jpg"}
    with pytest.raises(ValueError, match="resized by"):
        ManifestDataset(manifest, root, task="memorability", cache=cache)


def test_cache_reused_and_parameters_kept_apart(tiny, tmp_path, monkeypatch):
    root, manifest = tiny
    spec = deterministic_resize("memorability", train=True)
    first = ImageCache.build(root, manifest["image"], spec, tmp_path / "cache")
    decoded = []
    import percept.data.cache as cache_module
    monkeypatch.setattr(cache_module, "load_rgb", lambda p: decoded.append(p) or load_rgb(p))
    again = ImageCache.build(root, manifest["image"], spec, tmp_path / "cache")
    assert decoded == [] and again.data_path == first.data_path
    other = ImageCache.build(root, manifest["image"][:2], deterministic_resize("iqa", True, 384), tmp_path / "cache")
    assert other.index_path != first.index_path and len(decoded) == 2
    assert ImageCache.open(root, spec, tmp_path / "cache").get_array("sub0/img0.jpg").shape == (224, 298, 3)
    with pytest.raises(FileNotFoundError, match="no image cache"):
        ImageCache.open(root, deterministic_resize("iqa", True, (100, 100)), tmp_path / "cache")


def test_stale_cache_detected_and_rebuilt(tiny, tmp_path):
    root, manifest = tiny
    spec = deterministic_resize("emotion", train=False)
    cache = ImageCache.build(root, manifest["image"], spec, tmp_path / "cache")
    old_pixels = np.array(cache.get_array("sub1/img3.jpg"))
    changed = root / "sub1/img3.jpg"
    write_image(changed, 400, 300, seed=99)                               # same size, new content
    st = changed.stat()
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert cache.stale() == ["sub1/img3.jpg"]
    with pytest.raises(StaleCacheError, match="sub1/img3.jpg"):
        ImageCache.open(root, spec, tmp_path / "cache")
    with pytest.raises(StaleCacheError, match="sub1/img3.jpg"):
        ImageCache.build(root, manifest["image"], spec, tmp_path / "cache", on_stale="error")
    rebuilt = ImageCache.build(root, manifest["image"], spec, tmp_path / "cache")
    assert rebuilt.stale() == [] and not np.array_equal(rebuilt.get_array("sub1/img3.jpg"), old_pixels)
    assert np.array_equal(rebuilt.get_array("sub1/img3.jpg"), np.asarray(spec(load_rgb(changed))))
    assert len(list((tmp_path / "cache").glob("*.bin"))) == 1             # the superseded data file is gone


def test_loda_presets_take_replicas_from_the_cards():
    iqa = {name: card for name, card in CARDS.items() if card.task == "iqa"}
    assert set(LODA_IQA_PRESETS) == set(iqa)
    for name, preset in LODA_IQA_PRESETS.items():
        assert preset["replicas"] == iqa[name].train_replicas and set(preset) == {"resize", "interpolation",
                                                                                "replicas"}
    assert LODA_IQA_PRESETS["tid2013"]["replicas"] == 10 and LODA_IQA_PRESETS["koniq10k"]["resize"] == (384, 512)
