"""The browser page's live mode, measured by the page itself. A script, not a test.

    python benchmarks/web_live.py [--seconds 15] [--fps 30] [--detector blazeface] [--threads N]
        [--detect-workers 2] [--md out.md]

Starts `python -m vitedge.web` on a free port, opens the page in headless Chromium (Playwright) with
Chromium's fake 640x480 camera playing a .y4m of the astronaut at `--fps` (the fake camera's rate is
the ceiling), lets it run `--seconds` after the first classified frame, and prints a markdown table:
frames/s (`#stats[data-fps]`, the last 3 s), the camera's own frames/s, detection ms per frame
(`data-detect-ms`, in the worker), model ms per face (`data-model-ms`), the Chromium version, the
CPU and its cores. The speeds are printed, never asserted: they depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_y4m(path: Path, rgb: np.ndarray, fps: int, frames: int = 30) -> None:
    """YUV4MPEG2 (4:2:0, full-range BT.601 as JPEG): what --use-file-for-fake-video-capture plays."""
    h, w = rgb.shape[:2]
    ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"))

    def sub(c: np.ndarray) -> bytes:
        return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)).round().astype(np.uint8).tobytes()

    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + ycc[..., 0].tobytes() + sub(ycc[..., 1]) + sub(ycc[..., 2]))


def astronaut_frame() -> np.ndarray:
    from skimage.data import astronaut

    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[:, 64:576] = astronaut()[16:496]
    return frame


def start_server() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "vitedge.web", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise SystemExit(f"vitedge.web did not start: {line}")
    return proc, line[line.index("http://"):].split()[0]


def chromium() -> str:
    for path in (os.environ.get("VITEDGE_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                 shutil.which("google-chrome")):
        if path and Path(path).exists():
            return path
    raise SystemExit("no Chromium found: apt-get install chromium (or set VITEDGE_CHROMIUM)")


CAMERA_FPS = """() => new Promise((resolve) => {  // the video element's presented frames over 2 s
    const v = document.querySelector('#video'), t0 = performance.now();
    let n0 = null;
    const tick = (now, meta) => {
        if (n0 === null) n0 = meta.presentedFrames;
        if (now - t0 < 2000) v.requestVideoFrameCallback(tick);
        else resolve((meta.presentedFrames - n0) / ((now - t0) / 1000));
    };
    v.requestVideoFrameCallback(tick);
})"""


def measure(url: str, y4m: Path, seconds: float, query: str) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), args=[
            "--no-sandbox", "--disable-dev-shm-usage", "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"])
        page = browser.new_page(viewport={"width": 1200, "height": 700})
        page.goto(f"{url}?{query}")
        page.wait_for_function("Number(document.querySelector('#results').dataset.frame || 0) >= 1", timeout=180_000)
        frame0, t0 = page.evaluate("+document.querySelector('#results').dataset.frame"), time.time()
        time.sleep(max(0.0, seconds - 2))
        camera_fps = page.evaluate(CAMERA_FPS)
        stats = page.evaluate("({...document.querySelector('#stats').dataset})")
        frames = page.evaluate("+document.querySelector('#results').dataset.frame") - frame0
        faces = page.evaluate("document.querySelectorAll('#results .face').length")
        out = {"fps": float(stats["fps"]), "mean_fps": frames / (time.time() - t0), "camera_fps": camera_fps,
               "detect_ms": float(stats["detectMs"]), "model_ms": float(stats.get("modelMs", "nan")), "faces": faces,
               "detector": stats["detector"], "backend": stats["backend"], "threads": stats["threads"],
               "chromium": browser.version}
        browser.close()
    return out


def table(r: dict, seconds: float) -> str:
    from vitedge.sysinfo import cpu_info

    cpu = cpu_info()
    rows = [("frames/s (`#stats[data-fps]`, last 3 s)", f"{r['fps']:.1f}"),
            (f"frames/s (mean over {seconds:.0f} s)", f"{r['mean_fps']:.1f}"),
            ("fake camera frames/s (the ceiling)", f"{r['camera_fps']:.1f}"),
            (f"face detection, ms per frame ({r['detector']}, {r['detect_workers']} worker"
             f"{'s' * (r['detect_workers'] != 1)} of 1 thread, each a frame in turn)", f"{r['detect_ms']:.1f}"),
            (f"model, ms per face ({r['backend']}, {r['threads']} thread{'s' * (r['threads'] != '1')})",
             f"{r['model_ms']:.2f}"),
            ("faces in the last frame", str(r["faces"])),
            ("browser", f"headless Chromium {r['chromium']}"),
            ("machine", f"{cpu.get('model', '?')}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")]
    return "\n".join(["| live mode, 640x480 fake camera | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=15.0, help="how long to run after the first frame (15)")
    p.add_argument("--fps", type=int, default=30, help="the fake camera's frame rate (30)")
    p.add_argument("--detector", default="blazeface", choices=["blazeface", "haar"])
    p.add_argument("--threads", type=int, help="the model's WebAssembly threads (default: the page's choice)")
    p.add_argument("--detect-workers", type=int, default=2, help="the page's detection workers (2)")
    p.add_argument("--md", help="also write the table to this file")
    args = p.parse_args(argv)
    query = f"detector={args.detector}&detect_workers={args.detect_workers}" + (
        f"&threads={args.threads}" if args.threads else "")
    with tempfile.TemporaryDirectory() as tmp:
        y4m = Path(tmp) / "astronaut.y4m"
        write_y4m(y4m, astronaut_frame(), args.fps)
        proc, url = start_server()
        try:
            result = {**measure(url, y4m, args.seconds, query), "detect_workers": args.detect_workers}
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    md = table(result, args.seconds)
    print(md)
    if args.md:
        Path(args.md).write_text(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
