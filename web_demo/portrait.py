"""Portrait mode: one still picture, coded as a key frame, edited with the call's sliders.

The still goes through the same path as a call: the face is found in the whole picture
(`models.face_tracker.detect_still`), cropped square (`models.crop`) to the codec's size,
coded as a VVC key frame with its reference geometry (`FaceEncoder`), decoded back as a
receiver would (`FaceDecoder`), and its own face parameters are rendered with the edits
applied (`apply_edits` before `render`).

An uploaded picture is refused before it is decoded unless its own header (PNG IHDR, JPEG
SOF) declares at most MAX_PIXELS pixels: a small file that declares a huge picture never
reaches the image decoder.  A PNG's chunks are walked first too: OpenCV's reader reserves
the length a chunk declares before it finds the file too short (33 bytes made it take
256 MiB, benchmarks.fuzz), so a chunk longer than the rest of the file is refused, as is an
animation frame (fcTL) larger than MAX_SIDE.
"""

from __future__ import annotations

import base64
import logging
import struct
import threading
from fractions import Fraction

import cv2
import numpy as np

from codec.decoder import FaceDecoder
from codec.encoder import FaceEncoder
from codec_core.config import load_config
from models.crop import apply_crop, crop_around_face
from models.face_model import FaceBasis
from models.face_tracker import detect_still
from models.synthesizers import Synthesis

log = logging.getLogger(__name__)

MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE      # an uploaded picture, as its header declares it
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic...): they carry the size
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
NOT_A_PICTURE = "That file is not a picture this demo can read (use a JPEG or PNG)."
TOO_LARGE = f"That picture is too large (at most {MAX_SIDE} x {MAX_SIDE} pixels)."


class PortraitError(Exception):
    """The picture cannot be used; str() says why, in words for the page."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) a PNG or JPEG file declares in its header, read without decoding it;
    PortraitError for anything else."""
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        _check_png_chunks(data)
        width, height = struct.unpack_from(">II", data, 16)
        return width, height
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    raise PortraitError(NOT_A_PICTURE)


def _check_png_chunks(data: bytes) -> None:
    """Every chunk (length, type, data, CRC) within the file up to IEND; fcTL frames no
    larger than MAX_SIDE."""
    pos = len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = data[pos + 4:pos + 8]
        if length > len(data) - pos - 12:
            raise PortraitError(NOT_A_PICTURE)
        if kind == b"fcTL" and length >= 12:
            width, height = struct.unpack_from(">II", data, pos + 12)
            if width > MAX_SIDE or height > MAX_SIDE:
                raise PortraitError(TOO_LARGE)
        if kind == b"IEND":
            return
        pos += 12 + length


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:                       # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:   # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in JPEG_SOF:
            if length < 7 or pos + 9 > len(data):
                break
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        if marker in (0xD9, 0xDA) or length < 2:   # end of image, start of scan: no size before it
            break
        pos += 2 + length
    raise PortraitError(NOT_A_PICTURE)


def decode_image(data: bytes) -> np.ndarray:
    """RGB picture from the bytes of a PNG or JPEG file; its declared size is checked first."""
    width, height = image_size(data)
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
        raise PortraitError(TOO_LARGE if width and height else NOT_A_PICTURE)
    buf = np.frombuffer(data, np.uint8)
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise PortraitError(NOT_A_PICTURE)
    if bgr.shape[0] * bgr.shape[1] > MAX_PIXELS:       # (a file whose header lied)
        raise PortraitError(TOO_LARGE)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def data_url(picture: np.ndarray, quality: int = 90) -> str:
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii")


class Portrait:
    """A still as a key frame session: `render(edits)` gives the edited picture (blocking)."""

    def __init__(self, picture: np.ndarray, basis: FaceBasis | None = None,
                 synthesis: Synthesis = Synthesis()) -> None:
        basis = basis or FaceBasis.load()
        config = load_config(None)
        size = config.size
        landmarks = detect_still(picture)
        if landmarks is None:
            raise PortraitError("No face found in that picture: use a portrait with one face, seen from the front.")
        h, w = picture.shape[:2]
        box = crop_around_face(landmarks, w, h)
        crop = apply_crop(picture, box, size)
        crop_landmarks = detect_still(crop)          # as the sender would: on the crop itself
        if crop_landmarks is None:
            crop_landmarks = box.to_crop(landmarks, size)
        encoder = FaceEncoder(config, basis)
        coded = encoder.new_keyframe(crop, crop_landmarks)
        header = encoder.header(Fraction(25))
        self.decoder = FaceDecoder(header, basis, synthesis)
        self.decoder.set_keyframe(coded.record)
        self.params = self.decoder.params(encoder.levels(crop_landmarks))   # a still: no global motion
        self.crop = crop
        self.keyframe = self.decoder.keyframe
        self.keyframe_bytes = len(coded.record.picture)
        self.geometry_bytes = len(coded.record.geometry)
        self._editor = None
        self._lock = threading.Lock()

    def render(self, edits=None) -> np.ndarray:
        from models.editing import ExpressionEditor, apply_edits

        with self._lock:
            params = self.params
            if edits:
                if self._editor is None:
                    self._editor = ExpressionEditor.from_model(self.decoder.reference.face_model())
                params = apply_edits(params, edits, self._editor)
            return self.decoder.render(params, None)
