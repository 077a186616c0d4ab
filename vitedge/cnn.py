"""A compact convnet for 48x48 faces: the optional teacher (`models.teacher.arch: cnn`).

DeiT found that a convnet teacher distils into a better ViT than a transformer teacher (its
inductive bias reaches the student through the distillation token), and on FER-2013 from
scratch a small CNN learns in one CPU epoch what a plain ViT needs many for. VGG-shaped, as the
strongest from-scratch FER-2013 CNNs are: stages of 3x3 conv-BN-ReLU, 2x2 max-pooling between
stages, global average pooling, dropout, a linear head. Trained by the same engine as the ViTs.

With `block: basic` the stages are ResNet's instead (He et al., 2016; the CIFAR layout, as the
from-scratch FER-2013 ResNets use): a 3x3 conv-BN-ReLU stem (`stem_stride` 2 halves the
resolution first), then per stage `depths[i]` basic blocks (two 3x3 convs and an identity
shortcut), the first of each later stage striding by 2 with a 1x1 projection shortcut.
`resnet18-half-48` is ResNet-18's depth at half its widths (2.8M parameters: its fp32 checkpoint,
11 MB, comes back from the lent GPU machine whose files must stay under 16 MiB; the full widths'
45 MB would not): the GPU teacher of `benchmarks/gpu_run.py`.

It exposes what the stages ask of any model: `.cfg` (img_size, in_chans, num_classes, as_dict),
`num_params()`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
from torch import nn

from vitedge.configs import MAX_DIMENSION, StrictConfig


@dataclass(frozen=True)
class CNNConfig(StrictConfig):
    INT_BOUND: ClassVar[int | None] = MAX_DIMENSION  # dimensions: bounded before anything is allocated
    img_size: int = 48
    in_chans: int = 1
    num_classes: int = 7
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per stage; a 2x2 max-pool between stages
    depths: tuple[int, ...] = (1, 2, 2, 2)  # convs per stage (one conv at full resolution: it is the slow one)
    drop_rate: float = 0.3  # dropout before the head
    arch: str = "cnn"
    block: str = "plain"  # plain (VGG: conv-BN-ReLU, max-pool between stages) | basic (ResNet basic blocks)
    stem_stride: int = 1  # basic only: the stem conv's stride (2 = stages start at half resolution)

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError("widths and depths must be non-empty and of one length")
        if self.arch != "cnn":
            raise ValueError(f"CNNConfig has arch 'cnn', got {self.arch!r}")
        if self.block not in ("plain", "basic"):
            raise ValueError(f"unknown CNN block {self.block!r} (plain | basic)")
        if self.stem_stride not in (1, 2) or (self.stem_stride != 1 and self.block != "basic"):
            raise ValueError(f"stem_stride must be 1, or 2 with basic blocks; got {self.stem_stride}")


PRESETS: dict[str, CNNConfig] = {
    "cnn-small-48": CNNConfig(),  # ~1.2M parameters
    "cnn-tiny-48": CNNConfig(widths=(16, 32, 64, 128), depths=(1, 1, 2, 2)),  # tests and the embedded default
    # ResNet-18's depth (2-2-2-2 basic blocks) at half its widths, first stage at 48x48: ~2.8M, the GPU teacher
    "resnet18-half-48": CNNConfig(widths=(32, 64, 128, 256), depths=(2, 2, 2, 2), block="basic", drop_rate=0.2),
    # the same from a stride-2 stem (stages at 24, 12, 6, 3): ~4x fewer FLOPs, for a GPU short of time
    "resnet18-half-s2-48": CNNConfig(widths=(32, 64, 128, 256), depths=(2, 2, 2, 2), block="basic", drop_rate=0.2,
                                     stem_stride=2),
}


def _conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out)]


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-BN-ReLU-conv-BN plus the shortcut, then ReLU. The last BN starts at
    zero (Goyal et al., 2017), so every block starts as the identity."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(c_in, c_out, 3, stride), nn.ReLU(inplace=True), *_conv_bn(c_out, c_out))
        nn.init.zeros_(self.body[-1].weight)
        self.shortcut = (nn.Sequential(*_conv_bn(c_in, c_out, 1, stride)) if stride != 1 or c_in != c_out
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def _plain_layers(cfg: CNNConfig) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    c_in = cfg.in_chans
    for s, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
        if s > 0:
            layers.append(nn.MaxPool2d(2))
        for _ in range(depth):
            layers += [*_conv_bn(c_in, width), nn.ReLU(inplace=True)]
            c_in = width
    return layers, c_in


def _residual_layers(cfg: CNNConfig) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = [*_conv_bn(cfg.in_chans, cfg.widths[0], 3, cfg.stem_stride), nn.ReLU(inplace=True)]
    c_in = cfg.widths[0]
    for s, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
        for i in range(depth):
            layers.append(BasicBlock(c_in, width, 2 if s > 0 and i == 0 else 1))
            c_in = width
    return layers, c_in


class FaceCNN(nn.Module):
    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.cfg = cfg
        layers, c_in = _plain_layers(cfg) if cfg.block == "plain" else _residual_layers(cfg)
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(c_in, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.features(x).mean(dim=(2, 3))))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def create_cnn(preset: str | CNNConfig | dict, **overrides: Any) -> FaceCNN:
    if isinstance(preset, CNNConfig):
        cfg = replace(preset, **overrides)
    elif isinstance(preset, dict):
        cfg = replace(CNNConfig.from_dict(preset), **overrides)
    elif preset in PRESETS:
        cfg = replace(PRESETS[preset], **overrides)
    else:
        raise ValueError(f"unknown CNN preset '{preset}'; choose from {', '.join(PRESETS)}")
    return FaceCNN(cfg)
