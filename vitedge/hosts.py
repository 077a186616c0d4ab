"""What this host can run: CUDA, TensorRT, macOS. Asked by exporters, runtimes, targets and the
workflow alike, so it lives below all of them.

`tensorrt` is the one optional toolchain imported here, inside `load_tensorrt`: its wheel comes
from NVIDIA's index and needs a GPU, and the type stubs (tensorrt-stubs) install an empty
`tensorrt` namespace package, so "importable" is not enough: `load_tensorrt` checks for the real API.
"""
from __future__ import annotations

import os
import platform
import re
import shutil
from typing import Any, Sequence

import torch

from vitedge.artefact import ArtefactError, RuntimeUnavailable

TENSORRT_INSTALL_HINT = "pip install tensorrt (needs an NVIDIA GPU and NVIDIA's package index)"


def is_macos() -> bool:
    return platform.system() == "Darwin"


def nvidia_driver_present() -> bool:
    # /dev/nvidiactl too: sandboxed GPU hosts (gVisor) may expose the device without /proc/driver/nvidia
    # and keep nvidia-smi off the PATH
    return (os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")
            or shutil.which("nvidia-smi") is not None)


def resolve_device(device: str) -> str:
    """"auto" -> "cuda" when torch sees a GPU, else "cpu"; anything else unchanged."""
    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def cuda_unavailable_reason(min_capability: float | None = None) -> str | None:
    """None when a CUDA GPU (of at least `min_capability`) is usable here, else why not."""
    # the host first: without a driver the precise reason is the missing driver, not torch's view
    if platform.system() == "Linux" and not nvidia_driver_present():
        return "no CUDA GPU (no NVIDIA driver on this host)"
    if is_macos():
        return "no CUDA on macOS"
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"
    if min_capability is not None:
        major, minor = torch.cuda.get_device_capability(0)
        if major + minor / 10 < float(min_capability):
            return (f"{torch.cuda.get_device_name(0)} has compute capability {major}.{minor}, "
                    f"this needs >= {min_capability}")
    return None


def gpu_identity() -> dict[str, Any]:
    """{name, compute_capability (major, minor)} of CUDA device 0, or RuntimeUnavailable."""
    if not torch.cuda.is_available():
        raise RuntimeUnavailable("TensorRT", "no CUDA GPU is visible on this host",
                                 "TensorRT engines build and run only on NVIDIA GPUs")
    props = torch.cuda.get_device_properties(0)
    return {"name": props.name, "compute_capability": (props.major, props.minor)}


def load_tensorrt() -> Any:
    """The real `tensorrt` module, or RuntimeUnavailable saying why not.

    Callers then `import tensorrt as trt` themselves so mypy checks their calls against
    tensorrt-stubs (`mypy vitedge/export/tensorrt.py vitedge/runtimes/trt_rt.py`).
    """
    try:
        import tensorrt as trt  # optional toolchain: NVIDIA's wheel, GPU hosts only
    except ImportError as exc:
        raise RuntimeUnavailable("TensorRT", "the tensorrt package is not installed", TENSORRT_INSTALL_HINT) from exc
    if not hasattr(trt, "Builder"):  # tensorrt-stubs alone: a namespace package of .pyi files
        raise RuntimeUnavailable("TensorRT", "only the tensorrt type stubs are installed, not TensorRT itself",
                                 TENSORRT_INSTALL_HINT)
    return trt


def tensorrt_available() -> tuple[bool, str]:
    """(True, "") when TensorRT engines can be built here, else (False, why)."""
    try:
        load_tensorrt()
    except RuntimeUnavailable as exc:
        return False, str(exc)
    if not nvidia_driver_present():
        return False, "TensorRT is installed but there is no NVIDIA driver on this host"
    try:
        gpu_identity()
    except RuntimeUnavailable as exc:
        return False, str(exc)
    return True, ""


# --------------------------------------------------------------------------- TensorRT engines
def trt_version(version: str) -> str:
    """'10.13.0.35' -> '10.13' (engines are compatible within a minor release)."""
    return ".".join(version.split(".")[:2])


def engine_key(gpu_name: str, compute_capability: Sequence[int], tensorrt_version: str) -> str:
    """A filename-safe key: 'NVIDIA H100 80GB HBM3', (9, 0), '10.13.0.35' -> 'nvidia-h100-80gb-hbm3-sm90-trt10.13'."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower()).strip("-") or "gpu"
    major, minor = compute_capability
    return f"{slug}-sm{major}{minor}-trt{trt_version(tensorrt_version)}"


def engine_file(key: str) -> str:
    return f"model-{key}.engine"


def host_engine_key() -> dict[str, Any]:
    """The key an engine built on this host would have (needs TensorRT and a GPU)."""
    trt = load_tensorrt()
    gpu = gpu_identity()
    cc = tuple(gpu["compute_capability"])
    return {"key": engine_key(gpu["name"], cc, trt.__version__), "gpu": gpu["name"],
            "compute_capability": f"{cc[0]}.{cc[1]}", "tensorrt": trt.__version__}


def check_engine_key(meta: dict[str, Any], host_key: str) -> None:
    """ArtefactError unless the artefact's engine was built for `host_key`."""
    built = (meta.get("engine_key") or {}).get("key")
    if built != host_key:
        raise ArtefactError(f"this TensorRT engine was built for {built or 'an unknown GPU'}, this host is {host_key}: "
                            "rebuild it here with vitedge.export.tensorrt.ensure_engine(ARTEFACT_DIR) "
                            "or `python -m vitedge.export --format tensorrt ...`")
