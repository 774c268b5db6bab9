"""The demo's image-text prior: generated scenes and captions, the pre-training, the shipped
weights and how they load (through timm's pretrained configuration with a local file)."""
import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import percept
from percept.engine.prior import scenes
from percept.engine.prior.pretrain import WEIGHTS_FILE, PretrainConfig, pretrain
from percept.engine.prior.text import Tokenizer
from percept.model import backbones


def test_captions_describe_the_drawn_parameters_and_are_deterministic():
    tokenizer = Tokenizer()
    for i in range(300):
        text, scene = scenes.scene_caption(0, i)
        image, again, same = scenes.make_pair(0, i, size=64) if i < 5 else (None, text, scene)
        assert (again, same) == (text, scene)
        assert ("very blurry" in text) == (scene.blur >= 3.0)
        assert ("crisp, clean" in text) == (not (scene.blur or scene.noise or scene.jpeg or scene.palette))
        assert ("dark" in text) == (scene.brightness < 1) and (f" {scene.colour} " in text)
        tokenizer([text])                                              # every caption is in the vocabulary
    a, b = scenes.make_pair(0, 7, size=64)[0], scenes.make_pair(0, 7, size=64)[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))
    # the variants of a scene share its content and differ in appearance (the pre-training's hard negatives)
    variants = [scenes.scene_caption(0, 7, v)[1] for v in range(4)]
    assert len({(v.shape, v.colour, v.background, v.count) for v in variants}) == 1
    assert len({(v.blur, v.noise, v.jpeg, v.palette, v.brightness, v.saturation) for v in variants}) == 4
    with pytest.raises(ValueError, match="not in the prior's vocabulary"):
        tokenizer(["a glossy photo"])
    # every drawn strength lies in its DEGRADATION_RANGES entry and the draws span it (the ceiling reads these
    # ranges): blur and noise uniform on [weakest, strongest], JPEG quality and palette size integers from
    # [strongest, weakest); the strength ladders' word ranges lie inside them
    drawn = [scenes.scene_caption(0, i)[1] for i in range(2000)]
    for name, (weakest, strongest) in scenes.DEGRADATION_RANGES.items():
        values = [getattr(scene, name) for scene in drawn if getattr(scene, name)]
        assert len(values) > 300
        if isinstance(weakest, int):
            assert all(type(v) is int for v in values)
            assert (min(values), max(values)) == (strongest, weakest - 1)
        else:
            assert all(type(v) is float for v in values)
            low, high = weakest, strongest
            assert low <= min(values) < low + 0.02 * (high - low) and high - 0.02 * (high - low) < max(values) <= high
        ladder = [bound for word in scenes.LADDERS[name] for bound in word]
        assert min(weakest, strongest) <= min(ladder) and max(ladder) <= max(weakest, strongest)


def test_strength_ladders_differ_only_in_the_strength_of_one_degradation():
    from percept.engine.prior.pretrain import ScenePool
    kinds = set()
    for index in range(24):
        content = scenes.draw_scene_content(0, index, size=48)
        rungs = [scenes.make_ladder_rung(content, 0, index, 5, r, variant=20 + r) for r in range(4)]
        params = [scene for _, _, scene in rungs]
        assert len({(p.shape, p.colour, p.background, p.count) for p in params}) == 1       # one content
        assert all(p.brightness == 1 and p.saturation == 1 for p in params)
        assert "crisp, clean" in rungs[0][1] and not (params[0].blur or params[0].noise or params[0].jpeg
                                                      or params[0].palette)
        strengths = np.array([[p.blur, p.noise, -p.jpeg, -p.palette] for p in params[1:]])
        kind = int(np.flatnonzero(strengths[0])[0])
        assert np.count_nonzero(strengths, axis=1).tolist() == [1, 1, 1]                  # one degradation
        assert np.all(np.diff(strengths[:, kind]) > 0)                                   # stronger at every rung
        words = [scenes.appearance_words(p) for p in params]
        assert len({tuple(w) for w in words}) == 4 and all(len(w) == 1 for w in words)   # one word each, distinct
        kinds.add(kind)
        assert rungs[1][1] == scenes.make_ladder_rung(content, 0, index, 5, 1, variant=21)[1]   # deterministic
    assert kinds == {0, 1, 2, 3}
    pool = ScenePool(0, 4, 48)
    _, plain, _ = pool.batch([0, 1], step=5, per_scene=4)
    _, mixed, drawn = pool.batch([0, 1], step=5, per_scene=4, ladders=2)
    assert mixed[0::2] == plain[0::2] and mixed[1::2] != plain[1::2]     # scenes at odd positions climb a ladder
    assert "crisp, clean" in mixed[1] and not (drawn[1].blur or drawn[1].noise or drawn[1].jpeg or drawn[1].palette)
    with pytest.raises(ValueError, match="ladders have 4 rungs"):
        pool.batch([0, 1], step=5, per_scene=2, ladders=1)


