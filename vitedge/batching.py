"""Running a function over an array in batches: the one place that slices `x[i:i + batch]`.

Used wherever a model sees more images than one call should take (evaluation, calibration,
runtimes with a bounded batch, reconstruction losses), so the slicing and the concatenation are
written once.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch

T = TypeVar("T", np.ndarray, torch.Tensor)


def batch_slices(n: int, batch: int) -> Iterator[slice]:
    """slice(0, batch), slice(batch, 2 * batch), ... covering range(n); batch < 1 means all at once."""
    step = batch if batch > 0 else max(n, 1)
    for start in range(0, n, step):
        yield slice(start, min(start + step, n))


def batches(x: Sequence[Any] | T, batch: int) -> Iterator[Any]:
    """Consecutive batches of `x` (an array, a tensor or a sequence)."""
    for s in batch_slices(len(x), batch):
        yield x[s]


def map_batches(fn: Callable[[T], T], x: T, batch: int) -> T:
    """fn over `x` in batches, outputs concatenated along the first axis (numpy in, numpy out;
    tensor in, tensor out)."""
    outs = [fn(part) for part in batches(x, batch)]
    if isinstance(x, torch.Tensor):
        return torch.cat(outs)
    return np.concatenate(outs)
