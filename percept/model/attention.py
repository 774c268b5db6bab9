"""Self-attention with separate q, k, v projections, for LoRA and for interpretability.

Why this module exists
----------------------
PerceptCLIP (paper §3.1) applies LoRA to the *separate* query, key and value projections of the CLIP
vision transformer; the official release does so with transformers' ``CLIPAttention`` (``q_proj``,
``k_proj``, ``v_proj``) and peft. timm fuses the three into one ``qkv`` Linear, and a LoRA on the fused
layer is a different model (one rank-16 update shared by q, k and v instead of three). We therefore
split timm's ``qkv`` into three Linear layers ``q``, ``k``, ``v`` whose outputs are identical to the
fused layer, and put LoRA on those.

Two interpretability hooks live here too (paper §6), on by attribute, off by default:

* ``record_attention``: compute attention explicitly and keep the softmax maps in ``attention_map``
  (shape ``(B, heads, tokens, tokens)``).
* ``uniform_cls_heads``: a boolean mask broadcastable to ``(B, heads)``; for masked heads the CLS
  token's attention row is replaced by the uniform distribution over all tokens. A uniform row makes
  that head's CLS output exactly the mean of its value vectors, so the fast
  ``F.scaled_dot_product_attention`` path is kept for everything else and only the CLS row of the
  masked heads is overwritten. A per-sample mask ``(B, heads)`` lets one batch ablate a different head
  in each sample.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLS_INDEX = 0


class SplitQKVAttention(nn.Module):
    """Multi-head self-attention with separate ``q``, ``k``, ``v`` Linear layers.

    Built from a timm ``Attention`` by :meth:`from_timm`; the forward signature matches timm's
    (``x, attn_mask=None, is_causal=False``) so it drops into a timm ``Block``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, q_norm: nn.Module | None = None, k_norm: nn.Module | None = None):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.q_norm = q_norm if q_norm is not None else nn.Identity()
        self.k_norm = k_norm if k_norm is not None else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Interpretability switches (see module docstring).
        self.record_attention = False
        self.attention_map: torch.Tensor | None = None
        self.uniform_cls_heads: torch.Tensor | None = None

    @classmethod
    def from_timm(cls, attn: nn.Module) -> "SplitQKVAttention":
        """Copy a timm ``Attention`` (fused ``qkv``) into separate q, k, v layers, weights unchanged."""
        if getattr(attn, "gate", None) is not None or not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
            raise NotImplementedError("timm attention with gating or a post-attention norm is not supported")
        dim = attn.qkv.in_features
        if attn.qkv.out_features != 3 * dim:
            raise NotImplementedError(f"qkv projects {dim} -> {attn.qkv.out_features}; expected 3 x {dim}")
        new = cls(dim, attn.num_heads, qkv_bias=attn.qkv.bias is not None, attn_drop=attn.attn_drop.p,
                  proj_drop=attn.proj_drop.p, q_norm=attn.q_norm, k_norm=attn.k_norm)
        new.to(device=attn.qkv.weight.device, dtype=attn.qkv.weight.dtype)
        with torch.no_grad():
            for layer, w in zip((new.q, new.k, new.v), attn.qkv.weight.chunk(3, dim=0)):
                layer.weight.copy_(w)
            if attn.qkv.bias is not None:
                for layer, b in zip((new.q, new.k, new.v), attn.qkv.bias.chunk(3, dim=0)):
                    layer.bias.copy_(b)
            new.proj.load_state_dict(attn.proj.state_dict())
        return new

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, d)

    def _uniform_mask(self, batch: int) -> torch.Tensor | None:
        if self.uniform_cls_heads is None:
            return None
        mask = torch.as_tensor(self.uniform_cls_heads, dtype=torch.bool)
        if mask.shape[-1] != self.num_heads or mask.dim() > 2:
            raise ValueError(f"uniform_cls_heads must broadcast to (batch, {self.num_heads}); got {tuple(mask.shape)}")
        return mask.expand(batch, self.num_heads)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise NotImplementedError("PerceptCLIP encoders use full bidirectional attention (no mask)")
        b, n, c = x.shape
        q = self.q_norm(self._heads(self.q(x)))
        k = self.k_norm(self._heads(self.k(x)))
        v = self._heads(self.v(x))
        uniform = self._uniform_mask(b)
        if uniform is not None:
            uniform = uniform.to(x.device)

        if self.record_attention:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            attn = attn.softmax(dim=-1)
            if uniform is not None:
                cls_row = torch.where(uniform[..., None], torch.full_like(attn[:, :, CLS_INDEX], 1.0 / n),
                                      attn[:, :, CLS_INDEX])
                attn = torch.cat([cls_row[:, :, None], attn[:, :, CLS_INDEX + 1:]], dim=2)
            self.attention_map = attn
            out = self.attn_drop(attn) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
            if uniform is not None:
                # Uniform CLS row => CLS output is the mean of the head's value vectors.
                cls_out = torch.where(uniform[..., None], v.mean(dim=2), out[:, :, CLS_INDEX])
                out = torch.cat([cls_out[:, :, None], out[:, :, CLS_INDEX + 1:]], dim=2)

        out = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


def split_qkv(vit: nn.Module) -> nn.Module:
    """Replace every timm block's fused-qkv attention by :class:`SplitQKVAttention` (in place)."""
    for block in vit.blocks:
        block.attn = SplitQKVAttention.from_timm(block.attn)
    return vit


def attention_layers(module: nn.Module) -> list[SplitQKVAttention]:
    """All split attention layers of a model, in depth order."""
    return [m for m in module.modules() if isinstance(m, SplitQKVAttention)]
