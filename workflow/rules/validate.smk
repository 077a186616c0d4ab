# Validation matrix and report: every artefact x deployment target -> one JSON -> report -> gate.
#
#   validation/<model>-<format>-<precision>@<target>.json   vitedge.validate, one job per pair
#   report/index.html, report.md, metrics.{csv,json}, *.png  vitedge.report write
#   report/gate.json                                        vitedge.report gate: fails the run, last
#
# Pairs come from config (the models, export.formats, quantize.formats) and the targets'
# runtimes/<target>.yaml (a pair exists when some entry of the target runs that artefact). A
# target this host cannot serve still gets its JSON, with "skipped: <reason>" rows, so `all`
# never fails for missing hardware. Gates are recorded per job (--exit-zero) and enforced by the
# `gate` rule after the report is written.
import os
import shlex
import sys

sys.path.insert(0, workflow.basedir)  # vitedge.targets: the same pair logic as the validator's
from vitedge.targets import artefact_spec, load_target, matrix

VALIDATE = config.get("validate") or {}
FORMATS_RE = "torch|onnx|ort|executorch|coreml|tensorrt|litert"


def target_file(name):
    """A target name (runtimes/<name>.yaml beside the Snakefile) or a path to a target file."""
    return name if name.endswith((".yaml", ".yml")) else os.path.join(workflow.basedir, "runtimes", f"{name}.yaml")


TARGETS = {t.name: t for t in map(load_target, map(target_file, VALIDATE.get("targets", ["cpu", "gpu", "mobile"])))}


def workflow_artefacts():
    """(model, format, precision) of everything the workflow builds: each model's fp32 checkpoint
    (format "torch"), the exports and the int8 artefacts (EXPORT and QUANTIZE: export.smk and
    compress.smk fill in their defaults), and the artefacts this host cannot build (skipped rows)."""
    out_ = [(m, "torch", "fp32") for m in config["models"]]
    out_ += [(m, *artefact_spec(f, EXPORT_PRECISION)) for m in EXPORT["models"] for f in EXPORT["formats"]]
    out_ += [(m, *artefact_spec(f, "int8")) for m in QUANTIZE["models"] for f in QUANTIZE["formats"]]
    out_ += list(EXPORT_UNBUILT)
    return list(dict.fromkeys(out_))


PAIRS = matrix(list(TARGETS.values()), workflow_artefacts())
VALIDATIONS = [out(f"validation/{m}-{f}-{p}@{t}.json") for m, f, p, t in PAIRS]


def artefact_path(model, fmt, prec):
    """The file whose presence means the artefact is complete: the checkpoint, or meta.json (written last)."""
    if fmt == "torch" and prec == "fp32":
        return out(f"models/{model}.pt")
    return out(f"artefacts/{model}/{fmt}-{prec}/meta.json")


def artefact_input(w):
    if (w.model, w.fmt, w.prec) in EXPORT_UNBUILT:
        return []
    return artefact_path(w.model, w.fmt, w.prec)


def artefact_arg(w):
    """--artefact PATH, or --unbuilt for an artefact this host could not build."""
    why = EXPORT_UNBUILT.get((w.model, w.fmt, w.prec))
    if why is not None:
        return "--artefact none --unbuilt " + shlex.quote(f"{w.model}:{w.fmt}-{w.prec}:{why}")
    return "--artefact " + shlex.quote(artefact_path(w.model, w.fmt, w.prec))


