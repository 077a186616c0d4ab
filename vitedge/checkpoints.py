"""Checkpoints: vitedge's own format, and importing torchvision / timm ViT weights.

A vitedge checkpoint is a plain dict of tensors and primitives (so it loads with
`torch.load(weights_only=True)`):

    {"format": "vitedge-model/1", "config": ViTConfig.as_dict(), "state_dict": ...,
     "preprocess": Preprocess.as_dict(), "classes": [...], "meta": {...}}

Imported weights are adapted to the target model as timm does: position embeddings resized
(bicubic over the patch grid, prefix tokens kept), RGB patch weights folded to one grayscale
channel, and the classifier head replaced when the class count differs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from vitedge.io import sha256_file
from vitedge.torch_io import load_torch, save_torch
from vitedge.model import ViTConfig, VisionTransformer, create_model
from vitedge.preprocess import Preprocess

FORMAT = "vitedge-model/1"


# --------------------------------------------------------------------------- vitedge format
def save_model(path: str | Path, model: VisionTransformer, preprocess: Preprocess, classes: list[str],
               meta: dict[str, Any] | None = None) -> None:
    model = getattr(model, "module", model)  # unwrap DDP
    save_torch({
        "format": FORMAT,
        "config": model.cfg.as_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "preprocess": preprocess.as_dict(),
        "classes": list(classes),
        "meta": meta or {},
    }, path)


class CheckpointError(ValueError):
    """A checkpoint file is not a usable vitedge checkpoint (the message names what is wrong, in one line)."""


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """Load a vitedge checkpoint (weights only) and `check_checkpoint` it."""
    return check_checkpoint(load_torch(path, map_location), path)


def check_checkpoint(ckpt: Any, path: str | Path) -> dict[str, Any]:
    """A loaded checkpoint checked as data from anywhere: its config, its preprocessing, its classes
    and every tensor's shape against the model its config builds (built on the meta device first,
    so a hostile config allocates nothing). Returns it, or raises CheckpointError naming the problem."""
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vitedge model checkpoint (expected format {FORMAT})")
    missing = [k for k in ("config", "state_dict", "preprocess", "classes") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    if not isinstance(ckpt["config"], dict):
        raise CheckpointError(f"{path}: bad checkpoint config: it must be a JSON object / dict, "
                              f"got {type(ckpt['config']).__name__}")
    try:
        with torch.device("meta"):  # shapes only: no memory for the weights of a config from anywhere
            skeleton = create_model(ckpt["config"])
        pre = Preprocess.from_dict(ckpt["preprocess"])
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: bad checkpoint config: {' '.join(str(exc).split())[:300]}") from None
    cfg = skeleton.cfg if isinstance(skeleton.cfg, dict) else skeleton.cfg.as_dict()
    if pre.img_size != cfg["img_size"]:
        raise CheckpointError(f"{path}: preprocess.img_size {pre.img_size} differs from the model's {cfg['img_size']}")
    classes = ckpt["classes"]
    if not (isinstance(classes, (list, tuple)) and len(classes) == cfg["num_classes"]
            and all(isinstance(c, str) and c for c in classes)):
        raise CheckpointError(f"{path}: 'classes' must name the model's {cfg['num_classes']} outputs, one string each")
    _check_shapes(path, ckpt["state_dict"], skeleton.state_dict())
    return {**ckpt, "config": cfg, "classes": list(classes)}  # the config whole: defaults filled in


def _check_shapes(path: str | Path, state: Any, expected: dict[str, torch.Tensor]) -> None:
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: state_dict must map names to tensors")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                 f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)}, the config "
                 f"says {tuple(expected[wrong[0]].shape)})" if wrong else ""]
        raise CheckpointError(f"{path}: the weights do not fit the checkpoint's own config: "
                              + "; ".join(p for p in parts if p))


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[VisionTransformer, dict[str, Any]]:
    """Load a vitedge checkpoint -> (model in eval mode, the checkpoint dict without weights).
    CheckpointError (a ValueError) for anything that is not a consistent vitedge checkpoint."""
    ckpt = read_checkpoint(path, map_location)
    model = create_model(ckpt["config"])  # a ViT, or the CNN teacher (config "arch": "cnn")
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    info = {k: v for k, v in ckpt.items() if k != "state_dict"}
    info["sha256"] = sha256_file(path)
    return model, info


# --------------------------------------------------------------------------- adaptation helpers
def resize_pos_embed(pos_embed: torch.Tensor, new_grid: int, num_prefix_tokens: int = 1,
                     new_prefix_tokens: int | None = None) -> torch.Tensor:
    """Resize (1, prefix + g*g, D) position embeddings to a new_grid x new_grid patch grid.

    Prefix tokens (class, distillation) carry no spatial position and are kept as they are;
    a target with more prefix tokens (e.g. adding a distillation token) copies the class
    token's embedding for the new ones.
    """
    new_prefix_tokens = num_prefix_tokens if new_prefix_tokens is None else new_prefix_tokens
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old_grid = math.isqrt(grid.shape[1])
    if old_grid * old_grid != grid.shape[1]:
        raise ValueError(f"position embedding of {grid.shape[1]} patches is not a square grid")
    if old_grid != new_grid:
        D = grid.shape[-1]
        grid = grid.reshape(1, old_grid, old_grid, D).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, D).to(pos_embed.dtype)
    if new_prefix_tokens > num_prefix_tokens:
        extra = prefix[:, :1].expand(-1, new_prefix_tokens - num_prefix_tokens, -1)
        prefix = torch.cat([prefix, extra], dim=1)
    else:
        prefix = prefix[:, :new_prefix_tokens]
    return torch.cat([prefix, grid], dim=1)


def fold_patch_channels(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """(D, 3, p, p) RGB patch weights -> (D, in_chans, p, p).

    Summing over RGB is exact for a grayscale image replicated to three channels, which is
    what an RGB model sees when given a gray face.
    """
    if weight.shape[1] == in_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    raise ValueError(f"cannot fold {weight.shape[1]}-channel patch weights to {in_chans} channels")


def _adapt(state: dict[str, torch.Tensor], src_prefix: int, model: VisionTransformer) -> VisionTransformer:
    """Load a timm-named state dict into `model`, adapting size, channels, tokens and head."""
    cfg = model.cfg
    state = dict(state)
    if cfg.pool == "seq" and (src_prefix >= 2 or not cfg.distilled):
        # no class token in the target: drop its position (a distilled source keeps its distillation
        # token's; a class-token-only source into a distilled target lends it to the distillation token)
        pos = state["pos_embed"]
        state["pos_embed"] = torch.cat([pos[:, 1:src_prefix], pos[:, src_prefix:]], dim=1)
        src_prefix -= 1
    state["pos_embed"] = resize_pos_embed(state["pos_embed"], model.grid_size, src_prefix, cfg.num_prefix_tokens)
    w = state["patch_embed.proj.weight"]
    if w.shape[-1] != cfg.patch_size:
        raise ValueError(f"checkpoint patch size {w.shape[-1]} differs from the model's {cfg.patch_size}")
    state["patch_embed.proj.weight"] = fold_patch_channels(w, cfg.in_chans)
    if cfg.distilled and "dist_token" not in state:
        state["dist_token"] = state["cls_token"].clone()
    if cfg.pool == "seq":  # sequence pooling has no class token; its pooling weights start fresh
        state.pop("cls_token", None)
    if not cfg.distilled:
        state.pop("dist_token", None)
        state.pop("head_dist.weight", None)
        state.pop("head_dist.bias", None)
    own = model.state_dict()
    for head in ("head", "head_dist", "attn_pool"):
        key = f"{head}.weight"
        if key in own and (key not in state or state[key].shape != own[key].shape):
            # new task: keep the model's freshly initialised head
            state[key], state[f"{head}.bias"] = own[key], own[f"{head}.bias"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing}, unexpected {unexpected}")
    return model


def _infer_config(state: Mapping[str, torch.Tensor], num_prefix: int) -> ViTConfig:
    """Read the architecture of a timm-named state dict off its tensor shapes."""
    w = state["patch_embed.proj.weight"]
    D, C, p = w.shape[0], w.shape[1], w.shape[-1]
    grid = math.isqrt(state["pos_embed"].shape[1] - num_prefix)
    depth = 0
    while f"blocks.{depth}.attn.qkv.weight" in state:
        depth += 1
    return ViTConfig(img_size=grid * p, patch_size=p, in_chans=C, num_classes=state["head.weight"].shape[0],
                     embed_dim=D, depth=depth, num_heads=max(1, D // 64),  # ViT-Ti/S/B/L all use 64-dim heads
                     mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / D, distilled=num_prefix == 2)


# --------------------------------------------------------------------------- timm
def load_timm(state_dict: Mapping[str, torch.Tensor] | str | Path,
              model: VisionTransformer | ViTConfig | None = None) -> VisionTransformer:
    """timm / DeiT ViT weights -> a vitedge ViT (the given one, or one built to match)."""
    state = _read_state(state_dict)
    state = {k: v for k, v in state.items() if not k.startswith("fc_norm")}
    src_prefix = 2 if "dist_token" in state else 1
    target = model if model is not None else _infer_config(state, src_prefix)
    if isinstance(target, ViTConfig):
        target = VisionTransformer(target)
    return _adapt(state, src_prefix, target)


# --------------------------------------------------------------------------- torchvision
def torchvision_to_timm(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision.models.VisionTransformer keys to timm/vitedge keys."""
    out = {
        "patch_embed.proj.weight": state["conv_proj.weight"],
        "patch_embed.proj.bias": state["conv_proj.bias"],
        "cls_token": state["class_token"],
        "pos_embed": state["encoder.pos_embedding"],
        "norm.weight": state["encoder.ln.weight"],
        "norm.bias": state["encoder.ln.bias"],
    }
    head = "heads.head" if "heads.head.weight" in state else "heads.0"
    out["head.weight"], out["head.bias"] = state[f"{head}.weight"], state[f"{head}.bias"]
    i = 0
    while f"encoder.layers.encoder_layer_{i}.ln_1.weight" in state:
        s, d = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
        for a, b in [("ln_1", "norm1"), ("ln_2", "norm2"), ("mlp.0", "mlp.fc1"), ("mlp.3", "mlp.fc2"),
                     ("self_attention.out_proj", "attn.proj")]:
            out[f"{d}{b}.weight"], out[f"{d}{b}.bias"] = state[f"{s}{a}.weight"], state[f"{s}{a}.bias"]
        # nn.MultiheadAttention packs q, k, v in one (3D, D) projection, in the same order as timm
        out[f"{d}attn.qkv.weight"] = state[f"{s}self_attention.in_proj_weight"]
        out[f"{d}attn.qkv.bias"] = state[f"{s}self_attention.in_proj_bias"]
        i += 1
    if i == 0:
        raise ValueError("not a torchvision ViT state dict (no encoder.layers.encoder_layer_0)")
    return out


