"""The demo server: static files over HTTP (HTTPS with a certificate) and one websocket
(`/ws`) per browser tab.

Built on `websockets` alone: its `process_request` hook answers the GETs for the page's
files (web_demo/static) and lets `/ws` go on to the websocket handshake, if the page
asking is one of the demo's own (its `Origin` is on the allow-list: the addresses the
demo serves at, plus `--allow-origin`; `signaling.origins`).  Messages on `/ws` are
JSON objects with a `type` (docs/web_demo.md has the table); what the page sends is
parsed and validated by `web_demo.messages`.  At most `max_calls` tabs are in a call at
once; the next is refused (`busy`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import mimetypes
import socket
import ssl
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from models.editing import CONTROLS, Edits
from models.face_model import FaceBasis
from models.synthesizers import Synthesis
from signaling import ServerConfig, SignalingServer
from signaling.client import SignalingError
from signaling.origins import LOOPBACK_HOSTS, OriginPolicy, page_origins
from signaling.rooms import guessable, new_room
from web_demo.messages import (
    MAX_MESSAGE,
    HangUp,
    Mute,
    OpenPortrait,
    PageMessage,
    PageMessageError,
    SetEdits,
    StartCall,
    parse_page_message,
)
from web_demo.portrait import Portrait, PortraitError, data_url, decode_image
from web_demo.tab import TabCall

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
STILL_SUFFIXES = {".jpg", ".jpeg", ".png"}     # what web_demo.portrait reads
DEFAULT_STILLS = Path(__file__).resolve().parents[2] / "shared" / "data" / "stills"
#: Tabs in a call at once (each runs face tracking and synthesis on this machine).
DEFAULT_MAX_CALLS = 4
#: Tabs with a portrait open or being opened at once (each holds a key frame and a synthesizer).
DEFAULT_MAX_PORTRAITS = 8
_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def control_table() -> list[dict]:
    out = []
    for c in CONTROLS:
        span = c.maximum - c.minimum
        step = 10 ** math.floor(math.log10(span / 100))
        out.append({"name": c.name, "min": c.minimum, "max": c.maximum, "default": c.default, "unit": c.unit,
                    "meaning": c.meaning, "step": step})
    return out


def _response(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
    return Response(status.value, status.phrase, headers, body)


def serve_static(connection: ServerConnection, request: Request) -> Response | None:
    """The page's files; None for `/ws` (the websocket handshake goes on)."""
    path = request.path.split("?", 1)[0]
    if path == "/ws":
        return None
    name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
    files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    if name not in files:
        return _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
    ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript",):
        ctype += "; charset=utf-8"
    return _response(HTTPStatus.OK, files[name].read_bytes(), ctype)


