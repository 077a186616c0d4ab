"""The one supervised training engine: fine-tuning, supervised pretraining and distillation use it.

nanoGPT-style: a plain loop, no framework. AdamW, linear warm-up then cosine decay (computed
per step, so there is no scheduler object to checkpoint), label smoothing and class-balanced
loss weights, gradient clipping, bf16 autocast on CUDA, the best model chosen on the validation
split, a JSON-lines metrics log, and a resumable checkpoint written atomically after every epoch.

The input path is as fast as the model: the training split lives in memory as uint8 and whole
batches are augmented with tensor ops (`vitedge.data.augment`), no per-image Python in the loop.

Same seed, same weights: the model is initialised from the seed, every epoch reseeds the batch
order, the augmentation and the dropout draws from (seed, epoch), and deterministic mode (on by
default) fixes the thread count and asks torch for deterministic kernels. So two runs with one
seed end with identical weights, and a run killed mid-epoch and resumed from its last
checkpoint ends with the same weights as one that never stopped (tests/test_determinism.py).

Runs single-process, or under `torchrun --nproc_per_node N` (DDP; NCCL on CUDA, gloo on CPU).

    python -m vitedge.finetune --data results/default/data --preset vit-tiny-48 \
        --init models/teacher-pretrain.pt --out models/teacher.pt --epochs 30 [--resume]

The command is `vitedge/finetune.py`; this module is the engine the stages share.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vitedge import checkpoints
from vitedge.batching import map_batches
from vitedge.configs import StrictConfig
from vitedge.data import CLASSES, Split
from vitedge.data.augment import BatchAugment, InMemoryBatches
from vitedge.data.datasets import class_weights
from vitedge.io import atomic_write_text
from vitedge.torch_io import load_torch, save_torch
from vitedge.metrics import classification_metrics
from vitedge.model import VisionTransformer
from vitedge.preprocess import Preprocess
from vitedge.sysinfo import cpu_info

log = logging.getLogger("vitedge.engine")

STATE_FORMAT = "vitedge-train-state/1"
# options a saved state may be resumed under although they changed: more epochs extend a finished
# run; another thread count only moves float rounding (a bit-for-bit rerun needs the same count)
# (and how often the resumable state is written, which changes nothing in the weights)
RESUMABLE_CHANGES = ("epochs", "threads", "state_every")


@dataclass
class TrainConfig(StrictConfig):
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3  # peak learning rate for a batch of 256; scaled linearly with the global batch
    min_lr_ratio: float = 0.01
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 1.0
    class_balance: str = "sqrt"  # none | sqrt | inverse
    augment: str = "strong"  # none | light | strong (vitedge.data.augment.AugmentSpec)
    # auto (bf16 on CUDA) | bf16 | off. On a CPU bf16 pays only with native bf16 instructions
    # (avx512_bf16 / AMX: reports/train_levers.md and reports/distill_batches.md price it on a 2-core
    # EPYC); elsewhere it is emulated and slower than fp32, so CPU configs opt in
    amp: str = "auto"
    # NHWC weights and batches: oneDNN's fast layout for convolutions (cnn-small-48's training step
    # 1.34x on a 2-core CPU, the hybrid ViT's 1.02x: reports/train_levers.md); in distillation the teacher too
    channels_last: bool = False
    seed: int = 0
    deterministic: bool = True  # fixed threads + deterministic kernels: same seed, same weights
    threads: int = 0  # intra-op threads for training; 0 = torch's default (the physical cores), fixed per host
    max_steps_per_epoch: int = 0  # 0 = the whole epoch; >0 caps it (smoke runs, tests)
    eval_batch_size: int = 512
    # write the resumable state.pt every N epochs (and after the last): a GPU epoch of a few seconds
    # would otherwise spend much of its time writing weights and optimiser moments to disk
    state_every: int = 1


def seed_everything(seed: int, deterministic: bool = True, threads: int = 0) -> None:
    """Seed torch/numpy and, in deterministic mode, pin the thread count and the kernels.

    Called before the model is built, so its initial weights come from the seed too."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for reproducible GEMMs
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


