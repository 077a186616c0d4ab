"""Back on the CPU: put what `benchmarks/gpu_run.py` returned into a workflow run, so everything after
training (export, int8 with its gate, validation, report) runs on it with `--rerun-triggers mtime`.

    python benchmarks/gpu_import.py --returned /work/.device/<files_at> [--run fer2013-gpu]
    snakemake --cores 2 all --configfile workflow/config/fer2013-gpu.yaml results/fer2013-gpu/gpu-run.yaml \
        --rerun-triggers mtime

It (1) writes `results/<run>/gpu-run.yaml`, the config overlay naming the teacher the GPU run chose
and the CPU as the device; (2) builds the run's data folder with the workflow's own `data` rule (the
whole FER-2013 zip: val = PublicTest, test = PrivateTest); (3) places teacher.pt/.json and
student.pt/.json in `results/<run>/models/` with a `teacher-pretrain.pt` for the `pretrain: none`
stage, oldest first, so that no training rule is out of date; (4) scores teacher and student on
PublicTest and PrivateTest and writes the distillation table (`reports/distill.md/.json`, the
`distill` rule's other outputs; `vitedge.distill.write_report`); (5) copies the GPU validation rows
to `reports/gpu-run/` (committed, with the GPU named: `gpu_validation.md`); and (6) says whether the
student beats the shipped one on PublicTest, the split models are chosen on. If it does, after the
snakemake run: `python workflow/scripts/ship_model.py --run results/<run> --model student
--artefacts onnx-int8 onnx-fp32 litert-int8 --data ../shared/datasets/fer2013/fer2013.zip`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vitedge import checkpoints  # noqa: E402
from vitedge.data import CLASSES, load_splits  # noqa: E402
from vitedge.distill import DistillConfig, write_report  # noqa: E402
from vitedge.io import atomic_write_text, read_json, write_json  # noqa: E402
from vitedge.model import create_model  # noqa: E402
from vitedge.preprocess import Preprocess  # noqa: E402
from vitedge.engine import evaluate  # noqa: E402
from vitedge.validation_rows import load_result  # noqa: E402

CONFIG = REPO / "workflow" / "config" / "fer2013-gpu.yaml"
SHIPPED = REPO / "vitedge" / "assets" / "model" / "student.pt"
RETURNED = ("teacher.pt", "teacher.json", "student.pt", "student.json")
TEACHER_FILES = ("teacher.pt", "teacher.json", "validation-teacher-gpu.json")


def assemble(returned: Path, teacher_from: Path | None, dest: Path) -> Path:
    """One folder with everything `RETURNED` names. A run given `gpu_run.py --teacher` returns only the
    student: its teacher's files (checkpoint, summary, GPU rows) come from the run that trained it
    (e.g. reports/gpu-run/). Returns `returned` itself when nothing is missing."""
    missing = [n for n in RETURNED if not (returned / n).is_file()]
    if not missing:
        return returned
    if teacher_from is None or any(n not in TEACHER_FILES for n in missing):
        hint = " (a run given --teacher: say where that teacher's files are with --teacher-from)" \
            if set(missing) <= set(TEACHER_FILES) else ""
        raise SystemExit(f"error: {returned} lacks {', '.join(missing)}{hint}")
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(returned.iterdir()):
        if src.is_file():
            shutil.copyfile(src, dest / src.name)
    for name in TEACHER_FILES:
        if not (returned / name).is_file():
            if not (teacher_from / name).is_file():
                raise SystemExit(f"error: neither {returned} nor {teacher_from} has {name}")
            shutil.copyfile(teacher_from / name, dest / name)
    return dest


def overlay(run_dir: Path, teacher_info: dict, report_dir: Path) -> Path:
    """The config overlay: the teacher as trained (every CNN field spelt out: configs merge into the
    base's overrides), the CPU as device, a title that says where the models came from."""
    cfg = dict(teacher_info["config"])
    overrides = {k: v for k, v in cfg.items() if k not in ("arch", "img_size", "in_chans", "num_classes")}
    preset = read_json(report_dir / "teacher.json")["model"]["preset"]
    data = {"run": run_dir.name, "compute": {"device": "cpu", "nproc_per_node": 1},
            "models": {"teacher": {"arch": "cnn", "preset": preset, "overrides": overrides}},
            "report": {"title": f"vitedge validation report (FER-2013, teacher and student trained by "
                                f"benchmarks/gpu_run.py, {run_dir.name})"}}
    path = run_dir / "gpu-run.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "# written by benchmarks/gpu_import.py: use after workflow/config/fer2013-gpu.yaml\n"
                      + yaml.safe_dump(data, sort_keys=False))
    return path


def snakemake_data(run_dir: Path, extra_config: Path) -> Path:
    target = run_dir / "data" / "manifest.json"
    if not target.is_file():
        # the target first: --configfile takes every word after it
        # the rules call `python`: this interpreter's, as in an activated virtual environment
        env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
        subprocess.run([sys.executable, "-m", "snakemake", str(target.relative_to(REPO)), "--cores", "2",
                        "--configfile", str(CONFIG), str(extra_config)], cwd=REPO, check=True, env=env)
    return target.parent


