// The page: webcam or photo -> faces (detect.worker.mjs) -> emotions (onnxruntime-web) -> drawing.
//
// Machines read the results from the DOM: #results[data-status = loading | ok | no-face | error]
// holds one .face child per face with data-emotion, data-confidence, data-probs (JSON, in the
// order of meta.json's classes) and data-box (JSON [x, y, w, h] in image pixels, vitedge.infer's
// whole-pixel box); data-frame counts classified frames or images. #stats carries data-detector,
// data-backend, data-threads, data-simd, data-model-ms (per face), data-detect-ms and data-fps.
// window.vitedge exposes the last crops, faces (float boxes, scores, keypoints) and drawing layout.
//
// Address options: ?image=<url> opens a photo; ?mode=image does not start the camera;
// ?detector=blazeface|haar; ?backend=wasm|webgpu; ?threads=N (the model's WebAssembly threads);
// ?detect_workers=N (detection workers for the camera, 2 by default); ?mirror=0 shows the camera
// unmirrored.

import { normalise } from "./imageops.mjs";
import { drawFaces } from "./overlay.mjs";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = {
  config: null, meta: null, ort: null, session: null, workers: [], detector: "", backend: "", threads: 1,
  mode: "idle", frame: 0, stream: null, pending: new Map(), nextId: 1, modelMs: [], detectMs: [], frameTimes: [],
  mirror: params.get("mirror") !== "0",
};
const api = { ready: null, lastCrops: [], lastProbs: [], lastFaces: [], state };
window.vitedge = api;

function setStatus(text) { $("status").textContent = text; }

function setResultsStatus(status, message = "") {
  const el = $("results");
  el.dataset.status = status;
  el.dataset.message = message;
  if (status !== "ok") el.replaceChildren();
}

function fail(message) {
  setStatus(message);
  setResultsStatus("error", message);
}

// ------------------------------------------------------------------ model
async function hasWebGPU() {
  if (!("gpu" in navigator)) return false;
  try { return !!(await navigator.gpu.requestAdapter()); } catch { return false; }
}

async function loadModel() {
  const cfg = state.config;
  const want = params.get("backend") || "auto";
  let webgpu = false;
  if (want === "webgpu" || want === "auto") {
    webgpu = cfg.ort.webgpu && (await hasWebGPU());
    if (want === "webgpu" && !webgpu) {
      setStatus(cfg.ort.webgpu ? "WebGPU is not available in this browser: using WebAssembly"
                               : "WebGPU files are not installed (vitedge/web/vendor.sh --webgpu): using WebAssembly");
    }
  }
  const base = new URL(cfg.ort.path, location.href).href;
  const ort = await import(base + (webgpu ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs"));
  ort.env.wasm.wasmPaths = base;
  // threads need cross-origin isolation (SharedArrayBuffer): the server sends COOP/COEP. Default:
  // onnxruntime-web's own choice, half the cores up to 4 (a 0.8M-parameter model at batch 1 gains
  // little from more, and a 2-core machine runs faster on one); ?threads=N overrides it
  const wanted = parseInt(params.get("threads") || "", 10);
  const auto = Math.min(4, Math.ceil((navigator.hardwareConcurrency || 1) / 2));
  state.threads = self.crossOriginIsolated ? (wanted > 0 ? wanted : auto) : 1;
  ort.env.wasm.numThreads = state.threads;
  const modelUrl = new URL(cfg.model.file, location.href).href;
  state.session = await ort.InferenceSession.create(modelUrl, {
    executionProviders: webgpu ? ["webgpu", "wasm"] : ["wasm"],
    graphOptimizationLevel: "all",
  });
  state.ort = ort;
  state.backend = webgpu ? "webgpu" : "wasm";
  // one warm-up run: the first run allocates and compiles
  const s = state.meta.preprocess.img_size;
  await runModel(new Float32Array(s * s), 1);
}

async function runModel(input, n) {
  const { ort, session, meta } = state;
  const s = meta.preprocess.img_size;
  const feeds = { [meta.input.name]: new ort.Tensor("float32", input, [n, 1, s, s]) };
  const out = await session.run(feeds);
  return out[meta.output.name].data;
}

function softmax(logits, n, k) {
  // in float64, as vitedge.metrics.softmax on logits.astype(float64)
  const probs = [];
  for (let i = 0; i < n; i++) {
    const row = Array.from(logits.subarray(i * k, i * k + k), Number);
    const m = Math.max(...row);
    const e = row.map((v) => Math.exp(v - m));
    const z = e.reduce((a, b) => a + b, 0);
    probs.push(e.map((v) => v / z));
  }
  return probs;
}

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor(s.length / 2)] : NaN; };

