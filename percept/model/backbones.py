"""Vision backbones by name, resolved through timm.

Every backbone is a timm VisionTransformer whose forward returns one embedding per image:

* CLIP backbones return the *projected* CLS embedding (timm's ``head`` holds CLIP's visual projection,
  768-d for ViT-L/14), as in the official PerceptCLIP release (``proj(pooler_output)``).
* DINOv2 and MAE have no projection: they return the final-norm CLS token (1024-d for ViT-L).

The ``quickgelu`` CLIP variants are the faithful ones: OpenAI's CLIP was trained with QuickGELU and the
official release uses transformers' CLIP (``hidden_act="quick_gelu"``). The paper's ablations use
ViT-B/16 and ViT-B/32 CLIP (Table A.7), DINOv2 and MAE ViT-L (Table A.8). ``tiny_*`` specs are small,
random-initialised versions of the same architecture for tests and the offline demo.

The MAE backbone is ViT-L/**16** (``mae_vit_l16``): MAE was only released with 16-pixel patches (no ViT-L/14
MAE exists), so Table A.8's MAE row compares a /16 encoder with the /14 CLIP and DINOv2 ones.

Input normalisation belongs to the backbone (:attr:`BackboneSpec.mean`, :attr:`BackboneSpec.std`): taken
from timm's pretrained configuration of ``timm_name`` (registry data, nothing is downloaded) — OpenAI CLIP's
statistics for the CLIP backbones (paper §3.1, "the CLIP preprocessor"), ImageNet's
(``timm.data.IMAGENET_DEFAULT_MEAN/STD``) for DINOv2 and MAE, as they were pretrained. Every pipeline
(training, evaluation, head fine-tuning, device-side augmentation, ``percept predict``, the figures)
normalises with the statistics of the run's ``model.backbone``.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors.torch import load_file
from timm.layers import PatchEmbed
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from ..core.checkpoint import check_state_dict
from ..core.resources import package_path
from .attention import split_qkv


class ConvStemPatchEmbed(PatchEmbed):
    """timm's patch embedding with its single linear patchify replaced by early convolutions (Xiao et al.,
    "Early convolutions help transformers see better", NeurIPS 2021): ``len(stem_channels)`` 3x3 stride-2
    convolutions, each with GroupNorm (groups of channels: min(8, C) groups) and GELU, then a ``k x k`` stride-``k`` convolution to
    ``embed_dim`` so that the token grid is that of ``patch_size``. Used by the demo prior
    (``tiny_clip_prior``): a tiny ViT whose patchify is linear does not learn the demo's blur, noise and
    compression from scratch within minutes on a CPU (the patch's high-frequency energy needs a
    non-linearity before the first LayerNorm), one with this stem does (measured when the prior was designed; docs/prior.md, "The demo's own prior")."""

    def __init__(self, img_size=224, patch_size=32, in_chans=3, embed_dim=128, stem_channels=(16, 32, 64, 128),
                 **kwargs):
        super().__init__(img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim, **kwargs)
        last = self.patch_size[0] // 2 ** len(stem_channels)
        if last < 1 or last * 2 ** len(stem_channels) != self.patch_size[0]:
            raise ValueError(f"patch size {self.patch_size[0]} is not 2**{len(stem_channels)} times an integer")
        layers, channels = [], in_chans
        for width in stem_channels:
            layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.GroupNorm(min(8, width), width), nn.GELU()]
            channels = width
        layers.append(nn.Conv2d(channels, embed_dim, last, last))
        self.proj = nn.Sequential(*layers)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    timm_name: str                     # architecture[.pretrained_tag]
    family: str                        # "clip" | "dinov2" | "mae"
    reference: str                     # where in the paper it is used
    timm_kwargs: dict = field(default_factory=dict)
    has_pretrained: bool = True
    mean: tuple[float, float, float] | None = None   # input normalisation; None: timm's pretrained cfg
    std: tuple[float, float, float] | None = None
    shipped_weights: str | None = None   # weights committed with percept (path relative to the package)

    def __post_init__(self):
        if self.mean is None or self.std is None:
            cfg = timm.models.get_pretrained_cfg(self.timm_name)    # registry data: no download
            if cfg is None:
                raise ValueError(f"backbone {self.name!r}: timm has no pretrained cfg for {self.timm_name!r}; "
                                 f"give mean= and std= explicitly")
            object.__setattr__(self, "mean", tuple(float(v) for v in (self.mean or cfg.mean)))
            object.__setattr__(self, "std", tuple(float(v) for v in (self.std or cfg.std)))

    @property
    def hub_id(self) -> str:
        return f"timm/{self.timm_name}"

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` of this backbone's input normalisation (per RGB channel, on [0, 1] pixels)."""
        return self.mean, self.std


def _specs(*specs: BackboneSpec) -> dict[str, BackboneSpec]:
    return {s.name: s for s in specs}


