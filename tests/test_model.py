"""The PerceptCLIP model: split attention, LoRA placement and counts, strategies, heads, merge, save/load."""
import copy
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import randomize_lora

from percept.core.checkpoint import CheckpointMismatch
from percept.model.attention import SplitQKVAttention, split_qkv
from percept.model.backbones import PretrainedWeightsUnavailable, get_spec
from percept.model.perceptclip import (
    ModelConfig,
    build_model,
    load_model,
    load_weights,
    save_weights,
)

X = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def tiny(**kw):
    torch.manual_seed(0)
    return build_model(backbone="tiny_clip", pretrained=False, **kw).eval()


# ---------------------------------------------------------------- split q/k/v == fused qkv
@pytest.mark.parametrize("name", ["tiny_clip", "tiny_clip_p16"])
def test_split_qkv_matches_timm_fused_attention(name):
    spec = get_spec(name)
    torch.manual_seed(1)
    fused = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs).eval()
    split = split_qkv(copy.deepcopy(fused)).eval()
    assert all(isinstance(b.attn, SplitQKVAttention) for b in split.blocks)
    assert not any("qkv" in n for n, _ in split.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(split(X), fused(X), atol=1e-5, rtol=1e-5)


def explicit_attention(attn: SplitQKVAttention, x, uniform_heads=()):
    """Independent reference: softmax(q k^T / sqrt(d)) v with chosen heads' CLS row set to 1/N."""
    b, n, c = x.shape
    h, d = attn.num_heads, attn.head_dim
    q = F.linear(x, attn.q.weight, attn.q.bias).view(b, n, h, d).permute(0, 2, 1, 3)
    k = F.linear(x, attn.k.weight, attn.k.bias).view(b, n, h, d).permute(0, 2, 1, 3)
    v = F.linear(x, attn.v.weight, attn.v.bias).view(b, n, h, d).permute(0, 2, 1, 3)
    weights = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1).clone()
    for head in uniform_heads:
        weights[:, head, 0, :] = 1.0 / n
    out = (weights @ v).permute(0, 2, 1, 3).reshape(b, n, c)
    return F.linear(out, attn.proj.weight, attn.proj.bias), weights