# --------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str = "auto") -> Dist:
    """Read torchrun's environment; start a process group when there is more than one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    dev = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank, dev)


def _barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


# --------------------------------------------------------------------------- losses
class SupervisedLoss(nn.Module):
    """Cross-entropy with label smoothing and class weights. A distilled model trained without a
    teacher gets the same loss on both heads (the "no teacher" baseline for distillation)."""

    def __init__(self, weights: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__()
        self.register_buffer("weights", weights if weights is not None else None, persistent=False)
        self.label_smoothing = label_smoothing

    def forward(self, images: torch.Tensor, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, tuple):
            return sum(self._ce(o, labels) for o in outputs) / len(outputs)
        return self._ce(outputs, labels)

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=self.weights, label_smoothing=self.label_smoothing)


Criterion = Callable[[torch.Tensor, Any, torch.Tensor], torch.Tensor]


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 512,
                   device: torch.device | str = "cpu") -> np.ndarray:
    """Eval-mode logits for preprocessed (N, 1, S, S) inputs, in batches."""
    was_training = model.training
    model.eval()
    x = torch.as_tensor(x)
    if len(x) == 0:
        return np.zeros((0, model.cfg.num_classes), np.float32)
    out = map_batches(lambda part: model(part.to(device)).float().cpu(), x, batch_size)
    model.train(was_training)
    return out.numpy()


def evaluate(model: nn.Module, split: Split, pre: Preprocess, batch_size: int = 512,
             device: torch.device | str = "cpu", classes: list[str] | tuple[str, ...] = CLASSES) -> dict:
    logits = predict_logits(model, pre(split.images), batch_size, device)
    return classification_metrics(logits, split.labels, classes)


# --------------------------------------------------------------------------- schedule
def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float, min_ratio: float) -> float:
    """Linear warm-up to `peak`, then cosine decay to `peak * min_ratio`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases, norms, tokens and position embeddings (as in timm/DeiT)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(("cls_token", "dist_token", "pos_embed", "mask_token"))
         else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def autocast(cfg: TrainConfig, device: torch.device):
    use_bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)


def warn_if_bf16_is_emulated(cfg: TrainConfig, device: torch.device) -> bool:
    """`amp: bf16` on a CPU without bf16 instructions still trains, only slower than fp32: say so."""
    if cfg.amp != "bf16" or device.type != "cpu":
        return False
    cpu = cpu_info()
    if any(f in cpu["features"] for f in ("avx512_bf16", "amx_bf16")):
        return False
    log.warning("amp: bf16 on a CPU without avx512_bf16 or amx_bf16 (%s): bf16 is emulated here and trains "
                "slower than fp32; set amp: off in the stage's config", cpu["model"])
    return True


# --------------------------------------------------------------------------- the loop
def fit(model: VisionTransformer, train: Split, val: Split, pre: Preprocess, cfg: TrainConfig, work_dir: str | Path,
        criterion: nn.Module | None = None, resume: bool = False, stage: str = "finetune",
        meta: dict | None = None, dist_env: Dist | None = None,
        classes: list[str] | tuple[str, ...] = CLASSES, resume_key: dict | None = None) -> dict:
    """Supervised training of `model` on `train`, keeping the best on `val` top-1.

    `criterion(images, outputs, labels)` defaults to class-weighted, label-smoothed cross-entropy;
    distillation passes its own. `resume_key`: run-time facts beyond the config that a saved state
    must match to be resumed (distillation: the teacher's hash); they are also kept in the
    checkpoint's meta. Returns the summary of the best epoch (see `run_loop`).
    """
    if criterion is None:
        criterion = SupervisedLoss(class_weights(train.labels, model.cfg.num_classes, cfg.class_balance),
                                   cfg.label_smoothing)

    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)

    def step_loss(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, images.device):  # the loss too: a distillation teacher's forward runs in bf16 as well
            outputs = net(images)
            return criterion(images, outputs, labels)

    def validate(device: torch.device) -> dict:
        m = evaluate(model, val, pre, cfg.eval_batch_size, device, classes)
        return {"score": m["top1"], "val_top1": m["top1"], "val_macro_f1": m["macro_f1"]}

    def save_best(path: Path, best: dict) -> None:
        checkpoints.save_model(path, model, pre, list(classes),
                               {**(meta or {}), **(resume_key or {}), "stage": stage, "best": best,
                                "train_config": cfg.as_dict()})

    return run_loop(model, train, BatchAugment(pre, cfg.augment), pre, cfg, work_dir, step_loss, validate, save_best,
                    criterion=criterion, resume=resume, stage=stage, dist_env=dist_env, resume_key=resume_key)


