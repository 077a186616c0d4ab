"""Does the embedded default learn every time? Teacher + student of workflow/config.yaml over several seeds.

    python benchmarks/default_seeds.py [--seeds 0 1 2] [--out results/default-seeds] [--md reports/default_seeds.md]

Runs the default's training stages exactly as the workflow does (`python -m vitedge.data`, then
`vitedge.finetune` for the teacher and `vitedge.distill` for the student, with the config's model and
training sections) once per training seed, on the same synthetic data, and prints each seed's
val/test top-1 for teacher and student, the spread, and the wall time. Resumable: a seed whose
models exist is read back, not retrained.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vitedge.io import atomic_write_text, read_json  # noqa: E402
from vitedge.sysinfo import describe, machine_info  # noqa: E402


def run(cmd: list[str], log: Path) -> None:
    with open(log, "w", encoding="utf-8") as fh:
        subprocess.run(cmd, check=True, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--config", type=Path, default=REPO / "workflow" / "config.yaml")
    p.add_argument("--out", type=Path, default=REPO / "results" / "default-seeds")
    p.add_argument("--md", type=Path, help="also write the table here (Markdown)")
    p.add_argument("--threads", type=int, default=0, help="training threads (0: the config's, i.e. all cores)")
    args = p.parse_args(argv)
    cfg = yaml.safe_load(args.config.read_text())
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    if args.threads:
        for stage in ("finetune", "distill"):
            cfg[stage]["threads"] = args.threads

    data = out / "data"
    if not (data / "manifest.json").is_file():
        run([py, "-m", "vitedge.data", "--source", cfg["data"]["source"], "--per-class", str(cfg["data"]["per_class"]),
             "--seed", str(cfg["data"].get("seed", 0)), "--out", str(data), "--no-progress"], out / "data.log")

    rows = []
    for seed in args.seeds:
        d = out / f"seed{seed}"
        d.mkdir(exist_ok=True)
        teacher, student = d / "teacher.pt", d / "student.pt"
        if not teacher.is_file():
            run([py, "-m", "vitedge.finetune", "--data", str(data), "--out", str(teacher), "--seed", str(seed),
                 "--model-json", json.dumps(cfg["models"]["teacher"]), "--train-json", json.dumps(cfg["finetune"]),
                 "--resume"], d / "teacher.log")
        if not student.is_file():
            run([py, "-m", "vitedge.distill", "--data", str(data), "--teacher", str(teacher), "--out", str(student),
                 "--seed", str(seed), "--model-json", json.dumps(cfg["models"]["student"]),
                 "--train-json", json.dumps(cfg["distill"]), "--resume"], d / "student.log")
        t, s = read_json(teacher.with_suffix(".json")), read_json(student.with_suffix(".json"))
        wall = sum(h["epoch_s"] for h in t["history"] + s["history"])  # training time, evaluation excluded
        rows.append({"seed": seed, "teacher_val": t["val"]["top1"], "teacher_test": t["test"]["top1"],
                     "student_val": s["val"]["top1"], "student_test": s["test"]["top1"], "wall_s": wall})
        r = rows[-1]
        print(f"seed {seed}: teacher test {100 * r['teacher_test']:.2f}%, student test {100 * r['student_test']:.2f}% "
              f"({wall:.0f} s)", flush=True)

    tests = [r["student_test"] for r in rows]
    lines = [
        f"Embedded default ({cfg['models']['teacher']['preset']} teacher -> {cfg['models']['student']['preset']} "
        f"student, synthetic data seed {cfg['data'].get('seed', 0)}), one row per training seed, on "
        f"{describe(machine_info())}:",
        "",
        "| seed | teacher val | teacher test | student val | student test | training s |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['seed']} | {100 * r['teacher_val']:.2f} | {100 * r['teacher_test']:.2f} | {100 * r['student_val']:.2f} | "
          f"{100 * r['student_test']:.2f} | {r['wall_s']:.0f} |" for r in rows],
        "",
        f"Student test top-1: min {100 * min(tests):.2f}%, max {100 * max(tests):.2f}%, spread "
        f"{100 * (max(tests) - min(tests)):.2f} points"
        + (f", sd {100 * statistics.stdev(tests):.2f}" if len(tests) > 1 else "") + ".",
    ]
    print("\n".join(lines))
    if args.md:
        atomic_write_text(args.md, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
