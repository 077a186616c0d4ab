// Face detection and face preprocessing, off the page's main thread (the Haar cascade takes tens
// to hundreds of milliseconds per frame): RGBA pixels in; boxes and model-size uint8 crops out.
// The steps are vitedge.infer's: grayscale (PIL "L") -> detect_faces -> crop_face(margin) ->
// Preprocess.resize_uint8 (PIL bilinear). Normalisation and the model run on the main thread.

import { HaarCascade, detectFaces } from "./haar.mjs";
import { cropFace, resizePIL, toGray } from "./imageops.mjs";

let cascade = null;
let opts = null;

self.onmessage = async (event) => {
  const msg = event.data;
  try {
    if (msg.type === "init") {
      const res = await fetch(msg.cascadeUrl);
      if (!res.ok) throw new Error(`cannot load the face detector (${res.status} ${res.statusText})`);
      cascade = new HaarCascade(await res.json());
      opts = msg.options;
      self.postMessage({ type: "ready" });
      return;
    }
    if (msg.type === "frame") {
      const t0 = performance.now();
      const gray = toGray(new Uint8ClampedArray(msg.rgba), msg.width, msg.height);
      const boxes = detectFaces(cascade, gray, opts.detector);
      const size = opts.imgSize;
      const crops = boxes.map((box) => resizePIL(cropFace(gray, box, opts.margin), size, size,
                                                 { verticalFirst: opts.pilVerticalFirst }).data);
      const detectMs = performance.now() - t0;
      self.postMessage({ type: "faces", id: msg.id, boxes, crops, detectMs, width: msg.width, height: msg.height },
                       crops.map((c) => c.buffer));
    }
  } catch (err) {
    self.postMessage({ type: "error", id: msg.id, message: String(err && err.message || err) });
  }
};
