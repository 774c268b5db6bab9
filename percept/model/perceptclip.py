"""The PerceptCLIP model: a timm vision encoder + peft LoRA on q, k, v + one head per dataset.

Paper §3.1: CLIP ViT-L/14 vision encoder; LoRA (r=16, alpha=8) on the query, key and value projections
of every attention layer ("fine-tuning only the attention layers"); an MLP head on the projected CLS
embedding; < 3M trainable parameters. LoRA dropout 0.1 and the head's dropout 0.5 follow the official
release (``modeling.py``: ``LoraConfig(r=16, lora_alpha=8, lora_dropout=0.1)``), the paper is silent.

Ablations (paper §7): ``strategy`` = ``lora`` (default) | ``frozen`` (head only) | ``full`` (whole
encoder, projection included); ``head_type`` = ``mlp`` | ``linear``; ``backbone`` (Tables A.7, A.8);
``lora_r`` / ``lora_alpha`` (Tables A.10, A.11).

Multi-dataset training (§3.2) shares the encoder (and its LoRA) and gives each dataset its own head:
``ModelConfig(heads={"livec": 1, "koniq": 1})`` and ``model(images, head_name="livec")``.

Heads: the prediction heads on the (projected) CLS embedding.

``MLPHead`` is the official PerceptCLIP head (release ``modeling.py``; paper §3.1, Fig. 2):
768 → 512 → ReLU → Dropout(0.5) → 256 → ReLU → Dropout(0.5) → outputs, with layers named ``fc1``,
``fc2``, ``fc3`` as in the release so official weights load by name. ``LinearHead`` is the ablation of
Table 7 (one Linear layer).
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from huggingface_hub import ModelCard, ModelHubMixin, hf_hub_download
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

from ..core.checkpoint import check_state_dict, load_tensors, save_tensors
from ..core.options import upgrade_model_fields
from . import backbones
from .attention import attention_layers
from .config import HEAD_TYPES, STRATEGIES, ModelConfig  # noqa: F401 (percept.model.perceptclip.ModelConfig)


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, int] = (512, 256), dropout: float = 0.5):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], out_dim)
        self.act = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x):
        x = self.dropout1(self.act(self.fc1(x)))
        x = self.dropout2(self.act(self.fc2(x)))
        return self.fc3(x)


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return self.fc(x)


def create_head(head_type: str, in_dim: int, out_dim: int, hidden: tuple[int, int] = (512, 256),
                dropout: float = 0.5) -> nn.Module:
    if head_type == "mlp":
        return MLPHead(in_dim, out_dim, hidden, dropout)
    if head_type == "linear":
        return LinearHead(in_dim, out_dim)
    raise ValueError(f"unknown head type {head_type!r}; choose one of {HEAD_TYPES}")


HUB_WEIGHTS = "model.safetensors"   # save_pretrained's files (huggingface_hub's names)
HUB_CONFIG = "config.json"
LORA_TARGETS = r".*\.attn\.(q|k|v)$"   # the split q, k, v Linear layers of every block


class PerceptCLIP(nn.Module, ModelHubMixin, library_name="percept", tags=["perceptclip", "clip", "lora"]):
    """Encoder (optionally LoRA-wrapped) → embedding → ``heads[name]``.

    ``save_pretrained(dir)`` / ``PerceptCLIP.from_pretrained(dir_or_repo)`` / ``push_to_hub(repo)`` follow
    huggingface_hub's ``ModelHubMixin``: ``config.json`` (the :class:`ModelConfig`) and ``model.safetensors``
    holding what :func:`save_weights` holds — for a pretrained backbone only LoRA + heads (adapter-sized, ~11 MB
    for ViT-L/14); the frozen encoder is rebuilt from the backbone's name (hub) or ``backbone_weights=FILE``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        vit = backbones.create_backbone(config.backbone, pretrained=config.pretrained,
                                        weights_path=config.weights_path, **config.backbone_kwargs)
        self.img_size = tuple(vit.patch_embed.img_size)
        self.embed_dim = backbones.embedding_dim(vit)
        if config.strategy == "lora":
            lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                              target_modules=LORA_TARGETS, bias="none")
            self.encoder = get_peft_model(vit, lora)   # freezes every non-LoRA encoder weight
        else:
            self.encoder = vit
            vit.requires_grad_(config.strategy == "full")
        self.heads = nn.ModuleDict({
            name: create_head(config.head_type, self.embed_dim, int(n), config.head_hidden, config.head_dropout)
            for name, n in config.heads.items()})

    # -- structure -------------------------------------------------------------------------------
    @property
    def vit(self) -> nn.Module:
        """The underlying timm VisionTransformer (inside the peft wrapper, if any)."""
        return self.encoder.get_base_model() if isinstance(self.encoder, PeftModel) else self.encoder

    @property
    def has_lora(self) -> bool:
        return isinstance(self.encoder, PeftModel)

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` its inputs must be normalised with: the backbone's (:mod:`percept.model.backbones`)."""
        return backbones.normalization(self.config.backbone)

    # -- forward ---------------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor):
            raise TypeError(f"images must be a torch.Tensor of shape (B, 3, H, W); got {type(images).__name__}")
        if images.dim() != 4:
            raise ValueError(f"images must have shape (B, 3, H, W); got {tuple(images.shape)}")
        if images.shape[1] != 3:
            raise ValueError(f"images must be RGB with 3 channels; got {images.shape[1]} channels "
                             f"(convert grayscale/RGBA/CMYK images to RGB first, e.g. percept.core.images.load_rgb)")
        if tuple(images.shape[-2:]) != self.img_size:
            raise ValueError(f"images must be {self.img_size[0]}x{self.img_size[1]} for backbone "
                             f"{self.config.backbone!r}; got {images.shape[-2]}x{images.shape[-1]} "
                             f"(resize/crop with percept.data.preprocessing)")
        if not images.is_floating_point():
            raise ValueError(f"images must be normalised float tensors; got dtype {images.dtype}")

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The (projected) CLS embedding, (B, embed_dim)."""
        self.check_images(images)
        return self.encoder(images)

    def head_names(self) -> list[str]:
        return list(self.heads)

    def forward(self, images: torch.Tensor, head_name: str | None = None) -> torch.Tensor:
        """Predictions (B, outputs) of the head named ``head_name`` (may be omitted when the model has one)."""
        return self._head(head_name)(self.embed(images))

    def _head(self, head_name: str | None) -> nn.Module:
        if head_name is None:
            if len(self.heads) != 1:
                raise ValueError(f"this model has several heads {self.head_names()}; pass head_name=<name>")
            return next(iter(self.heads.values()))
        if head_name not in self.heads:
            raise KeyError(f"unknown head {head_name!r}; this model has {self.head_names()}")
        return self.heads[head_name]

    # -- parameters ------------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        lora = sum(p.numel() for n, p in self.named_parameters() if "lora_" in n)
        heads = sum(p.numel() for p in self.heads.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return {"lora": lora, "heads": heads, "trainable": trainable, "total": total}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What training changes: LoRA + heads (``lora``), heads (``frozen``), everything (``full``)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def freeze_encoder(self) -> None:
        """Freeze the whole encoder, LoRA included (multi-dataset stage 2 trains heads only, §3.2)."""
        self.encoder.requires_grad_(False)

    @torch.no_grad()
    def merge_lora(self) -> "PerceptCLIP":
        """Fold LoRA into the q, k, v weights (same outputs, plain encoder, faster inference)."""
        if self.has_lora:
            self.encoder = self.encoder.merge_and_unload()
            # The merged encoder is a plain set of weights: treat it as strategy "full" so that
            # save_weights/load_weights keep the whole (merged) encoder.
            self.config.strategy = "full"
            self.encoder.requires_grad_(True)
        return self

    # -- huggingface_hub (ModelHubMixin) ---------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        config = {**self.config.to_dict(), "weights_path": None}   # a local backbone file means nothing elsewhere
        save_tensors(Path(save_directory) / HUB_WEIGHTS, _stored_state(self), {"format": "percept", "config": config})
        (Path(save_directory) / HUB_CONFIG).write_text(json.dumps({"format": "percept", "model": config},
                                                                  indent=2, sort_keys=True) + "\n")

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None = None, cache_dir=None,
                         force_download: bool = False, local_files_only: bool = False, token=None,
                         backbone_weights: str | os.PathLike | None = None, **ignored) -> "PerceptCLIP":
        """``model_id``: a folder written by ``save_pretrained`` or a hub repo id; ``backbone_weights``: a local
        file of the backbone's weights instead of fetching them by name (:func:`percept.model.backbones.create_backbone`)."""
        folder = Path(model_id)
        if folder.is_dir():
            path = folder / HUB_WEIGHTS
            if not path.is_file():
                raise FileNotFoundError(f"{folder} has no {HUB_WEIGHTS}; it was not written by "
                                        f"PerceptCLIP.save_pretrained / `percept export --format hub`")
        else:
            path = Path(hf_hub_download(model_id, HUB_WEIGHTS, revision=revision, cache_dir=cache_dir,
                                        force_download=force_download, local_files_only=local_files_only,
                                        token=token))
        return load_model(path, weights_path=None if backbone_weights is None else os.fspath(backbone_weights))

    def generate_model_card(self, *args, **kwargs):
        """A short card from the config (``percept export RUN --format hub`` writes a full one from the run)."""
        heads = ", ".join(f"`{k}` ({v} output{'s' if v > 1 else ''})" for k, v in self.config.heads.items())
        return ModelCard(f"---\nlibrary_name: percept\ntags: [perceptclip, clip, lora]\n---\n\n# PerceptCLIP model\n\n"
                         f"Backbone `{self.config.backbone}` ({self.config.strategy}), heads {heads}. Load it with "
                         f"`percept.PerceptCLIP.from_pretrained(...)` (the `percept` package).\n")

    # -- interpretability hooks (paper §6) -------------------------------------------------------
    def attention_layers(self):
        return attention_layers(self.vit)

    @contextmanager
    def uniform_cls_attention(self, heads: dict[int, object]) -> Iterator[None]:
        """Within the block, layer ``l``'s heads in ``heads[l]`` attend uniformly from the CLS token.

        ``heads[l]`` is a list of head indices, or a boolean mask broadcastable to (batch, num_heads)
        to ablate different heads in different samples of one batch.
        """
        layers = self.attention_layers()
        try:
            for index, which in heads.items():
                layer = layers[index]
                if isinstance(which, torch.Tensor) and which.dtype == torch.bool:
                    layer.uniform_cls_heads = which
                else:
                    mask = torch.zeros(layer.num_heads, dtype=torch.bool)
                    mask[list(which)] = True
                    layer.uniform_cls_heads = mask
            yield
        finally:
            for layer in layers:
                layer.uniform_cls_heads = None

    @contextmanager
    def recorded_attention(self) -> Iterator[list]:
        """Record attention maps during the block; on leaving it, the yielded list holds each layer's
        maps of the last forward pass, (B, heads, tokens, tokens), in depth order.

        >>> with model.recorded_attention() as maps:
        ...     model(images)
        >>> last = maps[-1]
        >>> last[:, :, 0, 1:]   # last layer, CLS -> patch attention
        """
        layers = self.attention_layers()
        maps: list = []
        for layer in layers:
            layer.record_attention = True
        try:
            yield maps
        finally:
            maps.extend(layer.attention_map for layer in layers)
            for layer in layers:
                layer.record_attention = False
                layer.attention_map = None


def build_model(config: ModelConfig | None = None, **overrides) -> PerceptCLIP:
    """``build_model(backbone="tiny_clip", pretrained=False)`` or ``build_model(ModelConfig(...))``."""
    if config is None:
        config = ModelConfig.from_dict(overrides)
    elif overrides:
        config = ModelConfig.from_dict({**config.to_dict(), **upgrade_model_fields(overrides)})
    return PerceptCLIP(config)


def _stored_state(model: PerceptCLIP) -> dict[str, torch.Tensor]:
    """What a weights file must hold to rebuild ``model``.

    With a pretrained (or file-given) base, the trainable weights suffice: the frozen base is rebuilt
    from its source. A random-initialised base (``pretrained=False``) cannot be rebuilt, so everything
    is stored.
    """
    if model.config.pretrained or model.config.weights_path:
        return model.trainable_state_dict()
    return model.state_dict()


def save_weights(model: PerceptCLIP, path: str | os.PathLike) -> None:
    """Save the weights training changed (LoRA + heads, per strategy) and the config, as safetensors."""
    save_tensors(path, _stored_state(model), {"format": "percept", "config": model.config.to_dict()})


def load_weights(model: PerceptCLIP, path: str | os.PathLike) -> PerceptCLIP:
    """Load weights saved by :func:`save_weights` into ``model``; every key it needs must be present."""
    tensors, _ = load_tensors(path)
    expected = _stored_state(model)
    ignore = tuple(k for k in model.state_dict() if k not in expected)   # frozen weights stay as built
    check_state_dict(model, tensors, source=str(path), what="percept weights", ignore_missing=ignore)
    model.load_state_dict(tensors, strict=False)
    return model


def load_model(path: str | os.PathLike, pretrained: bool | None = None, weights_path: str | None = None) -> PerceptCLIP:
    """Rebuild a model from a :func:`save_weights` file (config in its metadata), in eval mode.

    The frozen base encoder is rebuilt from the backbone's pretrained weights (``pretrained`` and
    ``weights_path`` override what the file recorded).
    """
    _, meta = load_tensors(path)
    if meta.get("format") != "percept" or "config" not in meta:
        raise ValueError(f"{path} is not a percept weights file (no percept config in its metadata)")
    config = ModelConfig.from_dict(meta["config"])
    if pretrained is not None:
        config.pretrained = pretrained
    if weights_path is not None:
        config.weights_path = weights_path
    return load_weights(PerceptCLIP(config), path).eval()