class Tab:
    """The server's side of one browser tab (one websocket)."""

    def __init__(self, demo: Demo, ws: ServerConnection) -> None:
        self.demo = demo
        self.ws = ws
        self.call: TabCall | None = None
        self.portrait: Portrait | None = None
        self.edits = Edits()
        self.opening = False                        # a portrait is being opened (counted as open)
        self._render: asyncio.Task | None = None    # the portrait's renders, off the message loop
        self._dirty = False                         # edits came during a render: one more

    async def send(self, message: dict) -> None:
        try:
            await self.ws.send(json.dumps(message))
        except ConnectionClosed:
            pass

    async def error(self, code: str, message: str) -> None:
        await self.send({"type": "error", "code": code, "message": message})

    async def run(self) -> None:
        await self.send({"type": "hello", "controls": control_table(), "stills": self.demo.still_names(),
                         "signaling": self.demo.signaling_url, "room": new_room()})
        try:
            async for text in self.ws:
                try:
                    message = parse_page_message(text)
                except PageMessageError as exc:
                    await self.error(exc.code, str(exc))
                    continue
                try:
                    await self.handle(message)
                except Exception:
                    log.exception("handling %s", message.type)
                    await self.error("internal", "Something went wrong on the server (see its log).")
        except ConnectionClosed:
            pass
        finally:
            if self._render is not None:
                self._render.cancel()
            await self.hang_up()

    async def handle(self, message: PageMessage) -> None:
        if isinstance(message, StartCall):
            await self.start_call(message)
        elif isinstance(message, HangUp):
            await self.hang_up()
            await self.send({"type": "ended", "text": "You left the call."})
        elif isinstance(message, SetEdits):
            await self.set_edits(message.edits)
        elif isinstance(message, OpenPortrait):
            await self.open_portrait(message)
        elif isinstance(message, Mute):
            if self.call is not None:
                self.call.set_muted(message.muted)

    async def set_edits(self, edits: Edits) -> None:
        self.edits = edits
        if self.call is not None:
            self.call.set_edits(edits)
        if self.portrait is not None:
            self.render_portrait()

    # -- call ----------------------------------------------------------------------------

    async def start_call(self, request: StartCall) -> None:
        room = request.room
        await self.hang_up()
        busy = self.demo.calls_open()
        if busy >= self.demo.max_calls:
            log.warning("refused a call in room %r: %d calls open, the limit (--max-calls)", room, busy)
            await self.error("busy", f"The demo server is already serving {busy} calls, as many as it takes "
                             "(--max-calls). Try again when one has ended.")
            return
        call = TabCall(self.demo.signaling_url, room, self.send, self.demo.basis, request.camera_fps,
                       synthesis=self.demo.synthesis)
        self.demo.calls.add(call)       # counted until its hang-up is done, not only until it begins
        call.set_edits(self.edits)
        self.call = call
        try:
            answer = await call.start(request.sdp)
        except SignalingError as exc:
            self.call = None
            await call.close()
            text = str(exc)
            if "already holds" in text:
                await self.error("room-full", f"Room '{room}' is full: two people are already in a call there. "
                                 "Pick another room name.")
            else:
                await self.error("signaling", f"Cannot start the call: {text}.")
            return
        except Exception as exc:    # noqa: BLE001 - an offer aiortc cannot take (no ICE ufrag, no rtcp-mux, ...)
            log.warning("refused the offer of a call in room %r: %s: %s", room, type(exc).__name__, exc)
            self.call = None
            await call.close()      # it may have joined the room already: it leaves it
            await self.error("browser-connection", "The browser's offer for the video connection could not be "
                             f"used ({type(exc).__name__}: {exc}).")
            return
        await self.send({"type": "answer", "sdp": answer, "id": request.id})
        waiting = not call.link.peer_in_room
        plain = guessable(room)
        text = f"In room '{room}'. " + ("Waiting for the other side to join..." if waiting
                                        else "Connecting to the other side...")
        if plain:
            text += (f" Careful: '{room}' is a name others could guess and join; "
                     "a random room (the one this page suggests) cannot be.")
        await self.send({"type": "joined", "room": room, "guessable": plain, "text": text, "id": request.id})

    async def hang_up(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            await call.close()

    # -- portrait ------------------------------------------------------------------------

    async def open_portrait(self, request: OpenPortrait) -> None:
        loop = asyncio.get_running_loop()
        busy = self.demo.portraits_open()
        if self.portrait is None and busy >= self.demo.max_portraits:
            log.warning("refused a portrait: %d open, the limit (--max-portraits)", busy)
            await self.error("busy", f"The demo server has {busy} portraits open, as many as it takes "
                             "(--max-portraits). Try again when another tab has closed.")
            return
        self.opening = True
        try:
            # off the event loop: a picture of up to MAX_PIXELS still takes a while to decode
            picture = await loop.run_in_executor(None, decode_image, self.picture_file(request))
            await self.send({"type": "status", "text": "Finding the face and coding the key frame..."})
            self.portrait = await loop.run_in_executor(None, Portrait, picture, self.demo.basis,
                                                       self.demo.synthesis)
        except PortraitError as exc:
            await self.error("no-face" if "No face" in str(exc) else "bad-picture", str(exc))
            return
        finally:
            self.opening = False
        p = self.portrait
        await self.send({"type": "portrait-ready", "crop": data_url(p.crop), "keyframe_bytes": p.keyframe_bytes,
                         "geometry_bytes": p.geometry_bytes,
                         "text": f"Key frame: {p.keyframe_bytes} bytes of VVC picture + {p.geometry_bytes} bytes "
                                 "of face geometry. Move the sliders to edit."})
        self.render_portrait()

    def picture_file(self, request: OpenPortrait) -> bytes:
        """The bytes of the still or the upload the page asks for; raises PortraitError."""
        if request.name is not None:
            path = self.demo.still_path(request.name)
            if path is None:
                raise PortraitError(f"There is no picture called {request.name!r} here.")
            return path.read_bytes()
        try:
            upload = request.upload()
        except ValueError:
            raise PortraitError("The uploaded file did not arrive intact.") from None
        if upload is None:
            raise PortraitError("Choose a picture first.")
        return upload

    def render_portrait(self) -> None:
        """Render the portrait with the newest edits, as a task beside the page's messages (a
        mute or a hang-up does not wait for it); slider moves during a render are merged into
        one more."""
        if self._render is not None and not self._render.done():
            self._dirty = True
            return
        self._render = asyncio.create_task(self._renders(), name="portrait")

    async def _renders(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.portrait is not None:
                self._dirty = False
                edits, portrait = self.edits, self.portrait
                picture = await loop.run_in_executor(None, portrait.render, edits)
                await self.send({"type": "portrait-frame", "image": data_url(picture), "values": edits.to_dict()})
                if not self._dirty:
                    break
        except Exception:
            log.exception("rendering the portrait")
            await self.error("internal", "Something went wrong on the server (see its log).")


class Demo:
    """The demo server.  `allow_origins`: other pages that may drive `/ws` (its own always
    may); `ssl_context`: serve HTTPS and `wss://` (`signaling.tls.server_context`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, signaling: str | None = None,
                 stills: Path | None = DEFAULT_STILLS, synthesis: Synthesis = Synthesis(),
                 allow_origins: Iterable[str] = (), ssl_context: ssl.SSLContext | None = None,
                 max_calls: int = DEFAULT_MAX_CALLS, max_portraits: int = DEFAULT_MAX_PORTRAITS) -> None:
        if max_calls < 1 or max_portraits < 1:
            raise ValueError("max_calls and max_portraits must be at least 1")
        self.host = host
        self.port = port
        self.signaling_url = signaling
        self.stills = stills
        self.synthesis = synthesis
        self.ssl_context = ssl_context
        self.max_calls = max_calls
        self.max_portraits = max_portraits
        self.origins = OriginPolicy(allow_origins)
        self.basis = FaceBasis.load()
        self.tabs: set[Tab] = set()
        self.calls: set[TabCall] = set()     # started and not yet wholly hung up
        self._signaling: SignalingServer | None = None
        self._server = None

    def still_names(self) -> list[str]:
        if self.stills is None or not self.stills.is_dir():
            return []
        return sorted(p.name for p in self.stills.iterdir() if p.suffix.lower() in STILL_SUFFIXES and p.is_file())

    def still_path(self, name: str) -> Path | None:
        return self.stills / name if name in self.still_names() else None

    async def __aenter__(self) -> Demo:
        if self.signaling_url is None:
            self._signaling = SignalingServer("127.0.0.1", 0, ServerConfig())
            await self._signaling.__aenter__()
            self.signaling_url = f"ws://127.0.0.1:{self._signaling.port}"
            log.info("signaling server in process at %s", self.signaling_url)
        self._server = await serve(self._handle, self.host, self.port, process_request=self._process_request,
                                   max_size=MAX_MESSAGE, ping_interval=20, ping_timeout=20, ssl=self.ssl_context)
        self.port = self._server.sockets[0].getsockname()[1]
        self.origins.allow(page_origins(self.scheme, self.page_hosts(), self.port))
        log.info("pages that may use /ws: %s", ", ".join(sorted(self.origins.allowed)))
        return self

    async def __aexit__(self, *exc) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._signaling is not None:
            await self._signaling.__aexit__(None, None, None)

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.port}/"

    def page_hosts(self) -> list[str]:
        """The host names the demo's own page can have: the one it serves at, loopback's,
        and this machine's names when it serves every interface."""
        hosts = [] if self.host in _WILDCARD_HOSTS else [self.host]
        hosts += [h.strip("[]") for h in LOOPBACK_HOSTS]
        if self.host in _WILDCARD_HOSTS:
            hosts += [socket.gethostname()]      # (not getfqdn: a reverse DNS lookup on the event loop)
        return hosts

    def calls_open(self) -> int:
        """Calls in progress or still hanging up (a hang-up takes up to 3 s: its place is
        free once it is done, so that --max-calls holds then too)."""
        self.calls = {call for call in self.calls if not call.finished}
        return len(self.calls)

    def portraits_open(self) -> int:
        """Tabs with a portrait open or being opened."""
        return sum(1 for tab in self.tabs if tab.portrait is not None or tab.opening)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """The page's files, or, for `/ws`, the origin check before the handshake."""
        response = serve_static(connection, request)
        if response is not None:
            return response
        return self.origins.process_request(connection, request)

    async def _handle(self, ws: ServerConnection) -> None:
        tab = Tab(self, ws)
        self.tabs.add(tab)
        try:
            await tab.run()
        finally:
            self.tabs.discard(tab)
