"""The SLURM profile against a real SLURM controller (workflow/profiles/slurm/local-cluster.sh on CI).

Marked `slurm`: skipped, with the reason, where no cluster answers (no `sinfo`, no controller, no
accounting, or no executor plugin). The cluster is the one `sinfo` on PATH talks to, else the one
local-cluster.sh runs in VITEDGE_SLURM_HOME (default ~/.cache/vitedge-slurm). Each run goes through
workflow/profiles/slurm/config.yaml fitted to the cluster's nodes by workflow/profiles/slurm/fit.py
(per-job CPUs and memory capped at a node's: the CI node has 2 CPUs; partitions, GPU requests,
retries as the profile has them):

- the tests' tiny config end to end: every rule a SLURM job, sacct shows each with the partition,
  CPUs and GPUs the profile asks for, the report written;
- a training job cancelled mid-run (scancel) is retried by Snakemake and resumes from its
  checkpoint to the same final weights as an uninterrupted run;
- a failing job's log is shown by Snakemake.

Two quick checks need no cluster: the profile sizes every rule that takes `workflow.cores`, and
fit.py caps CPUs and memory and changes nothing else. Each SLURM test is one workflow run of its own (pytest-xdist may run them side by side; SLURM queues
their jobs on the same node).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import copy_workflow, planned_jobs, tiny_config


REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
STATE = Path(os.environ.get("VITEDGE_SLURM_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
             / "vitedge-slurm")
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+)")


def slurm_env() -> dict[str, str]:
    """The environment the cluster's commands work in: local-cluster.sh's wrappers first on PATH
    when it runs one (jobs inherit PATH: their nested srun finds the cluster the same way)."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "2"}
    if (STATE / "bin" / "sinfo").is_file() and (STATE / "etc" / "slurm.conf").is_file():
        env["PATH"] = f"{STATE / 'bin'}{os.pathsep}{env['PATH']}"
        env["SLURM_CONF"] = str(STATE / "etc" / "slurm.conf")
    return env


def slurm(*args: str, timeout: int = 30) -> str:
    return subprocess.run(list(args), env=slurm_env(), capture_output=True, text=True, timeout=timeout,
                          check=True).stdout


def why_no_cluster() -> str | None:
    """None when a SLURM controller with accounting answers and the executor plugin is installed."""
    env = slurm_env()
    if shutil.which("sinfo", path=env["PATH"]) is None:
        return ("no SLURM client (sinfo not found): `workflow/profiles/slurm/local-cluster.sh start` runs a "
                "one-node cluster (apt-get install slurm-wlm slurmdbd munge mariadb-server)")
    for cmd in (["sinfo", "-h", "-o", "%P %a"], ["sacct", "-n", "-X", "-j", "1"]):
        try:
            subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
            what = "SLURM controller" if cmd[0] == "sinfo" else "SLURM accounting (sacct, slurmdbd)"
            last = ((getattr(e, "stderr", "") or str(e)).strip().splitlines() or [""])[-1][-200:]
            return f"{what} unreachable ({cmd[0]}: {last}); workflow/profiles/slurm/local-cluster.sh start runs one"
    import importlib.util

    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm not installed (pip install 'vitedge[slurm]')"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    """Skips the test, with the reason, where no cluster answers."""
    pytest.importorskip("snakemake")
    why = why_no_cluster()
    if why:
        pytest.skip(why)


def workdir(tmp_path: Path, cfg: dict) -> Path:
    """The workflow, `cfg` as cfg.yaml, and the profile fitted to this cluster's nodes in profile/."""
    copy_workflow(tmp_path)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    subprocess.run([sys.executable, str(PROFILE / "fit.py"), str(tmp_path / "profile")], env=slurm_env(),
                   check=True, capture_output=True, text=True, timeout=60)
    return tmp_path


