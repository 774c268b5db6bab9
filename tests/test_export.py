"""Sharing a run: hub save/load (adapter-sized, offline from a hub cache), export to the release's
layout loaded by an independently built transformers + peft model, merged plain-timm weights, the model card,
and `percept push` through a mocked HfApi."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from conftest import fake_hub_file, randomize_lora
from safetensors import safe_open

from percept.interface.cli import main
from percept.model.backbones import get_spec
from percept.model.official import load_official
from percept.model.perceptclip import (
    PerceptCLIP,
    build_model,
    create_head,
    save_weights,
)
from percept.study.export import (
    MERGED_HEAD_PREFIX,
    export_run,
    official_state_dict,
    push_run,
)

transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

X = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))


def _finished_run(root, model, dataset="livec", split=3):
    """A run directory as training leaves it (weights, config, metrics marked complete), without training."""
    root.mkdir(parents=True, exist_ok=True)
    save_weights(model.eval(), root / "best.safetensors")
    config = {"data": [{"dataset": d, "root": "absent", "manifest": None, "label_column": None}
                       for d in model.config.heads], "model": model.config.to_dict(), "split": split, "lr": 1e-4}
    (root / "config.json").write_text(json.dumps(config))
    test = {d: {"srcc": 0.9, "plcc_logistic": 0.91, "mse": 1.0, "n_images": 10} for d in model.config.heads}
    (root / "metrics.json").write_text(json.dumps({"status": "complete", "best_epoch": 4, "epochs_run": 9,
                                                   "select_metric": "srcc", "test": test,
                                                   "parameters": model.parameter_counts()}))
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """tiny_clip (random, the official layout's patch embedding) with LoRA that matters."""
    torch.manual_seed(0)
    model = build_model(backbone="tiny_clip", pretrained=False, heads={"livec": 1})
    randomize_lora(model)
    return _finished_run(tmp_path_factory.mktemp("export") / "run", model), model.eval()


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory, tiny_run):
    """tiny_clip_prior: a pretrained (shipped) backbone, so a hub export holds only LoRA + heads."""
    torch.manual_seed(1)
    model = build_model(backbone="tiny_clip_prior", heads={"koniq10k": 1, "livec": 1})
    randomize_lora(model)
    return _finished_run(tmp_path_factory.mktemp("export_prior") / "run", model), model.eval()


def test_hub_folder_is_adapter_sized_and_loads_back(prior_run, tmp_path):
    run, model = prior_run
    out = export_run(run, "hub", tmp_path / "hub")
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                     "preprocessor_config.json"]
    with safe_open(out / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k or k.startswith("heads.") for k in keys)      # no frozen encoder weight
    assert len(keys) == sum(1 for n, p in model.named_parameters() if p.requires_grad)
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "percept" and config["model"]["backbone"] == "tiny_clip_prior"
    assert config["model"]["weights_path"] is None
    loaded = PerceptCLIP.from_pretrained(out).eval()
    with torch.no_grad():
        for head in ("koniq10k", "livec"):
            torch.testing.assert_close(loaded(X, head), model(X, head), rtol=0, atol=1e-6)


def test_from_pretrained_reads_a_hub_repo_offline(prior_run, tmp_path, monkeypatch):
    import huggingface_hub.constants
    run, model = prior_run
    out = export_run(run, "hub", tmp_path / "hub")
    for name in ("config.json", "model.safetensors"):
        fake_hub_file(tmp_path / "cache", "someone/perceptclip-koniq", name, (out / name).read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    loaded = PerceptCLIP.from_pretrained("someone/perceptclip-koniq").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(X, "livec"), model(X, "livec"), rtol=0, atol=1e-6)


