"""Head importance by uniform-CLS ablation and CLS attention maps (paper §6), on the tiny model."""
import interpret_cost  # tools/interpret_cost.py (conftest puts tools/ on the path)
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import randomize_lora

from percept.model.perceptclip import build_model
from percept.study import interpret

X = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def sharp(outputs: int = 1, seed: int = 0):
    """Tiny model with LoRA on and peaked attention (q, k scaled), so that ablations matter."""
    torch.manual_seed(seed)
    model = build_model(backbone="tiny_clip", pretrained=False, heads={"main": outputs}).eval()
    randomize_lora(model)
    with torch.no_grad():
        for attn in model.attention_layers():
            attn.q.base_layer.weight.mul_(6)
            attn.k.base_layer.weight.mul_(6)
        model.heads["main"].fc3.weight.mul_(50)
    return model


@pytest.fixture(scope="module")
def regressor():
    return sharp(1)


@pytest.fixture(scope="module")
def classifier():
    return sharp(8, seed=1)


def effective_weight(linear):
    """W + scaling * B A of a peft LoRA Linear (by hand), and its bias."""
    weight = linear.base_layer.weight + linear.scaling["default"] * (
        linear.lora_B["default"].weight @ linear.lora_A["default"].weight)
    return weight, linear.base_layer.bias


def block_by_hand(block, x, uniform_head):
    """One timm pre-norm block with explicit softmax attention, ``uniform_head``'s CLS row set to 1/N."""
    attn = block.attn
    b, n, c = x.shape
    h, d = attn.num_heads, attn.head_dim
    y = block.norm1(x)
    q, k, v = (F.linear(y, *effective_weight(layer)).view(b, n, h, d).permute(0, 2, 1, 3)
               for layer in (attn.q, attn.k, attn.v))
    weights = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1).clone()
    weights[:, uniform_head, 0, :] = 1.0 / n
    out = (weights @ v).permute(0, 2, 1, 3).reshape(b, n, c)
    x = x + F.linear(out, attn.proj.weight, attn.proj.bias)
    return x + block.mlp(block.norm2(x))


# ---------------------------------------------------------------- ablation == explicit computation
def test_uniform_cls_ablation_matches_explicit_softmax(regressor):
    model, layer, head = regressor, 2, 1
    vit = model.vit
    captured = {}
    hook = vit.blocks[layer].register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    with torch.no_grad():
        baseline = model(X)
        hook.remove()
        x = block_by_hand(vit.blocks[layer], captured["x"], head)
        for block in vit.blocks[layer + 1:]:
            x = block(x)
        expected = model.heads["main"](vit.forward_head(vit.norm(x)))
        with model.uniform_cls_attention({layer: [head]}):
            ablated = model(X)
    torch.testing.assert_close(ablated, expected, atol=1e-5, rtol=1e-5)
    assert (ablated - baseline).abs().max() > 1e-3          # the ablation did something


