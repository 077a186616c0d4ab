// BlazeFace over an image pyramid, step for step as vitedge/faces/blazeface.py runs it (read its
// docstring for why the pyramid, the tiles and the keep rule): the same levels and tiles, the same
// resize (Pillow's bilinear, per RGB channel), the same float32 input, the same anchor decoding,
// keep rule, weighted NMS and box calibration, so the page finds the boxes vitedge.infer finds
// (up to onnxruntime-web's float rounding against native onnxruntime). The model file and every
// constant come from the server (config.json: detector.blazeface), read from the Python module.
//
// A detection is {score, pts: Float64Array(16)}: box centre (x, y), box size (w, h), six keypoints.

import { resizePIL, toPlanes } from "./imageops.mjs";

/** blazeface.round_half_up: floor(x + 0.5), the rounding both sides use for level sizes. */
const roundHalfUp = (x) => Math.floor(x + 0.5);

/** (896 x 2) anchor centres in input pixels, in the model's output order (y, x, anchor). */
function anchors(input) {
  const out = [];
  for (const [cells, perCell] of [[16, 2], [8, 6]]) {
    const stride = input / cells;
    for (let y = 0; y < cells; y++) {
      for (let x = 0; x < cells; x++) for (let k = 0; k < perCell; k++) out.push((x + 0.5) * stride, (y + 0.5) * stride);
    }
  }
  return Float64Array.from(out);
}

/** Tile starts along one side: one tile when it fits, else evenly spaced with >= tile_max overlap. */
function positions(length, c) {
  if (length <= c.input) return [0];
  const k = Math.ceil((length - c.input) / (c.input - c.tile_max)) + 1, span = length - c.input;
  return Array.from({ length: k }, (_, i) => Math.floor((i * span + Math.floor((k - 1) / 2)) / (k - 1)));
}

/** blazeface.plan_levels: [{scale, width, height, tiles: [[x, y], ...]}], level 0 the whole photo. */
export function planLevels(width, height, minFace, c) {
  const longest = Math.max(width, height);
  let scale = c.input / longest;
  const finest = Math.min(c.det_min / Math.max(minFace, 1.0), c.max_level_side / longest);
  const scales = [scale];
  while (scale < finest) {
    scale = Math.min(scale * c.level_ratio, finest);
    scales.push(scale);
  }
  return scales.map((s) => {
    const w = Math.max(1, roundHalfUp(width * s)), h = Math.max(1, roundHalfUp(height * s));
    const tiles = positions(h, c).flatMap((y) => positions(w, c).map((x) => [x, y]));
    return { scale: s, width: w, height: h, tiles };
  });
}

/** blazeface.resize_rgb on R, G, B planes: Pillow's antialiased bilinear, byte for byte. */
export function resizePlanes(planes, width, height, verticalFirst) {
  return planes.map((p) => resizePIL(p, width, height, { verticalFirst }));
}

// tile_input's float32(v / 127.5 - 1), computed in float64 then rounded once: 256 values
const INPUT_LUT = Float32Array.from({ length: 256 }, (_, v) => v / 127.5 - 1.0);

/** blazeface.tile_input: (256 x 256 x 3) float32 in [-1, 1], the tile at (x, y), black beyond the level. */
export function tileInput(planes, x, y, input) {
  const [r, g, b] = planes, { width, height } = r;
  const out = new Float32Array(input * input * 3).fill(INPUT_LUT[0]);
  const w = Math.min(input, width - x), h = Math.min(input, height - y);
  for (let row = 0; row < h; row++) {
    let src = (y + row) * width + x, dst = row * input * 3;
    for (let col = 0; col < w; col++, src++, dst += 3) {
      out[dst] = INPUT_LUT[r.data[src]]; out[dst + 1] = INPUT_LUT[g.data[src]]; out[dst + 2] = INPUT_LUT[b.data[src]];
    }
  }
  return out;
}

/** blazeface.decode: raw scores (896) and boxes (896 x 16) -> detections at or above score_min, tile px. */
export function decode(scores, boxes, centres, scoreMin) {
  const out = [];
  for (let i = 0; i < scores.length; i++) {
    const prob = 1.0 / (1.0 + Math.exp(-Math.min(100.0, Math.max(-100.0, scores[i]))));
    if (!(prob >= scoreMin)) continue;
    const pts = Float64Array.from(boxes.subarray(i * 16, i * 16 + 16));
    for (let k = 0; k < 16; k += 2) {
      if (k === 2) continue;  // (pts[2], pts[3]) is the box size; the centre and keypoints are anchor offsets
      pts[k] += centres[2 * i];
      pts[k + 1] += centres[2 * i + 1];
    }
    out.push({ score: prob, pts });
  }
  return out;
}

/** blazeface._keep: a finer level keeps small boxes that no inner tile edge cuts. */
export function keep(levelIndex, level, [tx, ty], pts, c) {
  if (levelIndex === 0) return true;
  const [cx, cy, w, h] = pts;
  if (Math.max(w, h) > c.tile_max) return false;
  const x0 = tx + cx - w / 2, y0 = ty + cy - h / 2, x1 = tx + cx + w / 2, y1 = ty + cy + h / 2;
  return !((tx > 0 && x0 < tx) || (ty > 0 && y0 < ty)
           || (tx + c.input < level.width && x1 > tx + c.input) || (ty + c.input < level.height && y1 > ty + c.input));
}

const corners = (p) => [p[0] - p[2] / 2, p[1] - p[3] / 2, p[0] + p[2] / 2, p[1] + p[3] / 2];

