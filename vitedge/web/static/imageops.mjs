// Pixel operations of vitedge's Python pipeline, ported so the page computes the same bytes.
//
//   toGray          PIL's Image.convert("L") (ITU-R 601-2 luma, PIL's fixed-point rounding)
//   resizePIL       PIL's Image.resize(BILINEAR, reducing_gap=None): antialiased bilinear,
//                   22-bit fixed-point coefficients, horizontal then vertical pass
//                   (vitedge.preprocess.Preprocess.resize_uint8: face crop -> model size)
//   equalizeHist    cv2.equalizeHist
//   resizeLinearExactCV  cv2.resize(INTER_LINEAR_EXACT) on uint8 (the Haar cascade's image pyramid)
//   resizeAreaCV    cv2.resize(INTER_AREA) for downscaling (the Haar detector on images > 1280 px)
//   rotationMatrixCV, warpAffineCV  cv2.getRotationMatrix2D and cv2.warpAffine(INTER_LINEAR,
//                   BORDER_REPLICATE) (vitedge.faces.align.levelled_crop: tilted faces)
//   toPlanes        RGBA bytes -> R, G, B images (the BlazeFace detector's input, resized per channel)
//   cropFace        vitedge.faces.align.crop_face (box grown by a margin, clamped)
//   normalise       vitedge.preprocess.Preprocess.normalise (float32 arithmetic)
//
// All images are {data: Uint8Array, width, height}, one byte per pixel, row-major.

const f32 = Math.fround;

/** Round half to even, as C's lrint / cvRound and Python's round() do. */
export function roundHalfEven(x) {
  const r = Math.round(x);
  return (Math.abs(x % 1) === 0.5 && r % 2 !== 0) ? r - 1 : r;
}

/** RGBA bytes (canvas ImageData) -> gray image, as PIL's convert("L"). */
export function toGray(rgba, width, height) {
  const n = width * height, out = new Uint8Array(n);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    out[i] = (rgba[j] * 19595 + rgba[j + 1] * 38470 + rgba[j + 2] * 7471 + 0x8000) >>> 16;
  }
  return { data: out, width, height };
}

// ------------------------------------------------------------------ PIL bilinear (antialiased)
const PRECISION_BITS = 32 - 8 - 2;

function pilCoeffs(inSize, outSize) {
  // Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter (support 1),
  // box = (0, inSize)
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1.0);
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      let t = Math.abs((x + xmin - center + 0.5) * ss);
      const v = t < 1.0 ? 1.0 - t : 0.0;
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? w[x] / ww : w[x];
      // C's (int) cast truncates toward zero
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * (1 << PRECISION_BITS))
                                 : Math.trunc(0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v) {
  if (v >= (1 << PRECISION_BITS) * 256) return 255;
  if (v <= 0) return 0;
  return v >> PRECISION_BITS;
}

function pilHorizontal(src, sw, rows, first, outW, ch) {
  const out = new Uint8Array(outW * rows);
  for (let yy = 0; yy < rows; yy++) {
    const rowOfs = (yy + first) * sw;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = ch.bounds[xx * 2], xmax = ch.bounds[xx * 2 + 1], k = xx * ch.ksize;
      let ss = 1 << (PRECISION_BITS - 1);
      for (let x = 0; x < xmax; x++) ss += src[rowOfs + x + xmin] * ch.kk[k + x];
      out[yy * outW + xx] = clip8(ss);
    }
  }
  return out;
}

function pilVertical(src, sw, outH, cv) {
  const out = new Uint8Array(sw * outH);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = cv.bounds[yy * 2], ymax = cv.bounds[yy * 2 + 1], k = yy * cv.ksize;
    for (let xx = 0; xx < sw; xx++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < ymax; y++) ss += src[(y + ymin) * sw + xx] * cv.kk[k + y];
      out[yy * sw + xx] = clip8(ss);
    }
  }
  return out;
}

/**
 * PIL Image.resize((outW, outH), BILINEAR, reducing_gap=None) on a gray image.
 * `verticalFirst`: Pillow >= 13 runs the vertical pass first when the height shrinks by more
 * than twice as many pixels as the width (the two orders round differently); older Pillow always
 * starts with the horizontal pass. The server says which Pillow vitedge.infer runs with.
 */
