"""`python -m vitedge.export --checkpoint CKPT --model-name NAME --format FMT --precision P --out ROOT`

Writes ROOT/NAME/FMT-P/ (model file + meta.json), checks it against PyTorch, and prints the
export time, size and parity. Exit codes: 0 ok, 2 error (bad arguments, unreadable checkpoint,
failed check), 3 the format's toolchain is not available on this host (e.g. TensorRT).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from vitedge.artefact import PRECISIONS, ArtefactError, RuntimeUnavailable, exported_formats
from vitedge.verify import export_verified

EXIT_ERROR, EXIT_UNAVAILABLE = 2, 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vitedge.export", description=__doc__.split("\n\n")[0],
                                epilog="exit codes: 0 ok, 2 error, 3 toolchain not available on this host")
    p.add_argument("--checkpoint", required=True, help="vitedge model checkpoint (.pt)")
    p.add_argument("--model-name", required=True, help="artefact folder name, e.g. teacher or student")
    p.add_argument("--format", required=True, choices=exported_formats())
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--out", required=True, help="artefact root; writes OUT/MODEL_NAME/FORMAT-PRECISION/")
    p.add_argument("--opts-json", default="{}",
                   help='format options, e.g. {"optimize": "off"} (onnx), {"batch": 1} (executorch), '
                        '{"profile": [1, 8, 64]} (tensorrt)')
    p.add_argument("--no-verify", action="store_true", help="skip the parity / spec check against PyTorch")
    p.add_argument("--json", action="store_true", help="print meta.json instead of a summary line")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        opts = json.loads(args.opts_json)
        meta = export_verified(args.checkpoint, args.out, args.model_name, args.format, args.precision,
                               verify=not args.no_verify, **opts)
    except RuntimeUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (ArtefactError, FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    parity = meta.get("verification", {}).get("parity", {})
    checked = (f"max |Δlogit| vs torch {parity['max_abs_delta']:.2g} ({parity['runtime']})"
               if "max_abs_delta" in parity else parity.get("skipped", "not verified"))
    print(f"{args.format}-{args.precision}: {meta['file']} {meta['size_bytes'] / 1e6:.2f} MB in "
          f"{meta['export_seconds']:.1f} s; {checked} -> {args.out}/{args.model_name}/{args.format}-{args.precision}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