def test_model_card_says_what_the_model_is(prior_run, tmp_path):
    run, _ = prior_run
    card = (export_run(run, "hub", tmp_path / "hub") / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: percept")
    assert "koniq10k, livec, split 3" in card and "higher = better quality" in card
    # the run's metric with the paper's PerceptCLIP number beside it (Table 1: KonIQ-10k SRCC 0.945)
    assert "| koniq10k | srcc | 0.9000 | 0.945 (Table 1, median over 10 splits) |" in card
    assert "UT Austin" in card and "KonIQ-10k release terms" in card                       # each dataset's licence
    assert "from_pretrained" in card and "@article{zalcher2025dont" in card


def test_official_export_loads_in_transformers_and_peft(tiny_run, tmp_path):
    """export → the release's model built with transformers CLIPVisionModel + peft (strict load) → the same
    outputs as ours; and export → load_official → the same."""
    from percept.model.official_reference import (
        ClipArchitecture,
        OfficialReferenceModel,
    )
    run, model = tiny_run
    path = export_run(run, "official", tmp_path / "model.pth")
    state = torch.load(path, weights_only=True)
    spec = get_spec("tiny_clip").timm_kwargs
    arch = ClipArchitecture(width=spec["embed_dim"], depth=spec["depth"], num_heads=spec["num_heads"],
                            mlp_width=4 * spec["embed_dim"], patch_size=32, img_size=224, proj_dim=spec["num_classes"])
    release = OfficialReferenceModel(arch, outputs=1).eval()
    release.load_state_dict(state, strict=True)
    with torch.no_grad():
        ours = model(X)
        torch.testing.assert_close(release(X), ours, rtol=0, atol=1e-4)
        torch.testing.assert_close(load_official(path).eval()(X), ours, rtol=0, atol=1e-4)


def test_merged_export_is_plain_timm(tiny_run, tmp_path):
    run, model = tiny_run
    path = export_run(run, "merged", tmp_path / "merged.safetensors")
    with safe_open(path, "pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    spec = get_spec("tiny_clip")
    assert meta["timm_name"] == spec.timm_name
    encoder = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs).eval()
    encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith(MERGED_HEAD_PREFIX)}, strict=True)
    head = create_head("mlp", encoder.head.out_features, 1).eval()
    head.load_state_dict({k[len(MERGED_HEAD_PREFIX + "livec."):]: v for k, v in state.items()
                          if k.startswith(MERGED_HEAD_PREFIX + "livec.")})
    with torch.no_grad():
        torch.testing.assert_close(head(encoder(X)), model(X), rtol=0, atol=1e-4)


def test_what_a_format_cannot_hold_is_refused(tiny_run, prior_run, tmp_path):
    with pytest.raises(ValueError, match=r"holds one head.*koniq10k, livec.*--head-name"):
        export_run(prior_run[0], "official", tmp_path / "x.pth")
    torch.manual_seed(0)
    linear = build_model(backbone="tiny_clip", pretrained=False, head_type="linear")
    with pytest.raises(ValueError, match="MLP"):
        official_state_dict(linear)
    frozen = build_model(backbone="tiny_clip", pretrained=False, strategy="frozen")
    with pytest.raises(ValueError, match="strategy 'frozen'"):
        official_state_dict(frozen)
    other = build_model(backbone="tiny_clip", pretrained=False)
    other.config.backbone = "dinov2_vit_l14"                  # what a DINOv2 model's config says (not built: 300M)
    with pytest.raises(ValueError, match="dinov2.*--format hub or merged"):
        official_state_dict(other)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((tiny_run[0] / "config.json").read_text())
    with pytest.raises(ValueError, match=r"unfinished.*`percept train \S+`, which resumes"):
        export_run(unfinished, "hub", tmp_path / "hub")


def test_push_uploads_exactly_the_hub_folder(prior_run):
    run, _ = prior_run
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            calls["create_repo"] = (repo_id, kwargs)

        def upload_folder(self, folder_path, repo_id, **kwargs):
            from pathlib import Path
            calls["files"] = {p.name: p.stat().st_size for p in Path(folder_path).iterdir()}
            calls["card"] = (Path(folder_path) / "README.md").read_text()
            calls["upload"] = (repo_id, kwargs)
            return type("Commit", (), {"commit_url": "https://huggingface.co/me/model/commit/1"})()

    url = push_run(run, "me/model", private=True, api=FakeApi())
    assert url.endswith("/commit/1")
    assert calls["create_repo"] == ("me/model", {"private": True, "exist_ok": True, "repo_type": "model"})
    assert set(calls["files"]) == {"README.md", "config.json", "model.safetensors", "preprocessor_config.json"}
    assert calls["upload"][0] == "me/model" and "koniq10k" in calls["card"]


