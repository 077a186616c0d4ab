// OpenCV's Haar cascade face detector (CascadeClassifier.detectMultiScale), ported to plain JS.
//
// The page's `?detector=haar` (BlazeFace, blazeface.mjs, is the default): `vitedge.infer --detector
// haar` finds faces with OpenCV's haarcascade_frontalface_default.xml, and the page must find the
// same faces for its emotions to be Python's. This port evaluates the
// same cascade the way OpenCV 4 does: an image pyramid made with cv2.resize's INTER_LINEAR_EXACT
// fixed-point arithmetic, 32-bit integral images, float32 feature sums, the window's variance
// normalisation, stage thresholds minus 1e-5, the skip after a first-stage reject, then
// groupRectangles. It gives the same boxes, bit for bit: tests/test_web.py checks it against cv2
// on photos. The cascade is not copied into vitedge: the server reads it from the installed
// OpenCV wheel (cv2.data) and sends it as JSON (vitedge/web/server.py), so the page works offline.
//
// Cascade JSON (vitedge.web.server.cascade_json): {width, height, features: [[x, y, w, h, weight,
// ...] per feature], stages: [{threshold, weak: [[left, right, feature, threshold, ...nodes],
// [leaf values]] ...}]}.

import { equalizeHist, resizeAreaCV, resizeLinearExactCV, roundHalfEven } from "./imageops.mjs";

const f32 = Math.fround;
const THRESHOLD_EPS = f32(1e-5);

export class HaarCascade {
  constructor(json) {
    this.winW = json.width;
    this.winH = json.height;
    // features: up to 3 weighted rectangles each
    const nf = json.features.length;
    this.rects = new Int32Array(nf * 12);
    this.weights = new Float32Array(nf * 3);
    json.features.forEach((f, i) => {
      for (let r = 0; r * 5 + 4 < f.length && r < 3; r++) {
        for (let k = 0; k < 4; k++) this.rects[i * 12 + r * 4 + k] = f[r * 5 + k];
        this.weights[i * 3 + r] = f[r * 5 + 4];  // Float32Array: stored as OpenCV's float
      }
    });
    // weak classifiers flattened into nodes [left, right, feature] + thresholds, and leaves;
    // stage thresholds are (float)threshold - 1e-5f, as OpenCV reads them
    const nodes = [], thr = [], leaves = [], weakNode = [], weakLeaf = [], stageFirst = [], stageCount = [], stageThr = [];
    let stumps = true;
    for (const s of json.stages) {
      stageFirst.push(weakNode.length);
      stageCount.push(s.weak.length);
      stageThr.push(f32(f32(s.threshold) - THRESHOLD_EPS));
      for (const [n, l] of s.weak) {
        weakNode.push(thr.length);
        weakLeaf.push(leaves.length);
        if (n.length !== 4) stumps = false;
        for (let i = 0; i < n.length; i += 4) { nodes.push(n[i], n[i + 1], n[i + 2]); thr.push(n[i + 3]); }
        leaves.push(...l);
      }
    }
    this.nodes = Int32Array.from(nodes);
    this.thr = Float32Array.from(thr);
    this.leaves = Float32Array.from(leaves);
    this.weakNode = Int32Array.from(weakNode);
    this.weakLeaf = Int32Array.from(weakLeaf);
    this.stageFirst = Int32Array.from(stageFirst);
    this.stageCount = Int32Array.from(stageCount);
    this.stageThr = Float32Array.from(stageThr);
    this.stumps = stumps;
  }

  /** detectMultiScale(image, scaleFactor, minNeighbors, minSize=(minSize, minSize)) -> [[x, y, w, h]] */
  detectMultiScale(img, { scaleFactor = 1.1, minNeighbors = 3, minSize = 0 } = {}) {
    const { width: W, height: H } = img;
    const scales = [];
    for (let factor = 1; ; factor *= scaleFactor) {
      const ww = roundHalfEven(this.winW * factor), wh = roundHalfEven(this.winH * factor);
      if (ww > W || wh > H) break;
      if (ww < minSize || wh < minSize) continue;
      scales.push(f32(factor));
    }
    const candidates = [];
    for (const sc of scales) this._scanScale(img, sc, candidates);
    return clip(groupRectangles(candidates, minNeighbors, 0.2), W, H);
  }

