"""Where a workflow run's wall time went: per-job and per-rule seconds from Snakemake's own log.

    python benchmarks/workflow_times.py [LOG] [--md reports/workflow_times.md]

LOG is a Snakemake log (default: the newest `.snakemake/log/*.snakemake.log` here); each job's
time is from the timestamp of its start to that of its `Finished jobid` line (Snakemake stamps
both to the second). The run's wall time is from the first job's start to the last job's end:
Snakemake's own DAG building before the first job is not in it (`/usr/bin/time` around the
command is). Jobs that overlap (two single-thread exports on two cores) both count in the
per-rule sums, so those may add up to more than the wall time.
"""
from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


@dataclass
class Job:
    jobid: str
    rule: str
    wildcards: str
    start: datetime
    end: datetime | None = None

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds() if self.end else float("nan")


def parse(text: str) -> list[Job]:
    """Jobs in the order they started; a job still running (or killed) has no end."""
    jobs: dict[str, Job] = {}
    stamp: datetime | None = None
    rule: str | None = None
    current: Job | None = None
    for line in text.splitlines():
        if m := STAMP.match(line.strip()):
            stamp = datetime.strptime(m[1], "%a %b %d %H:%M:%S %Y")
        elif m := START.match(line):
            rule, current = m[1], None
        elif (m := JOBID.match(line)) and rule and stamp:
            current = jobs.setdefault(m[1], Job(m[1], rule, "", stamp))
        elif (m := WILDCARDS.match(line)) and current:
            current.wildcards = m[1]
        elif (m := FINISHED.match(line)) and stamp and m[1] in jobs:
            jobs[m[1]].end = stamp
            rule = current = None
    return list(jobs.values())


def table(jobs: list[Job]) -> str:
    done = [j for j in jobs if j.end]
    if not done:
        raise SystemExit("no finished jobs in this log")
    wall = (max(j.end for j in done) - min(j.start for j in jobs)).total_seconds()
    lines = [f"{len(done)} jobs finished ({len(jobs) - len(done)} unfinished); first start to last end: "
             f"{wall:.0f} s ({int(wall // 60)} min {wall % 60:02.0f} s)", "",
             "| rule | jobs | seconds | share of wall % |", "|---|---:|---:|---:|"]
    per_rule: dict[str, list[Job]] = {}
    for j in done:
        per_rule.setdefault(j.rule, []).append(j)
    for rule, group in sorted(per_rule.items(), key=lambda kv: -sum(j.seconds for j in kv[1])):
        s = sum(j.seconds for j in group)
        lines.append(f"| {rule} | {len(group)} | {s:.0f} | {100 * s / wall:.0f} |")
    lines += ["", "| job | wildcards | seconds |", "|---|---|---:|"]
    for j in sorted(done, key=lambda j: -j.seconds):
        lines.append(f"| {j.rule} | {j.wildcards or '–'} | {j.seconds:.0f} |")
    return "\n".join(lines) + "\n"


def newest_log(root: Path) -> Path:
    """The newest log that ran a job (a `-n` or nothing-to-do run leaves a log too)."""
    logs = sorted((root / ".snakemake" / "log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    for log in reversed(logs):
        if "Finished jobid" in log.read_text(errors="replace"):
            return log
    raise SystemExit(f"no Snakemake log with a finished job under {root / '.snakemake' / 'log'}: pass one")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", nargs="?", type=Path, help="a Snakemake log (default: the newest in .snakemake/log)")
    ap.add_argument("--md", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    log = args.log or newest_log(Path.cwd())
    text = f"Job times of {log.name} (Snakemake's timestamps)\n\n" + table(parse(log.read_text(errors="replace")))
    print(text, end="")
    if args.md:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from vitedge.io import atomic_write_text
        from vitedge.sysinfo import describe

        # the log does not name the CPU: this is where the table was written, the run's own machine
        # when it is run in the run's folder as the README does
        args.md.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.md, f"{text}\nWritten on: {describe()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
