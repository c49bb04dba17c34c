"""Where the faces are: OpenCV's frontal-face Haar cascade, shipped inside opencv-python-headless.

Nothing is downloaded at run time: the cascade XML is part of the pinned wheel (``cv2.data``;
OpenCV 5 dropped both the cascades and ``CascadeClassifier`` from the main package, hence the
``<5`` pin). The cascade is a detector, not a recogniser: it says where a face is so that skin tone
is read on a face and not on an orange suit, a coffee cup or a cat; identity is face.py's job.

``alt2`` with 5 neighbours finds skimage's astronaut portrait and none of its coffee, cat, rocket
or noise images; a face smaller than 1/12 of the short side is too small to read skin on.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

CASCADE = "haarcascade_frontalface_alt2.xml"
SCALE_STEP = 1.1
MIN_NEIGHBOURS = 5
MIN_FACE_FRACTION = 1 / 12
# Larger images are searched with their short side at this many pixels: the smallest face kept
# (1/12 of the short side) is still 42 px there, twice the cascade's own 20 px window, and an
# 832×1216 image takes half the time.
DETECT_SIDE = 512


@dataclass(frozen=True)
class FaceBox:
    """A face's bounding box in image pixels."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def as_tuple(self) -> tuple[int, int, int, int]:
        return self.left, self.top, self.right, self.bottom

    def skin(self, shape: tuple[int, ...]) -> np.ndarray:
        """Boolean mask (image ``shape``) of the cheeks, nose and mouth: an ellipse inside the box
        that leaves out hair, background corners and most of the eyes."""
        h, w = shape[:2]
        y, x = np.ogrid[0:h, 0:w]
        cx, cy = (self.left + self.right) / 2, self.top + 0.58 * self.height
        rx, ry = 0.30 * self.width, 0.32 * self.height
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1.0

    def as_data(self) -> list[int]:
        return list(self.as_tuple())


_THREAD = threading.local()  # a classifier per thread: OpenCV's is not safe to share while it searches


def _cascade() -> Any:
    if (classifier := getattr(_THREAD, "classifier", None)) is None:
        classifier = _THREAD.classifier = _load_cascade()
    return classifier


def _load_cascade() -> Any:
    import cv2  # imported here: only evaluation needs it, and it takes a while to load

    if not hasattr(cv2, "CascadeClassifier"):  # an environment that ignored ralph's pin
        raise RuntimeError(f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 removed them): "
                           "install opencv-python-headless<5, as ralph requires")
    classifier = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)  # type: ignore[attr-defined]  # not in cv2's stubs
    if classifier.empty():
        raise RuntimeError(f"OpenCV's bundled {CASCADE} could not be loaded")
    return classifier


def find_faces(rgb: np.ndarray) -> list[FaceBox]:
    """Faces in an H×W×3 uint8 RGB image, largest first."""
    import cv2

    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_SIDE / min(h, w))
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    if scale < 1.0:
        grey = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    grey = cv2.equalizeHist(grey)
    side = max(24, int(min(grey.shape) * MIN_FACE_FRACTION))
    found = _cascade().detectMultiScale(grey, SCALE_STEP, MIN_NEIGHBOURS, minSize=(side, side))
    boxes = [
        FaceBox(round(x / scale), round(y / scale), round((x + fw) / scale), round((y + fh) / scale))
        for x, y, fw, fh in (found if len(found) else [])
    ]
    return sorted(boxes, key=lambda b: b.width * b.height, reverse=True)


_LARGEST: OrderedDict[tuple[tuple[int, ...], str], Future[FaceBox | None]] = OrderedDict()
REMEMBERED = 32
_REMEMBERING = threading.Lock()  # images of a sweep are measured side by side


def largest_face(rgb: np.ndarray) -> FaceBox | None:
    """The largest face, remembered by the pixels' digest: a sweep compares every variant with
    the same previous image, which is then searched once, not once per variant — also when the
    variants are measured side by side (the others wait for the search under way)."""
    key = (rgb.shape, hashlib.blake2b(np.ascontiguousarray(rgb).data, digest_size=16).hexdigest())
    with _REMEMBERING:
        found = _LARGEST.get(key)
        searching = found is None
        if found is None:
            found = _LARGEST[key] = Future()
            while len(_LARGEST) > REMEMBERED:
                _LARGEST.popitem(last=False)
    if searching:
        try:
            faces = find_faces(rgb)
        except BaseException as error:
            with _REMEMBERING:
                _LARGEST.pop(key, None)
            found.set_exception(error)
            raise
        found.set_result(faces[0] if faces else None)
    return found.result()