def test_export_command(tiny_run, tmp_path, capsys):
    run, _ = tiny_run
    assert main(["export", str(run), "--format", "hub", "--out", str(tmp_path / "hub")]) == 0
    assert "hub:" in capsys.readouterr().out and (tmp_path / "hub" / "model.safetensors").is_file()


def test_push_to_hub_and_a_local_backbone_file(prior_run, tmp_path, monkeypatch):
    """The mixin's push_to_hub uploads save_pretrained's folder (HfApi mocked); from_pretrained takes the
    backbone's weights from a local file instead of its name."""
    import huggingface_hub.hub_mixin

    from percept.model.backbones import get_spec, shipped_weights_path
    _, model = prior_run
    uploaded = {}

    class FakeApi:
        def __init__(self, *args, **kwargs):
            pass

        def create_repo(self, repo_id, **kwargs):
            from types import SimpleNamespace
            return SimpleNamespace(repo_id=repo_id)

        def upload_folder(self, *, repo_id, folder_path, **kwargs):
            from pathlib import Path
            uploaded.update({p.name: p.read_bytes() for p in Path(folder_path).iterdir()})
            return "https://huggingface.co/me/m/commit/2"

    monkeypatch.setattr(huggingface_hub.hub_mixin, "HfApi", FakeApi)
    model.push_to_hub("me/m")
    assert {"config.json", "model.safetensors", "README.md"} <= set(uploaded)
    (tmp_path / "hub").mkdir()
    for name, data in uploaded.items():
        (tmp_path / "hub" / name).write_bytes(data)
    backbone = shipped_weights_path(get_spec("tiny_clip_prior"))
    loaded = PerceptCLIP.from_pretrained(tmp_path / "hub", backbone_weights=backbone).eval()
    assert loaded.config.weights_path == str(backbone)
    with torch.no_grad():
        torch.testing.assert_close(loaded(X, "koniq10k"), model(X, "koniq10k"), rtol=0, atol=1e-6)


def test_the_cards_transformers_snippet_loads_the_official_export(tiny_run, tmp_path, monkeypatch):
    """The code the model card gives for plain transformers + peft, executed as written against the exported
    model.pth (the hub download replaced by a random CLIP vision tower of the model's sizes: the LoRA, projection
    and head come from the file, and the frozen tower's weights too, so outputs must match ours)."""
    import re

    from percept.engine.runs import RunDir
    from percept.model.official_reference import clip_architecture
    from percept.study.export import model_card
    run, model = tiny_run
    card = model_card(RunDir(run))
    snippet = re.search(r"```python\n(import torch, peft, transformers.*?)```", card, re.S).group(1)
    arch = clip_architecture("tiny_clip")
    config = transformers.CLIPVisionConfig(hidden_size=arch.width, intermediate_size=arch.mlp_width,
                                           num_hidden_layers=arch.depth, num_attention_heads=arch.num_heads,
                                           image_size=arch.img_size, patch_size=arch.patch_size,
                                           hidden_act="quick_gelu", layer_norm_eps=arch.layer_norm_eps)
    monkeypatch.setattr(transformers.CLIPVisionModel, "from_pretrained",
                        classmethod(lambda cls, name, **kw: cls(config)))
    monkeypatch.chdir(tmp_path)
    export_run(run, "official", tmp_path / "model.pth")
    namespace: dict = {}
    exec(snippet, namespace)                        # noqa: S102 - the card's own code, as a user would run it
    with torch.no_grad():
        torch.testing.assert_close(namespace["model"](X), model(X), rtol=0, atol=1e-4)