function overlap(a, b) {
  const iw = Math.max(0.0, Math.min(a[2], b[2]) - Math.max(a[0], b[0]));
  const ih = Math.max(0.0, Math.min(a[3], b[3]) - Math.max(a[1], b[1]));
  const inter = iw * ih, union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
  return union > 0 ? inter / union : 0.0;
}

/** blazeface.weighted_nms: each best detection absorbs those overlapping it by more than `iou`;
 *  the result is their score-weighted mean (corners and keypoints) at the best score. */
export function weightedNms(dets, iou) {
  let remaining = dets.map((d, i) => ({ score: d.score, box: corners(d.pts), kps: d.pts.subarray(4), i }))
    .sort((a, b) => b.score - a.score || a.i - b.i);
  const out = [];
  while (remaining.length) {
    const top = remaining[0];
    // the top always joins its own group: a zero-area box overlaps nothing, itself included
    const rest = remaining.slice(1);
    const group = [top, ...rest.filter((d) => overlap(top.box, d.box) > iou)];
    remaining = rest.filter((d) => overlap(top.box, d.box) <= iou);
    let total = 0;
    const box = [0, 0, 0, 0], kps = new Float64Array(12);
    for (const d of group) total += d.score;  // summed in order, as Python's sum()
    for (const d of group) for (let k = 0; k < 4; k++) box[k] += d.score * d.box[k];
    for (const d of group) for (let k = 0; k < 12; k++) kps[k] += d.score * d.kps[k];
    for (let k = 0; k < 4; k++) box[k] /= total;
    for (let k = 0; k < 12; k++) kps[k] /= total;
    const pts = new Float64Array(16);
    pts.set([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]]);
    pts.set(kps, 4);
    out.push({ score: top.score, pts });
  }
  return out;
}

/** blazeface.to_face: a merged detection -> {box: [x, y, w, h], score, keypoints}. */
export function toFace({ score, pts }, c) {
  const cx = pts[0], cy = pts[1], w = pts[2], h = pts[3];
  const keypoints = Array.from({ length: 6 }, (_, k) => [pts[4 + 2 * k], pts[5 + 2 * k]]);
  return { box: [cx - w / 2, cy - h / 2, w, h], score, keypoints };
}

export class BlazeFace {
  /** `ort`: onnxruntime-web's module; `config`: config.json's detector.blazeface. */
  static async create(ort, url, config) {
    const session = await ort.InferenceSession.create(url, { executionProviders: ["wasm"], graphOptimizationLevel: "all" });
    const detector = new BlazeFace(ort, session, config);
    await detector.warmUp();
    return detector;
  }

  constructor(ort, session, config) {
    this.ort = ort;
    this.session = session;
    this.c = config;
    this.centres = anchors(config.input);
  }

  async warmUp() {
    // the first run allocates; its outputs tell the order: scores before boxes, 512 anchors first
    const n = this.c.input;
    const out = await this.session.run({ [this.session.inputNames[0]]: new this.ort.Tensor("float32", new Float32Array(n * n * 3), [1, n, n, 3]) });
    const dims = (name) => out[name].dims;
    this.outputs = [...this.session.outputNames].sort((a, b) => (dims(a)[2] !== 1) - (dims(b)[2] !== 1) || dims(b)[1] - dims(a)[1]);
  }

  /** One 256 tile -> raw (scores (896), boxes (896 x 16)), in anchor order. */
  async runTile(input) {
    const n = this.c.input;
    const out = await this.session.run({ [this.session.inputNames[0]]: new this.ort.Tensor("float32", input, [1, n, n, 3]) });
    const [s512, s384, b512, b384] = this.outputs.map((name) => out[name].data);
    const scores = new Float32Array(s512.length + s384.length), boxes = new Float32Array(b512.length + b384.length);
    scores.set(s512); scores.set(s384, s512.length);
    boxes.set(b512); boxes.set(b384, b512.length);
    return { scores, boxes };
  }

  /** blazeface.detect_raw: every kept detection of every tile of every level, in photo pixels.
   *  `levelImage(level)`: the level's R, G, B planes (photos: resizePlanes; live frames: a canvas). */
  async detectRaw(width, height, minFace, levelImage) {
    const dets = [];
    const levels = planLevels(width, height, minFace, this.c);
    for (let li = 0; li < levels.length; li++) {
      const level = levels[li], planes = await levelImage(level);
      for (const tile of level.tiles) {
        const { scores, boxes } = await this.runTile(tileInput(planes, tile[0], tile[1], this.c.input));
        for (const d of decode(scores, boxes, this.centres, this.c.score_min)) {
          if (!keep(li, level, tile, d.pts, this.c)) continue;
          for (let k = 0; k < 16; k += 2) {
            if (k !== 2) { d.pts[k] += tile[0]; d.pts[k + 1] += tile[1]; }
          }
          for (let k = 0; k < 16; k++) d.pts[k] /= level.scale;
          dets.push(d);
        }
      }
    }
    return dets;
  }

  /** blazeface.BlazeFace.detect: faces of at least `minFace` pixels, best first. */
  async detect(width, height, minFace, levelImage) {
    const faces = weightedNms(await this.detectRaw(width, height, minFace, levelImage), this.c.nms_iou).map((d) => toFace(d, this.c));
    return faces.filter((f) => Math.max(f.box[2], f.box[3]) >= minFace);
  }

  /** Photos: the exact path (every level resized from the full photo as Pillow does). */
  detectPhoto(rgba, width, height, minFace, verticalFirst) {
    const planes = toPlanes(rgba, width, height);
    return this.detect(width, height, minFace, (lv) => resizePlanes(planes, lv.width, lv.height, verticalFirst));
  }
}
