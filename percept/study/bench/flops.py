"""FLOPs per image, counted analytically from the encoder's sizes (a multiply-add = 2 FLOPs), and the
fraction of the GPU's dense bf16 peak a measured rate achieves (MFU); see :mod:`percept.study.bench`."""
from __future__ import annotations

from torch import nn

from ...model.perceptclip import PerceptCLIP
from .timing import rate_of

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from the vendors' data sheets; first match wins.
PEAK_BF16_TFLOPS = (("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("H200", 989.0),
                    ("GH200", 989.0), ("B200", 2250.0), ("L40S", 362.0), ("A100", 312.0))


def model_flops(model: PerceptCLIP) -> dict[str, float]:
    """Analytic FLOPs per image (multiply-add = 2) of ``model``'s forward pass and training step."""
    vit = model.vit
    d, depth = vit.embed_dim, len(vit.blocks)
    n = vit.patch_embed.num_patches + getattr(vit, "num_prefix_tokens", 1)
    mlp = vit.blocks[0].mlp.fc1.out_features
    conv = vit.patch_embed.proj
    patch = 2.0 * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels * vit.patch_embed.num_patches
    linear = depth * 2.0 * n * (4 * d * d + 2 * d * mlp)
    attention = depth * 2.0 * 2.0 * n * n * d
    r = model.config.lora_r if model.has_lora else 0
    lora = depth * 3 * 2.0 * n * 2 * d * r
    proj = 2.0 * d * model.embed_dim if isinstance(getattr(vit, "head", None), nn.Linear) else 0.0
    head = sum(2.0 * m.in_features * m.out_features for h in model.heads.values() for m in h.modules()
               if isinstance(m, nn.Linear))
    forward = patch + linear + attention + lora + proj + head
    strategy = model.config.strategy
    if strategy == "full":
        backward = 2.0 * forward - patch                      # input + weight gradients; image needs none
    elif strategy == "lora":
        backward = linear + 2 * attention + 2 * lora + proj + 2 * head
    else:                                                     # frozen encoder: the head alone
        backward = 2 * head
    return {"forward_linear_layers": patch + linear, "forward_attention_matmuls": attention, "forward_lora": lora,
            "forward": forward, "train_step": forward + backward, "tokens": n}


def peak_bf16_tflops(device_name: str | None) -> float | None:
    if not device_name:
        return None
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return value
    return None


def mfu(m: dict, flops: dict, gpu: str | None, precision: str, cuda: bool) -> dict:
    peak = peak_bf16_tflops(gpu) if cuda else None
    out = {"peak_bf16_tflops": peak, "train_flops_per_image": flops["train_step"],
           "forward_flops_per_image": flops["forward"]}
    for name, per_image in (("train_synthetic", flops["train_step"]), ("train_cache_gpu_augment", flops["train_step"]),
                            ("inference", flops["forward"]), ("reference_synthetic", flops["train_step"])):
        rate = rate_of(m, name)
        if rate:
            achieved = rate * per_image / 1e12
            out[f"{name}_tflops"] = achieved
            out[f"{name}_fraction_of_peak"] = achieved / peak if peak else None
    if peak and precision != "bf16":
        out["note"] = "the peak is the bf16 tensor-core peak; this run did not use bf16"
    return out
