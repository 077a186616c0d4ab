"""Prepare what `benchmarks/gpu_run.py` needs on the lent GPU machine and check that it fits the call.

    python benchmarks/gpu_carry.py [--src ../shared/datasets/fer2013/fer2013.zip] [--wheels NAME==VERSION ...]

Writes the git-ignored `.carry/` (name it in the device call's `carry`):

- `.carry/fer2013-train.npz`: FER-2013's Training images, every file's bytes exactly as in the shared
  zip (never decoded or re-encoded), packed by `vitedge.data.fer2013.pack_images`: 28 MB where the
  same files as a zip of their own take 41.5 MB (37.4 MB of JPEGs + a header per member), which with
  the ~26 MB tracked tree would pass the 64 MiB a call may carry. PublicTest/PrivateTest stay here:
  they are scored back on the CPU (docs/gpu.md).
- `.carry/wheels/`: wheels of pure-Python modules the GPU path imports and the machine lacks. By the
  machine's package list (the device docs' KINDS.md, 2026-11) it has them all, so by default none;
  `--wheels NAME==VERSION` fetches one (`pip download --no-deps`), and gpu_run.py installs them
  only if a module is missing there.

Then it checks: the pack holds every Training file byte for byte; the modules the training and
validation path imports (measured in a subprocess) are ones that machine has; and the tracked tree,
untracked files that travel, and `.carry/` together stay under 64 MiB. Exit status 1 if not.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vitedge.data.fer2013 import pack_images, read_pack  # noqa: E402

LIMIT = 64 * 2**20  # what one device call may carry: tracked + untracked-not-ignored + carried files
SRC = REPO.parent / "shared" / "datasets" / "fer2013" / "fer2013.zip"
# top-level modules the GPU machine's python has (its image's package list, KINDS.md, as module names);
# what the training/validation path imports must be among them or travel as wheels
MACHINE_MODULES = frozenset({
    "numpy", "torch", "torchgen", "torchvision", "triton", "PIL", "yaml", "tqdm", "cv2", "jinja2", "markupsafe",
    "onnx", "onnxruntime", "onnxscript", "onnx_ir", "sympy", "mpmath", "networkx", "typing_extensions",
    "filelock", "fsspec", "packaging", "psutil", "timm", "safetensors", "huggingface_hub", "scipy", "cuda",
    "google", "ml_dtypes", "flatbuffers", "coloredlogs", "humanfriendly", "requests", "urllib3", "certifi",
    "idna", "charset_normalizer", "pkg_resources", "setuptools", "cython_runtime", "opt_einsum", "nvidia",
})
# what gpu_run.py imports, directly and through vitedge
PATH_MODULES = ("vitedge.engine", "vitedge.finetune", "vitedge.distill", "vitedge.validate", "vitedge.stages", "vitedge.data",
                "vitedge.checkpoints", "vitedge.runtimes", "vitedge.sysinfo")
PROBE = ("import sys, json, importlib\n"
         "for m in sys.argv[1:]: importlib.import_module(m)\n"
         "std = set(sys.stdlib_module_names)\n"
         "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} - std)))")


def make_pack(src: Path, dest: Path) -> dict:
    info = pack_images(src, dest, "train/")
    with zipfile.ZipFile(src) as zf:
        packed = read_pack(dest)
        bad = [n for n, data in packed.items() if zf.read(n) != data]
        expected = sum(1 for i in zf.infolist() if i.filename.startswith("train/") and not i.is_dir())
    if bad or len(packed) != expected:
        raise SystemExit(f"error: pack differs from {src}: {len(bad)} files differ, {len(packed)} of {expected} packed")
    return {**info, "size": dest.stat().st_size}


def fetch_wheels(names: list[str], dest: Path) -> None:
    """pure-Python wheels for the machine's Python 3.12 (the device docs' pip download recipe)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version",
                    "3.12", "--implementation", "cp", "--platform", "manylinux2014_x86_64", "--platform", "any",
                    "-d", str(dest), *names], check=True)


def imported_modules() -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE, *PATH_MODULES], check=True, capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    return [m for m in json.loads(out.stdout) if not m.startswith("_") and m != "vitedge"]


def git_bytes(*args: str) -> int:
    files = subprocess.run(["git", "ls-files", "-z", *args], cwd=REPO, check=True, capture_output=True).stdout
    return sum((REPO / f).stat().st_size for f in files.decode().split("\0") if f and (REPO / f).is_file())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=SRC, help="the FER-2013 Kaggle zip")
    p.add_argument("--carry", type=Path, default=REPO / ".carry", help="the folder the device call carries")
    p.add_argument("--wheels", nargs="*", default=[], help="NAME==VERSION of pure-Python wheels to carry")
    args = p.parse_args(argv)
    pack = args.carry / "fer2013-train.npz"
    info = make_pack(args.src, pack)
    print(f"{pack}: {info['count']} Training files, {info['bytes'] / 1e6:.1f} MB of JPEG bytes, "
          f"{info['size'] / 1e6:.1f} MB packed (byte-for-byte checked against {args.src})")
    if args.wheels:
        fetch_wheels(args.wheels, args.carry / "wheels")
    ok = True
    modules = imported_modules()
    print(f"the GPU path imports: {', '.join(modules)}")
    unknown = [m for m in modules if m not in MACHINE_MODULES]
    if unknown:
        ok = False
        print(f"WARNING: the GPU path imports modules the GPU machine may lack: {', '.join(unknown)}; "
              "carry their wheels (--wheels NAME==VERSION) or drop the import")
    tracked, untracked = git_bytes(), git_bytes("--others", "--exclude-standard")
    carried = sum(f.stat().st_size for f in args.carry.rglob("*") if f.is_file())
    total = tracked + untracked + carried
    print(f"travels: tracked {tracked / 1e6:.1f} MB + untracked {untracked / 1e6:.1f} MB + {args.carry.name}/ "
          f"{carried / 1e6:.1f} MB = {total / 2**20:.1f} MiB of {LIMIT / 2**20:.0f} MiB")
    if total > LIMIT:
        ok = False
        print("ERROR: over the device call's limit")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
