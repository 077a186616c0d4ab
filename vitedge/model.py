"""Vision Transformer, from scratch, as in "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021).

    z_0 = [x_class; x_p^1 E; ...; x_p^N E] + E_pos          (eq. 1)  patch embedding, class token, positions
    z'_l = MSA(LN(z_{l-1})) + z_{l-1}                        (eq. 2)  pre-norm self-attention, residual
    z_l = MLP(LN(z'_l)) + z'_l                               (eq. 3)  pre-norm GELU MLP, residual
    y = LN(z_L^0)                                            (eq. 4)  final norm, class token -> linear head

The stem is a choice of the config (`stem`): "patch" is the paper's linear patch embedding (the
default, and what imported torchvision/timm weights need); "conv" is the paper's hybrid (§3.1:
the patch embedding applied to CNN feature maps), built as in "Early convolutions help
transformers see better" (Xiao et al., 2021): a few 3x3 conv-BN-ReLU layers whose strides
multiply to `patch_size`, then a 1x1 projection to the token width. On 48x48 faces it learns
far faster from scratch than the linear stem; `fold_batchnorm` folds its BN into the convs for export.

The pooling is a choice too (`pool`): "cls" reads the class token (the paper's, the default);
"seq" is CCT's sequence pooling (Hassani et al., 2021, "Escaping the Big Data Paradigm with Compact
Transformers"): no class token, a learned softmax weighting over the output patch tokens
(`attn_pool`, one linear score per token) whose weighted sum feeds the head, which those authors
found helps small transformers on small data sets.

Optionally a distillation token (DeiT, Touvron et al., 2021): a second learned token with its
own head, trained to match the teacher. In training the model returns both heads' logits; in
eval it returns their average, which is what every exported artefact computes.

Parameter names follow timm (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.attn.qkv`, ...)
so timm/DeiT checkpoints import almost by name; torchvision's naming is mapped in `checkpoints.py`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torch.utils.flop_counter import FlopCounterMode

from vitedge import cnn
from vitedge.configs import MAX_DIMENSION, StrictConfig


@dataclass(frozen=True)
class ViTConfig(StrictConfig):
    INT_BOUND: ClassVar[int | None] = MAX_DIMENSION  # dimensions: bounded before anything is allocated
    img_size: int = 48
    patch_size: int = 4
    in_chans: int = 1
    num_classes: int = 7
    embed_dim: int = 192
    depth: int = 6
    num_heads: int = 3
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    distilled: bool = False  # add a DeiT distillation token + head
    drop_rate: float = 0.0  # dropout after position embedding and in the MLP
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0  # stochastic depth, linearly increasing over the blocks
    ln_eps: float = 1e-6
    stem: str = "patch"  # patch (linear patch embedding) | conv (hybrid: 3x3 conv-BN-ReLU stack)
    stem_channels: tuple[int, ...] = (32, 64, 128)  # conv stem only: output channels per conv
    stem_strides: tuple[int, ...] = (2, 2, 2)  # conv stem only: their product is patch_size
    pool: str = "cls"  # cls (class token -> head) | seq (CCT sequence pooling of the patch tokens -> head)

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so configs stay hashable and compare equal after a round trip
        object.__setattr__(self, "stem_channels", tuple(int(c) for c in self.stem_channels))
        object.__setattr__(self, "stem_strides", tuple(int(c) for c in self.stem_strides))
        if self.stem not in ("patch", "conv"):
            raise ValueError(f"unknown stem '{self.stem}' (patch | conv)")
        if self.pool not in ("cls", "seq"):
            raise ValueError(f"unknown pool '{self.pool}' (cls | seq)")
        if self.stem == "conv":
            if len(self.stem_channels) != len(self.stem_strides) or not self.stem_channels:
                raise ValueError("stem_channels and stem_strides must be non-empty and of one length")
            if math.prod(self.stem_strides) != self.patch_size:
                raise ValueError(f"conv stem strides {self.stem_strides} multiply to {math.prod(self.stem_strides)}, "
                                 f"not patch_size {self.patch_size}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch_size {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")

    @property
    def num_patches(self) -> int:
        return (self.img_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the class token (pool "cls"), then the distillation token."""
        return int(self.pool == "cls") + int(self.distilled)


# Presets. The 48x48 ones are sized for FER-2013 on edge devices; the /16 ones at 224 match
# ViT-Ti/S/B (timm, torchvision) so their pretrained weights can be imported and then resized.
PRESETS: dict[str, ViTConfig] = {
    "vit-nano-48": ViTConfig(patch_size=8, embed_dim=96, depth=3, num_heads=2),  # ~0.35M, the smallest patch ViT
    "vit-micro-48": ViTConfig(patch_size=6, embed_dim=128, depth=4, num_heads=2),  # ~0.8M
    "vit-tiny-48": ViTConfig(patch_size=6, embed_dim=192, depth=6, num_heads=3),  # ~2.7M
    "vit-small-48": ViTConfig(patch_size=4, embed_dim=384, depth=8, num_heads=6),  # ~14M teacher
    "vit-base-48": ViTConfig(patch_size=4, embed_dim=768, depth=12, num_heads=12),  # ~85M
    # hybrids (conv stem to a 6x6 token grid): the FER-2013 models; sized by benchmarks/learning_curves.py
    "hybrid-tiny-48": ViTConfig(patch_size=8, embed_dim=192, depth=4, num_heads=3, mlp_ratio=2.0, stem="conv"),
    "hybrid-micro-48": ViTConfig(patch_size=8, embed_dim=128, depth=4, num_heads=2, mlp_ratio=2.0, stem="conv"),
    "vit-ti-16": ViTConfig(img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=192, depth=12, num_heads=3),
    "vit-s-16": ViTConfig(img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=384, depth=12, num_heads=6),
    "vit-b-16": ViTConfig(img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=768, depth=12, num_heads=12),
}