export function resizePIL(img, outW, outH, { verticalFirst = true } = {}) {
  const { data, width, height } = img;
  if (width === outW && height === outH) return { data: data.slice(), width, height };
  const needH = outW !== width, needV = outH !== height;
  const vFirst = verticalFirst && (height - outH) > 0 && (height - outH) > (width - outW) * 2;
  const cv = pilCoeffs(height, outH);
  if (vFirst) {
    let src = data;
    if (needV) src = pilVertical(src, width, outH, cv);
    if (needH) src = pilHorizontal(src, width, outH, 0, outW, pilCoeffs(width, outW));
    return { data: src, width: outW, height: outH };
  }
  let src = data, sw = width, sh = height;
  if (needH) {
    const first = cv.bounds[0];
    const last = cv.bounds[outH * 2 - 2] + cv.bounds[outH * 2 - 1];
    src = pilHorizontal(data, width, last - first, first, outW, pilCoeffs(width, outW));
    for (let i = 0; i < outH; i++) cv.bounds[i * 2] -= first;
    sw = outW; sh = last - first;
  }
  if (!needV) return { data: src, width: sw, height: sh };
  return { data: pilVertical(src, sw, outH, cv), width: sw, height: outH };
}

// ------------------------------------------------------------------ OpenCV
/** cv2.equalizeHist */
export function equalizeHist(img) {
  const { data, width, height } = img;
  const hist = new Int32Array(256);
  for (let i = 0; i < data.length; i++) hist[data[i]]++;
  const out = new Uint8Array(data.length);
  let i = 0;
  while (i < 256 && !hist[i]) i++;
  const total = data.length;
  if (i === 256) return { data: out, width, height };
  if (hist[i] === total) { out.fill(i); return { data: out, width, height }; }
  const scale = f32(255 / (total - hist[i]));
  const lut = new Uint8Array(256);
  let sum = 0;
  for (lut[i++] = 0; i < 256; i++) {
    sum += hist[i];
    lut[i] = Math.min(255, Math.max(0, roundHalfEven(f32(sum * scale))));
  }
  for (let j = 0; j < data.length; j++) out[j] = lut[data[j]];
  return { data: out, width, height };
}

function exactTab(ssize, dsize) {
  // OpenCV's interpolationLinear (resize_bitExact): softdouble coordinates, 8-bit fixed-point weights
  const scale = 1 / (dsize / ssize);
  const ofs = new Int32Array(dsize), c0 = new Int32Array(dsize), c1 = new Int32Array(dsize);
  let min = 0, max = dsize;
  for (let d = 0; d < dsize; d++) {
    const fval = scale * (d + 0.5) - 0.5;
    const ival = Math.floor(fval);
    if (ival >= 0 && ssize > 1) {
      if (ival < ssize - 1) {
        ofs[d] = ival;
        c1[d] = roundHalfEven((fval - ival) * 256);
        c0[d] = 256 - c1[d];
      } else {
        ofs[d] = ssize - 1;
        max = Math.min(max, d);
      }
    } else {
      min = Math.max(min, d + 1);
    }
  }
  return { ofs, c0, c1, min, max };
}

/**
 * cv2.resize(img, (dw, dh), interpolation=INTER_LINEAR_EXACT) for uint8 gray images: what
 * OpenCV's CascadeClassifier uses to build its image pyramid.
 */
export function resizeLinearExactCV(img, dw, dh) {
  const { data, width: sw, height: sh } = img;
  if (sw === dw && sh === dh) return { data: data.slice(), width: dw, height: dh };
  if (sw === dw * 2 && sh === dh * 2) return resizeAreaFast2(img);  // OpenCV switches to INTER_AREA here
  const xt = exactTab(sw, dw), yt = exactTab(sh, dh);
  const hline = (y) => {  // one source row, resized horizontally: 8 fractional bits
    const row = new Int32Array(dw), o = y * sw, last = data[o + xt.ofs[dw - 1]] << 8;
    for (let d = 0; d < dw; d++) {
      if (d < xt.min) row[d] = data[o] << 8;
      else if (d >= xt.max) row[d] = last;
      else row[d] = xt.c0[d] * data[o + xt.ofs[d]] + xt.c1[d] * data[o + xt.ofs[d] + 1];
    }
    return row;
  };
  const out = new Uint8Array(dw * dh);
  const first = hline(0), end = hline(sh - 1);
  let r0 = null, r1 = null, cached = -2;
  for (let d = 0; d < dh; d++) {
    const o = d * dw;
    if (d < yt.min || d >= yt.max) {
      const src = d < yt.min ? first : end;
      for (let x = 0; x < dw; x++) out[o + x] = (src[x] + 128) >> 8;
      continue;
    }
    const iy = yt.ofs[d];
    if (iy !== cached) {
      r0 = iy === cached + 1 ? r1 : hline(iy);
      r1 = hline(iy + 1);
      cached = iy;
    }
    const b0 = yt.c0[d], b1 = yt.c1[d];
    for (let x = 0; x < dw; x++) {
      const v = (r0[x] * b0 + r1[x] * b1 + 32768) >> 16;
      out[o + x] = v > 255 ? 255 : v;
    }
  }
  return { data: out, width: dw, height: dh };
}