rule validate:
    input:
        artefact=artefact_input,
        reference=out("models/{model}.pt"),
        target=lambda w: TARGETS[w.target].path,
        test=out("data/test.npz"),
        manifest=out("data/manifest.json"),
    output:
        out("validation/{model}-{fmt}-{prec}@{target}.json"),
    wildcard_constraints:
        model="[A-Za-z0-9_]+",
        fmt=FORMATS_RE,
        prec="fp32|fp16|int8",
        target="[A-Za-z0-9_]+",
    params:
        artefact=artefact_arg,
        gates=as_json(VALIDATE.get("gates", {})),
        bench=as_json(VALIDATE.get("bench", {})),
        limit=f"--limit {VALIDATE['limit']}" if VALIDATE.get("limit") else "",
    # the whole machine: a job running beside a benchmark would distort its timings
    threads: workflow.cores
    resources:
        # a GPU for the targets that need one (no limit locally; --gpus on SLURM)
        gpu=lambda w: int(bool(TARGETS[w.target].requires.get("cuda"))),
    log:
        out("logs/validate/{model}-{fmt}-{prec}@{target}.log"),
    shell:
        "python -m vitedge.validate {params.artefact} --reference {input.reference} "
        "--target {input.target} --data {OUT}/data --out {output} --gates-json {params.gates} "
        "--bench-json {params.bench} {params.limit} --exit-zero > {log} 2>&1"


PEERS = VALIDATE.get("peers", ["fer"])
PEERS_SCRIPT = shlex.quote(os.path.join(workflow.basedir, "benchmarks", "peers.py"))


rule peers:
    """The models users would pick instead (fer's mini-Xception ...), exported and validated like ours on the
    same test split and machine: reference points for the report. A peer not installable here is 'skipped'."""
    input:
        test=out("data/test.npz"),
        manifest=out("data/manifest.json"),
        targets=[t.path for t in TARGETS.values()],
    output:
        out("reports/peers.json"),
    params:
        targets=" ".join(f"--target {shlex.quote(str(t.path))}" for t in TARGETS.values()),
        bench=as_json(VALIDATE.get("bench", {})),
        limit=f"--limit {VALIDATE['limit']}" if VALIDATE.get("limit") else "",
        peers=" ".join(PEERS),
    # the whole machine: its timings sit beside the validation rows'
    threads: workflow.cores
    log:
        out("logs/peers.log"),
    shell:
        f"python {PEERS_SCRIPT} --data {{OUT}}/data --out {{output}} --artefacts {{OUT}}/peers {{params.targets}} "
        "--bench-json {params.bench} {params.limit} --peers {params.peers} > {log} 2>&1"


rule report:
    input:
        validation=VALIDATIONS,
        distill=out("reports/distill.json"),  # written with models/student.pt: no extra rebuild
        datacard=out("data/datacard.json"),  # written with the splits: no extra rebuild
        peers=[out("reports/peers.json")] if PEERS else [],
    output:
        html=out("report/index.html"),
        md=out("report/report.md"),
        csv=out("report/metrics.csv"),
        json=out("report/metrics.json"),
    params:
        title=shlex.quote((config.get("report") or {}).get("title", f"vitedge validation report: {RUN}")),
    log:
        out("logs/report.log"),
    shell:
        "python -m vitedge.report write --out-dir {OUT}/report --title {params.title} --distill {input.distill} "
        "--datacard {input.datacard} " + ("--peers {input.peers} " if PEERS else "") + "{input.validation} > {log} 2>&1"


rule gate:
    input:
        report=out("report/index.html"),
        validation=VALIDATIONS,
    output:
        out("report/gate.json"),
    log:
        out("logs/gate.log"),
    # what failed goes to the terminal, where the person running snakemake looks, and to the log
    shell:
        "python -m vitedge.report gate --report {input.report} --out {output} {input.validation} 2>&1 | tee {log}"


# The artefacts are products too: asking for them in `all` brings a deleted one back (with its
# validations, the report and the gate after it). Snakemake does not remake a missing file that
# is only an input of up-to-date outputs.
ALL_TARGETS.extend(dict.fromkeys(artefact_path(m, f, p) for m, f, p, _ in PAIRS if (m, f, p) not in EXPORT_UNBUILT))
ALL_TARGETS.extend([out("report/index.html"), out("report/gate.json")])