  _scanScale(img, sc, out) {
    const sw = roundHalfEven(f32(img.width / sc)), sh = roundHalfEven(f32(img.height / sc));
    const small = resizeLinearExactCV(img, sw, sh).data;
    const step = sw + 1;
    // 32-bit integral images (OpenCV keeps the squares in int32 too: they wrap, window sums do not)
    const sum = new Int32Array(step * (sh + 1)), sq = new Int32Array(step * (sh + 1));
    for (let y = 0; y < sh; y++) {
      let rs = 0, rq = 0;
      const o = (y + 1) * step + 1, po = y * step + 1, io = y * sw;
      for (let x = 0; x < sw; x++) {
        const v = small[io + x];
        rs += v; rq = (rq + v * v) | 0;
        sum[o + x] = sum[po + x] + rs;
        sq[o + x] = (sq[po + x] + rq) | 0;
      }
    }
    // the corner offsets of every feature rectangle in this integral image
    const R = this.rects, nf = this.weights.length / 3, ofs = new Int32Array(nf * 12);
    for (let i = 0; i < nf * 3; i++) {
      const x = R[i * 4], y = R[i * 4 + 1], w = R[i * 4 + 2], h = R[i * 4 + 3];
      ofs[i * 4] = x + step * y;
      ofs[i * 4 + 1] = x + w + step * y;
      ofs[i * 4 + 2] = x + step * (y + h);
      ofs[i * 4 + 3] = x + w + step * (y + h);
    }
    const run = this.stumps ? this._stumpRunner(ofs) : (sum_, p, vnf) => this._run(sum_, p, ofs, vnf);
    const nx = Math.max(sw + 1 - this.winW, 0), ny = Math.max(sh + 1 - this.winH, 0);
    const ystep = sc >= 2 ? 1 : 2;
    const winW = roundHalfEven(f32(this.winW * sc)), winH = roundHalfEven(f32(this.winH * sc));
    // normalisation rectangle: the window less a 1-pixel border
    const n0 = 1 + step, n1 = this.winW - 1 + step, n2 = 1 + step * (this.winH - 1), n3 = this.winW - 1 + step * (this.winH - 1);
    const area = (this.winW - 2) * (this.winH - 2);
    for (let y = 0; y < ny; y += ystep) {
      for (let x = 0; x < nx; x += ystep) {
        const p = y * step + x;
        // setWindow: the window's standard deviation; too flat a window is rejected (-1)
        const vs = sum[p + n0] - sum[p + n1] - sum[p + n2] + sum[p + n3];
        const vq = ((sq[p + n0] - sq[p + n1] - sq[p + n2] + sq[p + n3]) | 0) >>> 0;
        const nf2 = area * vq - vs * vs;
        let result = -1;
        if (nf2 > 0) {
          const vnf = f32(1 / Math.sqrt(nf2));
          if (area * vnf < 0.1) result = run(sum, p, vnf);
        }
        if (result > 0) out.push([roundHalfEven(f32(x * sc)), roundHalfEven(f32(y * sc)), winW, winH]);
        if (result === 0) x += ystep;  // rejected by the first stage: OpenCV skips the next position
      }
    }
  }

