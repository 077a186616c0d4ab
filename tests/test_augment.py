"""The training input path: in-memory uint8 batches, augmentation on whole batches, seeded."""
from __future__ import annotations

import pytest
import torch

from vitedge.data import make_synthetic
from vitedge.data.augment import AugmentSpec, BatchAugment, InMemoryBatches
from vitedge.preprocess import Preprocess

PRE = Preprocess()


@pytest.fixture(scope="module")
def train():
    return make_synthetic(per_class=20, seed=1)["train"]


def test_none_is_exactly_the_deployment_preprocessing(train):
    x = torch.from_numpy(train.images[:8]).unsqueeze(1)
    out = BatchAugment(PRE, "none")(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out, torch.from_numpy(PRE(train.images[:8])), atol=1e-6)


def test_same_generator_seed_same_batch_and_strong_changes_images(train):
    x = torch.from_numpy(train.images[:32]).unsqueeze(1)
    aug = BatchAugment(PRE, "strong")
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (32, 1, 48, 48) and a.dtype == torch.float32
    plain = torch.from_numpy(PRE(train.images[:32]))
    assert (a - plain).abs().mean() > 0.05  # it does augment


def test_flip_alone_mirrors_about_half_the_batch(train):
    x = torch.from_numpy(train.images[:64]).unsqueeze(1)
    out = BatchAugment(PRE, AugmentSpec(flip=True))(x, torch.Generator().manual_seed(0))
    plain = torch.from_numpy(PRE(train.images[:64]))
    same = [(torch.allclose(out[i], plain[i], atol=1e-4)) for i in range(64)]
    mirrored = [(torch.allclose(out[i], plain[i].flip(-1), atol=1e-4)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 16 < sum(mirrored) < 48


def test_erasing_sets_a_rectangle_to_the_mean_grey(train):
    x = torch.from_numpy(train.images[:64]).unsqueeze(1)
    out = BatchAugment(PRE, AugmentSpec(erase_p=1.0))(x, torch.Generator().manual_seed(0))
    zero_frac = (out == 0).float().mean(dim=(1, 2, 3))
    assert (zero_frac >= 0.015).all() and (zero_frac <= 0.2).all()


def test_epochs_are_seeded_permutations_and_ranks_are_disjoint(train):
    b = InMemoryBatches(train, PRE, batch_size=10, seed=3)
    e0 = torch.cat([y for _, y in b.epoch(0)])
    again = torch.cat([y for _, y in b.epoch(0)])
    e1 = torch.cat([y for _, y in b.epoch(1)])
    assert torch.equal(e0, again) and not torch.equal(e0, e1)
    assert len(b) == len(train) // 10 and all(x.dtype == torch.uint8 and x.shape[1:] == (1, 48, 48)
                                              for x, _ in b.epoch(0))
    r0 = InMemoryBatches(train, PRE, 5, seed=3, rank=0, world=2)
    r1 = InMemoryBatches(train, PRE, 5, seed=3, rank=1, world=2)
    seen0 = {bytes(x[i].numpy()) for x, _ in r0.epoch(0) for i in range(len(x))}
    seen1 = {bytes(x[i].numpy()) for x, _ in r1.epoch(0) for i in range(len(x))}
    assert not seen0 & seen1


def test_unknown_strength_is_an_error():
    with pytest.raises(ValueError, match="strength"):
        BatchAugment(PRE, "extreme")
