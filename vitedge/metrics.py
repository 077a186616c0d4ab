"""Classification and parity metrics, numpy only, shared by training, validation and the report."""
from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(labels * num_classes + preds, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, classes: list[str] | tuple[str, ...]) -> dict:
    """Top-1, macro-F1, per-class precision/recall/F1 and the confusion matrix."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    k = len(classes)
    preds = logits.argmax(axis=1)
    cm = confusion_matrix(labels, preds, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=(precision + recall) > 0)
    present = support > 0  # macro-F1 over the classes the split contains
    return {
        "n": int(len(labels)),
        "top1": float((preds == labels).mean()) if len(labels) else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                          "support": int(support[i])} for i, c in enumerate(classes)},
        "confusion": cm.tolist(),
    }


def parity_metrics(logits: np.ndarray, reference: np.ndarray) -> dict:
    """How closely an artefact reproduces its PyTorch fp32 reference on the same inputs."""
    logits = np.asarray(logits, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if logits.shape != reference.shape:
        raise ValueError(f"logits {logits.shape} and reference {reference.shape} differ in shape")
    delta = np.abs(logits - reference)
    p, q = softmax(reference), softmax(logits)
    kl = np.sum(p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None))), axis=1)
    return {
        "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
        "max_abs_delta": float(delta.max()) if delta.size else 0.0,
        "mean_abs_delta": float(delta.mean()) if delta.size else 0.0,
        "kl": float(kl.mean()) if kl.size else 0.0,
    }