def snakemake(wd: Path, *args: str, timeout: int = 1500, popen: bool = False):
    # the plugin's first status query 5 s after a submission, not 40: the tiny config's jobs take seconds
    cmd = [sys.executable, "-m", "snakemake", *args, "--workflow-profile", "profile", "--configfile", "cfg.yaml",
           "--slurm-keep-successful-logs", "--slurm-init-seconds-before-status-checks", "5"]
    if popen:
        return subprocess.Popen(cmd, cwd=wd, env=slurm_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(cmd, cwd=wd, env=slurm_env(), capture_output=True, text=True, timeout=timeout)


def sacct(jobids: list[str]) -> list[dict[str, str]]:
    """One row per job (allocation, not steps) with the fields the checks read."""
    fields = ["JobID", "JobName", "Comment", "Partition", "AllocCPUS", "ReqTRES", "State", "ExitCode",
              "Submit", "Start", "End"]
    out = slurm("sacct", "-n", "-X", "-P", "-j", ",".join(jobids), "-o", ",".join(fields))
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


def rule_of(row: dict[str, str]) -> str:
    """The rule a job ran: the plugin puts `rule_<name>[_wildcards_...]` in its comment."""
    m = re.match(r"rule_(\w+?)(?:_wildcards_|$)", row["Comment"])
    assert m, row
    return m[1]


# ------------------------------------------------------------------------------------------------ no cluster
def test_profile_sizes_every_rule_that_takes_the_whole_machine():
    """A rule with `threads: workflow.cores` not in set-threads would ask SLURM for `cores` CPUs."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    whole = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^(?=rule \w+:)", smk.read_text(), flags=re.M):
            m = re.match(r"rule (\w+):", block)
            if m and re.search(r"^\s+threads: workflow\.cores\b", block, re.M):
                whole.add(m[1])
    assert {"pretrain", "finetune", "distill", "validate"} <= whole
    assert whole <= set(profile["set-threads"]), whole - set(profile["set-threads"])
    assert profile["cores"] >= max(profile["set-threads"].values())


def test_fit_caps_cpus_and_memory_and_keeps_the_rest(tmp_path):
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    subprocess.run([sys.executable, str(PROFILE / "fit.py"), str(tmp_path), "--cpus", "2", "--mem-mb", "12000"],
                   check=True, capture_output=True, timeout=60)
    fitted = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert fitted["set-threads"] == {rule: min(n, 2) for rule, n in profile["set-threads"].items()}
    for rule, res in profile["set-resources"].items():
        assert fitted["set-resources"][rule] == {**res, **({"mem_mb": min(res["mem_mb"], 12000)} if "mem_mb" in res
                                                           else {})}
    assert fitted["default-resources"]["mem_mb"] == min(profile["default-resources"]["mem_mb"], 12000)
    rest = {k for k in profile if k not in ("set-threads", "set-resources", "default-resources")}
    assert {k: fitted[k] for k in rest} == {k: profile[k] for k in rest}


# ------------------------------------------------------------------------------------------------ e2e
@pytest.mark.slurm
@pytest.mark.slow
def test_tiny_config_end_to_end_every_rule_a_slurm_job(tmp_path, cluster):
    wd = workdir(tmp_path, tiny_config())
    profile = yaml.safe_load((wd / "profile" / "config.yaml").read_text())
    dry = snakemake(wd, "all", "--dry-run")
    assert dry.returncode == 0, dry.stdout[-3000:] + dry.stderr[-3000:]
    planned = planned_jobs(dry)
    planned.pop("all", None)  # the target rule is local: it runs nothing

    start = time.monotonic()
    proc = snakemake(wd, "all")
    wall = time.monotonic() - start
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    out = wd / "results" / "tiny"
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert (out / "report" / "report.md").is_file() and (out / "report" / "index.html").is_file()
    assert metrics["verdict"]["passed"] is True

    jobids = SUBMITTED.findall(log)
    rows = sacct(jobids)
    assert len(rows) == len(jobids) == sum(planned.values()), (planned, rows)
    ran: dict[str, int] = {}
    for row in rows:
        rule = rule_of(row)
        ran[rule] = ran.get(rule, 0) + 1
        assert row["State"] == "COMPLETED", row
        res = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}
        assert row["Partition"] == res["slurm_partition"], (rule, row)
        assert int(row["AllocCPUS"]) == profile["set-threads"].get(rule, 1), (rule, row)
        if res.get("gpu"):  # the profile's GPU request reached SLURM (--gpus)
            assert "gres/gpu=1" in row["ReqTRES"], (rule, row)
    assert ran == planned
    # the validations for the gpu target ask for a GPU themselves (validate.smk)
    assert any(rule_of(r) == "validate" and "gpu" in r["Comment"] and "gres/gpu=1" in r["ReqTRES"] for r in rows)
    # the table and the wall time for docs/cluster.md (benchmarks/slurm_overhead.py prints the same)
    print(f"\n{len(rows)} SLURM jobs, {wall:.0f} s wall")
    print(subprocess.run([sys.executable, str(REPO / "benchmarks" / "slurm_overhead.py"), str(wd)], env=slurm_env(),
                         capture_output=True, text=True, timeout=120).stdout)


# ------------------------------------------------------------------------------------------------ resume
def resume_config() -> dict:
    """Data and the teacher only, its fine-tuning long enough (epochs of seconds) to cancel mid-run."""
    cfg = tiny_config()
    cfg["run"] = "resume"
    cfg["data"].update(per_class=100)
    cfg["finetune"].update(epochs=4, max_steps_per_epoch=0, batch_size=8, threads=1)
    return cfg


TEACHER = "results/resume/models/teacher.pt"


@pytest.mark.slurm
@pytest.mark.slow
def test_cancelled_training_job_is_retried_and_resumes_to_the_same_weights(tmp_path, cluster):
    from vitedge.torch_io import load_torch

    (tmp_path / "slurm").mkdir()
    wd = workdir(tmp_path / "slurm", resume_config())
    work = wd / (TEACHER + ".work")
    proc = snakemake(wd, TEACHER, popen=True)
    cancelled = None
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and proc.poll() is None:
            # the job that runs finetune, once its first epoch's checkpoint is written
            lines = (work / "metrics.jsonl").read_text().count("\n") if (work / "metrics.jsonl").is_file() else 0
            if lines >= 1:
                jobs = slurm("squeue", "-h", "-o", "%i %k %T").split()
                running = [jobs[i] for i in range(0, len(jobs), 3) if jobs[i + 1].startswith("rule_finetune")
                           and jobs[i + 2] == "RUNNING"]
                if running:
                    cancelled = running[0]
                    slurm("scancel", cancelled)
                    break
            time.sleep(0.2)
        assert cancelled, "the finetune job was not seen running after its first epoch"
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-6000:]
    finetune = [r for r in sacct(SUBMITTED.findall(log)) if rule_of(r) == "finetune"]
    # the cancelled job, then its retry (the profile's `retries: 1`), which completed
    assert [r["JobID"] for r in finetune][0] == cancelled, finetune
    assert finetune[0]["State"].startswith("CANCELLED") and finetune[-1]["State"] == "COMPLETED", finetune
    assert len(finetune) == 2, finetune
    train_log = (wd / "results" / "resume" / "logs" / "finetune.log").read_text()
    assert re.search(r"resuming finetune after epoch [1-3]\b", train_log), train_log[-3000:]
    resumed = load_torch(work / "state.pt")

    # the same run, uninterrupted and without SLURM
    ref = tmp_path / "local"
    ref.mkdir()
    copy_workflow(ref)
    (ref / "cfg.yaml").write_text(yaml.safe_dump(resume_config()))
    local = subprocess.run([sys.executable, "-m", "snakemake", TEACHER, "--cores", "2", "--workflow-profile", "none",
                            "--configfile", "cfg.yaml"], cwd=ref, env=slurm_env(), capture_output=True, text=True,
                           timeout=900)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    whole = load_torch(ref / (TEACHER + ".work") / "state.pt")
    assert resumed["epoch"] == whole["epoch"] == 4
    assert resumed["model"].keys() == whole["model"].keys()
    differ = [k for k in whole["model"] if not (resumed["model"][k] == whole["model"][k]).all()]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


# ------------------------------------------------------------------------------------------------ failure
@pytest.mark.slurm
@pytest.mark.slow
def test_failing_job_shows_its_log(tmp_path, cluster):
    cfg = tiny_config()
    cfg["run"] = "broken"
    cfg["data"]["source"] = str(tmp_path / "no-such-fer2013.zip")
    wd = workdir(tmp_path, cfg)
    proc = snakemake(wd, "results/broken/data/manifest.json", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    rule_log = (wd / "results" / "broken" / "logs" / "data.log").read_text()
    last = [line for line in rule_log.splitlines() if line.strip()][-1]
    # show-failed-logs: the rule's log is printed, not only its path; and where SLURM's own log is
    assert "no-such-fer2013.zip" in last and last in out, out[-4000:]
    assert re.search(r"slurm_logs/rule_data/\d+\.log", out), out[-4000:]
    row = sacct(SUBMITTED.findall(out))[-1]
    assert row["State"] == "FAILED", row