BACKBONES: dict[str, BackboneSpec] = _specs(
    BackboneSpec("clip_vit_l14", "vit_large_patch14_clip_quickgelu_224.openai", "clip",
                 "main model, paper §3.1"),
    BackboneSpec("clip_vit_b16", "vit_base_patch16_clip_quickgelu_224.openai", "clip",
                 "ViT-size ablation, Table A.7"),
    BackboneSpec("clip_vit_b32", "vit_base_patch32_clip_quickgelu_224.openai", "clip",
                 "ViT-size ablation, Table A.7"),
    BackboneSpec("dinov2_vit_l14", "vit_large_patch14_dinov2.lvd142m", "dinov2",
                 "backbone ablation, Table A.8", {"img_size": 224, "num_classes": 0, "global_pool": "token"}),
    BackboneSpec("mae_vit_l16", "vit_large_patch16_224.mae", "mae",                 # ViT-L/16: no /14 MAE exists
                 "backbone ablation, Table A.8 (MAE ViT-L/16)", {"num_classes": 0, "global_pool": "token"}),
    # Small random-initialised CLIP-architecture encoders (QuickGELU, pre-norm, projection head).
    BackboneSpec("tiny_clip", "vit_base_patch32_clip_quickgelu_224", "clip", "tests and offline demo",
                 {"embed_dim": 128, "depth": 4, "num_heads": 2, "num_classes": 64}, has_pretrained=False),
    # The demo's own prior: a conv-stem tiny CLIP image tower pre-trained by percept.engine.prior.pretrain
    # on generated images and captions; its weights ship with the package and load through timm's pretrained
    # configuration with a local file, the code path of a hub checkpoint.
    BackboneSpec("tiny_clip_prior", "vit_base_patch32_clip_quickgelu_224", "clip", "offline demo prior",
                 {"embed_dim": 128, "depth": 4, "num_heads": 2, "mlp_ratio": 2.0, "num_classes": 64,
                  "embed_layer": ConvStemPatchEmbed}, shipped_weights="engine/prior/weights/tiny_clip_prior.safetensors"),
    BackboneSpec("tiny_clip_p16", "vit_base_patch16_clip_quickgelu_224", "clip", "tests (196 patches)",
                 {"embed_dim": 64, "depth": 2, "num_heads": 2, "num_classes": 32}, has_pretrained=False),
)


class PretrainedWeightsUnavailable(RuntimeError):
    """Raised when pretrained weights were asked for but cannot be obtained."""


def get_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}") from None


