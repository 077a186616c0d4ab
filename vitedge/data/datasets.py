"""Torch datasets over in-memory splits, training augmentation and class-imbalance weights."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vitedge.data.splits import Split
from vitedge.preprocess import Preprocess


def train_transform(pre: Preprocess, strength: str = "strong") -> v2.Compose:
    """Augmentation for small-data ViTs on 48x48 faces: crops, flips, small affine, light photometric
    jitter and random erasing (the DeiT recipe, scaled down to faces that must stay faces)."""
    size = pre.img_size
    if strength not in ("none", "light", "strong"):
        raise ValueError(f"unknown augmentation strength '{strength}' (none | light | strong)")
    ops: list = [v2.Resize(size, antialias=True)]
    if strength in ("light", "strong"):
        ops += [v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
                v2.RandomHorizontalFlip()]
    if strength == "strong":
        ops += [v2.RandomAffine(degrees=10, translate=(0.05, 0.05)),
                v2.ColorJitter(brightness=0.3, contrast=0.3)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize([pre.mean], [pre.std])]
    if strength == "strong":
        ops.append(v2.RandomErasing(p=0.25, scale=(0.02, 0.15), value=0.0))
    return v2.Compose(ops)


class FaceDataset(Dataset):
    """Augmented training samples: (1, S, S) float32 normalised, label."""

    def __init__(self, split: Split, pre: Preprocess, augment: str = "strong"):
        self.images = torch.from_numpy(split.images).unsqueeze(1)  # (N, 1, H, W) uint8, shared, no copy
        self.labels = torch.from_numpy(split.labels)
        self.transform = train_transform(pre, augment)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[i]), self.labels[i]


class TensorFaces(Dataset):
    """Evaluation samples, preprocessed once with exactly the deployment preprocessing."""

    def __init__(self, split: Split, pre: Preprocess):
        self.x = torch.from_numpy(pre(split.images))
        self.labels = torch.from_numpy(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.labels[i]


def class_weights(labels: np.ndarray, num_classes: int, mode: str = "sqrt") -> torch.Tensor:
    """Loss weights against class imbalance (FER's disgust is 1.5% of the data).

    "inverse" weights by 1/frequency; "sqrt" by 1/sqrt(frequency), which helps the rare classes
    without letting 436 disgust images dominate; "none" gives ones. Normalised to mean 1.
    """
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    counts = np.maximum(counts, 1.0)
    if mode == "none":
        w = np.ones(num_classes)
    elif mode == "sqrt":
        w = 1.0 / np.sqrt(counts)
    elif mode == "inverse":
        w = 1.0 / counts
    else:
        raise ValueError(f"unknown class balance mode '{mode}' (none | sqrt | inverse)")
    return torch.tensor(w / w.mean(), dtype=torch.float32)