@dataclass
class Schedule:
    """Steps per epoch and the per-step learning rate (warm-up then cosine), from the config."""

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    peak_lr: float
    min_ratio: float

    def lr(self, epoch: int, step: int) -> float:
        return lr_at(epoch * self.steps_per_epoch + step, self.total_steps, self.warmup_steps, self.peak_lr,
                     self.min_ratio)


def run_loop(module: nn.Module, train: Split, augment: BatchAugment, pre: Preprocess, cfg: TrainConfig,
             work_dir: str | Path, step_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
             validate: Callable[[torch.device], dict], save_best: Callable[[Path, dict], None],
             criterion: nn.Module | None = None, resume: bool = False, stage: str = "train",
             dist_env: Dist | None = None, resume_key: dict | None = None) -> dict:
    """The training loop every stage shares. Optimises `module`'s parameters with
    `step_loss(net, images, labels)`, calls `validate(device)` (-> dict with a "score", higher is
    better) after every epoch and `save_best(path, best)` when the score improves. Batches of `train`
    come from memory (`InMemoryBatches`) and are augmented whole by `augment`. Writes in `work_dir`:

    - `state.pt`: everything needed to resume (weights, optimiser, epoch, best so far, history)
    - `best.pt`: the best model so far, as written by `save_best`
    - `metrics.jsonl`: one line per epoch
    """
    d = dist_env or setup_distributed()
    work_dir = Path(work_dir)
    state_path, best_path, log_path = work_dir / "state.pt", work_dir / "best.pt", work_dir / "metrics.jsonl"
    if d.main:
        work_dir.mkdir(parents=True, exist_ok=True)
    module.to(d.device)
    if criterion is not None:
        criterion.to(d.device)
    if d.main:
        warn_if_bf16_is_emulated(cfg, d.device)
    net: nn.Module = module
    if d.world > 1:
        net = nn.parallel.DistributedDataParallel(module, device_ids=[d.local_rank] if d.device.type == "cuda" else None)
    batches, schedule = _batches_and_schedule(train, pre, cfg, d)
    optimizer = torch.optim.AdamW(param_groups(module, cfg.weight_decay), lr=schedule.peak_lr, betas=(0.9, 0.999),
                                  fused=d.device.type == "cuda" or None)  # one kernel per step on a GPU
    fingerprint = _fingerprint(module, cfg, stage, resume_key)
    start_epoch, best, history = _restore(state_path, log_path, fingerprint, module, optimizer, resume, stage, d)
    for epoch in range(start_epoch, cfg.epochs):
        loss, lr, img_per_s, elapsed = _train_epoch(net, module, optimizer, batches, augment, schedule, step_loss,
                                                    cfg, epoch, stage, d)
        t_eval = time.perf_counter()
        scores = validate(d.device)
        record = {"stage": stage, "epoch": epoch + 1, "train_loss": loss, "lr": lr,
                  **{k: v for k, v in scores.items() if k != "score"}, "epoch_s": round(elapsed, 2),
                  "eval_s": round(time.perf_counter() - t_eval, 3), "img_per_s": img_per_s}
        history.append(record)
        improved = scores["score"] > best["score"]
        if improved:
            best = {**scores, "epoch": epoch + 1}
        if d.main:
            if improved:
                save_best(best_path, best)
            if (epoch + 1) % max(1, cfg.state_every) == 0 or epoch + 1 == cfg.epochs:
                save_torch({"format": STATE_FORMAT, "fingerprint": fingerprint, "epoch": epoch + 1,
                            "model": module.state_dict(), "optimizer": optimizer.state_dict(), "best": best,
                            "history": history}, state_path)
            _log_epoch(log_path, record, scores, improved, cfg, stage)
        _barrier(d)
    return {"best": best, "history": history, "best_path": str(best_path)}


