# Helpers the rules share: where a run's files go, how commands are spelt. The config is read
# plainly here and in the rules: workflow/schemas/config.schema.yaml holds every default and the
# Snakefile's validate() has filled them in before this file is read.
import json
import os
import shlex
from pathlib import Path

RUN = config["run"]
OUT = f"results/{RUN}"


def out(path):
    """A path under this run's results folder."""
    return f"{OUT}/{path}"


def launcher(module):
    """`python -m vitedge.X`, or under torchrun when the config asks for several processes."""
    nproc = int(config["compute"]["nproc_per_node"])
    if nproc > 1:
        return f"torchrun --standalone --nproc_per_node {nproc} -m {module}"
    return f"python -m {module}"


def as_json(obj):
    """Shell-quoted JSON for --model-json / --train-json / --opts-json."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def model_json(name):
    return as_json(config["models"][name])


# Folders the commands take, derived from a job's own files (snakemake --lint: no run paths spelt in
# shell commands; derived params are not provenance of their own, the files they come from are).
def data_dir(wildcards, input):
    """The run's data folder, from the job's `data` input (data/manifest.json)."""
    return os.path.dirname(input.data)


def artefact_root(wildcards, output):
    """results/<run>/artefacts, from an artefact's artefacts/<model>/<format>-<precision>/meta.json."""
    return str(Path(output[0]).parents[2])


def run_dir(wildcards, output):
    """results/<run>, from an output one folder below it (reports/..., report/...)."""
    return str(Path(output[0]).parents[1])


# Each rules file appends the final outputs it contributes; `rule all` asks for all of them.
ALL_TARGETS = []
