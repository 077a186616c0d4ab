"""python -m vitedge.web [--model ARTEFACT] [--host 127.0.0.1] [--port 8000]

Serves the webcam emotion demo (see vitedge/web/__init__.py) and prints its URL. A model that
is not an ONNX artefact is refused with one line on stderr and exit code 3 (as vitedge.infer's
"no model could run"); a port that cannot be bound: one line, exit code 2.

A --host other than loopback serves the page to the network: a warning says so, and that other
machines get no camera and no WebAssembly threads over plain http (browsers allow those in a
secure context only: https, or localhost). The URL printed is one a browser here can open.
"""
from __future__ import annotations

import argparse
import sys

from vitedge.web.server import App, ModelError, check_vendored, is_loopback, make_server, page_url, resolve_model

EXIT_OK, EXIT_SERVE_ERROR, EXIT_MODEL_ERROR = 0, 2, 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vitedge.web",
                                description="Live webcam facial-emotion demo in the browser (onnxruntime-web).")
    p.add_argument("--model", help="ONNX artefact folder (or its model.onnx / meta.json, or a model folder holding "
                                   "an onnx-* artefact); default: the model shipped with vitedge")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--margin", type=float, help="crop margin around a face (default: vitedge.infer's)")
    p.add_argument("--min-face", type=int, metavar="N", help="smallest face to detect, pixels (default: vitedge.infer's)")
    p.add_argument("--verbose", action="store_true", help="log every request")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error("--port must be 0..65535")
    if (args.margin is not None and args.margin < 0) or (args.min_face is not None and args.min_face < 1):
        p.error("--margin must not be negative, --min-face must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        art, meta = resolve_model(args.model)
        check_vendored()
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MODEL_ERROR
    app = App(art, meta, margin=args.margin, min_face=args.min_face, verbose=args.verbose)
    try:
        server = make_server(app, args.host, args.port)
    except OSError as exc:
        print(f"error: cannot serve on {args.host}:{args.port} ({exc.strerror or exc})", file=sys.stderr)
        return EXIT_SERVE_ERROR
    host, port = str(server.server_address[0]), server.server_address[1]
    if not is_loopback(args.host):
        print(f"warning: serving on {args.host}: anyone who can reach this machine can load the page and the model; "
              "over plain http other machines get no camera and no WebAssembly threads (a secure context needs "
              "https or localhost). Use --host 127.0.0.1 unless you mean it.", file=sys.stderr, flush=True)
    print(f"vitedge web: {meta.get('model_name', 'model')} ({meta['format']} {meta['precision']}, {art}) "
          f"at {page_url(host, port)}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
