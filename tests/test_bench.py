"""The benchmark protocol (vitedge.bench), checked on callables of known cost.

Most tests drive `measure` with a fake clock that each call advances by a known amount, so
they check the protocol exactly and take no real time; one uses real sleeps, with a tolerance
wide enough for a busy 2-core CI box.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from vitedge.bench import BenchConfig, PeakMemory, batch_of, benchmark, measure


class FakeModel:
    """A 'model' whose calls cost `costs[i]` seconds of fake time (the last cost repeats)."""

    def __init__(self, *costs: float):
        self.now, self.calls, self.costs = 0.0, 0, costs

    def clock(self) -> float:
        return self.now

    def __call__(self, *args) -> None:
        self.now += self.costs[min(self.calls, len(self.costs) - 1)]
        self.calls += 1


def test_warmup_is_excluded_and_counts_respected():
    # 5 slow warm-up calls (JIT, allocation), then steady 2 ms calls
    model = FakeModel(*[1.0] * 5, 0.002)
    t = measure(model, warmup=5, min_iters=20, max_iters=40, max_seconds=100.0, clock=model.clock)
    assert t.warmup_calls == 5
    assert t.n == 40 and t.stopped_by == "max_iters"
    assert model.calls == 45
    assert t.p50 == pytest.approx(0.002)
    assert t.samples.max() == pytest.approx(0.002)  # no warm-up call leaked into the samples


def test_time_bound_stops_after_min_iters():
    model = FakeModel(0.1)
    t = measure(model, warmup=0, min_iters=10, max_iters=1000, max_seconds=3.0, clock=model.clock)
    # stops at the first check past 3 s: 30 calls of 0.1 s, never fewer than min_iters
    assert t.stopped_by == "max_seconds" and t.n == 30
    slow = FakeModel(10.0)
    t = measure(slow, warmup=0, min_iters=5, max_iters=1000, max_seconds=1.0, clock=slow.clock)
    assert t.n == 5  # min_iters wins over the time bound


def test_time_cap_stops_short_of_min_iters():
    model = FakeModel(10.0)
    t = measure(model, warmup=0, min_iters=100, max_iters=1000, max_seconds=1.0, time_cap=35.0, clock=model.clock)
    assert t.stopped_by == "time_cap" and t.n == 4


def test_warmup_seconds_extends_warmup():
    model = FakeModel(1 / 64)  # exact in binary: no rounding at the boundary
    t = measure(model, warmup=2, warmup_seconds=0.5, min_iters=1, max_iters=100, clock=model.clock)
    assert t.warmup_calls == 32  # 2 asked for, but 0.5 s of 1/64 s calls
    capped = FakeModel(1 / 64)
    t = measure(capped, warmup=2, warmup_seconds=10.0, min_iters=1, max_iters=5, clock=capped.clock)
    assert t.warmup_calls == 5  # a time-based warm-up never runs longer than a full measurement


def test_percentiles_of_known_distribution():
    # calls cost 1, 2, ... 100 ms: p50 = 50.5, p90 = 90.1, p99 = 99.01 (linear interpolation)
    model = FakeModel(*[i / 1000 for i in range(1, 101)])
    t = measure(model, warmup=0, min_iters=100, max_iters=100, max_seconds=1e9, clock=model.clock)
    s = t.summary_ms()
    assert (s["p50"], s["p90"], s["p99"]) == pytest.approx((50.5, 90.1, 99.01))
    assert s["min"] == pytest.approx(1.0) and s["max"] == pytest.approx(100.0) and s["n"] == 100


def test_benchmark_throughput_is_batch_over_latency():
    # cost = 1 ms fixed + 0.5 ms per image
    now = [0.0]
    seen = []

    def predict(x):
        seen.append(len(x))
        now[0] += 0.001 + 0.0005 * len(x)

    cfg = BenchConfig(warmup=3, warmup_seconds=0.0, min_iters=10, max_iters=10, batch_sizes=(8, 32))
    r = benchmark(predict, np.zeros((5, 1, 4, 4), np.float32), cfg, clock=lambda: now[0])
    assert r["latency_ms"]["p50"] == pytest.approx(1.5)
    assert [t["batch"] for t in r["throughput"]] == [8, 32]
    for t in r["throughput"]:
        latency_s = (0.001 + 0.0005 * t["batch"])
        assert t["images_per_s"] == pytest.approx(t["batch"] / latency_s)
        assert t["latency_ms"]["p50"] == pytest.approx(latency_s * 1e3)
    assert set(seen) == {1, 8, 32}  # batches are built to size even from 5 inputs


def test_real_sleep_p50_within_tolerance():
    """A callable that sleeps 20 ms: sleep overshoots on a busy host, never undershoots."""
    t = measure(lambda: time.sleep(0.02), warmup=2, min_iters=10, max_iters=10, max_seconds=10.0)
    assert t.n == 10
    assert 0.02 <= t.p50 < 0.02 + 0.03


def test_batch_of_repeats_and_truncates():
    x = np.arange(3, dtype=np.float32)[:, None]
    assert batch_of(x, 1).tolist() == [[0.0]]
    assert batch_of(x, 7)[:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert batch_of(x, 7).flags["C_CONTIGUOUS"]


def test_bench_config_validation_and_merge():
    cfg = BenchConfig.from_dict({"batch_sizes": [4], "min_iters": 3})
    assert cfg.batch_sizes == (4,) and cfg.merged({"max_seconds": 0.5}).max_seconds == 0.5
    with pytest.raises(ValueError, match="unknown"):
        BenchConfig.from_dict({"iterations": 3})
    with pytest.raises(ValueError):
        BenchConfig.from_dict({"min_iters": 10, "max_iters": 5})


def test_peak_memory_sees_a_large_allocation():
    """The peak grows by what a block allocated inside the context touched (VmHWM, reset on entry, on
    Linux; ru_maxrss elsewhere, which only grows past the process's earlier peak)."""
    with PeakMemory("cpu") as m:
        block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
        del block
    assert m.result["method"].startswith("VmHWM"), m.result  # this suite runs on Linux
    assert 60 < m.result["peak_delta_mb"] < 200
    with PeakMemory("cpu") as small:
        np.ones(1024, dtype=np.uint8)
    assert small.result["peak_delta_mb"] < 10  # it measures this block, not the process's history


def test_learning_curves_follow_a_continued_schedule(tmp_path):
    """benchmarks/learning_curves.py --runs: a stage warm-started from an earlier run (its summary's
    `init`) is drawn as one line, the earlier run's epochs first; the student starts where the teacher ends."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from learning_curves import run_curves

    def epochs(*pairs):
        return [{"epoch_s": s, "val_top1": a} for s, a in pairs]

    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    first = {"history": epochs((10, 0.3), (10, 0.4)), "init": {"checkpoint": "p.pt", "summary": {"method": "none"}}}
    (models / "teacher.json").write_text(json.dumps({"history": epochs((5, 0.5)),
                                                      "init": {"checkpoint": "t0.pt", "summary": first}}))
    work = models / "student.pt.work"  # a student still training: its metrics so far
    work.mkdir()
    (work / "metrics.jsonl").write_text("\n".join(json.dumps(e) for e in epochs((2, 0.2), (2, 0.25))) + "\n")
    teacher, student = run_curves(tmp_path / "run")
    assert teacher["curve"] == [(10, 0.3), (20, 0.4), (25, 0.5)]
    assert student["curve"] == [(27, 0.2), (29, 0.25)]

    # a finished student records the teacher(s) of its last cycle: that teacher's chain is drawn (of an
    # ensemble, the member with the longest chain), even when it was trained outside the workflow
    continued = {"history": epochs((7, 0.6)), "init": {"checkpoint": "teacher.pt",
                                                        "summary": json.loads((models / "teacher.json").read_text())}}
    (models / "student.json").write_text(json.dumps({
        "history": epochs((3, 0.55)),
        "teacher": [{"checkpoint": "teacher.pt", "summary": json.loads((models / "teacher.json").read_text())},
                    {"checkpoint": "teacher2.pt", "summary": continued}]}))
    teacher, student = run_curves(tmp_path / "run")
    assert teacher["curve"] == [(10, 0.3), (20, 0.4), (25, 0.5), (32, 0.6)]
    assert student["curve"] == [(35, 0.55)]


def test_learning_curves_keep_earlier_runs_and_tell_runs_apart_by_label(tmp_path):
    """benchmarks/learning_curves.py: a run added before stays in <out>.json after its folder is gone;
    `DIR=LABEL` names a second run of the same config; re-adding a label replaces its rows."""
    import json
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from learning_curves import main, parse_run

    assert parse_run("results/fer2013") == (Path("results/fer2013"), "fer2013")
    assert parse_run("x/fer2013=one-go") == (Path("x/fer2013"), "one-go")

    def run(folder, acc):
        models = folder / "models"
        models.mkdir(parents=True)
        (models / "teacher.json").write_text(json.dumps({"history": [{"epoch_s": 10, "val_top1": acc}]}))
        (models / "student.json").write_text(json.dumps({"history": [{"epoch_s": 5, "val_top1": acc / 2}]}))
        return folder

    out = tmp_path / "curves"
    first = run(tmp_path / "a" / "fer2013", 0.6)
    assert main(["--candidates", "--runs", str(first), "--out", str(out), "--threads", "1"]) == 0
    second = run(tmp_path / "b" / "fer2013", 0.5)
    for f in (first / "models").iterdir():
        f.unlink()
    assert main(["--candidates", "--runs", f"{second}=one-go", "--out", str(out), "--threads", "1"]) == 0
    rows = {r["name"]: r["curve"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert rows == {"fer2013 teacher (workflow)": [[10, 0.6]], "fer2013 student (workflow)": [[15, 0.3]],
                    "one-go teacher (workflow)": [[10, 0.5]], "one-go student (workflow)": [[15, 0.25]]}
    assert out.with_suffix(".png").stat().st_size > 0 and "one-go student" in out.with_suffix(".md").read_text()

    third = run(tmp_path / "c" / "fer2013", 0.7)  # the same label again: its rows are replaced
    main(["--candidates", "--runs", f"{third}=one-go", "--out", str(out), "--threads", "1"])
    rows = {r["name"]: r["curve"] for r in json.loads(out.with_suffix(".json").read_text())["rows"]}
    assert len(rows) == 4 and rows["one-go teacher (workflow)"] == [[10, 0.7]]


def test_learning_curves_distil_with_a_given_teacher(tmp_path, synthetic_splits):
    """benchmarks/learning_curves.py --teacher: the distilled candidates learn from the checkpoint
    given (no cnn candidate trained), their line starts at 0 and the row names the teacher."""
    import json
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from learning_curves import main

    from vitedge.checkpoints import save_model
    from vitedge.data import CLASSES, save_splits
    from vitedge.model import create_model
    from vitedge.preprocess import Preprocess

    data = tmp_path / "data"
    save_splits(data, synthetic_splits, {"kind": "synthetic"})
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    save_model(teacher, create_model("cnn-tiny-48").eval(), Preprocess(), list(CLASSES), {})
    out = tmp_path / "pool"
    assert main(["--data", str(data), "--minutes", "0.02", "--threads", "1", "--teacher", str(teacher),
                 "--candidates", "distilled-seq", "--out", str(out)]) == 0
    (row,) = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert row["candidate"] == "distilled-seq" and row["overrides"] == {"distilled": True, "pool": "seq"}
    assert row["teacher"] == str(teacher) and str(teacher) in row["name"]
    assert len(row["curve"]) == 8 and row["curve"][0][0] < 60  # starts at 0, not after a teacher's training
    assert not (tmp_path / "pool.work" / "cnn.work").exists()


def test_teachers_benchmark_scores_each_teacher_and_their_ensemble(tmp_path):
    """benchmarks/teachers.py: one row per checkpoint and one for their ensemble, on PublicTest (val)."""
    import sys
    from pathlib import Path

    from vitedge import checkpoints
    from vitedge.data import CLASSES, make_synthetic, save_splits
    from vitedge.model import create_model
    from vitedge.preprocess import Preprocess

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from teachers import main

    save_splits(tmp_path / "data", make_synthetic(per_class=3, seed=0), {"kind": "synthetic"})
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for path, model in zip(paths, (create_model("cnn-tiny-48"), create_model("vit-micro-48", depth=1))):
        checkpoints.save_model(path, model, Preprocess(), list(CLASSES))
    assert main(["--data", str(tmp_path / "data"), "--teachers", *map(str, paths), "--threads", "1",
                 "--md", str(tmp_path / "t.md")]) == 0
    rows = [line for line in (tmp_path / "t.md").read_text().splitlines() if line.startswith("| ") and "%" not in line]
    assert [r.split(" | ")[0][2:] for r in rows] == [str(paths[0]), str(paths[1]), "ensemble of all"]
    assert all(0 <= float(r.split(" | ")[2]) <= 100 for r in rows)


SNAKEMAKE_LOG = """\
Building DAG of jobs...
[Wed Dec  2 23:45:00 2026]
localrule finetune:
    output: results/default/models/teacher.pt
    jobid: 1
    threads: 2

[Wed Dec  2 23:45:00 2026]
localrule export:
    output: results/default/artefacts/student/onnx-fp32/meta.json
    jobid: 11
    wildcards: model=student, fmt=onnx, precision=fp32
    threads: 1

[Wed Dec  2 23:45:29 2026]
Finished jobid: 1 (Rule: finetune)
1 of 3 steps (33%) done
[Wed Dec  2 23:45:31 2026]
Finished jobid: 11 (Rule: export)
2 of 3 steps (67%) done
[Wed Dec  2 23:45:31 2026]
localrule distill:
    jobid: 5
    threads: 2
"""


def test_workflow_times_reads_job_seconds_from_snakemakes_log(tmp_path, capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from workflow_times import main, parse

    jobs = parse(SNAKEMAKE_LOG)
    assert [(j.rule, j.jobid, j.seconds) for j in jobs[:2]] == [("finetune", "1", 29.0), ("export", "11", 31.0)]
    assert jobs[1].wildcards == "model=student, fmt=onnx, precision=fp32"
    assert jobs[2].rule == "distill" and jobs[2].end is None  # killed or still running: no time
    log = tmp_path / "run.snakemake.log"
    log.write_text(SNAKEMAKE_LOG)
    assert main([str(log), "--md", str(tmp_path / "times.md")]) == 0
    out = capsys.readouterr().out
    assert "2 jobs finished (1 unfinished); first start to last end: 31 s" in out
    assert "| export | 1 | 31 | 100 |" in out and "| finetune | 1 | 29 | 94 |" in out
    md = (tmp_path / "times.md").read_text()
    assert out.split("\n\n", 1)[1] in md and "Written on: " in md


def test_train_throughput_distill_batches(tmp_path):
    """`--distill-batches`: the whole distillation step (student + frozen teacher) per precision and
    batch size, one row each in ascending batch, fp32 at the largest batch the 1.00x reference."""
    import torch

    from vitedge.benchmarks import train_throughput

    md, threads = tmp_path / "db.md", torch.get_num_threads()
    try:
        assert train_throughput.main(["--distill-batches", "8", "4", "--presets", "hybrid-micro-48", "--teacher",
                                      "cnn-tiny-48", "--steps", "1", "--threads", "1", "--precisions", "fp32", "bf16",
                                      "--md", str(md)]) == 0
    finally:
        torch.set_num_threads(threads)
    lines = md.read_text().splitlines()
    assert lines[0].startswith("Distillation step (student fwd+bwd+AdamW, teacher fwd, hard loss, channels_last")
    rows = [line.split(" | ") for line in lines[4:] if line.startswith("| hybrid")]
    assert [tuple(r[:4]) for r in rows] == [("| hybrid-micro-48", "cnn-tiny-48", p, b)
                                            for p in ("fp32", "bf16") for b in ("4", "8")]
    assert rows[1][5] == "1.00x |" and all(float(r[4]) > 0 for r in rows)
    assert "bf16: autocast over both models' forwards" in lines[-1]


def test_train_step_bf16_autocasts_the_forward_not_the_weights():
    """The benchmark's `bf16` step runs the forward in bf16 (as the engine's `amp: bf16`) while the
    weights AdamW updates stay fp32; without it everything is fp32."""
    import torch

    from vitedge.benchmarks.train_throughput import train_step

    for bf16, expected in ((True, torch.bfloat16), (False, torch.float32)):
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3)
        seen = []
        model.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
        before = model.weight.detach().clone()
        train_step(model, torch.optim.AdamW(model.parameters(), lr=1e-2), bf16=bf16)(
            torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))
        assert seen == [expected]
        assert model.weight.dtype == torch.float32 and not torch.equal(model.weight, before)


def test_train_throughput_table(tmp_path, capsys):
    """vitedge.benchmarks.train_throughput (rule `train_throughput`): one row per preset, the full loop's
    rate against the model step's, written as the Markdown table the workflow keeps."""
    import torch

    from vitedge.benchmarks import train_throughput

    md, threads = tmp_path / "tt.md", torch.get_num_threads()
    try:
        assert train_throughput.main(["--presets", "cnn-tiny-48", "vit-nano-48", "--batch", "8", "--steps", "1",
                                      "--threads", "1", "--augment", "light", "--md", str(md)]) == 0
    finally:
        torch.set_num_threads(threads)  # the command sets the process-wide pool; later tests keep theirs
    lines = md.read_text().splitlines()
    assert lines[0].startswith("Training throughput (fp32, batch 8, 1 threads, augment light, 1 timed steps) on ")
    assert lines[2] == "| preset | params | model-only img/s | full loop img/s | full / model-only |"
    assert [line.split(" | ")[0] for line in lines[4:]] == ["| cnn-tiny-48", "| vit-nano-48"]
    assert "cnn-tiny-48: model-only" in capsys.readouterr().out