def test_uniform_cls_attention_matches_explicit_softmax():
    torch.manual_seed(2)
    attn = SplitQKVAttention(dim=64, num_heads=4).eval()
    x = torch.randn(3, 10, 64)
    plain_ref, weights_ref = explicit_attention(attn, x)
    torch.testing.assert_close(attn(x), plain_ref, atol=1e-5, rtol=1e-5)   # SDPA path, nothing ablated

    ablated_ref, _ = explicit_attention(attn, x, uniform_heads=[1, 3])
    attn.uniform_cls_heads = torch.tensor([False, True, False, True])
    out = attn(x)
    torch.testing.assert_close(out, ablated_ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, 0], plain_ref[:, 0], atol=1e-4)      # the CLS output did change
    torch.testing.assert_close(out[:, 1:], plain_ref[:, 1:], atol=1e-5, rtol=1e-5)  # other tokens did not

    attn.record_attention = True                                          # explicit path agrees too
    torch.testing.assert_close(attn(x), ablated_ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(attn.attention_map[:, [1, 3], 0], torch.full((3, 2, 10), 0.1))
    attn.uniform_cls_heads = None
    attn(x)
    torch.testing.assert_close(attn.attention_map, weights_ref, atol=1e-6, rtol=1e-5)


def test_per_sample_head_mask_equals_separate_runs():
    model = tiny()
    randomize_lora(model)
    heads = model.attention_layers()[1].num_heads
    with torch.no_grad():
        expected = []
        for h in range(heads):
            with model.uniform_cls_attention({1: [h]}):
                expected.append(model(X[:1]))
        batch = X[:1].expand(heads, -1, -1, -1)
        with model.uniform_cls_attention({1: torch.eye(heads, dtype=torch.bool)}):
            together = model(batch)
        baseline = model(X[:1])
    torch.testing.assert_close(together, torch.cat(expected), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[0], baseline[0], atol=1e-6)
    with torch.no_grad():   # ablation is switched off again on exit; ablating nothing changes nothing
        torch.testing.assert_close(model(X[:1]), baseline)
        with model.uniform_cls_attention({}):
            torch.testing.assert_close(model(X[:1]), baseline)


def test_recorded_attention_shapes_and_rows_sum_to_one():
    model = tiny()
    with torch.no_grad(), model.recorded_attention() as maps:
        out = model(X)
    assert len(maps) == 4
    assert maps[0].shape == (2, 2, 50, 50)       # (B, heads, 1 + 7*7 tokens, tokens)
    torch.testing.assert_close(maps[2].sum(-1), torch.ones(2, 2, 50))
    with torch.no_grad():
        torch.testing.assert_close(model(X), out, atol=1e-5, rtol=1e-5)   # explicit == SDPA path
    assert all(layer.attention_map is None for layer in model.attention_layers())


# ---------------------------------------------------------------- LoRA placement and counts
@pytest.fixture(scope="module")
def vit_l14():
    return build_model(backbone="clip_vit_l14", pretrained=False)


def test_vit_l14_lora_parameter_count(vit_l14):
    counts = vit_l14.parameter_counts()
    # 24 layers x 3 projections (q, k, v) x (A: 16x1024 + B: 1024x16)
    assert counts["lora"] == 24 * 3 * (16 * 1024 + 1024 * 16) == 2_359_296
    assert counts["heads"] == (768 * 512 + 512) + (512 * 256 + 256) + (256 * 1 + 1)
    assert counts["trainable"] == counts["lora"] + counts["heads"] < 3_000_000
    assert vit_l14.embed_dim == 768 and vit_l14.img_size == (224, 224)


def test_lora_only_on_separate_q_k_v(vit_l14):
    lora_modules = {re.sub(r"\.lora_[AB]\..*", "", n) for n, _ in vit_l14.named_parameters() if "lora_" in n}
    expected = {f"encoder.base_model.model.blocks.{i}.attn.{p}" for i in range(24) for p in "qkv"}
    assert lora_modules == expected
    frozen_trainable = [n for n, p in vit_l14.named_parameters()
                        if p.requires_grad and "lora_" not in n and not n.startswith("heads.")]
    assert frozen_trainable == []   # the projection and all base weights stay frozen


def test_lora_config_follows_paper():
    model = tiny()
    cfg = model.encoder.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (16, 8, 0.1)
    layer = model.vit.blocks[0].attn.q
    assert layer.scaling["default"] == pytest.approx(8 / 16)


def test_strategies_select_trainable_parameters():
    frozen, full = tiny(strategy="frozen"), tiny(strategy="full")
    head = frozen.parameter_counts()["heads"]
    assert frozen.parameter_counts()["trainable"] == head and frozen.parameter_counts()["lora"] == 0
    assert full.parameter_counts()["trainable"] == full.parameter_counts()["total"]

    model = tiny()
    model.train()
    model(X).sum().backward()
    q = model.vit.blocks[0].attn.q
    assert q.base_layer.weight.grad is None and q.lora_A["default"].weight.grad is not None


def test_linear_head_and_multi_dataset_heads():
    linear = tiny(head_type="linear", heads={"emotion": 8})
    assert linear.parameter_counts()["heads"] == 64 * 8 + 8
    assert linear(X).shape == (2, 8)

    multi = tiny(heads={"livec": 1, "koniq": 1, "emoset": 8})
    assert multi(X, head_name="emoset").shape == (2, 8)
    assert not torch.allclose(multi(X, head_name="livec"), multi(X, head_name="koniq"))
    with pytest.raises(ValueError, match="several heads"):
        multi(X)
    with pytest.raises(KeyError, match="unknown head 'spaq'"):
        multi(X, head_name="spaq")
    # one shared LoRA encoder, not one per head
    assert multi.parameter_counts()["lora"] == tiny().parameter_counts()["lora"]


# ---------------------------------------------------------------- merge, save, load
def test_merge_lora_keeps_outputs():
    model = tiny()
    randomize_lora(model)
    with torch.no_grad():
        before = model.embed(X)
        with model.encoder.disable_adapter():
            without_lora = model.embed(X)
        assert (before - without_lora).abs().max() > 1e-2, "LoRA perturbation too small to test merging"   # LoRA matters in this test
        model.merge_lora()
        after = model.embed(X)
    assert not model.has_lora and not any("lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


def test_save_and_load_roundtrip(tmp_path, tiny_timm_weights):
    model = build_model(backbone="tiny_clip", weights_path=str(tiny_timm_weights)).eval()
    randomize_lora(model)
    with torch.no_grad():
        for p in model.heads.parameters():
            p.add_(0.1)
        expected = model(X)
    path = tmp_path / "run" / "weights.safetensors"
    save_weights(model, path)
    saved = set(__import__("safetensors.torch", fromlist=["load_file"]).load_file(str(path)))
    assert saved == set(model.trainable_state_dict()) and all("lora_" in k or k.startswith("heads.") for k in saved)
    loaded = load_model(path)
    assert not loaded.training
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), expected)


