// Face detection and face crops, off the page's main thread: pixels in; faces and model-size uint8
// crops out. The steps are vitedge.infer's: the detector (BlazeFace with its own onnxruntime-web
// session; ?detector=haar: the cascade port) -> vitedge.faces.align.face_crop on PIL's gray
// (margin, eye levelling) -> Preprocess.resize_uint8 (PIL bilinear). The model runs on the main
// thread, so detecting the next camera frame here overlaps classifying the last one there.
//
// Photos ("photo": RGBA bytes) take the exact path: every pyramid level is Pillow's resize of the
// photo, as in Python. Camera frames ("frame": an ImageBitmap) are searched with infer's video
// min_face (one 256 tile for 640x480) and scaled by the canvas, which is much faster; nothing
// compares them with Python.

import { faceCrop, intBox } from "./align.mjs";
import { BlazeFace } from "./blazeface.mjs";
import { HaarCascade, detectFaces } from "./haar.mjs";
import { resizePIL, toGray, toPlanes } from "./imageops.mjs";

let detector = null;  // {photo(rgba, gray), frame(bitmap, gray)} -> faces
let opts = null;

async function loadBlazeFace(msg) {
  const ort = await import(msg.ortBase + "ort.wasm.min.mjs");
  ort.env.wasm.wasmPaths = msg.ortBase;
  ort.env.wasm.numThreads = msg.threads;
  ort.env.logLevel = "error";  // not the converted model's unused-initializer warnings
  const cfg = opts.blazeface, bf = await BlazeFace.create(ort, msg.modelUrl, cfg);
  const canvas = new OffscreenCanvas(1, 1), ctx = canvas.getContext("2d", { willReadFrequently: true });
  const scaled = (bitmap, width, height) => {  // the canvas's own downscale: fast, not Pillow's bytes
    canvas.width = width;
    canvas.height = height;
    ctx.drawImage(bitmap, 0, 0, width, height);
    return toPlanes(ctx.getImageData(0, 0, width, height).data, width, height);
  };
  return {
    photo: (rgba, gray) => bf.detectPhoto(rgba, gray.width, gray.height, cfg.min_face, opts.pilVerticalFirst),
    frame: (bitmap, gray) => bf.detect(gray.width, gray.height, cfg.min_face_video,
                                       (lv) => scaled(bitmap, lv.width, lv.height)),
  };
}

async function loadHaar(msg) {
  const res = await fetch(msg.cascadeUrl);
  if (!res.ok) throw new Error(`cannot load the face detector (${res.status} ${res.statusText})`);
  const cascade = new HaarCascade(await res.json()), cfg = opts.haar;
  const settings = { maxSide: cfg.max_side, scaleFactor: cfg.scale_factor, minNeighbors: cfg.min_neighbors };
  const find = (gray, minFace) => detectFaces(cascade, gray, { ...settings, minFace })
    .map((box) => ({ box, score: 1, keypoints: null }));
  return { photo: (rgba, gray) => find(gray, cfg.min_face), frame: (bitmap, gray) => find(gray, cfg.min_face_video) };
}

const frameCanvas = new OffscreenCanvas(1, 1);

/** A camera frame's RGBA bytes (its gray image is what the faces are cropped from). */
function frameRgba(bitmap) {
  frameCanvas.width = bitmap.width;
  frameCanvas.height = bitmap.height;
  const ctx = frameCanvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  return ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
}

async function findFaces(msg) {
  if (msg.type === "photo") {
    const rgba = new Uint8ClampedArray(msg.rgba), gray = toGray(rgba, msg.width, msg.height);
    return { gray, faces: await detector.photo(rgba, gray) };
  }
  const gray = toGray(frameRgba(msg.bitmap), msg.bitmap.width, msg.bitmap.height);
  try {
    return { gray, faces: await detector.frame(msg.bitmap, gray) };
  } finally {
    msg.bitmap.close();
  }
}

self.onmessage = async (event) => {
  const msg = event.data;
  try {
    if (msg.type === "init") {
      opts = msg.options;
      detector = await (opts.detector === "haar" ? loadHaar(msg) : loadBlazeFace(msg));
      self.postMessage({ type: "ready" });
      return;
    }
    const t0 = performance.now();
    const { gray, faces } = await findFaces(msg);
    const size = opts.imgSize;
    const crops = faces.map((face) => resizePIL(faceCrop(gray, face, opts.margin, opts.levelAbove), size, size,
                                                { verticalFirst: opts.pilVerticalFirst }).data);
    const detectMs = performance.now() - t0;
    self.postMessage({ type: "faces", id: msg.id, faces, boxes: faces.map((f) => intBox(f.box)), crops, detectMs,
                       width: gray.width, height: gray.height }, crops.map((c) => c.buffer));
  } catch (err) {
    self.postMessage({ type: "error", id: msg.id, message: String(err && err.message || err) });
  }
};
