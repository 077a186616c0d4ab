rule data:
    output:
        manifest=out("data/manifest.json"),
        splits=multiext(out("data/"), "train.npz", "val.npz", "test.npz"),
        # what is in each split and whether train looks like val/test (vitedge.data.datacard)
        datacard=out("data/datacard.json"),
        datacard_md=out("data/datacard.md"),
    params:
        source=config["data"]["source"],
        # only the synthetic set has a size: a real data set's rule must not rerun when it changes
        size=f"--per-class {config['data']['per_class']}" if config["data"]["source"] == "synthetic" else "",
        seed=config["data"]["seed"],
        out=lambda w, output: os.path.dirname(output.manifest),
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/data.log"),
    # the data card's warnings are in the log, and repeated on the terminal, where people look
    shell:
        "python -m vitedge.data --source {params.source:q} {params.size} --seed {params.seed} "
        "--out {params.out} > {log} 2>&1; grep -h '^WARNING: data card' {log} >&2 || true"


rule pretrain:
    input:
        data=rules.data.output.manifest,
    output:
        out("models/teacher-pretrain.pt"),
    params:
        cmd=launcher("vitedge.pretrain"),
        data=data_dir,
        model=model_json("teacher"),
        train=as_json(config["pretrain"]),
        device=config["compute"]["device"],
    threads: workflow.cores
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/pretrain.log"),
    shell:
        "{params.cmd} --data {params.data} --out {output} --model-json {params.model} --train-json {params.train} "
        "--device {params.device} --resume > {log} 2>&1"


rule finetune:
    input:
        data=rules.data.output.manifest,
        init=rules.pretrain.output,
    output:
        out("models/teacher.pt"),
    params:
        cmd=launcher("vitedge.finetune"),
        data=data_dir,
        model=model_json("teacher"),
        train=as_json(config["finetune"]),
        device=config["compute"]["device"],
    threads: workflow.cores
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/finetune.log"),
    shell:
        "{params.cmd} --data {params.data} --init {input.init} --out {output} --model-json {params.model} "
        "--train-json {params.train} --device {params.device} --stage finetune --resume > {log} 2>&1"


ALL_TARGETS.append(out("models/teacher.pt"))


rule train_throughput:
    """img/s of the run's two models: the model step alone vs the full input path (in-memory batches +
    batch augmentation). The full loop should keep >= 90% of the model-only rate."""
    output:
        out("reports/train_throughput.md"),
    params:
        presets=f"{config['models']['teacher']['preset']} {config['models']['student']['preset']}",
        augment=config["finetune"]["augment"],
    threads: workflow.cores
    conda:
        "../envs/vitedge.yaml"
    log:
        out("logs/train_throughput.log"),
    shell:
        "python -m vitedge.benchmarks.train_throughput --presets {params.presets} --threads {threads} --steps 6 "
        "--augment {params.augment} --md {output} > {log} 2>&1"


ALL_TARGETS.append(out("reports/train_throughput.md"))