def test_prior_images_are_disjoint_from_the_demo_sets(tmp_path):
    from percept.data.synthetic import make_reference_image
    # different generators and RNG streams: the demo's are seeded (seed, index), the scenes' (namespace, seed, index)
    assert scenes.SCENE_NAMESPACE not in range(0, 1000)
    demo = {hashlib.sha256(np.asarray(make_reference_image(i, size=224).crop((16, 0, 240, 224))).tobytes()).digest()
            for i in range(12)}
    size = PretrainConfig().image_size + PretrainConfig().crop_margin          # the pre-training draws this size
    prior = [np.asarray(scenes.make_pair(0, i, size=size)[0])[:224, :224] for i in range(40)]
    assert all(p.shape == (224, 224, 3) for p in prior)                        # compared at the demo crops' size
    assert not demo & {hashlib.sha256(p.tobytes()).digest() for p in prior}


def test_pretraining_crops_scenes_at_every_phase_of_the_jpeg_block_grid():
    """With ``crop_margin`` (not the shipped run's setting), the pre-training shows JPEG blocks at every offset
    from the tower's 32-pixel patch grid, as the demo's crops do, not only aligned with it (the shipped
    prior, which only saw aligned blocks, ranks misaligned JPEG levels much worse)."""
    from percept.engine.prior.pretrain import random_crops
    images = torch.arange(2 * 3 * 40 * 44).view(2, 3, 40, 44).repeat(200, 1, 1, 1)
    crops = random_crops(images, 32, torch.Generator().manual_seed(0))
    assert crops.shape == (400, 3, 32, 32)
    ys, xs = (crops[:, 0, 0, 0] % (40 * 44)) // 44, crops[:, 0, 0, 0] % 44         # where each crop starts
    for crop, image, y, x in zip(crops, images, ys.tolist(), xs.tolist()):
        assert torch.equal(crop, image[:, y:y + 32, x:x + 32])                      # a window of its own image
    assert set(ys.tolist()) == set(range(9)) and set(xs.tolist()) == set(range(13))  # every offset occurs
    again = random_crops(images, 32, torch.Generator().manual_seed(0))
    assert torch.equal(again, crops)                                                # seeded
    with pytest.raises(ValueError, match="smaller than the crop size"):
        random_crops(images, 48, torch.Generator())


def test_appearance_word_targets_follow_the_drawn_parameters():
    """The caption-word prediction's labels, read from the caption text, checked against the scene's parameters
    with the word thresholds of scenes.appearance_words: ordinal within a degradation ("blurry" marks "soft")."""
    from percept.engine.prior.text import APPEARANCE_LABELS, appearance_targets
    for i in range(300):
        text, p = scenes.scene_caption(0, i, variant=i % 7)
        labels = dict(zip(APPEARANCE_LABELS, appearance_targets([text])[0].tolist()))
        expected = {"slightly soft": p.blur > 0, "soft": p.blur >= 1.0, "blurry": p.blur >= 1.8,
                    "very blurry": p.blur >= 3,
                    "slightly grainy": p.noise > 0, "grainy": p.noise >= 12, "very noisy": p.noise >= 30,
                    "compressed": p.jpeg > 0, "blocky": 0 < p.jpeg <= 30, "heavily compressed": 0 < p.jpeg <= 12,
                    "slightly banded": p.palette > 0, "posterized": 0 < p.palette <= 20,
                    "heavily posterized": 0 < p.palette <= 8, "dark": p.brightness < 1, "bright": p.brightness > 1,
                    "dull": p.saturation < 1, "vivid": p.saturation > 1,
                    "crisp, clean": not (p.blur or p.noise or p.jpeg or p.palette)}
        assert labels == {k: float(v) for k, v in expected.items()}, text
    with pytest.raises(ValueError, match="'glossy' is not one of the appearance words"):
        appearance_targets(["a glossy photo of a red ring on a grey background"])