  // The same evaluation for cascades of stumps (OpenCV's predictOrderedStump), with every stump's
  // rectangle offsets laid out in evaluation order: about 5x faster than the general path.
  _stumpRunner(ofs) {
    const n = this.thr.length, so = new Int32Array(n * 12), sw = new Float32Array(n * 3);
    const left = new Float32Array(n), right = new Float32Array(n), three = new Uint8Array(n);
    for (let k = 0; k < n; k++) {
      const fi = this.nodes[k * 3 + 2];
      so.set(ofs.subarray(fi * 12, fi * 12 + 12), k * 12);
      sw.set(this.weights.subarray(fi * 3, fi * 3 + 3), k * 3);
      three[k] = sw[k * 3 + 2] !== 0 ? 1 : 0;
      left[k] = this.leaves[this.weakLeaf[k]];
      right[k] = this.leaves[this.weakLeaf[k] + 1];
    }
    const thr = this.thr, stageCount = this.stageCount, stageThr = this.stageThr, ns = stageThr.length;
    return (sum, p, vnf) => {
      let k = 0;
      for (let si = 0; si < ns; si++) {
        let acc = 0;
        for (const end = k + stageCount[si]; k < end; k++) {
          const o = k * 12, w = k * 3;
          let v = f32(f32(sw[w] * (sum[p + so[o]] - sum[p + so[o + 1]] - sum[p + so[o + 2]] + sum[p + so[o + 3]]))
            + f32(sw[w + 1] * (sum[p + so[o + 4]] - sum[p + so[o + 5]] - sum[p + so[o + 6]] + sum[p + so[o + 7]])));
          if (three[k]) v = f32(v + f32(sw[w + 2] * (sum[p + so[o + 8]] - sum[p + so[o + 9]] - sum[p + so[o + 10]] + sum[p + so[o + 11]])));
          acc += f32(v * vnf) < thr[k] ? left[k] : right[k];
        }
        if (acc < stageThr[si]) return -si;
      }
      return 1;
    };
  }

  // float32 feature value times the window's normalisation, as HaarEvaluator::OptFeature::calc
  _feature(sum, p, ofs, fi, vnf) {
    const W = this.weights, o = fi * 12, wo = fi * 3;
    let v = f32(f32(W[wo] * (sum[p + ofs[o]] - sum[p + ofs[o + 1]] - sum[p + ofs[o + 2]] + sum[p + ofs[o + 3]]))
      + f32(W[wo + 1] * (sum[p + ofs[o + 4]] - sum[p + ofs[o + 5]] - sum[p + ofs[o + 6]] + sum[p + ofs[o + 7]])));
    if (W[wo + 2] !== 0) {
      v = f32(v + f32(W[wo + 2] * (sum[p + ofs[o + 8]] - sum[p + ofs[o + 9]] - sum[p + ofs[o + 10]] + sum[p + ofs[o + 11]])));
    }
    return f32(v * vnf);
  }

  // 1 if every stage passes, else -(the stage that rejected the window)
  _run(sum, p, ofs, vnf) {
    const { nodes, thr, leaves, weakNode, weakLeaf, stageFirst, stageCount, stageThr } = this;
    for (let si = 0; si < stageThr.length; si++) {
      let acc = 0;  // double, as OpenCV's
      const first = stageFirst[si], end = first + stageCount[si];
      for (let wi = first; wi < end; wi++) {
        const n0 = weakNode[wi];
        let idx = 0;
        do {
          const k = n0 + idx;
          idx = this._feature(sum, p, ofs, nodes[k * 3 + 2], vnf) < thr[k] ? nodes[k * 3] : nodes[k * 3 + 1];
        } while (idx > 0);
        acc += leaves[weakLeaf[wi] - idx];
      }
      if (acc < stageThr[si]) return -si;
    }
    return 1;
  }
}

function similar(a, b, eps) {
  const delta = eps * (Math.min(a[2], b[2]) + Math.min(a[3], b[3])) * 0.5;
  return Math.abs(a[0] - b[0]) <= delta && Math.abs(a[1] - b[1]) <= delta &&
    Math.abs(a[0] + a[2] - b[0] - b[2]) <= delta && Math.abs(a[1] + a[3] - b[1] - b[3]) <= delta;
}