function resizeAreaFast2(img) {
  const { data, width } = img, dw = width >> 1, dh = img.height >> 1, out = new Uint8Array(dw * dh);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      const i = 2 * y * width + 2 * x;
      out[y * dw + x] = (data[i] + data[i + 1] + data[i + width] + data[i + width + 1] + 2) >> 2;
    }
  }
  return { data: out, width: dw, height: dh };
}

function areaTab(ssize, dsize) {
  // OpenCV's computeResizeAreaTab: (dst index, src index, weight) triples
  const scale = ssize / dsize, di = [], si = [], alpha = [];
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale, fsx2 = fsx1 + scale;
    const cell = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1), sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) { di.push(dx); si.push(sx1 - 1); alpha.push(f32((sx1 - fsx1) / cell)); }
    for (let sx = sx1; sx < sx2; sx++) { di.push(dx); si.push(sx); alpha.push(f32(1.0 / cell)); }
    if (fsx2 - sx2 > 1e-3) {
      di.push(dx); si.push(sx2); alpha.push(f32(Math.min(Math.min(fsx2 - sx2, 1.0), cell) / cell));
    }
  }
  return { di, si, alpha };
}

/** cv2.resize(img, (dw, dh), interpolation=INTER_AREA), dw <= width and dh <= height. */
export function resizeAreaCV(img, dw, dh) {
  const { data, width: sw, height: sh } = img;
  if (sw === dw && sh === dh) return { data: data.slice(), width: dw, height: dh };
  const ix = sw / dw, iy = sh / dh;
  if (ix === 2 && iy === 2) return resizeAreaFast2(img);
  if (Number.isInteger(ix) && Number.isInteger(iy)) {  // OpenCV's integer-ratio path
    const area = ix * iy, scale = f32(1 / area), out = new Uint8Array(dw * dh);
    for (let y = 0; y < dh; y++) {
      for (let x = 0; x < dw; x++) {
        let s = 0;
        for (let j = 0; j < iy; j++) for (let i = 0; i < ix; i++) s += data[(y * iy + j) * sw + x * ix + i];
        out[y * dw + x] = Math.min(255, roundHalfEven(f32(s * scale)));
      }
    }
    return { data: out, width: dw, height: dh };
  }
  const xt = areaTab(sw, dw), yt = areaTab(sh, dh);
  const out = new Uint8Array(dw * dh);
  const buf = new Float32Array(dw), sum = new Float32Array(dw);
  let prev = yt.di.length ? yt.di[0] : 0;
  const flush = (dy) => {
    for (let x = 0; x < dw; x++) {
      out[dy * dw + x] = Math.min(255, Math.max(0, roundHalfEven(sum[x])));
      sum[x] = 0;
    }
  };
  for (let k = 0; k < yt.di.length; k++) {
    const dy = yt.di[k], sy = yt.si[k], beta = yt.alpha[k];
    buf.fill(0);
    const o = sy * sw;
    for (let t = 0; t < xt.di.length; t++) buf[xt.di[t]] = f32(buf[xt.di[t]] + f32(data[o + xt.si[t]] * xt.alpha[t]));
    if (dy !== prev) { flush(prev); prev = dy; }
    for (let x = 0; x < dw; x++) sum[x] = f32(sum[x] + f32(beta * buf[x]));
  }
  flush(prev);
  return { data: out, width: dw, height: dh };
}

/** cv2.getRotationMatrix2D(center, angleDeg, 1): the 2x3 matrix [a, b, c, d, e, f], row-major. */
export function rotationMatrixCV(cx, cy, angleDeg) {
  const rad = angleDeg * (Math.PI / 180), a = Math.cos(rad), b = Math.sin(rad);
  cx = f32(cx); cy = f32(cy);  // OpenCV takes the centre as a Point2f
  return [a, b, (1 - a) * cx - b * cy, -b, a, b * cx + (1 - a) * cy];
}

