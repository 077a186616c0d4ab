# Validation matrix and report: every artefact x deployment target -> one JSON -> report -> budget check.
#
#   validation/<model>-<format>-<precision>@<target>.json   vitedge.validate, one job per pair
#   report/index.html, report.md, metrics.{csv,json}, *.png  vitedge.report write
#   report/verdict.json                                     vitedge.report check: fails the run, last
#
# Pairs (PAIRS, plan.smk) come from config (the models, export.formats, quantize.formats) and the
# targets' runtimes/<target>.yaml (a pair exists when some entry of the target runs that artefact);
# the training checkpoint is `checkpoint-fp32` (validation/student-checkpoint-fp32@cpu.json). A
# target this host cannot serve still gets its JSON, with "skipped: <reason>" rows, so `all`
# never fails for missing hardware. Verdicts against `validate.budgets` (top-1 drop in points,
# agreement as a share) are recorded per job (--exit-zero) and enforced by the `check_budgets` rule
# after the report is written.


rule validate:
    input:
        artefact=artefact_input,
        reference=out("models/{model}.pt"),
        target=lambda w: TARGETS[w.target].path,
        test=out("data/test.npz"),
        data=out("data/manifest.json"),
    output:
        out("validation/{model}-{fmt}-{prec}@{target}.json"),
    wildcard_constraints:
        model="[A-Za-z0-9_]+",
        fmt=ARTEFACT_FORMAT_RE,
        prec="|".join(PRECISIONS),
        target="[A-Za-z0-9_]+",
    params:
        artefact=artefact_arg,
        data=data_dir,
        budgets=as_json(VALIDATE["budgets"]),
        bench=as_json(VALIDATE["bench"]),
        limit=f"--limit {VALIDATE['limit']}" if VALIDATE["limit"] else "",
    # the whole machine: a job running beside a benchmark would distort its timings
    threads: workflow.cores
    resources:
        # a GPU for the targets that need one (no limit locally; --gpus on SLURM)
        gpu=lambda w: int(bool(TARGETS[w.target].requires.get("cuda"))),
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/validate/{model}-{fmt}-{prec}@{target}.log"),
    shell:
        "python -m vitedge.validate {params.artefact} --reference {input.reference} "
        "--target {input.target} --data {params.data} --out {output} --budgets-json {params.budgets} "
        "--bench-json {params.bench} {params.limit} --exit-zero > {log} 2>&1"


rule peers:
    """The models users would pick instead (fer's mini-Xception ...), exported and validated like ours on the
    same test split and machine: reference points for the report. A peer not installable here is 'skipped'."""
    input:
        test=out("data/test.npz"),
        data=out("data/manifest.json"),
        targets=[t.path for t in TARGETS.values()],
    output:
        out("reports/peers.json"),
    params:
        data=data_dir,
        artefacts=lambda w, output: os.path.join(run_dir(w, output), "peers"),
        targets=" ".join(f"--target {shlex.quote(str(t.path))}" for t in TARGETS.values()),
        bench=as_json(VALIDATE["bench"]),
        limit=f"--limit {VALIDATE['limit']}" if VALIDATE["limit"] else "",
        peers=" ".join(VALIDATE["peers"]),
    # the whole machine: its timings sit beside the validation rows'
    threads: workflow.cores
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/peers.log"),
    shell:
        "python -m vitedge.benchmarks.peers --data {params.data} --out {output} "
        "--artefacts {params.artefacts} {params.targets} --bench-json {params.bench} {params.limit} "
        "--peers {params.peers} > {log} 2>&1"


rule report:
    input:
        validation=VALIDATIONS,
        distill=out("reports/distill.json"),  # written with models/student.pt: no extra rebuild
        datacard=out("data/datacard.json"),  # written with the splits: no extra rebuild
        peers=[out("reports/peers.json")] if VALIDATE["peers"] else [],
    output:
        html=out("report/index.html"),
        md=out("report/report.md"),
        csv=out("report/metrics.csv"),
        json=out("report/metrics.json"),
    params:
        out_dir=lambda w, output: os.path.dirname(output.html),
        title=shlex.quote(config["report"]["title"].replace("{run}", RUN)),
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/report.log"),
    shell:
        "python -m vitedge.report write --out-dir {params.out_dir} --title {params.title} --distill {input.distill} "
        "--datacard {input.datacard} " + ("--peers {input.peers} " if VALIDATE["peers"] else "") + "{input.validation} > {log} 2>&1"


rule check_budgets:
    """Fails the run, listing every row over its budgets (or failed), once the report is written."""
    input:
        report=out("report/index.html"),
        validation=VALIDATIONS,
    output:
        out("report/verdict.json"),
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/check_budgets.log"),
    # what failed goes to the terminal, where the person running snakemake looks, and to the log
    shell:
        "python -m vitedge.report check --report {input.report} --out {output} {input.validation} 2>&1 | tee {log}"


# The artefacts are products too: asking for them in `all` brings a deleted one back (with its
# validations, the report and the budget check after it). Snakemake does not remake a missing file that
# is only an input of up-to-date outputs.
ALL_TARGETS.extend(dict.fromkeys(artefact_path(m, f, p) for m, f, p, _ in PAIRS if (m, f, p) not in UNBUILT))
ALL_TARGETS.extend([out("report/index.html"), out("report/verdict.json")])