def test_partial_forward_without_ablation_equals_model(regressor):
    with torch.no_grad():
        reference = regressor(X)
        for layer in range(len(regressor.vit.blocks) + 1):
            tokens = interpret.tokens_before(regressor, X, layer)
            torch.testing.assert_close(interpret.forward_from(regressor, tokens, layer), reference,
                                       atol=1e-6, rtol=1e-6)
    table = interpret.head_importance(regressor, X, layers=[1])
    torch.testing.assert_close(torch.as_tensor(table.attrs["baseline"]), reference, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- batched == naive
def test_batched_importance_equals_naive_regression(regressor):
    fast = interpret.head_importance(regressor, X, batch_size=3)
    slow = interpret.naive_head_importance(regressor, X, batch_size=4)
    assert list(fast.columns) == ["layer", "head", "importance", "mean_delta", "n_images"]
    assert len(fast) == 4 * 2 and list(fast["layer"]) == [0, 0, 1, 1, 2, 2, 3, 3] and (fast["n_images"] == 4).all()
    torch.testing.assert_close(torch.as_tensor(fast.attrs["per_image"]), torch.as_tensor(slow.attrs["per_image"]),
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast["mean_delta"], slow["mean_delta"], atol=1e-5, rtol=0)
    assert fast["importance"].min() > 1e-3                   # every head matters a little here


def test_batched_importance_equals_naive_classification(classifier):
    batches = [X[:2], {"image": X[2:], "label": torch.zeros(2)}]   # an iterable of loader-style batches
    fast = interpret.head_importance(classifier, batches, layers=[3, 1])
    slow = interpret.naive_head_importance(classifier, X, layers=[1, 3])
    assert fast.attrs["kind"] == "classification" and list(fast["layer"]) == [1, 1, 3, 3]
    np.testing.assert_allclose(fast["importance"], slow["importance"], atol=1e-5, rtol=0)
    assert (fast["flip_rate"] == slow["flip_rate"]).all() and fast["flip_rate"].between(0, 1).all()


def test_classification_effects_by_hand():
    base = torch.tensor([[2.0, 0.0, 0.0]])
    ablated = torch.tensor([[[0.0, 2.0, 0.0]], [[2.0, 0.0, 0.0]]])   # (variants, B, K)
    drop, flip = interpret._effects("classification", base, ablated)
    p = torch.softmax(torch.tensor([2.0, 0.0, 0.0]), 0)
    torch.testing.assert_close(drop, torch.tensor([[p[0] - p[1]], [0.0]]))
    assert flip.tolist() == [[1.0], [0.0]]


# ---------------------------------------------------------------- exact properties
def test_zero_value_head_has_zero_importance():
    model, layer, head = sharp(1, seed=2), 1, 0
    attn = model.attention_layers()[layer]
    rows = slice(head * attn.head_dim, (head + 1) * attn.head_dim)
    with torch.no_grad():   # v slice of this head is exactly zero -> its output is zero whatever the attention
        attn.v.base_layer.weight[rows] = 0
        attn.v.base_layer.bias[rows] = 0
        attn.v.lora_B["default"].weight[rows] = 0
    table = interpret.head_importance(model, X)
    row = table[(table["layer"] == layer) & (table["head"] == head)]
    assert row["importance"].item() < 1e-6
    assert table.drop(row.index)["importance"].min() > 1e-3


def test_duplicate_heads_have_equal_importance():
    model, layer = sharp(1, seed=3), 2
    attn = model.attention_layers()[layer]
    d = attn.head_dim
    src, dst = slice(0, d), slice(d, 2 * d)
    with torch.no_grad():   # head 1 := head 0 (q, k, v rows incl. LoRA B, and its proj columns)
        for linear in (attn.q, attn.k, attn.v):
            linear.base_layer.weight[dst] = linear.base_layer.weight[src]
            linear.base_layer.bias[dst] = linear.base_layer.bias[src]
            linear.lora_B["default"].weight[dst] = linear.lora_B["default"].weight[src]
        attn.proj.weight[:, dst] = attn.proj.weight[:, src]
    table = interpret.head_importance(model, X, layers=[layer])
    per_image = table.attrs["per_image"]
    assert abs(per_image[:, 0, 0] - per_image[:, 0, 1]).max() < 1e-6
    assert table["importance"].iloc[0] > 1e-3


# ---------------------------------------------------------------- tables
def test_importance_matrix_and_top_heads(regressor):
    table = interpret.head_importance(regressor, X[:2])
    matrix = interpret.importance_matrix(table)
    assert matrix.shape == (4, 2)
    assert matrix[2, 1] == table[(table["layer"] == 2) & (table["head"] == 1)]["importance"].item()
    top = interpret.top_heads(table, 3)
    assert len(top) == 3 and list(top["importance"]) == sorted(table["importance"], reverse=True)[:3]
    assert len(pd.concat({"a": top, "b": top})) == 6          # summaries of several tasks side by side
    best = top.iloc[0]
    order = interpret.most_affected_images(table, int(best["layer"]), int(best["head"]), n=2)
    column = table.attrs["per_image"][:, int(best["layer"]), int(best["head"])]
    assert column[order[0]] == column.max() and len(order) == 2


def test_top_head_attention_rows_are_the_top_heads_and_their_most_affected_images(regressor):
    images = X[:3]
    table = interpret.head_importance(regressor, images)
    rows = interpret.top_head_attention(regressor, images, table, k=2, n_images=2)
    top = interpret.top_heads(table, 2)
    assert [(r["layer"], r["head"]) for r in rows] == [(int(t.layer), int(t.head)) for t in top.itertuples()
                                                       for _ in range(2)]
    for r in rows:
        per_head = table.attrs["per_image"][:, r["layer"], r["head"]]
        assert r["effect"] == pytest.approx(per_head[r["image_index"]])
        # the maps of that image alone, computed directly
        direct = interpret.cls_attention_maps(regressor, images[r["image_index"]], layer=r["layer"], head=r["head"])
        np.testing.assert_allclose(r["finetuned"], direct["finetuned"][0], atol=1e-6)
        np.testing.assert_allclose(r["difference"], r["finetuned"] - r["original"], atol=1e-7)
    first = [r["effect"] for r in rows[:2]]
    assert first[0] >= first[1] and first[0] == pytest.approx(
        table.attrs["per_image"][:, rows[0]["layer"], rows[0]["head"]].max())
    with pytest.raises(ValueError, match="computed on 3 images, not these 2"):
        interpret.top_head_attention(regressor, X[:2], table)


def test_bad_arguments(regressor, classifier):
    with pytest.raises(ValueError, match="kind must be one of"):
        interpret.head_importance(regressor, X[:1], kind="ranking")
    with pytest.raises(ValueError, match="needs a head with >= 2 outputs"):
        interpret.head_importance(regressor, X[:1], kind="classification")
    with pytest.raises(ValueError, match="layers must be"):
        interpret.head_importance(regressor, X[:1], layers=[4])
    with pytest.raises(ValueError, match="multi-crop"):
        interpret.head_importance(regressor, X[:1].unsqueeze(1))
    with pytest.raises(ValueError, match="empty"):
        interpret.head_importance(regressor, [])
    with pytest.raises(ValueError, match="224x224"):
        interpret.head_importance(regressor, torch.randn(1, 3, 64, 64))


# ---------------------------------------------------------------- attention maps
def test_cls_attention_maps_finetuned_vs_original():
    torch.manual_seed(4)
    model = build_model(backbone="tiny_clip", pretrained=False).eval()
    with torch.no_grad(), model.recorded_attention() as plain:   # LoRA B = 0: the original encoder
        model(X[:2])
    randomize_lora(model)
    with torch.no_grad(), model.recorded_attention() as tuned:
        model(X[:2])
    maps = interpret.cls_attention_maps(model, X[:2], layer=3, head=1)
    assert maps["finetuned"].shape == maps["original"].shape == (2, 7, 7)
    torch.testing.assert_close(torch.as_tensor(maps["finetuned"]), tuned[3][:, 1, 0, 1:].reshape(2, 7, 7))
    torch.testing.assert_close(torch.as_tensor(maps["original"]), plain[3][:, 1, 0, 1:].reshape(2, 7, 7))
    assert abs(maps["difference"] - (maps["finetuned"] - maps["original"])).max() == 0
    assert abs(maps["difference"]).max() > 1e-4
    assert all(layer.attention_map is None and not layer.record_attention for layer in model.attention_layers())
    mean = interpret.cls_attention_maps(model, X[0], layer=0)               # one image, mean over heads
    assert mean["finetuned"].shape == (1, 7, 7) and mean["head"] is None
    with pytest.raises(ValueError, match="no LoRA adapter"):
        interpret.cls_attention_maps(build_model(backbone="tiny_clip", pretrained=False, strategy="frozen"), X[:1], 0)


# ---------------------------------------------------------------- cost / timing
def test_cost_formula_and_timing(regressor):
    vit_l = interpret_cost.head_importance_cost(24, 16)
    assert vit_l["batched"] == 201 and vit_l["naive"] == 385
    assert interpret_cost.estimate_seconds(1000, 0.01)["batched"] == pytest.approx(2010)
    timing = interpret_cost.time_head_importance(regressor, X[:2], batch_size=2)
    assert timing["batched_s"] > 0 and timing["naive_s"] > 0 and timing["speedup"] > 0


def test_importance_contrast_is_the_top_head_over_the_median_head():
    import pandas as pd

    from percept.study.interpret import importance_contrast
    table = pd.DataFrame({"layer": [0, 0, 1, 1, 2], "head": [0, 1, 0, 1, 0],
                          "importance": [0.01, -0.02, 0.5, 0.03, 0.02]})
    assert importance_contrast(table) == pytest.approx(0.5 / 0.02)       # |values|: median 0.02, top 0.5
    assert importance_contrast(table.assign(importance=0.1)) == pytest.approx(1.0)   # no structure
    assert importance_contrast(table.assign(importance=[0, 0, 0.5, 0, 0])) == float("inf")
