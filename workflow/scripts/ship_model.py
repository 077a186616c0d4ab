"""Copy a trained model's artefacts into the package (vitedge/assets/model/), with what users must know.

    python workflow/scripts/ship_model.py --run results/fer2013 --model student \
        --artefacts onnx-int8 onnx-fp32 --data ../shared/datasets/fer2013/fer2013.zip

Each shipped artefact's `meta.json` gains a `shipped` section: how the model was trained (stages,
configs, data, machine, from the checkpoints' own records), its test accuracy measured here with
`vitedge.evaluate` on the artefact as shipped (so `python -m vitedge.evaluate --model
vitedge/assets/model/<artefact> --data <FER-2013> --split test` reproduces it), and the licence note.
The fp32 checkpoint (`<model>.pt`, loadable with weights_only=True) and its stage summary
(`<model>.json`) are copied beside them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # run from a checkout without installing: the package beside this script

from vitedge.evaluate import evaluate_artefact  # noqa: E402
from vitedge.io import atomic_path, write_json  # noqa: E402
from vitedge.sysinfo import describe, machine_info  # noqa: E402

LICENCE = ("Trained on FER-2013 (Goodfellow et al., 2013; ICML 2013 representation-learning challenge): "
           "research use only, as the data set. The code is vitedge's; the weights inherit FER-2013's terms.")


def training_record(run: Path, model: str) -> dict:
    """What each stage of the run recorded about itself (stage summaries written by the workflow)."""
    record = {}
    for stage, name in (("pretrain", "teacher-pretrain"), ("finetune", "teacher"), ("distill", model)):
        summary = run / "models" / f"{name}.json"
        if summary.is_file():
            record[stage] = json.loads(summary.read_text())
    return record


def ship(run: Path, model: str, artefacts: list[str], data: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in artefacts:
        src = run / "artefacts" / model / name
        if not (src / "meta.json").is_file():
            raise SystemExit(f"error: {src} is not a finished artefact (no meta.json): run the workflow first")
        # assembled beside the destination, measured as shipped, then swapped in whole
        with atomic_path(out / name) as tmp:
            shutil.copytree(src, tmp)
            result = evaluate_artefact(str(tmp), data, split="test", threads=1)
            meta = json.loads((tmp / "meta.json").read_text())
            meta["shipped"] = {
                "model": f"{run.name}/{model}", "licence": LICENCE,
                "test_accuracy": {"split": "test (FER-2013 PrivateTest)", "top1": result["top1"],
                                  "macro_f1": result["macro_f1"], "n": result["n"],
                                  "command": f"python -m vitedge.evaluate --model vitedge/assets/model/{name} "
                                             f"--data {data} --split test"},
                "training": training_record(run, model),
                "measured_on": describe(machine_info()),
            }
            write_json(tmp / "meta.json", meta)
        print(f"{name}: test top-1 {100 * result['top1']:.2f}%, macro-F1 {100 * result['macro_f1']:.2f}% -> {out / name}")
    # the checkpoint with its stage summary beside it, as the run wrote them: `--init
    # vitedge/assets/model/<model>.pt` then continues the schedule with every earlier cycle on record
    for suffix in (".json", ".pt"):
        with atomic_path(out / f"{model}{suffix}") as tmp:
            shutil.copyfile(run / "models" / f"{model}{suffix}", tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a workflow run folder, e.g. results/fer2013")
    p.add_argument("--model", default="student")
    p.add_argument("--artefacts", nargs="+", default=["onnx-int8"])
    p.add_argument("--data", required=True, help="FER-2013 zip / folder / CSV, or the run's data folder")
    p.add_argument("--out", type=Path, default=REPO / "vitedge" / "assets" / "model")
    args = p.parse_args(argv)
    ship(args.run, args.model, args.artefacts, args.data, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
