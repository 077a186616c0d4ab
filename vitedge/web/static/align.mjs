// Face crops for the classifier, as vitedge/faces/align.py makes them: the detector's box in whole
// pixels (Face.int_box), grown by the margin on every side and clamped; a face whose eyes tilt more
// than `levelAbove` degrees is rotated level about the box centre (pixels from outside the photo
// repeat its edge). Python's round() is half-to-even, so every rounding here is too.
//
// A face is {box: [x, y, w, h] (floats, photo pixels), score, keypoints: [[x, y] x 6] | null}.

import { cropFace, rotationMatrixCV, roundHalfEven, warpAffineCV } from "./imageops.mjs";

/** Face.int_box: rounded corners, so w and h are the rounded extent. */
export function intBox([x, y, w, h]) {
  const x0 = roundHalfEven(x), y0 = roundHalfEven(y);
  return [x0, y0, roundHalfEven(x + w) - x0, roundHalfEven(y + h) - y0];
}

/** align.eye_angle: degrees the eye line turns from horizontal (clockwise on screen), null without eyes. */
export function eyeAngle(face) {
  if (!face.keypoints) return null;
  const [[rx, ry], [lx, ly]] = face.keypoints;  // the person's right eye is on the image's left
  return Math.atan2(ly - ry, lx - rx) * (180 / Math.PI);
}

/** align.levelled_crop: the margin crop rotated about the box centre so the eyes are level. */
export function levelledCrop(gray, face, margin, angle) {
  const [x, y, w, h] = intBox(face.box);
  const dx = roundHalfEven(w * margin), dy = roundHalfEven(h * margin);
  const outW = w + 2 * dx, outH = h + 2 * dy, cx = x + w / 2, cy = y + h / 2;
  const m = rotationMatrixCV(cx, cy, angle);
  m[2] += outW / 2 - cx;
  m[5] += outH / 2 - cy;
  return warpAffineCV(gray, m, outW, outH);
}

/** align.face_crop: the crop of one detected face, levelled when its eyes tilt more than `levelAbove`. */
export function faceCrop(gray, face, margin, levelAbove) {
  const angle = eyeAngle(face);
  if (angle !== null && Math.abs(angle) > levelAbove) return levelledCrop(gray, face, margin, angle);
  return cropFace(gray, intBox(face.box), margin);
}