// ------------------------------------------------------------------ one frame or photo
/** Faces and their crops from a worker (in turn): a photo's RGBA bytes (exact path) or a camera ImageBitmap. */
function detect(message, transfer) {
  const id = state.nextId++;
  return new Promise((resolve, reject) => {
    state.pending.set(id, { resolve, reject });
    state.workers[id % state.workers.length].postMessage({ ...message, id }, transfer);
  });
}

const detectPhoto = (imageData) => detect({ type: "photo", rgba: imageData.data.buffer, width: imageData.width,
                                            height: imageData.height }, [imageData.data.buffer]);
const detectFrame = (bitmap) => detect({ type: "frame", bitmap }, [bitmap]);

/** The emotions of the faces the worker found, batched as vitedge.infer batches them: one face per
 *  call for a dynamic int8 model (its activations are quantised over the whole call), else one batch. */
async function classify(faces, { repeats = 1 } = {}) {
  const { meta } = state;
  const n = faces.boxes.length, s = meta.preprocess.img_size, k = meta.classes.length;
  let probs = [], batchMs = null;
  if (n) {
    const input = new Float32Array(n * s * s);
    faces.crops.forEach((crop, i) => normalise({ data: crop }, meta.preprocess.mean, meta.preprocess.std, input, i * s * s));
    const cap = state.config.model.one_face_per_call ? 1
      : meta.input.max_batch || (meta.input.shape && meta.input.shape[0] > 0 ? meta.input.shape[0] : n);
    let logits = null;
    const times = [];
    for (let r = 0; r < repeats; r++) {
      const t0 = performance.now();
      logits = new Float32Array(n * k);
      for (let i = 0; i < n; i += cap) {
        const m = Math.min(cap, n - i);
        logits.set(await runModel(m === n ? input : input.slice(i * s * s, (i + m) * s * s), m), i * k);
      }
      times.push(performance.now() - t0);
    }
    batchMs = median(times);
    probs = softmax(logits, n, k);
    state.modelMs.push(batchMs / n);
    if (state.modelMs.length > 30) state.modelMs.shift();
  }
  api.lastCrops = faces.crops;
  api.lastProbs = probs;
  api.lastFaces = faces.faces;
  return { boxes: faces.boxes, probs, detectMs: faces.detectMs, batchMs, width: faces.width, height: faces.height };
}

