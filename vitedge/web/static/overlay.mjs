// The drawing over the photo or video, in the style of vitedge/faces/draw.py: a box and a label per
// face in its emotion's colour, the line width and the label size following the face, every label
// inside the picture. The per-class bars go beside a face only where they cover no face and no label
// (right of the box, else left); where there is no such room they are left out here: the side panel
// lists every face's bars anyway.

const pad = (size) => Math.max(2, Math.floor(size / 6));

const intersects = (a, b) => a[0] < b[0] + b[2] && b[0] < a[0] + a[2] && a[1] < b[1] + b[3] && b[1] < a[1] + a[3];

/** draw.py's label placement: above the box, else below it, always inside the picture. */
function placeLabel(ctx, [x, y, w, h], text, size, W, H) {
  ctx.font = `600 ${size}px system-ui, sans-serif`;
  const tw = ctx.measureText(text).width, p = pad(size), lw = tw + 2 * p, lh = size + 2 * p;
  const lx = Math.min(Math.max(0, x), Math.max(0, W - lw));
  const ly = Math.max(0, y - lh >= 0 ? y - lh : Math.min(y + h, H - lh));
  return [lx, ly, lw, lh];
}

function barsPanel(ctx, classes, box, size) {
  const rowH = Math.max(10, Math.round(size * 0.6)), gap = 2;
  ctx.font = `${rowH - 1}px system-ui, sans-serif`;
  const nameW = Math.max(...classes.map((c) => ctx.measureText(c).width)) + 4;
  const barW = Math.max(40, Math.min(120, box[2] * 0.6));
  return { rowH, gap, nameW, barW, w: nameW + barW + 8, h: classes.length * (rowH + gap) + 6 };
}

/** Where the bars of `box` fit, beside it, inside the picture and clear of every rectangle in `taken`. */
function placeBars(panel, [x, y, w], taken, W, H) {
  const py = Math.min(Math.max(0, y), Math.max(0, H - panel.h));
  for (const px of [x + w + 6, x - panel.w - 6]) {
    const r = [px, py, panel.w, panel.h];
    if (px >= 0 && px + panel.w <= W && py + panel.h <= H && !taken.some((t) => intersects(r, t))) return r;
  }
  return null;
}

function drawBars(ctx, panel, [px, py], classes, probs, top) {
  ctx.fillStyle = "rgba(17, 20, 24, 0.72)";
  ctx.fillRect(px, py, panel.w, panel.h);
  ctx.font = `${panel.rowH - 1}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  classes.forEach((name, j) => {
    const yy = py + 3 + j * (panel.rowH + panel.gap);
    ctx.fillStyle = "#e8ecf1";
    ctx.fillText(name, px + 4, yy);
    ctx.fillStyle = "#2a313b";
    ctx.fillRect(px + 4 + panel.nameW, yy + 1, panel.barW, panel.rowH - 2);
    ctx.fillStyle = j === top ? "#ff5a5f" : "#4fa3ff";
    ctx.fillRect(px + 4 + panel.nameW, yy + 1, Math.max(1, panel.barW * probs[j]), panel.rowH - 2);
  });
}

function fillLabel(ctx, [lx, ly, lw, lh], text, size, rgb) {
  ctx.fillStyle = `rgb(${rgb.join(",")})`;
  ctx.fillRect(lx, ly, lw, lh);
  const dark = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2] > 140;  // dark text on light fills
  ctx.fillStyle = dark ? "#000" : "#fff";
  ctx.textBaseline = "top";
  ctx.fillText(text, lx + pad(size), ly + pad(size));
}

/**
 * Boxes, labels and bars on `ctx` (CSS pixels). `view`: {width, height, sx, sy (picture -> CSS px),
 * mirror, classes, colours (config.json: emotion -> [r, g, b], "" for others), boxes ([x, y, w, h]
 * in picture pixels), probs (per face, in classes' order), note (a line for the top-left corner)}.
 * Returns what was drawn where: {boxes, labels, bars} as [x, y, w, h] in CSS pixels.
 */
export function drawFaces(ctx, view) {
  const { width: W, height: H, classes } = view;
  const boxes = view.boxes.map(([x, y, w, h]) => {
    const bw = w * view.sx, bx = view.mirror ? W - x * view.sx - bw : x * view.sx;
    return [bx, y * view.sy, bw, h * view.sy];
  });
  const taken = [...boxes];  // what the bars must not cover: every face, then every label and the note
  const faces = boxes.map((box, i) => {
    const p = view.probs[i], top = p.indexOf(Math.max(...p)), emotion = classes[top];
    const rgb = view.colours[emotion] || view.colours[""];
    const [x, y, w, h] = box, line = Math.max(2, Math.round(Math.min(w, h) / 40));
    ctx.lineWidth = line;
    ctx.strokeStyle = `rgb(${rgb.join(",")})`;
    ctx.strokeRect(x, y, w, h);
    // text about a fifth of the face, at least 12 px, at most 1/12 of the picture (draw.py)
    const size = Math.max(12, Math.min(Math.round(h / 5), Math.max(12, Math.floor(H / 12))));
    const text = `${boxes.length > 1 ? `${i + 1}. ` : ""}${emotion} ${(100 * p[top]).toFixed(0)}%`;
    const label = placeLabel(ctx, box, text, size, W, H);
    fillLabel(ctx, label, text, size, rgb);
    taken.push(label);
    return { box, label, p, top, size };
  });
  if (view.note) {
    ctx.font = "12px system-ui, sans-serif";
    const r = [6, 6, ctx.measureText(view.note).width + 10, 18];
    ctx.fillStyle = "rgba(0, 0, 0, 0.55)";
    ctx.fillRect(...r);
    ctx.fillStyle = "#fff";
    ctx.textBaseline = "top";
    ctx.fillText(view.note, 11, 9);
    taken.push(r);
  }
  const bars = [];
  for (const { box, p, top, size } of faces) {
    const panel = barsPanel(ctx, classes, box, size), at = placeBars(panel, box, taken, W, H);
    if (at) {
      drawBars(ctx, panel, at, classes, p, top);
      taken.push(at);
      bars.push(at);
    }
  }
  return { boxes, labels: faces.map((f) => f.label), bars };
}