def load_torchvision(model_or_state_dict: Any, model: VisionTransformer | ViTConfig | None = None) -> VisionTransformer:
    """torchvision `vit_*` model or state dict (or a file of one) -> a vitedge ViT."""
    if isinstance(model_or_state_dict, torch.nn.Module):
        state = model_or_state_dict.state_dict()
    else:
        state = _read_state(model_or_state_dict)
    return load_timm(torchvision_to_timm(state), model)


def _read_state(obj: Any) -> dict[str, torch.Tensor]:
    if isinstance(obj, (str, Path)):
        obj = load_torch(obj)
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state"):  # common wrappers (timm train, DeiT, vitedge)
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {k.removeprefix("module."): v for k, v in obj.items()}
    raise ValueError("expected a state dict of tensors (or a checkpoint holding one)")


def _same_config(saved: Mapping[str, Any], model: torch.nn.Module) -> bool:
    """Whether a checkpoint's stored config is `model`'s. Compared as config objects: a checkpoint
    written before `as_dict` turned tuples into lists holds (32, 64) where the model says [32, 64]."""
    try:
        return type(model.cfg).from_dict(dict(saved)) == model.cfg
    except (TypeError, ValueError):  # keys of another model family
        return False


def import_pretrained(path: str | Path, model: torch.nn.Module) -> torch.nn.Module:
    """Import a checkpoint file of any supported flavour into `model`: vitedge, torchvision or timm.

    A vitedge checkpoint of exactly the model's config (e.g. the `pretrain: none` stage's fresh
    model, or a CNN teacher) loads as it is; a ViT of another shape is adapted as timm's would be.
    Weights that fit none of these are a CheckpointError of one line."""
    ckpt = load_torch(path)
    try:
        return _import(path, ckpt, model)
    except (KeyError, IndexError, TypeError, AttributeError, RuntimeError) as exc:  # a state dict of another net
        raise CheckpointError(f"{path}: cannot import these weights into the {type(model).__name__} "
                              f"({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); expected a vitedge, "
                              "torchvision or timm ViT checkpoint") from None


def _import(path: str | Path, ckpt: Any, model: torch.nn.Module) -> torch.nn.Module:
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        ckpt = check_checkpoint(ckpt, path)  # a vitedge checkpoint: checked whole before any of it is used
        if _same_config(ckpt["config"], model):
            model.load_state_dict(ckpt["state_dict"])
            return model
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"{path}: weights for another model than this {type(model).__name__} ({model.cfg.as_dict()})")
    if isinstance(ckpt, dict) and ckpt.get("format") == FORMAT:
        src = VisionTransformer(ViTConfig.from_dict(ckpt["config"]))
        src.load_state_dict(ckpt["state_dict"])
        return load_timm(src.state_dict(), model)
    state = _read_state(ckpt)
    if any(k.startswith("encoder.layers.") for k in state):
        return load_torchvision(state, model)
    return load_timm(state, model)