function report(result) {
  const { meta } = state;
  state.frame += 1;
  const el = $("results");
  el.dataset.frame = String(state.frame);
  el.dataset.mode = state.mode;
  el.dataset.faces = String(result.boxes.length);
  if (!result.boxes.length) {
    setResultsStatus("no-face", "No face found" + (state.mode === "image" ? " in this photo." : "."));
    setStatus(state.mode === "live" ? "Looking for a face…" : "No face found in this photo.");
  } else {
    const items = result.boxes.map((box, i) => {
      const p = result.probs[i];
      const order = p.map((v, j) => j).sort((a, b) => p[b] - p[a]);
      const top = order[0];
      const div = document.createElement("div");
      div.className = "face";
      div.dataset.emotion = meta.classes[top];
      div.dataset.confidence = p[top].toFixed(4);
      div.dataset.probs = JSON.stringify(p);
      div.dataset.box = JSON.stringify(box);
      const topk = order.slice(0, state.config.top_k).map((j) => `${meta.classes[j]} ${(100 * p[j]).toFixed(0)}%`).join(", ");
      // class names come from meta.json: text nodes only, never parsed as HTML
      const label = document.createElement("div"), small = document.createElement("small");
      label.className = "label";
      small.textContent = `${(100 * p[top]).toFixed(0)}% · top-${state.config.top_k}: ${topk}`;
      label.append(`${result.boxes.length > 1 ? `${i + 1}. ` : ""}${meta.classes[top]} `, small);
      const bars = document.createElement("div");
      bars.className = "bars";
      div.append(label, bars);
      meta.classes.forEach((name, j) => {
        const row = document.createElement("span"); row.textContent = name;
        const bar = document.createElement("span"); bar.className = "bar" + (j === top ? " top" : "");
        const fill = document.createElement("i"); fill.style.width = `${(100 * p[j]).toFixed(1)}%`; bar.append(fill);
        const pct = document.createElement("span"); pct.className = "pct"; pct.textContent = `${(100 * p[j]).toFixed(0)}%`;
        bars.append(row, bar, pct);
      });
      return div;
    });
    el.replaceChildren(...items);
    setResultsStatus("ok");
    setStatus(`${result.boxes.length} face${result.boxes.length > 1 ? "s" : ""}` + (state.mode === "live" ? " in view" : " found"));
  }
  // stats
  const st = $("stats");
  const modelMs = median(state.modelMs);
  if (Number.isFinite(modelMs)) { st.dataset.modelMs = modelMs.toFixed(3); $("s-model").textContent = `${modelMs.toFixed(2)} ms`; }
  // a photo's own time; the camera's: the median of the last 30 frames
  state.detectMs = state.mode === "live" ? [...state.detectMs.slice(-29), result.detectMs] : [];
  const detectMs = state.mode === "live" ? median(state.detectMs) : result.detectMs;
  st.dataset.detectMs = detectMs.toFixed(1);
  $("s-detect").textContent = `${detectMs.toFixed(0)} ms (${result.width}×${result.height})`;
  if (state.mode === "live") {
    const now = performance.now();
    state.frameTimes.push(now);
    while (state.frameTimes.length > 2 && now - state.frameTimes[0] > 3000) state.frameTimes.shift();
    const span = (now - state.frameTimes[0]) / 1000;
    const fps = state.frameTimes.length > 1 && span > 0 ? (state.frameTimes.length - 1) / span : 0;
    st.dataset.fps = fps.toFixed(2);
    $("s-fps").textContent = fps.toFixed(1);
  }
  draw(result);
}

// ------------------------------------------------------------------ drawing
function draw(result) {
  api.lastResult = result;
  const stage = $("stage"), overlay = $("overlay");
  const shown = state.mode === "live" ? $("video") : $("view");
  const rect = shown.getBoundingClientRect(), srect = stage.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  overlay.style.left = `${rect.left - srect.left}px`;
  overlay.style.top = `${rect.top - srect.top}px`;
  overlay.style.width = `${rect.width}px`;
  overlay.style.height = `${rect.height}px`;
  const w = Math.max(1, Math.round(rect.width * dpr)), h = Math.max(1, Math.round(rect.height * dpr));
  if (overlay.width !== w || overlay.height !== h) {  // a resize reallocates the canvas: not every frame
    overlay.width = w;
    overlay.height = h;
  }
  const ctx = overlay.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, rect.width, rect.height);
  let note = null;
  if (state.mode === "live") {
    const fps = $("stats").dataset.fps, ms = $("stats").dataset.modelMs;
    note = `${fps ? Number(fps).toFixed(1) : "–"} fps · model ${ms ? Number(ms).toFixed(2) : "–"} ms/face · ${state.backend}`;
  }
  api.lastLayout = drawFaces(ctx, { width: rect.width, height: rect.height, sx: rect.width / result.width, sy: rect.height / result.height,
                   mirror: state.mode === "live" && state.mirror, classes: state.meta.classes, colours: state.config.colours,
                   boxes: result.boxes, probs: result.probs, note });
}