def _batches_and_schedule(train: Split, pre: Preprocess, cfg: TrainConfig, d: Dist
                          ) -> tuple[InMemoryBatches, Schedule]:
    per_rank_batch = max(1, cfg.batch_size // d.world)
    batches = InMemoryBatches(train, pre, per_rank_batch, cfg.seed, d.rank, d.world, device=d.device)
    steps_per_epoch = len(batches) if cfg.max_steps_per_epoch <= 0 else min(len(batches), cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise ValueError(f"training set of {len(train)} images is smaller than one batch of {per_rank_batch}")
    return batches, Schedule(steps_per_epoch, steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch),
                             cfg.lr * per_rank_batch * d.world / 256, cfg.min_lr_ratio)


def _fingerprint(module: nn.Module, cfg: TrainConfig, stage: str, resume_key: dict | None = None) -> str:
    """What must match for a saved state to be resumed: the stage, the model, the options (the epoch
    count may grow, to extend a finished run) and the caller's run-time facts (`resume_key`)."""
    return json.dumps({"stage": stage, "model": getattr(module, "cfg", None) and module.cfg.as_dict(),
                       "params": sum(p.numel() for p in module.parameters()),
                       "cfg": {k: v for k, v in cfg.as_dict().items() if k not in RESUMABLE_CHANGES},
                       **({"with": resume_key} if resume_key else {})},
                      sort_keys=True, default=str)


def _restore(state_path: Path, log_path: Path, fingerprint: str, module: nn.Module,
             optimizer: torch.optim.Optimizer, resume: bool, stage: str, d: Dist) -> tuple[int, dict, list]:
    """(first epoch to run, best so far, history): from the saved state when resuming one that matches."""
    state = load_torch(state_path) if resume and state_path.is_file() else None
    if state is not None and (state.get("format") != STATE_FORMAT or state.get("fingerprint") != fingerprint):
        if d.main:
            log.warning("%s was saved by another version, model or set of options: starting %s afresh",
                        state_path, stage)
        state = None
    if state is None:
        if d.main and log_path.exists():
            log_path.unlink()  # a fresh run starts a fresh log
        return 0, {"score": -math.inf, "epoch": -1}, []
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if d.main:
        log.info("resuming %s after epoch %d (best score %.4f at epoch %d)", stage, state["epoch"],
                 state["best"]["score"], state["best"]["epoch"])
        # the saved history is the truth: a kill between saving the state and logging loses no line
        atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in state["history"]))
    return state["epoch"], state["best"], state["history"]


def _train_epoch(net: nn.Module, module: nn.Module, optimizer: torch.optim.Optimizer, batches: InMemoryBatches,
                 augment: BatchAugment, schedule: Schedule,
                 step_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor], cfg: TrainConfig,
                 epoch: int, stage: str, d: Dist) -> tuple[float, float, float, float]:
    """One epoch of optimisation: (mean train loss, last lr, images/s over all ranks, seconds)."""
    torch.manual_seed(cfg.seed * 100_003 + epoch)  # same dropout/drop-path/mask draws on resume
    # same augmentation on resume; drawn on the batches' device (the split is in GPU memory on a GPU)
    aug_gen = torch.Generator(device=batches.images.device).manual_seed(cfg.seed * 100_019 + epoch)
    net.train()
    # the loss is summed on the device and read once an epoch: a read per step would make the host wait
    # for the GPU at every step instead of queueing the next one
    t0, seen, lr = time.perf_counter(), 0, schedule.peak_lr
    loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
    show_loss = d.device.type == "cpu"  # on the CPU reading it is free
    bar = tqdm(total=schedule.steps_per_epoch, desc=f"{stage} {epoch + 1}/{cfg.epochs}", disable=not d.main,
               leave=False, mininterval=1.0, dynamic_ncols=True)
    for i, (images, labels) in enumerate(batches.epoch(epoch)):
        if i >= schedule.steps_per_epoch:
            break
        images = augment(images, aug_gen)
        lr = schedule.lr(epoch, i)
        for g in optimizer.param_groups:
            g["lr"] = lr
        images, labels = images.to(d.device, non_blocking=True), labels.to(d.device, non_blocking=True)
        loss = step_loss(net, images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        optimizer.step()
        loss_sum += loss.detach().double() * len(labels)
        seen += len(labels)
        bar.update()
        if show_loss:
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", lr=f"{lr:.2e}", refresh=False)
    bar.close()
    mean_loss = loss_sum.item() / max(seen, 1)  # waits for the epoch's last step: the time below is the whole epoch
    elapsed = time.perf_counter() - t0
    return mean_loss, lr, round(seen * d.world / elapsed, 1), elapsed


def _log_epoch(log_path: Path, record: dict, scores: dict, improved: bool, cfg: TrainConfig, stage: str) -> None:
    with open(log_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    shown = " ".join(f"{k} {v:.4f}" for k, v in scores.items() if k != "score")
    tqdm.write(f"{stage} epoch {record['epoch']}/{cfg.epochs}: loss {record['train_loss']:.4f} {shown} "
               f"({record['img_per_s']:.0f} img/s){' *' if improved else ''}")
