"""Official PerceptCLIP checkpoints: the release's layout is rebuilt with transformers' CLIPVisionModel + peft
(small random config, :mod:`percept.model.official_reference`), saved as a .pth state dict, loaded by percept, and
outputs compared."""
import pytest
import torch
from conftest import randomize_lora

from percept.core.checkpoint import CheckpointMismatch
from percept.model.official import OFFICIAL_CHECKPOINTS, load_official
from percept.model.official_layout import infer_architecture

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


def OfficialStyleModel(hidden=128, layers=3, patch=32, proj=64, outputs=1):
    """Same structure and state-dict layout as the release's ``clip_lora_model`` (small random config)."""
    from percept.model.official_reference import (
        ClipArchitecture,
        OfficialReferenceModel,
    )
    arch = ClipArchitecture(width=hidden, depth=layers, num_heads=hidden // 64, mlp_width=4 * hidden,
                            patch_size=patch, img_size=224, proj_dim=proj)
    return OfficialReferenceModel(arch, outputs=outputs)


@pytest.fixture(params=[1, 8], ids=["regression", "emotions"])
def official(request, tmp_path):
    torch.manual_seed(request.param)
    model = OfficialStyleModel(outputs=request.param).eval()
    randomize_lora(model)
    path = tmp_path / "perceptCLIP_test.pth"
    torch.save(model.state_dict(), path)
    return model, path


def images(n=4):
    return torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(7))


def test_official_layout_is_the_documented_one(official):
    state = official[0].state_dict()
    assert "proj.weight" in state and "proj.bias" not in state
    assert "mlp.fc3.weight" in state
    assert "model.base_model.model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight" in state
    assert "model.base_model.model.pre_layrnorm.weight" in state


def test_load_official_matches_official_outputs(official):
    reference, path = official
    model = load_official(path)
    assert not model.training
    x = images()
    with torch.no_grad():
        expected = reference(x)
        torch.testing.assert_close(model(x), expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(load_official(reference.state_dict())(x), expected, atol=1e-4, rtol=0)
        # the comparison is sensitive: the wrong LoRA scaling gives different outputs
        assert (load_official(path, lora_alpha=32).embed(x) - model.embed(x)).abs().max() > 1e-3


def test_architecture_inferred_from_shapes(official):
    arch = infer_architecture(official[0].state_dict())
    outputs = official[0].mlp.fc3.out_features
    assert arch == {"width": 128, "patch_size": 32, "img_size": 224, "depth": 3, "num_heads": 2,
                    "mlp_ratio": 4.0, "proj_dim": 64, "lora_r": 16, "head_hidden": (512, 256),
                    "outputs": outputs}


def test_position_ids_buffer_is_ignored(official):
    state = dict(official[0].state_dict())
    state["model.base_model.model.embeddings.position_ids"] = torch.arange(50)[None]
    load_official(state)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("mlp.fc3.bias"), r"missing keys: heads\.main\.fc3\.bias"),
    (lambda s: s.__setitem__("extra.weight", torch.zeros(1)), r"unexpected keys .*extra\.weight"),
    (lambda s: s.__setitem__("model.base_model.model.post_layernorm.weight", torch.ones(7)),
     r"shape mismatches: .*norm\.weight: file \(7,\)"),
    (lambda s: s.pop("proj.weight"), "lacks 'proj.weight'"),
])
def test_broken_official_checkpoints_are_named(official, edit, message):
    state = dict(official[0].state_dict())
    edit(state)
    with pytest.raises(CheckpointMismatch, match=message):
        load_official(state)


def test_non_tensor_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": torch.zeros(1), "code": print}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_official(path)


def test_hub_names_and_offline_message():
    assert {c.repo_id for c in OFFICIAL_CHECKPOINTS.values()} == {
        "PerceptCLIP/PerceptCLIP_IQA", "PerceptCLIP/PerceptCLIP_Memorability", "PerceptCLIP/PerceptCLIP_Emotions"}
    assert OFFICIAL_CHECKPOINTS["emotions"].labels == (
        "amusement", "awe", "contentment", "excitement", "anger", "disgust", "fear", "sadness")
    with pytest.raises(RuntimeError, match="hf download PerceptCLIP/PerceptCLIP_IQA perceptCLIP_IQA.pth"):
        load_official("PerceptCLIP/PerceptCLIP_IQA")   # tests run with HF_HUB_OFFLINE=1 and an empty cache
    with pytest.raises(ValueError, match="neither an existing file nor an official checkpoint"):
        load_official("official-aesthetics")