// ------------------------------------------------------------------ photos
async function showImage(blob, name) {
  stopCamera();
  state.mode = "image";
  $("stage").dataset.mode = "image";
  setStatus(`Reading ${name}…`);
  setResultsStatus("loading");
  let bitmap;
  try {
    // no colour management, as PIL (which vitedge.infer reads photos with) does none
    bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image" });
  } catch {
    fail(`${name}: not an image the browser can read.`);
    return;
  }
  const view = $("view");
  view.width = bitmap.width;
  view.height = bitmap.height;
  const ctx = view.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff";  // transparent pixels count as white, as in vitedge.preprocess.to_gray_uint8
  ctx.fillRect(0, 0, view.width, view.height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const pixels = ctx.getImageData(0, 0, view.width, view.height);
  setStatus(`Finding faces in ${name}…`);
  try {
    report(await classify(await detectPhoto(pixels), { repeats: 30 }));  // latency: the median of 30 runs
  } catch (err) {
    fail(`${name}: ${err.message || err}`);
  }
}

async function openUrl(url) {
  try {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
    await showImage(await res.blob(), decodeURIComponent(url.split("/").pop() || url));
  } catch (err) {
    fail(`Cannot open ${url}: ${err.message || err}`);
  }
}

// ------------------------------------------------------------------ camera
function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  state.stream = null;
  $("camera").classList.remove("on");
}

/** Resolves once the video has presented a frame not taken yet (at once when one is waiting), so a
 *  loop slower than the camera takes the newest frame instead of waiting for the one after it. */
function frameClock(video, running) {
  let presented = 0, taken = 0, wake = null;
  const tick = (now, meta) => {
    presented = meta ? meta.presentedFrames : presented + 1;
    if (wake) { wake(); wake = null; }
    if (running()) schedule();
  };
  const schedule = () => (video.requestVideoFrameCallback ? video.requestVideoFrameCallback(tick) : requestAnimationFrame(() => tick()));
  schedule();
  return () => new Promise((resolve) => {
    const take = () => { taken = presented; resolve(); };
    if (presented > taken) take(); else wake = take;
  });
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("This browser gives no camera here: choose or drop a photo.");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 },
      frameRate: { ideal: 30 }, facingMode: "user" }, audio: false });
  } catch (err) {
    setStatus(`No camera (${err.name || err}): choose or drop a photo instead.`);
    return;
  }
  state.stream = stream;
  state.mode = "live";
  state.frameTimes = [];
  $("stage").dataset.mode = "live";
  $("camera").classList.add("on");
  const video = $("video");
  video.classList.toggle("mirror", state.mirror);
  video.srcObject = stream;
  await video.play();
  setStatus("Looking for a face…");
  setResultsStatus("loading");
  const running = () => state.stream === stream;
  const nextFrame = frameClock(video, running);
  // a pipeline: while this thread classifies and draws frame N, every worker detects a later frame
  const inFlight = [];
  try {
    while (running()) {
      await nextFrame();
      if (!running() || !video.videoWidth) continue;
      inFlight.push(detectFrame(await createImageBitmap(video)));
      if (inFlight.length > state.workers.length) {
        const result = await classify(await inFlight.shift());
        if (running()) report(result);
      }
    }
  } catch (err) {
    if (running()) fail(`Camera frame: ${err.message || err}`);
  }
}

