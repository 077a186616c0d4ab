"""Finding faces: detectors (BlazeFace by default, OpenCV's Haar cascade), crops for the classifier,
tracks across video frames and drawings people can read.

    from vitedge.faces import load_detector
    faces = load_detector("blazeface").detect(rgb, min_face=20)
"""
from vitedge.faces import blazeface, haar  # noqa: F401  (each registers its detector)
from vitedge.faces.detect import KEYPOINTS, Detector, DetectorUnavailable, Face, detectors, iou, load_detector

__all__ = ["KEYPOINTS", "Detector", "DetectorUnavailable", "Face", "detectors", "iou", "load_detector"]
