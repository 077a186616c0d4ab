"""A compact convnet for 48x48 faces: the optional teacher (`models.teacher.arch: cnn`).

DeiT found that a convnet teacher distils into a better ViT than a transformer teacher (its
inductive bias reaches the student through the distillation token), and on FER-2013 from
scratch a small CNN learns in one CPU epoch what a plain ViT needs many for. VGG-shaped, as the
strongest from-scratch FER-2013 CNNs are: stages of 3x3 conv-BN-ReLU, 2x2 max-pooling between
stages, global average pooling, dropout, a linear head. Trained by the same engine as the ViTs.

It exposes what the stages ask of any model: `.cfg` (img_size, in_chans, num_classes, as_dict),
`num_params()`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from vitedge.configs import DictConfig


@dataclass(frozen=True)
class CNNConfig(DictConfig):
    img_size: int = 48
    in_chans: int = 1
    num_classes: int = 7
    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels per stage; a 2x2 max-pool between stages
    depths: tuple[int, ...] = (1, 2, 2, 2)  # convs per stage (one conv at full resolution: it is the slow one)
    drop_rate: float = 0.3  # dropout before the head
    arch: str = "cnn"

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "depths", tuple(int(d) for d in self.depths))
        if len(self.widths) != len(self.depths) or not self.widths:
            raise ValueError("widths and depths must be non-empty and of one length")
        if self.arch != "cnn":
            raise ValueError(f"CNNConfig has arch 'cnn', got {self.arch!r}")


PRESETS: dict[str, CNNConfig] = {
    "cnn-small-48": CNNConfig(),  # ~1.2M parameters
    "cnn-tiny-48": CNNConfig(widths=(16, 32, 64, 128), depths=(1, 1, 2, 2)),  # tests and the embedded default
}


class FaceCNN(nn.Module):
    def __init__(self, cfg: CNNConfig):
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        c_in = cfg.in_chans
        for s, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
            if s > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                c_in = width
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
