"""What running the workflow through SLURM costs: each job's wait, run and in-job overhead from sacct.

    python benchmarks/slurm_overhead.py WORKDIR [--local LOG] [--md docs/slurm_overhead.md]

WORKDIR is where `snakemake --workflow-profile ... ` ran through the SLURM executor with
`--slurm-keep-successful-logs` (the SLURM log of every job is then kept). The job ids are the ones the
newest Snakemake log there submitted; for each, `sacct` gives the partition, CPUs, GPUs (ReqTRES),
state and Submit / Start / End, and the job's SLURM log gives the time the rule's own command ran
(Snakemake inside the job stamps it to the second). Per job:

- wait: Start - Submit (scheduling, and queueing behind other jobs when the node is full);
- in-job overhead: (End - Start) - the command's time: the job step's Snakemake (two of them: the
  plugin's job step and the one `srun` starts) reading the workflow before and after the command.

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

SUBMITTED = re.compile(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
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
    submitted = SUBMITTED.findall(log.read_text(errors="replace"))
    logs = dict(submitted)
    rows = sacct([j for j, _ in submitted])
    lines = ["| job | rule | partition | CPUs | GPUs | state | submit | wait s | run s | command s | in-job overhead s |",
             "|---:|---|---|---:|---:|---|---|---:|---:|---:|---:|"]
    waits, runs, overheads = [], [], []
    for r in rows:
        submit, start, end = when(r["Submit"]), when(r["Start"]), when(r["End"])
        wait = (start - submit).total_seconds() if start and submit else None
        run = (end - start).total_seconds() if end and start else None
        cmd = command_seconds(Path(logs.get(r["JobID"], "")))
        over = run - cmd if run is not None and cmd is not None else None
        if r["State"] == "COMPLETED":
            waits += [wait] if wait is not None else []
            runs += [run] if run is not None else []
            overheads += [over] if over is not None else []
        fmt = lambda v: "–" if v is None else f"{v:.0f}"  # noqa: E731
        lines.append(f"| {r['JobID']} | {rule_of(r['Comment'])} | {r['Partition']} | {r['AllocCPUS']} | "
                     f"{gpus(r['ReqTRES'])} | {r['State']} | {r['Submit'][11:]} | {fmt(wait)} | {fmt(run)} | "
                     f"{fmt(cmd)} | {fmt(over)} |")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workdir", type=Path, help="where the SLURM run ran (its .snakemake/)")
    ap.add_argument("--local", type=Path, help="a Snakemake log of the same config run locally, or its folder")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    local = args.local
    if local is not None and local.is_dir():
        local = newest_log(local)
    text = report(args.workdir.resolve(), local)
    print(text, end="")
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