@pytest.fixture(scope="module")
def small_prior(tmp_path_factory):
    """A few steps of the pre-training on a handful of scenes, written as the shipped files would be."""
    out = tmp_path_factory.mktemp("prior")
    config = PretrainConfig(n_scenes=6, steps=4, batch_size=4, warmup=2, threads=1)
    record = pretrain(config, out, log=lambda *a: None)
    return out, config, record


def test_pretraining_is_deterministic_and_replays_its_recorded_curve(small_prior):
    out, config, record = small_prior
    saved = json.loads((out / WEIGHTS_FILE).with_suffix(".json").read_text())
    assert saved["losses"] == record["losses"] and len(saved["losses"]) == 4
    assert saved["sha256"] == hashlib.sha256((out / WEIGHTS_FILE).read_bytes()).hexdigest()
    replay = pretrain(PretrainConfig(**saved["config"]), out=None, log=lambda *a: None, stop_after=2)
    assert replay["losses"] == saved["losses"][:2]                     # bit for bit on the same machine
    other = pretrain(PretrainConfig(**{**saved["config"], "seed": 1}), out=None, log=lambda *a: None, stop_after=2)
    assert other["losses"] != replay["losses"]
    cropped = pretrain(PretrainConfig(**{**saved["config"], "crop_margin": 8}), out=None, log=lambda *a: None,
                       stop_after=2)
    assert cropped["losses"] != replay["losses"]                       # the margin reaches the images
    words = pretrain(PretrainConfig(**{**saved["config"], "caption_loss": 0.5 + saved["config"]["caption_loss"]}),
                     out=None, log=lambda *a: None, stop_after=2)
    assert words["losses"] != replay["losses"]                         # the caption prediction reaches the loss


def test_saving_the_same_weights_twice_gives_the_same_bytes(small_prior, tmp_path):
    """The shipped file's SHA-256 is part of its record: the same weights must always give the same bytes
    (a safetensors header with several metadata keys is written in hash order, which varies between runs)."""
    from percept.engine.prior.pretrain import save
    _, _, record = small_prior
    hashes = {save(record["image_tower"], tmp_path / str(i), record)["sha256"] for i in range(12)}
    assert len(hashes) == 1


