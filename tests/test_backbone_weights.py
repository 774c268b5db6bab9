"""`--weights` takes the checkpoints people have: timm's, OpenAI CLIP's release file (a TorchScript
archive) and open_clip's (plain or a training checkpoint). The OpenAI layout is written here by hand from the
names of OpenAI CLIP's model.py (conv1, class_embedding, positional_embedding, ln_pre, transformer.resblocks.i.
{ln_1, attn.in_proj_weight, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj}, ln_post, proj = head weight
transposed), with a text tower beside it, so the test does not reuse the mapping it checks."""
from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from percept.model.backbones import (
    PretrainedWeightsUnavailable,
    create_backbone,
    get_spec,
)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A tiny_clip timm encoder with random weights (head bias 0: OpenAI's projection has none), its timm file."""
    torch.manual_seed(0)
    spec = get_spec("tiny_clip")
    model = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs).eval()
    with torch.no_grad():
        model.head.bias.zero_()
    path = tmp_path_factory.mktemp("weights") / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def _openai_layout(model: nn.Module, prefix: str = "visual.") -> dict[str, torch.Tensor]:
    state, out = model.state_dict(), {}
    out[prefix + "conv1.weight"] = state["patch_embed.proj.weight"]
    out[prefix + "class_embedding"] = state["cls_token"][0, 0]
    out[prefix + "positional_embedding"] = state["pos_embed"][0]
    for ours, theirs in (("norm_pre", "ln_pre"), ("norm", "ln_post")):
        for p in ("weight", "bias"):
            out[f"{prefix}{theirs}.{p}"] = state[f"{ours}.{p}"]
    out[prefix + "proj"] = state["head.weight"].t().contiguous()
    for i in range(len(model.blocks)):
        ours, theirs = f"blocks.{i}.", f"{prefix}transformer.resblocks.{i}."
        for a, b in (("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.proj", "attn.out_proj"), ("mlp.fc1", "mlp.c_fc"),
                     ("mlp.fc2", "mlp.c_proj")):
            for p in ("weight", "bias"):
                out[f"{theirs}{b}.{p}"] = state[f"{ours}{a}.{p}"]
        out[theirs + "attn.in_proj_weight"] = state[ours + "attn.qkv.weight"]
        out[theirs + "attn.in_proj_bias"] = state[ours + "attn.qkv.bias"]
    text = prefix.replace("visual.", "")
    out[text + "token_embedding.weight"] = torch.randn(10, 8)             # the text tower: must be left out
    out[text + "transformer.resblocks.0.attn.in_proj_weight"] = torch.randn(24, 8)
    out[text + "logit_scale"] = torch.tensor(4.6)
    return out


def _torchscript_file(state: dict[str, torch.Tensor], path) -> None:
    """A TorchScript archive holding ``state`` under its dotted names, as OpenAI's ViT-*.pt files are."""
    root = nn.Module()
    for name, tensor in state.items():
        *parts, last = name.split(".")
        module = root
        for part in parts:
            if not hasattr(module, part):
                setattr(module, part, nn.Module())
            module = getattr(module, part)
        module.register_buffer(last, tensor.clone())

    class Archive(nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in root.named_children():
                setattr(self, name, child)
            for name, buffer in root.named_buffers(recurse=False):
                self.register_buffer(name, buffer)

        def forward(self, x):
            return x

    torch.jit.trace(Archive(), torch.zeros(1)).save(str(path))


def _same_outputs(a: nn.Module, b: nn.Module) -> None:
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=1e-6)


def test_timm_file_loads(reference):
    model, path = reference
    _same_outputs(create_backbone("tiny_clip", weights_path=path), create_backbone("tiny_clip", weights_path=path))
    loaded = create_backbone("tiny_clip", weights_path=path)
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("form", ["openai_torchscript", "openai_state_dict", "open_clip_bin", "open_clip_training"])
def test_clip_package_checkpoints_load_as_the_same_encoder(reference, tmp_path, form, monkeypatch):
    model, timm_path = reference
    path = tmp_path / "checkpoint.pt"
    if form == "openai_torchscript":
        _torchscript_file(_openai_layout(model), path)
        with pytest.raises(ValueError, match=r"checkpoint.pt is a TorchScript archive.*PERCEPT_TRUST_TORCHSCRIPT=1"):
            create_backbone("tiny_clip", weights_path=path)         # code in a file is never run by default
        monkeypatch.setenv("PERCEPT_TRUST_TORCHSCRIPT", "1")
    elif form == "openai_state_dict":
        torch.save(_openai_layout(model), path)
    elif form == "open_clip_bin":
        path = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(_openai_layout(model), path)
    else:   # open_clip's training checkpoint: DDP's module. prefix inside {"epoch", "state_dict", ...}
        torch.save({"epoch": 3, "name": "ViT-L-14", "state_dict": _openai_layout(model, "module.visual.")}, path)
    _same_outputs(create_backbone("tiny_clip", weights_path=path), create_backbone("tiny_clip", weights_path=timm_path))


def test_clip_checkpoint_for_another_architecture_is_refused(reference, tmp_path):
    torch.save(_openai_layout(reference[0]), tmp_path / "clip.pt")
    with pytest.raises(Exception, match=r"clip.pt"):
        create_backbone("tiny_clip_p16", weights_path=tmp_path / "clip.pt")    # other widths and patch size


def test_unreadable_weights_are_named(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises((ValueError, RuntimeError), match="junk.pt"):
        create_backbone("tiny_clip", weights_path=tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="open_clip"):
        create_backbone("tiny_clip", weights_path=tmp_path / "absent.pt")
    assert issubclass(PretrainedWeightsUnavailable, RuntimeError)
