"""vitedge.faces: the BlazeFace pyramid covers every face size once, NMS always ends, crops follow
the box and the eyes, tracks keep their ids."""
from __future__ import annotations

import math

import numpy as np
import pytest

from vitedge.faces import Face, load_detector
from vitedge.faces.align import crop_face, eye_angle, face_crop
from vitedge.faces.blazeface import DET_MIN, INPUT, TILE_MAX, plan_levels
from vitedge.faces.track import Tracker


@pytest.mark.parametrize("size", [(512, 512), (640, 480), (2000, 1400), (300, 4000)])
def test_pyramid_reaches_min_face_and_tiles_overlap_by_the_largest_kept_box(size):
    w, h = size
    levels = plan_levels(w, h, min_face=20)
    assert max(levels[0].width, levels[0].height) == INPUT and levels[0].tiles == ((0, 0),)
    assert levels[-1].scale * 20 >= DET_MIN - 1e-9 or max(levels[-1].width, levels[-1].height) >= 4096
    for level in levels[1:]:
        xs = sorted({x for x, _ in level.tiles})
        ys = sorted({y for _, y in level.tiles})
        for starts, length in ((xs, level.width), (ys, level.height)):
            assert starts[0] == 0 and starts[-1] + INPUT >= length  # the whole side is covered
            assert all(b - a <= INPUT - TILE_MAX for a, b in zip(starts, starts[1:]))  # overlap >= TILE_MAX
    # consecutive levels hand over: the coarse one's smallest box is no bigger than the fine one's largest
    for coarse, fine in zip(levels, levels[1:]):
        assert DET_MIN / coarse.scale <= TILE_MAX / fine.scale


def test_blazeface_finds_small_and_large_faces_of_one_photo():
    from skimage.data import astronaut
    from PIL import Image

    head = Image.fromarray(astronaut())
    canvas = Image.new("RGB", (1600, 1000), (110, 110, 110))
    x = 10
    for side in (150, 300, 700):  # faces of about 30, 65 and 150 px
        canvas.paste(head.resize((side, side)), (x, 100))
        x += side + 40
    faces = load_detector("blazeface").detect(np.asarray(canvas), min_face=20)
    sides = sorted(round(f.box[2]) for f in faces)
    assert len(faces) == 3, sides
    assert 20 < sides[0] < 45 and 120 < sides[-1] < 190


def test_weighted_nms_ends_on_a_degenerate_box():
    """A zero-area box overlaps nothing, itself included: NMS must still take it out of the queue."""
    from vitedge.faces.blazeface import weighted_nms

    flat = np.zeros((8, 2))
    flat[0] = (10, 10)  # centre, size (0, 0)
    real = flat.copy()
    real[1] = (20, 20)
    out = weighted_nms([(0.9, flat), (0.8, real), (0.7, real.copy())])
    assert [round(s, 2) for s, _ in out] == [0.9, 0.8]


def test_levelled_crop_turns_the_eyes_horizontal():
    gray = np.zeros((200, 200), np.uint8)
    # two bright "eyes" on a line tilted 30 degrees clockwise on screen, about (100, 100)
    angle = math.radians(30)
    eyes = [(100 - 30 * math.cos(angle), 100 - 30 * math.sin(angle)), (100 + 30 * math.cos(angle), 100 + 30 * math.sin(angle))]
    for ex, ey in eyes:
        gray[round(ey) - 3:round(ey) + 4, round(ex) - 3:round(ex) + 4] = 255
    kps = np.zeros((6, 2))
    kps[0], kps[1] = eyes
    face = Face(box=(60.0, 60.0, 80.0, 80.0), score=1.0, keypoints=kps)
    assert eye_angle(face) == pytest.approx(30)
    crop = face_crop(gray, face, margin=0.1)
    assert crop.shape == (96, 96)
    ys, xs = np.nonzero(crop > 128)
    left, right = ys[xs < 48].mean(), ys[xs >= 48].mean()
    assert abs(left - right) < 2  # level after the turn
    upright = Face(box=(60.0, 60.0, 80.0, 80.0), score=1.0, keypoints=np.zeros((6, 2)) + [[0, 0]])
    np.testing.assert_array_equal(face_crop(gray, upright, 0.1), crop_face(gray, (60, 60, 80, 80), 0.1))


def test_tracker_keeps_ids_through_a_fast_move_and_ends_lost_tracks():
    tracker = Tracker(max_missed=2)
    a = tracker.update([Face((0, 0, 50, 50), 1.0)], 0)[0]
    b = tracker.update([Face((45, 0, 50, 50), 1.0)], 1)[0]  # IoU ~0.05, centre within a width
    assert a.id == b.id == 1
    for frame in range(2, 6):
        tracker.update([], frame)
    c = tracker.update([Face((45, 0, 50, 50), 1.0)], 6)[0]
    assert c.id == 2 and [t.id for t in tracker.all_tracks()] == [1, 2]
