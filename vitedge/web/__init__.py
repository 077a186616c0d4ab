"""`python -m vitedge.web`: a live webcam emotion demo in the browser, on onnxruntime-web.

The page (`static/`) asks for the webcam, finds faces in each frame with the BlazeFace ONNX
detector `vitedge.infer` uses, over the same image pyramid (onnxruntime-web in workers;
`?detector=haar`: a JS port of the OpenCV Haar cascade), crops and preprocesses them exactly as
`vitedge.infer` does (read from the artefact's meta.json), and classifies them with the ONNX
artefact through onnxruntime-web (WebAssembly, SIMD and threads; WebGPU when its files are
vendored and the browser has it). It also takes photos (choose, drop, or `?image=<url>`).
Everything is served by `vitedge.web.server` from this package: no CDN, no download at run time.
"""
from vitedge.web.server import App, ModelError, cascade_json, make_server, resolve_model

__all__ = ["App", "ModelError", "cascade_json", "make_server", "resolve_model"]