def test_merged_model_roundtrip(tmp_path):
    model = tiny()
    randomize_lora(model)
    model.merge_lora()
    save_weights(model, tmp_path / "merged.safetensors")
    loaded = load_model(tmp_path / "merged.safetensors")   # strategy "full": everything stored
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X))


def test_load_weights_rejects_mismatch(tmp_path):
    model = tiny()
    save_weights(model, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"shape mismatches: .*heads\.main\.fc3\.weight: file \(1, 256\) vs model \(3, 256\)"):
        load_weights(tiny(heads={"main": 3}), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointMismatch, match=r"missing keys: heads\.other"):
        load_weights(tiny(heads={"main": 1, "other": 1}), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointMismatch, match="unexpected keys: .*lora_"):
        load_weights(tiny(strategy="frozen"), tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_weights(model, tmp_path / "nope.safetensors")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("field,value,message", [
    ("backbone", "resnet50", "unknown backbone 'resnet50'"),
    ("strategy", "adapter", "unknown strategy 'adapter'"),
    ("head_type", "transformer", "unknown head_type 'transformer'"),
    ("heads", {"main": 0}, "heads must map"),
])
def test_bad_config_names(field, value, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{field: value})


def test_a_config_written_before_the_head_type_rename_still_loads():
    """Run directories written by older versions say ``"head": "linear"``; they mean ``head_type``."""
    assert ModelConfig.from_dict({"backbone": "tiny_clip", "head": "linear"}).head_type == "linear"
    assert ModelConfig.from_dict({"backbone": "tiny_clip", "head_type": "linear"}).head_type == "linear"
    with pytest.raises(ValueError, match="both 'head' .* and 'head_type'"):
        ModelConfig.from_dict({"backbone": "tiny_clip", "head": "mlp", "head_type": "linear"})
    assert build_model(ModelConfig(backbone="tiny_clip", pretrained=False), head="linear").config.head_type == "linear"
    from percept.data.sources import DataConfig
    from percept.engine.train_config import TrainConfig
    from percept.study.sweep import expand_grid
    base = TrainConfig(data=[DataConfig("synthetic_iqa", ".")], model=ModelConfig(backbone="tiny_clip", pretrained=False))
    (name, config), = expand_grid(base, lrs=[1e-3], model_variants=[{"head": "linear"}]).items()
    assert config.model.head_type == "linear" and "linear-head" in name


@pytest.mark.parametrize("images,message", [
    (torch.randn(2, 3, 192, 192), "must be 224x224"),
    (torch.randn(2, 1, 224, 224), "RGB with 3 channels; got 1"),
    (torch.randn(2, 4, 224, 224), "RGB with 3 channels; got 4"),
    (torch.randn(3, 224, 224), r"shape \(B, 3, H, W\)"),
    (torch.zeros(2, 3, 224, 224, dtype=torch.uint8), "normalised float"),
])
def test_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        tiny()(images)


def test_pretrained_weights_unavailable_offline():
    with pytest.raises(PretrainedWeightsUnavailable, match="timm/vit_base_patch32_clip_quickgelu_224.openai"):
        build_model(backbone="clip_vit_b32", pretrained=True)
    with pytest.raises(PretrainedWeightsUnavailable, match="no pretrained weights"):
        build_model(backbone="tiny_clip", pretrained=True)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        build_model(backbone="tiny_clip", weights_path="/nonexistent/missing.safetensors")


def test_local_weights_file_is_used_and_checked(tmp_path, tiny_timm_weights):
    from safetensors.torch import load_file, save_file
    model = build_model(backbone="tiny_clip", weights_path=str(tiny_timm_weights))
    state = load_file(str(tiny_timm_weights))
    q_weight = state["blocks.0.attn.qkv.weight"][:128]
    torch.testing.assert_close(model.vit.blocks[0].attn.q.base_layer.weight, q_weight)
    del state["norm.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(CheckpointMismatch, match="missing keys: norm.weight"):
        build_model(backbone="tiny_clip", weights_path=str(tmp_path / "broken.safetensors"))
