"""This SLURM profile, shrunk to fit a small cluster: a laptop's or CI's one-node cluster (local-cluster.sh).

    python workflow/profiles/slurm/fit.py OUT_DIR [--cpus N] [--mem-mb M]
    snakemake --workflow-profile OUT_DIR all ...

Writes OUT_DIR/config.yaml: workflow/profiles/slurm/config.yaml with every per-job CPU count (set-threads)
capped at the nodes' CPUs and every memory request (mem_mb) at their memory, nothing else changed: the
same executor, partitions, GPU requests, runtimes, retries. Without --cpus/--mem-mb the sizes are the
smallest node's in `sinfo`. A job asking for more than any node has is never started (it pends with
reason ReqNodeNotAvail or is refused), which is why the production numbers cannot be run as they are
on a 2-core node. The production profile itself is left as a real site needs it.
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import yaml

PROFILE = Path(__file__).resolve().parent / "config.yaml"


def node_size() -> tuple[int, int]:
    """(CPUs, memory in MB) of the smallest node `sinfo` lists."""
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%c %m"], capture_output=True, text=True, check=True).stdout
    sizes = [tuple(int(v.rstrip("+")) for v in line.split()) for line in out.splitlines() if line.strip()]
    if not sizes:
        raise SystemExit("fit.py: sinfo lists no nodes")
    return min(c for c, _ in sizes), min(m for _, m in sizes)


def fit(profile: dict, cpus: int, mem_mb: int) -> dict:
    """The profile with threads <= cpus and mem_mb <= mem_mb everywhere they are set."""
    out = dict(profile)
    out["set-threads"] = {rule: min(int(n), cpus) for rule, n in profile.get("set-threads", {}).items()}
    if "mem_mb" in profile.get("default-resources", {}):
        out["default-resources"] = {**profile["default-resources"],
                                    "mem_mb": min(int(profile["default-resources"]["mem_mb"]), mem_mb)}
    out["set-resources"] = {rule: {k: (min(int(v), mem_mb) if k == "mem_mb" else v) for k, v in res.items()}
                            for rule, res in profile.get("set-resources", {}).items()}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder for the fitted config.yaml")
    ap.add_argument("--cpus", type=int, help="CPUs per node (default: the smallest node's in sinfo)")
    ap.add_argument("--mem-mb", type=int, help="memory per node in MB (default: the smallest node's in sinfo)")
    args = ap.parse_args(argv)
    cpus, mem_mb = (args.cpus, args.mem_mb) if args.cpus and args.mem_mb else node_size()
    cpus, mem_mb = args.cpus or cpus, args.mem_mb or mem_mb
    profile = yaml.safe_load(PROFILE.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    header = (f"# {PROFILE} fitted to nodes of {cpus} CPUs and {mem_mb} MB by workflow/profiles/slurm/fit.py:\n"
              f"# set-threads capped at {cpus}, mem_mb at {mem_mb}; everything else as in the profile.\n")
    (args.out / "config.yaml").write_text(header + yaml.safe_dump(fit(profile, cpus, mem_mb), sort_keys=False))
    print(args.out / "config.yaml")


if __name__ == "__main__":
    main()
