"""What running the workflow through SLURM costs: each job's wait, run and in-job overhead from sacct.

    python benchmarks/slurm_overhead.py WORKDIR [--local LOG] [--md FILE]
    python benchmarks/slurm_overhead.py --tiny DIR [--md FILE]

`--tiny DIR` first runs the tests' tiny config (tests/test_workflow.py) twice from empty folders, one
after the other: DIR/local with `--cores N` (N: the smallest SLURM node's CPUs) and no profile, then
DIR/slurm through workflow/profiles/slurm fitted to the nodes (workflow/profiles/slurm/fit.py), and
reports both commands' wall times (DAG building included) and the SLURM run's jobs as below.

WORKDIR is where `snakemake --workflow-profile ... ` ran through the SLURM executor with
`--slurm-keep-successful-logs` (the SLURM log of every job is then kept). The job ids are the ones the
newest Snakemake log there submitted; for each, `sacct` gives the partition, CPUs, GPUs (ReqTRES),
state and Submit / Start / End, and the job's SLURM log gives the time the rule's own command ran
(Snakemake inside the job stamps it to the second). Per job:

- wait: Start - Submit (scheduling, and queueing behind other jobs when the node is full);
- in-job overhead: (End - Start) - the command's time: the job step's Snakemake (two of them: the
  plugin's job step and the one `srun` starts) reading the workflow before and after the command;
- noticed: from End to the `Finished jobid` stamp of the Snakemake that submitted it: the plugin asks
  sacct for job states 40 s after a submission (slurm-init-seconds-before-status-checks), then
  10 s later each time nothing finished, up to every 180 s.

`--local LOG`: a Snakemake log of the same config run locally (`--cores N`, no SLURM); its wall
time (first job start to last job end, as benchmarks/workflow_times.py counts it) is set beside
the SLURM run's (first Submit to last End).
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workflow_times import STAMP, newest_log, parse  # noqa: E402

SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
FINISHED = re.compile(r"^Finished jobid: (\d+) ")
FIELDS = ["JobID", "Comment", "Partition", "AllocCPUS", "ReqTRES", "State", "Submit", "Start", "End"]


def sacct(jobids: list[str]) -> list[dict[str, str]]:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", ",".join(jobids), "-o", ",".join(FIELDS)],
                         capture_output=True, text=True, check=True).stdout
    return [dict(zip(FIELDS, line.split("|"))) for line in out.splitlines() if line.strip()]


def command_seconds(slurm_log: Path) -> float | None:
    """Seconds the rule's command ran in the job: from the stamp before `localrule X:` (the innermost
    Snakemake, which runs the shell command) to the stamp before its `Finished jobid` line."""
    if not slurm_log.is_file():
        return None
    stamp = start = None
    for line in slurm_log.read_text(errors="replace").splitlines():
        if m := STAMP.match(line.strip()):
            stamp = datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
        elif line.startswith("localrule ") and stamp:
            start = stamp
        elif line.startswith("Finished jobid") and start and stamp:
            return (stamp - start).total_seconds()
    return None


def when(s: str) -> datetime | None:
    try:
        return datetime.fromisoformat(s)
    except ValueError:  # Unknown, None: a job that never started or ended
        return None


def rule_of(comment: str) -> str:
    m = re.match(r"rule_(\w+?)(?:_wildcards_(.*))?$", comment)
    return f"{m[1]} {m[2]}" if m and m[2] else (m[1] if m else comment)


def gpus(tres: str) -> str:
    m = re.search(r"gres/gpu=(\d+)", tres)
    return m[1] if m else "0"


def report(workdir: Path, local_log: Path | None) -> str:
    log = newest_slurm_log(workdir)
    text = log.read_text(errors="replace")
    submitted = SUBMITTED.findall(text)
    logs = {slurm_id: path for _, slurm_id, path in submitted}
    # Snakemake's job id -> SLURM's (the last submission: a retry replaces the first), and when
    # Snakemake saw each of its jobs finish
    slurm_of = {sm: slurm_id for sm, slurm_id, _ in submitted}
    finished: dict[str, datetime] = {}
    stamp = None
    for line in text.splitlines():
        if m := STAMP.match(line.strip()):
            stamp = datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
        elif (m := FINISHED.match(line)) and stamp and m[1] in slurm_of:
            finished[slurm_of[m[1]]] = stamp
    rows = sacct([j for _, j, _ in submitted])
    lines = ["| job | rule | partition | CPUs | GPUs | state | submit | wait s | run s | command s | in-job overhead s "
             "| noticed s |", "|---:|---|---|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    waits, runs, overheads, notices = [], [], [], []
    for r in rows:
        submit, start, end = when(r["Submit"]), when(r["Start"]), when(r["End"])
        wait = (start - submit).total_seconds() if start and submit else None
        run = (end - start).total_seconds() if end and start else None
        cmd = command_seconds(Path(logs.get(r["JobID"], "")))
        over = run - cmd if run is not None and cmd is not None else None
        seen = finished.get(r["JobID"])
        notice = (seen - end).total_seconds() if seen and end else None
        if r["State"] == "COMPLETED":
            waits += [wait] if wait is not None else []
            runs += [run] if run is not None else []
            overheads += [over] if over is not None else []
            notices += [notice] if notice is not None else []
        fmt = lambda v: "–" if v is None else f"{v:.0f}"  # noqa: E731
        lines.append(f"| {r['JobID']} | {rule_of(r['Comment'])} | {r['Partition']} | {r['AllocCPUS']} | "
                     f"{gpus(r['ReqTRES'])} | {r['State']} | {r['Submit'][11:]} | {fmt(wait)} | {fmt(run)} | "
                     f"{fmt(cmd)} | {fmt(over)} | {fmt(notice)} |")
    submits = [when(r["Submit"]) for r in rows if when(r["Submit"])]
    ends = [when(r["End"]) for r in rows if when(r["End"])]
    wall = (max(ends) - min(submits)).total_seconds() if submits and ends else float("nan")
    head = [f"SLURM run in {workdir} (Snakemake log {log.name}): {len(rows)} jobs, "
            f"{sum(r['State'] == 'COMPLETED' for r in rows)} completed; first submit to last end: {wall:.0f} s"]
    if overheads:
        head.append(f"per completed job: wait median {statistics.median(waits):.0f} s (mean {statistics.mean(waits):.1f}), "
                    f"run median {statistics.median(runs):.0f} s, in-job overhead median "
                    f"{statistics.median(overheads):.0f} s (mean {statistics.mean(overheads):.1f}, "
                    f"total {sum(overheads):.0f} s over {len(overheads)} jobs)")
    if notices:
        head.append(f"noticed by Snakemake after the job ended: median {statistics.median(notices):.0f} s "
                    f"(mean {statistics.mean(notices):.1f}, max {max(notices):.0f})")
    if local_log:
        jobs = [j for j in parse(local_log.read_text(errors="replace")) if j.end]
        local_wall = (max(j.end for j in jobs) - min(j.start for j in jobs)).total_seconds()
        head.append(f"local run ({local_log.name}): {len(jobs)} jobs, first start to last end: {local_wall:.0f} s; "
                    f"SLURM / local: {wall / local_wall:.2f}x, {wall - local_wall:+.0f} s "
                    f"({(wall - local_wall) / max(len(rows), 1):+.1f} s per SLURM job)")
    return "\n".join(head) + "\n\n" + "\n".join(lines) + "\n"


def newest_slurm_log(workdir: Path) -> Path:
    """The newest Snakemake log there that submitted SLURM jobs."""
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        if SUBMITTED.search(log.read_text(errors="replace")):
            return log
    raise SystemExit(f"no Snakemake log under {workdir / '.snakemake' / 'log'} submitted a SLURM job")


def run_tiny(root: Path) -> tuple[Path, Path, str]:
    """The tiny config locally, then through SLURM: (slurm workdir, local workdir, wall-time lines)."""
    import os
    import time

    import yaml

    repo = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(repo / "tests"))
    from test_workflow import copy_workflow, tiny_config

    sys.path.insert(0, str(repo / "workflow" / "profiles" / "slurm"))
    from fit import node_size

    cpus, _ = node_size()
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": str(cpus)}
    walls = []
    for name, extra in (("local", ["--cores", str(cpus), "--workflow-profile", "none"]),
                        ("slurm", ["--workflow-profile", "profile", "--slurm-keep-successful-logs"])):
        wd = root / name
        if wd.exists():
            raise SystemExit(f"{wd} exists: --tiny runs from empty folders")
        wd.mkdir(parents=True)
        copy_workflow(wd)
        (wd / "tiny.yaml").write_text(yaml.safe_dump(tiny_config()))
        if name == "slurm":
            subprocess.run([sys.executable, str(repo / "workflow" / "profiles" / "slurm" / "fit.py"),
                            str(wd / "profile")], check=True, env=env, capture_output=True)
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "snakemake", "all", "--configfile", "tiny.yaml", *extra],
                              cwd=wd, env=env, capture_output=True, text=True)
        walls.append(time.monotonic() - start)
        if proc.returncode != 0:
            raise SystemExit(f"the {name} run failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    line = (f"tiny config, whole command (DAG building included): local --cores {cpus} {walls[0]:.0f} s, "
            f"through SLURM {walls[1]:.0f} s ({walls[1] / walls[0]:.2f}x)")
    return root / "slurm", root / "local", line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path, nargs="?", help="where the SLURM run ran (its .snakemake/)")
    ap.add_argument("--local", type=Path, help="a Snakemake log of the same config run locally, or its folder")
    ap.add_argument("--tiny", type=Path, metavar="DIR", help="run the tiny config locally and through SLURM in DIR first")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    first = ""
    if args.tiny:
        args.workdir, args.local, first = run_tiny(args.tiny.resolve())
        first += "\n"
    if args.workdir is None:
        ap.error("WORKDIR or --tiny DIR")
    local = args.local
    if local is not None and local.is_dir():
        local = newest_log(local)
    text = first + report(args.workdir.resolve(), local)
    print(text, end="")
    if args.md:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from vitedge.sysinfo import describe

        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(f"{text}\nMeasured on: {describe()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
