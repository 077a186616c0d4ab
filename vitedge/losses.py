"""DeiT's distillation loss (Touvron et al., 2021), as in DeiT's own `losses.py`.

The student has two heads: the class head learns the labels, the distillation head learns
the teacher. With `alpha` the weight of the teacher's term:

    hard:  (1 - alpha) * CE(class_head, y) + alpha * CE(dist_head, argmax teacher)
    soft:  (1 - alpha) * CE(class_head, y) + alpha * tau^2 * KL(softmax(t / tau) || softmax(s / tau))
    none:  CE on both heads (the no-teacher baseline: `SupervisedLoss`)

The teacher runs on the fly, frozen and in eval mode, on the same augmented batch as the
student: every augmentation gets a matching teacher label (DeiT's main point about hard
distillation). Its logits may come from another input size or normalisation; `TeacherInput`
adapts the student's batch.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vitedge.preprocess import Preprocess

DISTILLATION_TYPES = ("none", "soft", "hard")


class TeacherInput(nn.Module):
    """Turn a batch preprocessed for the student into one preprocessed for the teacher.

    Identity when both use the same Preprocess; otherwise undo the student's normalisation,
    resize (bilinear, antialiased, like `Preprocess.resize_uint8`) and apply the teacher's.
    """

    def __init__(self, student: Preprocess, teacher: Preprocess):
        super().__init__()
        self.student, self.teacher = student, teacher

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, t = self.student, self.teacher
        if s == t:
            return x
        x = s.to_unit(x)
        if t.img_size != s.img_size:
            x = F.interpolate(x, size=(t.img_size, t.img_size), mode="bilinear", antialias=True, align_corners=False)
        return t.from_unit(x)


class DistillationLoss(nn.Module):
    """`criterion(images, outputs, labels)` for `vitedge.engine.fit`.

    `base_criterion(images, logits, labels)` is the supervised loss on the class head (e.g.
    `SupervisedLoss` with label smoothing); `outputs` is the student's (class, dist) logits pair.
    """

    def __init__(self, base_criterion: nn.Module, teacher: nn.Module | None, distillation_type: str = "hard",
                 alpha: float = 0.5, tau: float = 1.0, teacher_input: nn.Module | None = None):
        super().__init__()
        if distillation_type not in DISTILLATION_TYPES:
            raise ValueError(f"distillation type '{distillation_type}' is not one of {DISTILLATION_TYPES}")
        if distillation_type != "none" and teacher is None:
            raise ValueError(f"{distillation_type} distillation needs a teacher")
        if not 0.0 <= alpha <= 1.0 or tau <= 0:
            raise ValueError(f"need 0 <= alpha <= 1 and tau > 0, got alpha={alpha}, tau={tau}")
        self.base_criterion, self.distillation_type = base_criterion, distillation_type
        self.alpha, self.tau = alpha, tau
        self.teacher = teacher.eval().requires_grad_(False) if teacher is not None else None
        self.teacher_input = teacher_input or nn.Identity()

    def train(self, mode: bool = True) -> "DistillationLoss":
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # frozen: no dropout, no stochastic depth, whatever the loop does
        return self

    def forward(self, images: torch.Tensor, outputs: Any, labels: torch.Tensor) -> torch.Tensor:
        if self.distillation_type == "none":
            return self.base_criterion(images, outputs, labels)
        if not isinstance(outputs, (tuple, list)):
            raise ValueError("distillation needs a student with a distillation token (model overrides: distilled: true)")
        outputs, outputs_kd = outputs
        assert self.teacher is not None  # checked in __init__
        base_loss = self.base_criterion(images, outputs, labels)
        with torch.no_grad():
            teacher_logits = self.teacher(self.teacher_input(images)).float()
        return (1 - self.alpha) * base_loss + self.alpha * distillation_term(outputs_kd, teacher_logits, self.distillation_type, self.tau)


def distillation_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, distillation_type: str,
                      tau: float = 1.0) -> torch.Tensor:
    """The teacher's term alone, averaged over the batch."""
    student_logits = student_logits.float()
    if distillation_type == "hard":
        return F.cross_entropy(student_logits, teacher_logits.argmax(dim=1))
    # KL per sample (summed over classes, averaged over the batch); tau^2 keeps the gradient's scale
    # independent of tau (Hinton et al., 2015). DeiT divides by numel() instead, i.e. also by the
    # class count: the same loss up to a constant factor absorbed by alpha.
    return F.kl_div(F.log_softmax(student_logits / tau, dim=1), F.log_softmax(teacher_logits / tau, dim=1),
                    reduction="batchmean", log_target=True) * tau * tau