def get_config(preset: str, **overrides: Any) -> ViTConfig:
    if preset not in PRESETS:
        if preset in cnn.PRESETS:
            return replace(cnn.PRESETS[preset], **overrides)  # type: ignore[return-value]  # same input fields
        raise ValueError(f"unknown preset '{preset}'; choose from {', '.join([*PRESETS, *cnn.PRESETS])}")
    return replace(PRESETS[preset], **overrides)


class PatchEmbed(nn.Module):
    """Split the image into non-overlapping patches and project each linearly (a strided conv)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_chans, cfg.embed_dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class ConvStem(nn.Module):
    """The hybrid's stem: 3x3 conv-BN-ReLU layers (strides multiply to the patch size), then a 1x1
    projection to the token width. Output tokens are in the same row-major order as PatchEmbed's."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = cfg.in_chans
        for c_out, stride in zip(cfg.stem_channels, cfg.stem_strides):
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(c_in, cfg.embed_dim, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.convs(x)).flatten(2).transpose(1, 2)  # (B, N, D)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every Conv2d -> BatchNorm2d pair into one conv with a bias (eval mode only): what the
    exported graphs contain, so every runtime and quantiser sees a plain conv. Returns `model`."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (batch statistics are not foldable)")
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        mods = list(seq)
        for i in range(len(mods) - 1):
            if isinstance(mods[i], nn.Conv2d) and isinstance(mods[i + 1], nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(mods[i], mods[i + 1])
                seq[i + 1] = nn.Identity()
    return model


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, D)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class Block(nn.Module):
    """Pre-norm transformer encoder block (eqs. 2-3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0, eps: float = 1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg) if cfg.stem == "patch" else ConvStem(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.pool == "cls" else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, D)) if cfg.distilled else None
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + cfg.num_prefix_tokens, D))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.Sequential(*[
            Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, cfg.drop_rate, cfg.attn_drop_rate, dpr[i], cfg.ln_eps)
            for i in range(cfg.depth)
        ])
        self.norm = nn.LayerNorm(D, eps=cfg.ln_eps)
        self.attn_pool = nn.Linear(D, 1) if cfg.pool == "seq" else None
        self.head = nn.Linear(D, cfg.num_classes)
        self.head_dist = nn.Linear(D, cfg.num_classes) if cfg.distilled else None
        self.init_weights()

    def init_weights(self) -> None:
        # as in timm/DeiT: truncated normal(0.02) for tokens, positions and linears; zero biases
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.dist_token is not None:
            nn.init.trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # patch projection like a linear layer on the flattened patch (MAE does the same)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed.proj.bias)
        for m in self.patch_embed.modules():  # conv stem: He init for the ReLU convs (torchvision's ResNet)
            if isinstance(m, nn.Conv2d) and m is not self.patch_embed.proj:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def prefix_tokens(self, batch: int) -> torch.Tensor:
        tokens = [t for t in (self.cls_token, self.dist_token) if t is not None]
        if not tokens:  # sequence pooling without distillation: patch tokens only
            return self.pos_embed.new_zeros(batch, 0, self.cfg.embed_dim)
        return torch.cat(tokens, dim=1).expand(batch, -1, -1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.prefix_tokens(x.shape[0]), x], dim=1) + self.pos_embed  # eq. 1
        x = self.blocks(self.pos_drop(x))  # eqs. 2-3
        return self.norm(x)  # eq. 4

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """What the classification head reads: the class token, or the sequence-pooled patch tokens."""
        if self.attn_pool is None:
            return x[:, 0]
        patches = x[:, self.cfg.num_prefix_tokens:]
        weights = self.attn_pool(patches).softmax(dim=1)  # (B, N, 1): one learned weight per token
        return (weights * patches).sum(dim=1)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(self.pooled(x))
        if self.head_dist is None:
            return logits
        logits_dist = self.head_dist(x[:, self.cfg.num_prefix_tokens - 1])  # the distillation token: last prefix
        if self.training:
            return logits, logits_dist  # the distillation loss needs both
        return (logits + logits_dist) / 2

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(self.forward_features(x))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @property
    def grid_size(self) -> int:
        return self.cfg.img_size // self.cfg.patch_size


def create_model(preset: str | ViTConfig | dict, **overrides: Any) -> nn.Module:
    """`create_model("vit-tiny-48", distilled=True)`, or from a config / config dict.

    CNN presets (`cnn-*`, `vitedge.cnn`: the optional convnet teacher) are built here too, so every
    stage builds its model from one spec whichever architecture it names."""
    if isinstance(preset, cnn.CNNConfig) or (isinstance(preset, dict) and preset.get("arch") == "cnn"):
        return cnn.create_cnn(preset, **overrides)
    if isinstance(preset, str) and preset in cnn.PRESETS:
        return cnn.create_cnn(preset, **overrides)
    if isinstance(preset, ViTConfig):
        cfg = replace(preset, **overrides)
    elif isinstance(preset, dict):
        cfg = replace(ViTConfig.from_dict(preset), **overrides)
    else:
        cfg = get_config(preset, **overrides)
    return VisionTransformer(cfg)


def flops_per_image(model: nn.Module) -> int:
    """Counted (not estimated) FLOPs of one eval forward pass at the model's input size."""
    was_training = model.training
    model.eval()
    x = torch.zeros(1, model.cfg.in_chans, model.cfg.img_size, model.cfg.img_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())
