"""The schema of what a browser tab sends on the web demo's `/ws` (docs/web_demo.md).

Every message is one JSON object with a `"type"`; each is a msgspec struct below that
declares its fields, their types and limits (the room name is the signaling server's,
the edit values are the ranges of `models.editing.CONTROLS`, a picture is a base64 data
URL of at most `MAX_PICTURE_BYTES`).  `parse_page_message` validates one message in one
call and turns whatever it refuses into a `PageMessageError` whose `code` is the `/ws`
error code the page shows.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Annotated, Any

import msgspec

from models.editing import CONTROLS, Control, Edits
from signaling.protocol import Room
from signaling.schema import Message, Refused, Schema

#: The largest picture a page may upload (the page says "at most 12 MB").
MAX_PICTURE_BYTES = 12 << 20
#: The longest media type (with its parameters) in a data URL's head.
MAX_MEDIA_TYPE = 100
#: The base64 text of the largest picture.
MAX_BASE64 = 4 * math.ceil(MAX_PICTURE_BYTES / 3)
#: A data URL of a picture: `data:MEDIA-TYPE;base64,` then the file in base64.
MAX_DATA_URL = len("data:;base64,") + MAX_MEDIA_TYPE + MAX_BASE64
#: The largest `/ws` message (websockets refuses a longer one, close code 1009): a data URL and its envelope.
MAX_MESSAGE = MAX_DATA_URL + 1024
#: The longest WebRTC offer (a browser's, with its candidates, is a few kB).
MAX_SDP = 64 << 10
#: Still names are file names in `--stills`, without a folder.
MAX_STILL_NAME = 255
#: The camera frame rates the sender takes from the page; others fall back to the default.
MIN_FPS, MAX_FPS, DEFAULT_FPS = 1.0, 60.0, 25.0

StillName = Annotated[str, msgspec.Meta(max_length=MAX_STILL_NAME, pattern=r"\A[^/\\\x00]+\Z")]
# (the base64 digits' count is possessive, `{0,N}+`: a refusal does not backtrack over megabytes)
PictureDataUrl = Annotated[str, msgspec.Meta(
    max_length=MAX_DATA_URL,
    pattern=rf"\Adata:[^,]{{0,{MAX_MEDIA_TYPE}}};base64,[A-Za-z0-9+/]{{0,{MAX_BASE64}}}+={{0,2}}\Z")]
Sdp = Annotated[str, msgspec.Meta(max_length=MAX_SDP)]
#: The page's number for one of its calls, echoed in that call's `answer` and `joined`.
CallId = Annotated[int, msgspec.Meta(ge=0, le=2**53 - 1)]


def _edit_field(control: Control) -> tuple[str, Any, None]:
    """One control as an optional field limited to its range (None or absent: its default)."""
    value = Annotated[float, msgspec.Meta(ge=control.minimum, le=control.maximum)]
    return control.name, value | None, None


#: The edit state: one optional number per control of `models.editing.CONTROLS`.
EditValues = msgspec.defstruct("EditValues", [_edit_field(c) for c in CONTROLS], frozen=True,
                               forbid_unknown_fields=True)


class StartCall(Message, tag="call", frozen=True):
    """Join `room` and answer the browser's WebRTC offer `sdp`; `fps` is the camera's; `id`
    the page's number for this call (the answer carries it: an answer to a call the page has
    left meanwhile is known as such)."""

    room: Room
    sdp: Sdp
    fps: float = DEFAULT_FPS
    id: CallId = 0

    @property
    def camera_fps(self) -> float:
        """The frame rate for the session header: `fps` when it is a sensible one."""
        return self.fps if MIN_FPS <= self.fps <= MAX_FPS else DEFAULT_FPS


class HangUp(Message, tag="hangup", frozen=True):
    """Leave the call."""


class SetEdits(Message, tag="edit", frozen=True):
    """The whole edit state: controls it does not name go back to their defaults."""

    values: EditValues = EditValues()  # type: ignore[valid-type]  # made from CONTROLS

    @property
    def edits(self) -> Edits:
        """The values as the `Edits` that synthesis applies."""
        return Edits(msgspec.structs.asdict(self.values))


class OpenPortrait(Message, tag="portrait", frozen=True):
    """Open a still from `--stills` (`name`) or an uploaded picture (`data`); `name` wins."""

    name: StillName | None = None
    data: PictureDataUrl | None = None

    def upload(self) -> bytes | None:
        """The uploaded file (None: none was); raises ValueError when its base64 is broken."""
        if self.data is None:
            return None
        try:
            return base64.b64decode(self.data.split(",", 1)[1], validate=True)
        except binascii.Error as exc:
            raise ValueError(f"the upload is not base64 ({exc})") from None


class Mute(Message, tag="mute", frozen=True):
    """Mute (true) or unmute (false) this tab's voice in the call."""

    muted: bool


PageMessage = StartCall | HangUp | SetEdits | OpenPortrait | Mute

_PAGE: Schema[PageMessage] = Schema(PageMessage, {
    "room": "A room name is 1-64 letters, digits, '.', '_' or '-'.",
    "name": "That is not the name of a picture here.",
    "data": f"That is not a picture upload, or it is too large (at most {MAX_PICTURE_BYTES >> 20} MB).",
})
# the /ws error code for a refusal, by the field it names (the first part of its path)
_CODES = {"room": "bad-room", "values": "bad-edit", "name": "bad-picture", "data": "bad-picture"}


class PageMessageError(ValueError):
    """A `/ws` message the server refuses; `code` is the error code for the page."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_page_message(data: str | bytes) -> PageMessage:
    """One message from the page; raises PageMessageError."""
    try:
        return _PAGE.decode(data)
    except Refused as exc:
        code = _CODES.get(exc.path.split(".", 1)[0], "bad-message")
        raise PageMessageError(code, _words(code, str(exc))) from None


def _words(code: str, refusal: str) -> str:
    """What the page shows for a refusal."""
    if code == "bad-edit":
        return f"Edit refused: {refusal}"
    if code == "bad-message":
        return f"The server did not understand a message: {refusal}"
    return refusal
