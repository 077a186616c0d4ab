"""Pretraining before fine-tuning: what gives a small-data ViT its start.

Methods (config `pretrain.method`):

- `mae` (default): masked autoencoder (He et al., 2022) on the training faces, labels unused.
  The encoder sees only the visible 25% of patches, so a step costs a fraction of a supervised one;
  a light decoder reconstructs the masked patches (per-patch normalised pixels, loss on masked
  patches only). The encoder is kept, the decoder thrown away.
- `supervised`: classification on an image folder (`<root>/<class>/*.png|jpg`), any classes.
- `import`: a checkpoint on disk (vitedge, torchvision or timm), adapted to the model.
- `none`: random initialisation.

Every method writes the same thing: a vitedge model checkpoint that `train.py --init` reads.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from vitedge import checkpoints
from vitedge.data import CLASSES, DatasetError, Split
from vitedge.data.augment import BatchAugment
from vitedge.model import Block, VisionTransformer, create_model
from vitedge.preprocess import Preprocess, to_gray_uint8
from vitedge.engine import TrainConfig, autocast, fit, run_loop

log = logging.getLogger("vitedge.pretrain")

METHODS = ("mae", "supervised", "import", "none")


@dataclass
class PretrainConfig(TrainConfig):
    method: str = "mae"
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    norm_pix_loss: bool = True
    source: str = ""  # image folder (supervised) or checkpoint file (import)
    lr: float = 1.5e-3
    augment: str = "light"  # MAE needs little augmentation; masking is the regulariser
    label_smoothing: float = 0.0
    class_balance: str = "none"


class MAE(nn.Module):
    """Masked autoencoder around a vitedge ViT encoder (its blocks, embeddings and norm)."""

    def __init__(self, encoder: VisionTransformer, mask_ratio: float = 0.75, decoder_dim: int = 128,
                 decoder_depth: int = 2, decoder_heads: int = 4, norm_pix_loss: bool = True):
        super().__init__()
        cfg = encoder.cfg
        self.encoder, self.mask_ratio, self.norm_pix_loss = encoder, mask_ratio, norm_pix_loss
        self.patch = cfg.patch_size
        self.decoder_embed = nn.Linear(cfg.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches + cfg.num_prefix_tokens, decoder_dim))
        self.decoder_blocks = nn.Sequential(*[Block(decoder_dim, decoder_heads) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch * self.patch * cfg.in_chans)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos_embed, std=0.02)
        for m in [self.decoder_embed, self.decoder_pred, *self.decoder_blocks.modules()]:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, p*p*C), patches in the same row-major order as the patch embedding."""
        B, C, H, W = imgs.shape
        p = self.patch
        x = imgs.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // p) * (W // p), p * p * C)

    def forward(self, imgs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        enc = self.encoder
        n_prefix = enc.cfg.num_prefix_tokens
        x = enc.patch_embed(imgs) + enc.pos_embed[:, n_prefix:]
        B, N, D = x.shape
        keep = max(1, int(N * (1 - self.mask_ratio)))
        # random masking by sorting noise: the first `keep` patches of each shuffle stay visible
        noise = torch.rand(B, N, device=imgs.device, generator=generator)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x = torch.gather(x, 1, ids_keep[..., None].expand(-1, -1, D))
        prefix = enc.prefix_tokens(B) + enc.pos_embed[:, :n_prefix]
        x = enc.norm(enc.blocks(torch.cat([prefix, x], dim=1)))

        y = self.decoder_embed(x)
        Dd = y.shape[-1]
        mask_tokens = self.mask_token.expand(B, N - keep, -1)
        patches = torch.cat([y[:, n_prefix:], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore[..., None].expand(-1, -1, Dd))  # unshuffle
        y = torch.cat([y[:, :n_prefix], patches], dim=1) + self.decoder_pos_embed
        pred = self.decoder_pred(self.decoder_norm(self.decoder_blocks(y)))[:, n_prefix:]

        target = self.patchify(imgs)
        if self.norm_pix_loss:
            mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        mask = torch.ones(B, N, device=imgs.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)  # 1 = masked, in patch order
        per_patch = ((pred.float() - target) ** 2).mean(dim=-1)
        return (per_patch * mask).sum() / mask.sum()


@torch.no_grad()
def mae_val_loss(mae: MAE, split: Split, pre: Preprocess, device: torch.device, batch: int = 256,
                 limit: int = 2048) -> float:
    """Reconstruction loss on (up to `limit`) validation faces with fixed masks: comparable across epochs."""
    was = mae.training
    mae.eval()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.from_numpy(pre(split.images[:limit]))
    losses = [mae(x[i:i + batch].to(device), generator=g).item() * len(x[i:i + batch]) for i in range(0, len(x), batch)]
    mae.train(was)
    return float(sum(losses) / max(len(x), 1))


def pretrain_mae(model: VisionTransformer, splits: dict[str, Split], pre: Preprocess, cfg: PretrainConfig,
                 work_dir: Path, resume: bool = False, dist_env=None) -> dict:
    if model.cfg.stem != "patch":
        raise ValueError("MAE pretraining masks non-overlapping patches: it needs the linear patch stem "
                         "(stem: patch), not the conv stem; use pretrain.method none or supervised")
    mae = MAE(model, cfg.mask_ratio, cfg.decoder_dim, cfg.decoder_depth, cfg.decoder_heads, cfg.norm_pix_loss)

    def step_loss(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast(cfg, images.device):
            return net(images)

    def validate(device: torch.device) -> dict:
        loss = mae_val_loss(mae, splits["val"], pre, device)
        return {"score": -loss, "val_recon_loss": loss}

    def save_best(path: Path, best: dict) -> None:
        checkpoints.save_model(path, model, pre, list(CLASSES),
                               {"stage": "pretrain", "method": "mae", "best": best, "train_config": asdict(cfg)})

    return run_loop(mae, splits["train"], BatchAugment(pre, cfg.augment), pre, cfg, work_dir, step_loss, validate,
                    save_best, resume=resume, stage="pretrain-mae", dist_env=dist_env)


def read_image_folder(root: str | Path, size: int, seed: int = 0, val_fraction: float = 0.1
                      ) -> tuple[Split, Split, list[str]]:
    """`<root>/<class>/*` images -> (train, val, class names), grayscale at `size`, val stratified."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if len(classes) < 2:
        raise DatasetError(f"{root}: supervised pretraining needs an image folder with at least two class folders")
    images, labels, bad = [], [], []
    for c, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() not in {".png", ".jpg", ".jpeg", ".bmp", ".webp"}:
                continue
            try:
                with Image.open(f) as im:
                    im.load()
                    images.append(np.asarray(Image.fromarray(to_gray_uint8(im)).resize((size, size), Image.BILINEAR)))
                labels.append(c)
            except (UnidentifiedImageError, OSError) as exc:
                bad.append(f"{f}: {exc}")
    if bad:
        log.warning("skipped %d unreadable image(s), first: %s", len(bad), "; ".join(bad[:3]))
    split = Split(np.stack(images), np.array(labels))
    rng = np.random.default_rng(seed)
    val_idx = np.concatenate([rng.permutation(np.flatnonzero(split.labels == c))[:max(1, int(val_fraction * (split.labels == c).sum()))]
                              for c in range(len(classes))])
    train_idx = np.setdiff1d(np.arange(len(split)), val_idx)
    return split.subset(train_idx), split.subset(val_idx), classes


def pretrain_supervised(model: VisionTransformer, pre: Preprocess, cfg: PretrainConfig, work_dir: Path,
                        resume: bool = False, dist_env=None) -> dict:
    train, val, classes = read_image_folder(cfg.source, pre.img_size, cfg.seed)
    net = create_model(model.cfg, num_classes=len(classes))
    net.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("head")}, strict=False)
    result = fit(net, train, val, pre, cfg, work_dir, resume=resume, stage="pretrain-supervised",
                 meta={"method": "supervised", "source": cfg.source, "pretrain_classes": classes},
                 dist_env=dist_env, classes=classes)
    return result