def normalization(backbone: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` the backbone named ``backbone`` expects its inputs normalised with."""
    return get_spec(backbone).normalization


def _weights_help(spec: BackboneSpec) -> str:
    return (f"Pretrained weights for backbone {spec.name!r} come from the Hugging Face hub repo "
            f"{spec.hub_id!r}. On a machine with internet run `hf download {spec.hub_id}` "
            f"(then use the same HF_HOME cache offline), or pass weights_path=<file>: timm's state dict "
            f"(.safetensors, .bin or .pth), OpenAI CLIP's release file (ViT-L-14.pt, with "
            f"{TRUST_TORCHSCRIPT}=1: it carries code) or an open_clip "
            f"checkpoint. Use pretrained=False only for a random-initialised model.")


def create_backbone(name: str, pretrained: bool = True, weights_path: str | os.PathLike | None = None,
                    **timm_overrides) -> nn.Module:
    """Build a timm encoder with split q/k/v attention.

    ``pretrained=True`` loads weights from ``weights_path`` if given, else from the HF hub (timm's
    loader, which honours ``HF_HOME`` / ``HF_HUB_OFFLINE``). Failure raises
    :class:`PretrainedWeightsUnavailable` with instructions; weights are never silently random unless
    ``pretrained=False``. ``timm_overrides`` change the architecture (e.g. an architecture inferred
    from an official checkpoint).
    """
    spec = get_spec(name)
    kwargs = {**spec.timm_kwargs, **timm_overrides}
    if pretrained and spec.shipped_weights and weights_path is None:
        path = shipped_weights_path(spec)
        model = timm.create_model(spec.timm_name, pretrained=True, pretrained_cfg_overlay={
            "file": str(path), "num_classes": kwargs.get("num_classes", 0)}, **kwargs)
        return split_qkv(model)
    if pretrained and not spec.has_pretrained and weights_path is None:
        raise PretrainedWeightsUnavailable(
            f"backbone {name!r} is a random-initialised test configuration with no pretrained weights; "
            f"pass pretrained=False or weights_path=<file>")
    if weights_path is not None:
        path = Path(weights_path)
        if not path.is_file():
            raise FileNotFoundError(f"weights_path {str(path)!r} does not exist. " + _weights_help(spec))
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
        _load_local_weights(model, path, spec)
    elif pretrained:
        try:
            model = timm.create_model(spec.timm_name, pretrained=True, **kwargs)
        except Exception as err:  # network, missing cache, hub errors: all mean "no weights"
            raise PretrainedWeightsUnavailable(
                f"could not load pretrained weights ({type(err).__name__}: {err}). " + _weights_help(spec)) from err
    else:
        model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    return split_qkv(model)


def shipped_weights_path(spec: BackboneSpec) -> Path:
    """The verified file of a backbone whose weights ship with percept: it must exist and match the SHA-256
    recorded in its JSON sidecar (written by ``percept.engine.prior.pretrain``); otherwise an error names the file
    and the command that regenerates it - never silent random weights."""
    return _verified_shipped_weights(spec)[0]


def shipped_weights_sha256(spec: BackboneSpec) -> str:
    """The SHA-256 of a backbone's shipped weights file, verified as :func:`shipped_weights_path` does."""
    return _verified_shipped_weights(spec)[1]


def _verified_shipped_weights(spec: BackboneSpec) -> tuple[Path, str]:

    path = package_path("percept", *Path(spec.shipped_weights).parts)
    sidecar = path.with_suffix(".json")
    regenerate = f"`python -m percept.engine.prior.pretrain --out {path.parent}` (or `git checkout -- {path.name}`)"
    if not path.is_file() or not sidecar.is_file():
        raise PretrainedWeightsUnavailable(f"the shipped weights of backbone {spec.name!r} are missing: "
                                           f"{path if not path.is_file() else sidecar}; regenerate them with "
                                           f"{regenerate}")
    try:
        expected = json.loads(sidecar.read_text())["sha256"]
    except (ValueError, KeyError, TypeError) as err:
        raise PretrainedWeightsUnavailable(f"the record {sidecar} of the shipped weights of backbone {spec.name!r} "
                                           f"is unreadable or has no 'sha256' ({type(err).__name__}: {err}); "
                                           f"regenerate both files with {regenerate}") from err
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != expected:
        raise PretrainedWeightsUnavailable(f"the shipped weights of backbone {spec.name!r} at {path} do not match "
                                           f"the SHA-256 recorded in {sidecar.name} ({actual[:12]}... != "
                                           f"{expected[:12]}...): the file is corrupted or was replaced; "
                                           f"regenerate it with {regenerate}")
    return path, actual


def read_weights_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a local checkpoint as people have them: ``.safetensors``; a pickled state dict read with
    ``torch.load(weights_only=True)`` (timm ``.pth``/``.bin``, open_clip's ``open_clip_pytorch_model.bin`` or a
    training checkpoint ``{"state_dict": {...}}``); or, only when you opt in with ``PERCEPT_TRUST_TORCHSCRIPT=1``,
    OpenAI CLIP's own release files (``ViT-L-14.pt``), which are TorchScript archives: ``torch.jit.load`` runs the
    TorchScript code such a file carries, so a file from an untrusted source must not be given to it."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except OSError:
            raise
        except Exception as err:    # safetensors' own error types: a truncated or overwritten file
            raise ValueError(f"{path} is damaged or not a safetensors file ({type(err).__name__}: {err})") from None
    if _is_torchscript_archive(path):
        if os.environ.get(TRUST_TORCHSCRIPT) != "1":
            raise ValueError(f"{path} is a TorchScript archive (the format of OpenAI CLIP's ViT-*.pt), which carries "
                             f"code that loading it would run; percept runs no code from files unless told to: set "
                             f"{TRUST_TORCHSCRIPT}=1 if you trust this file, or use timm's or open_clip's weights "
                             f"(safetensors) instead")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)       # torch.jit.load's deprecation notice
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:                                 # not a checkpoint, or pickled Python objects
            raise ValueError(f"cannot read {path} as weights with torch.load(weights_only=True) "
                             f"({type(err).__name__}: {str(err)[:200]})") from err
    for wrapper in ("model", "state_dict"):                      # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


TRUST_TORCHSCRIPT = "PERCEPT_TRUST_TORCHSCRIPT"   # the opt-in to load TorchScript weight files (they carry code)


def _is_torchscript_archive(path: Path) -> bool:
    """A TorchScript zip (``torch.jit.save``) has ``<name>/constants.pkl`` and ``<name>/code/``."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


CLIP_PACKAGE_PREFIXES = ("visual.", "module.visual.")   # OpenAI CLIP and open_clip: the image tower's keys


def _load_local_weights(model: nn.Module, path: Path, spec: BackboneSpec) -> None:
    """Load a local file into a timm encoder: timm's own layout, or a whole OpenAI CLIP / open_clip checkpoint
    (image and text towers), whose image tower timm's ``checkpoint_filter_fn`` maps to timm's names (the
    text tower is left out)."""
    state = read_weights_file(path)
    if any(k.startswith(CLIP_PACKAGE_PREFIXES) for k in state):
        if spec.family != "clip":
            raise ValueError(f"{path} is a CLIP checkpoint (keys 'visual.*') but backbone {spec.name!r} is "
                             f"{spec.family}; choose a CLIP backbone (--backbone clip_vit_l14 for ViT-L/14)")
        state = checkpoint_filter_fn(state, model)
    check_state_dict(model, state, source=str(path), what=f"timm weights for {spec.name}")
    model.load_state_dict(state)


def embedding_dim(encoder: nn.Module) -> int:
    """Width of the encoder's output embedding (projection width for CLIP, token width otherwise)."""
    head = getattr(encoder, "head", None)
    return head.out_features if isinstance(head, nn.Linear) else encoder.num_features
