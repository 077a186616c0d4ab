"""Class-imbalance weights for the training loss (the input path itself is `vitedge.data.augment`)."""
from __future__ import annotations

import numpy as np
import torch


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