/** cv::partition with SimilarRects(eps): union-find, labels numbered in order of first member. */
function partition(rects, eps) {
  const n = rects.length, parent = new Int32Array(n).fill(-1), rank = new Int32Array(n);
  const root = (i) => { while (parent[i] >= 0) i = parent[i]; return i; };
  for (let i = 0; i < n; i++) {
    let r = root(i);
    for (let j = 0; j < n; j++) {
      if (i === j || !similar(rects[i], rects[j], eps)) continue;
      const r2 = root(j);
      if (r2 !== r) {
        if (rank[r] > rank[r2]) parent[r2] = r;
        else { parent[r] = r2; rank[r2] += rank[r] === rank[r2] ? 1 : 0; r = r2; }
        for (let k = j, q; (q = parent[k]) >= 0; k = q) parent[k] = r;
        for (let k = i, q; (q = parent[k]) >= 0; k = q) parent[k] = r;
      }
    }
  }
  const labels = new Int32Array(n), classOf = new Map();
  for (let i = 0; i < n; i++) {
    const r = root(i);
    if (!classOf.has(r)) classOf.set(r, classOf.size);
    labels[i] = classOf.get(r);
  }
  return { labels, nclasses: classOf.size };
}

/** cv::groupRectangles(rects, groupThreshold, eps) */
export function groupRectangles(rects, groupThreshold, eps) {
  if (groupThreshold <= 0 || rects.length === 0) return rects.slice();
  const { labels, nclasses } = partition(rects, eps);
  const acc = Array.from({ length: nclasses }, () => [0, 0, 0, 0]), weights = new Int32Array(nclasses);
  rects.forEach((r, i) => { const a = acc[labels[i]]; for (let k = 0; k < 4; k++) a[k] += r[k]; weights[labels[i]]++; });
  const avg = acc.map((a, c) => { const s = f32(1 / weights[c]); return a.map((v) => roundHalfEven(f32(v * s))); });
  const out = [];
  for (let i = 0; i < nclasses; i++) {
    const r1 = avg[i], n1 = weights[i];
    if (n1 <= groupThreshold) continue;
    let j;
    for (j = 0; j < nclasses; j++) {
      const n2 = weights[j];
      if (j === i || n2 <= groupThreshold) continue;
      const r2 = avg[j];
      const dx = roundHalfEven(r2[2] * eps), dy = roundHalfEven(r2[3] * eps);
      if (r1[0] >= r2[0] - dx && r1[1] >= r2[1] - dy && r1[0] + r1[2] <= r2[0] + r2[2] + dx &&
          r1[1] + r1[3] <= r2[1] + r2[3] + dy && (n2 > Math.max(3, n1) || n1 < 3)) break;
    }
    if (j === nclasses) out.push(r1);
  }
  return out;
}

function clip(rects, W, H) {
  const out = [];
  for (const [x, y, w, h] of rects) {
    const x0 = Math.max(x, 0), y0 = Math.max(y, 0), x1 = Math.min(x + w, W), y1 = Math.min(y + h, H);
    if (x1 > x0 && y1 > y0) out.push([x0, y0, x1 - x0, y1 - y0]);
  }
  return out;
}

/**
 * vitedge.faces.haar.detect_gray: frontal faces in a gray image as [x, y, w, h], largest first.
 * Detection runs on a copy no larger than maxSide (INTER_AREA), histogram-equalised; boxes are
 * scaled back with Python's rounding.
 */
export function detectFaces(cascade, gray, { minFace = 40, maxSide = 1280, scaleFactor = 1.1, minNeighbors = 5 } = {}) {
  const { width: w, height: h } = gray;
  const scale = Math.min(1.0, maxSide / Math.max(h, w));
  const small = scale < 1 ? resizeAreaCV(gray, roundHalfEven(w * scale), roundHalfEven(h * scale)) : gray;
  const eq = equalizeHist(small);
  const minSide = Math.max(12, roundHalfEven(minFace * scale));
  const found = cascade.detectMultiScale(eq, { scaleFactor, minNeighbors, minSize: minSide });
  const boxes = found.map(([x, y, bw, bh]) => [x / scale, y / scale, bw / scale, bh / scale].map(roundHalfEven));
  return boxes.map((b, i) => [b, i]).sort((a, b) => (b[0][2] * b[0][3] - a[0][2] * a[0][3]) || a[1] - b[1]).map((e) => e[0]);
}
