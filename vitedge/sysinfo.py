"""Where a number was measured: the machine and library versions, recorded with every result."""
from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys

# Instruction-set extensions that decide whether int8 / bf16 kernels are fast on x86 CPUs.
_CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
_LIBRARIES = ("torch", "torchvision", "numpy", "onnx", "onnxruntime", "coremltools", "executorch", "torchao",
              "tensorrt", "ai-edge-litert", "litert-torch", "ai-edge-quantizer", "opencv-python-headless", "snakemake")


def _cpu() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:  # not Linux
        pass
    if platform.system() == "Darwin":
        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip() or model
        except (OSError, subprocess.SubprocessError):
            pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "arch": platform.machine(), "cores": cores,
            "features": [f for f in _CPU_FEATURES if f in flags]}


def _gpu() -> dict | None:
    # the GPU as torch sees it, when torch is loaded: every process that measures, trains or exports has it,
    # and one without it (the web server reads artefacts through this package) has no GPU work to record.
    # Not imported here: the server must not load torch (~700 MB) to serve static files.
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda,
            "count": torch.cuda.device_count()}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        info["driver"] = out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, IndexError, subprocess.SubprocessError):
        info["driver"] = None
    return info


def library_versions() -> dict[str, str]:
    out = {}
    for name in _LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """The CPU alone (model, arch, cores, int8/bf16 features): cheap, for decisions on a load path.
    `machine_info` also asks CUDA and nvidia-smi, which a CPU runtime must not wait for."""
    return _cpu()


@functools.lru_cache(maxsize=1)
def machine_info() -> dict:
    """CPU (model, cores, int8/bf16 features), GPU (name, capability, driver), OS, Python, libraries."""
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_info(),
        "gpu": _gpu(),
        "libraries": library_versions(),
    }


def describe(info: dict | None = None) -> str:
    """One line for reports: 'Intel Xeon ... (2 cores; avx512_vnni, amx_int8), no GPU'."""
    info = info or machine_info()
    cpu = info["cpu"]
    feats = ", ".join(cpu["features"]) or "no int8/bf16 extensions"
    gpu = info["gpu"]
    gpu_s = f"{gpu['name']} (sm {gpu['compute_capability']}, driver {gpu.get('driver')})" if gpu else "no GPU"
    return f"{cpu['model']} ({cpu['cores']} cores; {feats}), {gpu_s}, {info['os']}"