def test_prior_weights_load_through_timm_and_are_verified(small_prior, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import percept
    out, _, _ = small_prior
    spec = backbones.get_spec("tiny_clip_prior")
    target = tmp_path / WEIGHTS_FILE
    monkeypatch.setitem(backbones.BACKBONES, "tiny_clip_prior", dataclasses.replace(spec, shipped_weights=str(target)))
    with pytest.raises(backbones.PretrainedWeightsUnavailable, match=r"missing.*python -m percept.engine.prior.pretrain"):
        backbones.create_backbone("tiny_clip_prior", pretrained=True)
    shutil.copy(out / WEIGHTS_FILE, target)
    shutil.copy((out / WEIGHTS_FILE).with_suffix(".json"), target.with_suffix(".json"))
    model = percept.build_model(backbone="tiny_clip_prior", pretrained=True)   # timm's pretrained cfg, local file
    shipped = load_file(str(target))
    vit = model.vit
    assert torch.equal(vit.patch_embed.proj[0].weight, shipped["patch_embed.proj.0.weight"].float())
    q = vit.blocks[0].attn.q.weight
    assert torch.equal(q, shipped["blocks.0.attn.qkv.weight"].float()[:q.shape[0]])   # split q/k/v of the fused file
    assert torch.equal(vit.head.weight, shipped["head.weight"].float())               # the projection is kept
    counts = model.parameter_counts()
    assert 0 < counts["lora"] and counts["trainable"] < counts["total"]               # the paper's recipe: LoRA + head
    data = bytearray(target.read_bytes())
    data[-10] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(backbones.PretrainedWeightsUnavailable, match=r"do not match the SHA-256.*regenerate"):
        backbones.create_backbone("tiny_clip_prior", pretrained=True)
    target.with_suffix(".json").write_text("{ truncated")
    with pytest.raises(backbones.PretrainedWeightsUnavailable, match=r"unreadable.*python -m percept.engine.prior.pretrain"):
        backbones.create_backbone("tiny_clip_prior", pretrained=True)


def test_pretrain_command_writes_the_weights_and_a_linear_probe(tmp_path):
    from percept.engine.prior.pretrain import main
    assert main(["--out", str(tmp_path / "w"), "--n-scenes", "4", "--steps", "2", "--batch-size",
                 "4", "--warmup", "1", "--threads", "1", "--probe-data", str(tmp_path / "demo")]) == 0
    record = json.loads((tmp_path / "w" / WEIGHTS_FILE).with_suffix(".json").read_text())
    assert set(record["linear_probe_srcc"]) == {"prior", "random_init"}
    assert all(-1 <= v <= 1 for v in record["linear_probe_srcc"].values())
    assert record["config"]["steps"] == 2 and len(record["losses"]) == 2


# ------------------------------------------------------------------------------------------ the shipped prior
SHIPPED = Path(percept.__file__).resolve().parent / backbones.get_spec("tiny_clip_prior").shipped_weights


def test_shipped_weights_match_their_recorded_hash_and_config():
    record = json.loads(SHIPPED.with_suffix(".json").read_text())
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == record["sha256"]
    assert backbones.shipped_weights_path(backbones.get_spec("tiny_clip_prior")) == SHIPPED
    assert record["config"] == dataclasses.asdict(PretrainConfig())     # the script's defaults made the shipped file
    assert len(record["losses"]) == record["config"]["steps"]
    assert np.mean(record["losses"][-100:]) < 0.5 * np.mean(record["losses"][:100])   # the recorded run learned


def test_the_first_steps_of_the_shipped_pretraining_replay_its_recorded_curve():
    """Bit for bit on the machine type that made it (2 CPU threads, the recorded torch, the recorded CPU kernels);
    elsewhere within 1e-4: float summation order may differ between CPU kernels, which changes the last digits,
    not the curve. (The shipped record predates `cpu_capability`: a 2-thread replay on an AVX-512 machine with the
    same torch differs in the 7th digit, so the exact check waits for a record that names its kernels.)"""
    record = json.loads(SHIPPED.with_suffix(".json").read_text())
    replay = pretrain(PretrainConfig(**record["config"]), out=None, log=lambda *a: None, stop_after=3)
    np.testing.assert_allclose(replay["losses"], record["losses"][:3], rtol=1e-4, atol=1e-5)
    if replay["environment"] == record["environment"]:
        assert replay["losses"] == record["losses"][:3]


def test_the_ceiling_diagnostic_regresses_the_drawn_parameters(tmp_path, capsys):
    """tools/prior_ceiling.py (a diagnostic: the tower trained on the degradation parameters, not captions):
    its targets on hand-computed scenes, a short run that writes a tower in the prior's format, and a refusal to
    overwrite the shipped prior."""
    from prior_ceiling import (  # tools/ (conftest puts it on the path)
        main,
        parameter_targets,
        train_ceiling,
    )
    scene = scenes.Scene("circle", "red", "grey", 1, blur=0.6, noise=60.0, jpeg=0, palette=11, brightness=1.0,
                         saturation=1.0)
    expected = [1, 1, 0, 1, 0.2, 1.0, 0.0, 0.2 + 0.8 * np.log(40 / 11) / np.log(40 / 3)]
    np.testing.assert_allclose(parameter_targets(scene), expected, rtol=1e-12)
    record = train_ceiling(PretrainConfig(n_scenes=4, steps=2, batch_size=4, warmup=1, threads=1), tmp_path,
                           log=lambda *a: None)
    assert len(record["losses"]) == 2 and all(np.isfinite(record["losses"]))
    assert hashlib.sha256((tmp_path / WEIGHTS_FILE).read_bytes()).hexdigest() == record["sha256"]
    with pytest.raises(SystemExit):
        main(["--out", str(SHIPPED.parent)])
    assert "is the shipped prior's folder" in capsys.readouterr().err
