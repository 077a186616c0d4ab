import json
import os
import shlex

RUN = config["run"]
OUT = f"results/{RUN}"


def out(path):
    """A path under this run's results folder."""
    return f"{OUT}/{path}"


def launcher(module):
    """`python -m vitedge.X`, or under torchrun when the config asks for several processes."""
    nproc = int(config["compute"].get("nproc_per_node", 1))
    if nproc > 1:
        return f"torchrun --standalone --nproc_per_node {nproc} -m {module}"
    return f"python -m {module}"


def as_json(obj):
    """Shell-quoted JSON for --model-json / --train-json."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def model_json(name):
    return as_json(config["models"][name])


# Each rules file appends the final outputs it contributes; `rule all` asks for all of them.
ALL_TARGETS = []
