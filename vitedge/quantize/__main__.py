"""`python -m vitedge.quantize --checkpoint models/student.pt --model-name student --format onnx
--data DATA_DIR --out ARTEFACT_ROOT [--max-drop 1.0] [--calibration 256] [--method auto|dynamic|static]`

Writes ARTEFACT_ROOT/MODEL_NAME/FORMAT-int8/ (model file + meta.json with the `quantization`
record) and prints one line per variant tried. Exit codes: 0 ok, 2 error, 3 the format's
toolchain is missing here, 4 no int8 variant met the accuracy budget (the message says by how much).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from vitedge.artefact import ArtefactError, RuntimeUnavailable, int8_formats
from vitedge.quantize import QuantizationError, QuantizeConfig, quantize
from vitedge.quantize.core import CALIBRATE_METHODS, METHODS

EXIT_ERROR, EXIT_UNAVAILABLE, EXIT_GATE = 2, 3, 4


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m vitedge.quantize", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    p.add_argument("--checkpoint", required=True, help="vitedge model checkpoint (.pt)")
    p.add_argument("--model-name", required=True)
    p.add_argument("--format", required=True, choices=int8_formats())
    p.add_argument("--data", required=True, help="folder written by `python -m vitedge.data`")
    p.add_argument("--out", required=True, help="artefact root")
    p.add_argument("--config-json", default="{}", help="QuantizeConfig fields (the workflow's quantize: section)")
    p.add_argument("--max-drop", type=float, help="points of val top-1 int8 may lose (default 1.0)")
    p.add_argument("--calibration", type=int, help="calibration images (default 256)")
    p.add_argument("--calibrate-method", choices=CALIBRATE_METHODS)
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--variants", nargs="+", help="explicit variants, e.g. dynamic static-entropy+fused")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("vitedge.quantize").setLevel(logging.INFO)  # one line per attempt; the toolchains stay quiet

    try:
        d = json.loads(args.config_json)
        for key in ("max_drop", "calibration", "calibrate_method", "method", "variants"):
            if getattr(args, key) is not None:
                d[key] = getattr(args, key)
        meta = quantize(args.checkpoint, args.model_name, args.format, args.data, args.out, QuantizeConfig.from_dict(d))
    except QuantizationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_GATE
    except RuntimeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (ArtefactError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    q = meta["quantization"]
    lat = q["latency"]
    speed = (f"bs1 {lat['fp32']['bs1_ms']:.2f} -> {lat['int8']['bs1_ms']:.2f} ms (x{lat['speedup_bs1']:.2f}"
             f"{'' if lat['faster_than_fp32'] else ': NOT faster than fp32'})") if lat.get("speedup_bs1") else "speed not measurable here"
    kept = f", kept in float: {', '.join(q['kept_float'])}" if q["kept_float"] else ""
    print(f"{args.format}-int8 [{q['variant']}]: val top-1 {100 * q['fp32_top1']:.2f} -> {100 * q['int8_top1']:.2f} "
          f"(drop {q['drop_points']:+.2f}, budget {q['gate']['max_drop_points']}){kept}; {speed}; "
          f"{meta['size_bytes'] / 1e6:.2f} MB -> {args.out}/{args.model_name}/{args.format}-int8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