function invertAffine(m) {
  // warpAffine's own inversion (it maps destination pixels back to the source)
  let d = m[0] * m[4] - m[1] * m[3];
  d = d !== 0 ? 1 / d : 0;
  const a11 = m[4] * d, a22 = m[0] * d, a12 = -m[1] * d, a21 = -m[3] * d;
  return [a11, a12, -a11 * m[2] - a12 * m[5], a21, a22, -a21 * m[2] - a22 * m[5]];
}

/**
 * cv2.warpAffine(img, m, (outW, outH), INTER_LINEAR, BORDER_REPLICATE) on a gray image, with
 * OpenCV's fixed-point arithmetic: source coordinates in 1/1024 then 1/32 pixel, bilinear weights
 * in 1/32768 (the same bytes as OpenCV 4.14 on the test photos; tests/test_web.py checks it).
 */
export function warpAffineCV(img, m, outW, outH) {
  const { data, width: sw, height: sh } = img;
  const inv = invertAffine(m), out = new Uint8Array(outW * outH);
  const at = (y, x) => data[Math.min(Math.max(y, 0), sh - 1) * sw + Math.min(Math.max(x, 0), sw - 1)];
  const adelta = new Int32Array(outW), bdelta = new Int32Array(outW);
  for (let x = 0; x < outW; x++) { adelta[x] = roundHalfEven(inv[0] * x * 1024); bdelta[x] = roundHalfEven(inv[3] * x * 1024); }
  for (let y = 0; y < outH; y++) {
    const x0 = roundHalfEven((inv[1] * y + inv[2]) * 1024) + 16, y0 = roundHalfEven((inv[4] * y + inv[5]) * 1024) + 16;
    for (let x = 0; x < outW; x++) {
      const X = (x0 + adelta[x]) >> 5, Y = (y0 + bdelta[x]) >> 5;
      const ix = X >> 5, iy = Y >> 5, fx = X & 31, fy = Y & 31;
      // weights (1 - fy)(1 - fx), (1 - fy)fx, fy(1 - fx), fy fx in 1/32768: exact integers
      const s = at(iy, ix) * (32 - fy) * (32 - fx) + at(iy, ix + 1) * (32 - fy) * fx
              + at(iy + 1, ix) * fy * (32 - fx) + at(iy + 1, ix + 1) * fy * fx;
      out[y * outW + x] = Math.min(255, (s * 32 + 16384) >> 15);
    }
  }
  return { data: out, width: outW, height: outH };
}

// ------------------------------------------------------------------ vitedge
/** RGBA bytes -> three gray images (R, G, B): Pillow resizes each channel of an RGB image alike. */
export function toPlanes(rgba, width, height) {
  const n = width * height, planes = [new Uint8Array(n), new Uint8Array(n), new Uint8Array(n)];
  for (let i = 0, j = 0; i < n; i++, j += 4) { planes[0][i] = rgba[j]; planes[1][i] = rgba[j + 1]; planes[2][i] = rgba[j + 2]; }
  return planes.map((data) => ({ data, width, height }));
}

/** vitedge.faces.align.crop_face: the box grown by `margin` of its size on every side, clamped. */
export function cropFace(img, box, margin) {
  const [x, y, w, h] = box;
  const dx = roundHalfEven(w * margin), dy = roundHalfEven(h * margin);
  const x0 = Math.max(0, x - dx), y0 = Math.max(0, y - dy);
  const x1 = Math.min(img.width, x + w + dx), y1 = Math.min(img.height, y + h + dy);
  const cw = Math.max(0, x1 - x0), chh = Math.max(0, y1 - y0), out = new Uint8Array(cw * chh);
  for (let r = 0; r < chh; r++) out.set(img.data.subarray((y0 + r) * img.width + x0, (y0 + r) * img.width + x0 + cw), r * cw);
  return { data: out, width: cw, height: chh };
}

/** Preprocess.normalise: uint8 at the model size -> float32 ((x / 255) - mean) / std, into `dst`. */
export function normalise(img, mean, std, dst, offset = 0) {
  const m = f32(mean), s = f32(std);
  for (let i = 0; i < img.data.length; i++) dst[offset + i] = f32(f32(f32(img.data[i] / 255) - m) / s);
  return dst;
}