def place_models(returned: Path, run_dir: Path) -> None:
    """teacher-pretrain < teacher < student (< the distill reports, written after): oldest first."""
    models = run_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    teacher, info = checkpoints.load_model(returned / "teacher.pt")
    fresh = create_model(info["config"])
    checkpoints.save_model(models / "teacher-pretrain.pt", fresh, Preprocess.from_dict(info["preprocess"]),
                           list(CLASSES), {"stage": "pretrain", "method": "none",
                                           "note": "placeholder: the teacher was trained by benchmarks/gpu_run.py"})
    write_json(models / "teacher-pretrain.json", {"method": "none", "params": fresh.num_params(),
                                                  "note": "the teacher was trained on a GPU by benchmarks/gpu_run.py"})
    for name in RETURNED:  # in this order: the student last
        time.sleep(0.01)  # distinct mtimes even on coarse clocks
        shutil.copyfile(returned / name, models / name)


def gpu_table(returned: Path, dest: Path) -> None:
    """The GPU validation rows, copied as they came back, and one Markdown table naming the GPU."""
    dest.mkdir(parents=True, exist_ok=True)
    lines = ["# GPU validation (runtimes/gpu.yaml) of the models benchmarks/gpu_run.py trained", ""]
    for model in ("student", "teacher"):
        src = returned / f"validation-{model}-gpu.json"
        if not src.is_file():
            continue
        shutil.copyfile(src, dest / src.name)
        result = load_result(src)
        lines += [f"## {model}: {result.status}", "", f"Measured on {result.machine_line or '?'}; "
                  f"{result.data.n if result.data else '?'} held-out Training faces (the check slice).", "",
                  "| entry | status | top-1 % | agreement % | bs1 p50 ms | img/s at batch 32 / 256 |",
                  "|---|---|---:|---:|---:|---|"]
        for row in result.rows:
            if row.status != "ok":
                lines.append(f"| {row.entry} | {row.status}: {row.reason} | | | | |")
                continue
            tput = " / ".join(f"{t.images_per_s:,.0f}" for t in row.throughput or [])
            lines.append(f"| {row.entry} | ok | {100 * row.accuracy.top1:.2f} | "
                         f"{100 * row.parity.top1_agreement:.2f} | {row.latency_ms.p50:.3f} | {tput} |")
        lines.append("")
    atomic_write_text(dest / "gpu_validation.md", "\n".join(lines))


def score(run_dir: Path, data_dir: Path) -> dict:
    """Teacher and student on PublicTest (val) and PrivateTest (test): the distill rule's table, and the
    shipped student on PublicTest beside the new one."""
    splits = load_splits(data_dir)
    teacher, t_info = checkpoints.load_model(run_dir / "models" / "teacher.pt")
    student, s_info = checkpoints.load_model(run_dir / "models" / "student.pt")
    summary = read_json(run_dir / "models" / "student.json")
    # runs before the teacher's hash left the config recorded it there; it is not an option
    cfg = DistillConfig.from_dict({k: v for k, v in summary["train_config"].items() if k != "teacher_sha256"})
    time.sleep(0.01)
    report = write_report(run_dir / "reports" / "distill.md", teacher, student, splits,
                          Preprocess.from_dict(t_info["preprocess"]), Preprocess.from_dict(s_info["preprocess"]), cfg)
    shipped, sh_info = checkpoints.load_model(SHIPPED)
    shipped_val = evaluate(shipped, splits["val"], Preprocess.from_dict(sh_info["preprocess"]))["top1"]
    return {"teacher": report["models"]["teacher"], "student": report["models"]["student"], "shipped_val": shipped_val}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--returned", type=Path, required=True, help="the folder the device call's files came back to")
    p.add_argument("--run", default="fer2013-gpu", help="results/<run>")
    p.add_argument("--reports", type=Path, default=REPO / "reports" / "gpu-run", help="committed GPU rows")
    p.add_argument("--teacher-from", type=Path,
                   help="where the teacher's files are when the run was given --teacher (e.g. reports/gpu-run)")
    args = p.parse_args(argv)
    run_dir = REPO / "results" / args.run
    args.returned = assemble(args.returned, args.teacher_from, run_dir / "returned")
    _, t_info = checkpoints.load_model(args.returned / "teacher.pt")
    extra = overlay(run_dir, t_info, args.returned)
    data_dir = snakemake_data(run_dir, extra)
    place_models(args.returned, run_dir)
    gpu_table(args.returned, args.reports)
    s = score(run_dir, data_dir)
    for name in ("teacher", "student"):
        print(f"{name}: PublicTest {100 * s[name]['val_top1']:.2f}%, PrivateTest {100 * s[name]['test_top1']:.2f}%")
    better = s["student"]["val_top1"] > s["shipped_val"]
    print(f"shipped student: PublicTest {100 * s['shipped_val']:.2f}% -> the new one is "
          f"{'BETTER: ship it after the workflow run' if better else 'not better: keep the shipped one'}")
    rel = os.path.relpath(extra, REPO)
    print(f"next: snakemake --cores 2 all --configfile {os.path.relpath(CONFIG, REPO)} {rel} --rerun-triggers mtime")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