// ------------------------------------------------------------------ start
/** One detection worker (detect.worker.mjs), added to state.workers; resolves once it is ready. */
function startWorker() {
  const { config, meta } = state, url = (path) => new URL(path, location.href).href;
  const worker = new Worker(new URL("./detect.worker.mjs", import.meta.url), { type: "module" });
  state.workers.push(worker);
  const ready = new Promise((resolve, reject) => {
    worker.onmessage = (e) => {
      const m = e.data;
      if (m.type === "ready") resolve();
      else if (m.type === "faces") { state.pending.get(m.id)?.resolve(m); state.pending.delete(m.id); }
      else if (m.type === "error") {
        const p = state.pending.get(m.id);
        if (p) { p.reject(new Error(m.message)); state.pending.delete(m.id); } else reject(new Error(m.message));
      }
    };
    worker.onerror = (e) => reject(new Error(e.message || "the face detector failed to start"));
  });
  worker.postMessage({ type: "init", ortBase: url(config.ort.path), threads: 1,
    modelUrl: url(config.detector.blazeface.model), cascadeUrl: url(config.detector.haar.cascade),
    options: { detector: state.detector, blazeface: config.detector.blazeface, haar: config.detector.haar,
               margin: config.margin, levelAbove: config.level_above_deg, imgSize: meta.preprocess.img_size,
               pilVerticalFirst: config.preprocess.pil_vertical_first } });
  return ready;
}

async function init() {
  try {
    const res = await fetch("config.json");
    if (!res.ok) throw new Error(`config.json: ${res.status}`);
    state.config = await res.json();
    state.meta = await (await fetch(state.config.model.meta)).json();
    const { meta, config } = state;
    $("model").textContent = `${meta.model_name || "model"} · ${meta.format} ${meta.precision} · ` +
      `${meta.classes.length} emotions · ${meta.preprocess.img_size}×${meta.preprocess.img_size} gray`;
    state.detector = params.get("detector") || config.detector.name;
    if (!["blazeface", "haar"].includes(state.detector)) throw new Error(`unknown detector '${state.detector}' (blazeface or haar)`);
    // BlazeFace takes ~30 ms a frame on one WebAssembly thread: two workers, one thread each, detect
    // alternate frames (on 2 cores, one worker on two threads was slower than one on one thread)
    const workers = Math.max(1, parseInt(params.get("detect_workers") || "2", 10) || 1);
    const ready = Array.from({ length: workers }, () => startWorker());
    setStatus("Loading the model…");
    await Promise.all([loadModel(), ...ready]);
  } catch (err) {
    fail(`Cannot start: ${err.message || err}`);
    throw err;
  }
  const st = $("stats");
  st.dataset.detector = state.detector;
  st.dataset.backend = state.backend;
  st.dataset.threads = String(state.threads);
  st.dataset.simd = String(WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3,
    2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11])));
  st.dataset.isolated = String(self.crossOriginIsolated);
  $("s-backend").textContent = `${state.backend}${state.backend === "wasm" ? " (SIMD" + (state.threads > 1 ? `, ${state.threads} threads)` : ", 1 thread)") : ""}`;
  $("camera").disabled = false;
  setStatus("Ready.");
}

function wireUi() {
  $("camera").addEventListener("click", () => (state.stream ? stopCamera() : startCamera()));
  $("file").addEventListener("change", (e) => { const f = e.target.files[0]; if (f) showImage(f, f.name); e.target.value = ""; });
  let depth = 0;
  document.addEventListener("dragenter", (e) => { e.preventDefault(); depth++; document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; document.body.classList.remove("dragging"); } });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => {
    e.preventDefault(); depth = 0; document.body.classList.remove("dragging");
    const f = [...(e.dataTransfer?.files || [])].find((x) => x.type.startsWith("image/")) || e.dataTransfer?.files?.[0];
    if (f) showImage(f, f.name);
  });
  window.addEventListener("resize", () => { if (api.lastResult) draw(api.lastResult); });
}

wireUi();
api.ready = init().then(async () => {
  const image = params.get("image");
  if (image) await openUrl(image);
  else if (params.get("mode") !== "image") startCamera();  // runs until stopped
});
