"""Who may use the two websocket servers: Origin checks, rooms that cannot be guessed, TLS,
the web demo's limit on calls (docs/signaling.md, "Access"; docs/web_demo.md).

Real servers on loopback, real websockets clients, a real aiortc offer, and Debian's
Chromium (Playwright, as in tests/test_web_demo.py) for the pages: a page served from
another port (another origin) tries to join a signaling room and to drive the demo's
`/ws`, and is refused; a page from an allow-listed origin gets through; the demo served
over HTTPS talks `wss://`.  Certificates are made by `openssl req` in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from conftest import CHROMIUM, needs_browser, sync_playwright
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from signaling import ServerConfig, SignalingServer

ROOT = Path(__file__).resolve().parents[1]
STILLS = ROOT.parent / "shared" / "data" / "stills"
TIMEOUT = 20.0
EVIL = "http://evil.example"

def run(coro: Coroutine[Any, Any, Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, TIMEOUT)

    return asyncio.run(bounded())


async def recv_json(ws, timeout: float = 10.0) -> dict:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def refused_status(url: str, origin: str) -> int:
    """The HTTP status a websocket from a page of `origin` gets (101 when it opens)."""
    try:
        async with connect(url, origin=origin, open_timeout=5, ping_interval=None):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


# -- Origin: programs in, other pages out -------------------------------------------------------

def test_signaling_refuses_a_browser_origin_and_accepts_programs(caplog):
    """A program (no Origin) joins; a page of any origin is refused with 403 by default, and
    the refusal is one log line."""

    async def body():
        async with SignalingServer("127.0.0.1", 0, ServerConfig(close_timeout=1)) as server:
            url = f"ws://127.0.0.1:{server.port}"
            assert await refused_status(url, EVIL) == 403
            assert await refused_status(url, f"http://127.0.0.1:{server.port}") == 403
            assert server.room_sizes() == {}
            async with connect(url, ping_interval=None) as ws:          # no Origin header
                await ws.send(json.dumps({"type": "join", "room": "program"}))
                assert (await recv_json(ws))["type"] == "joined"

    with caplog.at_level(logging.INFO, logger="signaling"):
        run(body())
    refusals = [r.getMessage() for r in caplog.records if "refused a websocket" in r.getMessage()]
    assert len(refusals) == 2 and "'http://evil.example' is not allowed" in refusals[0], refusals


def test_signaling_accepts_the_origins_it_is_given():
    async def body():
        friend = "https://friend.example:8443"
        config = ServerConfig(close_timeout=1, allowed_origins=(friend,))
        async with SignalingServer("127.0.0.1", 0, config) as server:
            url = f"ws://127.0.0.1:{server.port}"
            assert await refused_status(url, friend) == 101
            assert await refused_status(url, "HTTPS://Friend.Example:8443") == 101     # as browsers may spell it
            for other in ("https://friend.example", "http://friend.example:8443", "null", EVIL, "garbage"):
                assert await refused_status(url, other) == 403, other

    run(body())
    with pytest.raises(ValueError, match="not an origin"):
        ServerConfig(allowed_origins=("friend.example",))


def test_two_origin_headers_are_refused_without_a_traceback(caplog):
    """A handshake with two Origin headers (an allowed one among them) is refused with 403
    and one warning, not a 500 and a logged traceback (websockets' headers.get raises)."""
    async def body():
        friend = "https://friend.example"
        async with SignalingServer("127.0.0.1", 0, ServerConfig(close_timeout=1, allowed_origins=(friend,))) as s:
            try:
                async with connect(f"ws://127.0.0.1:{s.port}", ping_interval=None, open_timeout=5,
                                   additional_headers=[("Origin", friend), ("Origin", EVIL)]):
                    return 101
            except InvalidStatus as exc:
                return exc.response.status_code

    with caplog.at_level(logging.INFO):
        assert run(body()) == 403
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]


def test_web_demo_ws_refuses_other_pages_and_accepts_its_own(caplog):
    from web_demo.server import Demo

    async def body():
        async with Demo(port=0, stills=None) as demo:
            ws_url = f"ws://127.0.0.1:{demo.port}/ws"
            assert await refused_status(ws_url, EVIL) == 403
            for own in (f"http://127.0.0.1:{demo.port}", f"http://localhost:{demo.port}"):
                async with connect(ws_url, origin=own, ping_interval=None) as ws:    # type: ignore[arg-type]
                    assert (await recv_json(ws))["type"] == "hello"
            async with connect(ws_url, ping_interval=None) as ws:                   # a program
                assert (await recv_json(ws))["type"] == "hello"

    with caplog.at_level(logging.INFO):
        run(body())
    assert any("refused a websocket" in r.getMessage() and "evil.example" in r.getMessage()
               for r in caplog.records)


# -- rooms ----------------------------------------------------------------------------------------

def test_room_names_made_here_cannot_be_guessed_and_typed_ones_are_warned_about(caplog):
    from signaling.protocol import ROOM_PATTERN
    from signaling.rooms import guessable, new_room

    rooms = {new_room() for _ in range(200)}
    assert len(rooms) == 200
    assert all(ROOM_PATTERN.fullmatch(r) and not guessable(r) and not r.startswith("-") for r in rooms)
    assert all(guessable(r) for r in ("demo", "call-12345", "web4242", "a" * 64, "abababababababababababab"))
    assert not guessable("correct-horse-battery-staple")
    out = subprocess.run([sys.executable, "-m", "signaling.rooms"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30, check=True).stdout.strip()
    assert ROOM_PATTERN.fullmatch(out) and not guessable(out)

    from signaling.client import SignalingClient

    async def body():
        async with SignalingServer("127.0.0.1", 0, ServerConfig(close_timeout=1)) as server:
            for room in ("demo", new_room()):
                client = SignalingClient(f"ws://127.0.0.1:{server.port}", timeout=5)
                await client.join(room)
                await client.close()

    with caplog.at_level(logging.WARNING, logger="signaling"):
        run(body())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "room 'demo' can be guessed" in warnings[0], warnings


# -- the demo's limit on calls --------------------------------------------------------------------

async def browser_like_offer() -> tuple[Any, str]:
    """An aiortc offer with a video and an audio transceiver, as the page sends."""
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="sendrecv")
    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def test_web_demo_refuses_calls_over_its_limit_in_words():
    from signaling.rooms import new_room
    from web_demo.server import Demo

    async def body():
        async with Demo(port=0, stills=None, max_calls=1) as demo:
            url = f"ws://127.0.0.1:{demo.port}/ws"
            pc1, offer1 = await browser_like_offer()
            pc2, offer2 = await browser_like_offer()
            try:
                async with connect(url, ping_interval=None) as a, connect(url, ping_interval=None) as b:
                    for ws in (a, b):
                        assert (await recv_json(ws))["type"] == "hello"
                    await a.send(json.dumps({"type": "call", "room": new_room(), "sdp": offer1}))
                    await asyncio.sleep(0.2)                 # a's call is starting: its slot is taken
                    await b.send(json.dumps({"type": "call", "room": new_room(), "sdp": offer2}))
                    busy = await recv_json(b)
                    assert busy["type"] == "error" and busy["code"] == "busy", busy
                    assert "already serving 1 calls" in busy["message"]
                    assert (await recv_json(a, 30))["type"] == "answer"
                    joined = await recv_json(a)
                    assert joined["type"] == "joined" and joined["guessable"] is False, joined
                    assert demo.calls_open() == 1
                    await a.send('{"type": "hangup"}')
                    assert (await recv_json(a))["type"] == "ended"
                    assert demo.calls_open() == 0
                    await b.send(json.dumps({"type": "call", "room": "demo", "sdp": offer2}))   # a slot again
                    assert (await recv_json(b, 30))["type"] == "answer"
                    joined = await recv_json(b)
                    assert joined["guessable"] is True and "others could guess" in joined["text"], joined
            finally:
                await pc1.close()
                await pc2.close()

    run(body())


# -- TLS ------------------------------------------------------------------------------------------

def test_tls_round_trip_between_command_line_peers(tmp_path):
    """`python -m signaling --cert --key` serves wss://; a client that does not trust the
    certificate is told so in one line, one given it with --cafile joins, and two such
    peers relay an offer."""
    import argparse

    from live.cli import add_connection_options
    from signaling import Offer
    from signaling.client import SignalingClient, SignalingError
    from signaling.tls import trusted

    cert, key = make_cert(tmp_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    half = subprocess.run([sys.executable, "-m", "signaling", "--port", "0", "--cert", str(cert)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=30)
    assert half.returncode == 2 and "--cert and --key go together" in half.stderr and "Traceback" not in half.stderr
    proc = subprocess.Popen([sys.executable, "-m", "signaling", "--port", "0", "--cert", str(cert), "--key", str(key)],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        line = ""
        deadline = time.monotonic() + TIMEOUT
        while "signaling server listening on" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
            assert line, "the signaling server exited"
        url = line.split("listening on ", 1)[1].split()[0]
        assert url.startswith("wss://127.0.0.1:"), line

        parser = argparse.ArgumentParser()
        add_connection_options(parser)
        room = "tls-round-trip-" + os.urandom(6).hex()

        async def body():
            with pytest.raises(SignalingError, match="certificate this machine does not trust"):
                await SignalingClient(url, timeout=5).join(room)
            with pytest.raises(SignalingError):                  # plain ws:// to a TLS server
                await SignalingClient(url.replace("wss://", "ws://"), timeout=5).join(room)
            args = parser.parse_args(["--signaling", url, "--room", room, "--cafile", str(cert)])
            assert trusted() == (str(cert),)
            a, b = SignalingClient(args.signaling, timeout=5), SignalingClient(args.signaling, timeout=5)
            assert (await a.join(args.room)).peers == 1
            assert (await b.join(args.room)).initiator is True
            await b.send(Offer("v=0 over tls"))
            got = []
            while len(got) < 2:
                got.append(await asyncio.wait_for(a.receive(), 5))
            assert [type(m).__name__ for m in got] == ["PeerJoined", "Offer"] and got[1].sdp == "v=0 over tls"
            await a.close()
            await b.close()

        run(body())
    finally:
        from signaling import tls
        tls._TRUSTED.clear()
        os.killpg(proc.pid, signal.SIGTERM)
        _, rest = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in rest, rest


# -- pages in Chromium ----------------------------------------------------------------------------

PROBE_PAGE = b"""<!doctype html><meta charset="utf-8"><title>another site</title>
<script>
// open a websocket, send `first` once it opens; the result (with the type of each message
// received) is settled by the first message or the close
function probe(url, first) {
  return new Promise((resolve) => {
    const r = { opened: false, messages: [], closed: null };
    const ws = new WebSocket(url);
    ws.onopen = () => { r.opened = true; if (first) ws.send(first); };
    ws.onmessage = (e) => { r.messages.push(JSON.parse(e.data).type); resolve(r); };
    ws.onclose = (e) => { r.closed = e.code; resolve(r); };
    setTimeout(() => resolve(r), 10000);
  });
}
</script>"""


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server name
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PROBE_PAGE)))
        self.end_headers()
        self.wfile.write(PROBE_PAGE)

    def log_message(self, *args):
        pass


class Site:
    """A page on another port of loopback: another origin than the servers'."""

    def __init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Page)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LoopThread:
    """An asyncio loop in a thread, serving while the sync Playwright API drives the browser."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def chromium():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, timeout=30000,
                                    args=["--no-sandbox", "--headless=new", "--disable-gpu", "--no-first-run",
                                          "--disable-background-networking", "--disable-component-update"])
        yield browser
        browser.close()


@pytest.fixture
def servers():
    """A loop thread with a signaling server and a demo started by the test (closed after)."""
    loop = LoopThread()
    started: list[Any] = []

    def start(server):
        loop.run(server.__aenter__())
        started.append(server)
        return server

    yield loop, start
    for server in reversed(started):
        loop.run(server.__aexit__(None, None, None))
    loop.close()


def probe(browser, page_url: str, url: str, first: str | None) -> dict:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(page_url)
        return page.evaluate("([u, f]) => probe(u, f)", [url, first])
    finally:
        context.close()


@needs_browser
def test_a_page_from_another_origin_can_neither_join_a_room_nor_drive_the_demo(chromium, servers):
    from web_demo.server import Demo

    loop, start = servers
    site = Site()
    try:
        signaling = start(SignalingServer("127.0.0.1", 0, ServerConfig(close_timeout=1)))
        demo = start(Demo(port=0, stills=STILLS))
        join = json.dumps({"type": "join", "room": "demo"})
        portrait = json.dumps({"type": "portrait", "name": "lp__d30.jpg"})
        r = probe(chromium, site.origin, f"ws://127.0.0.1:{signaling.port}", join)
        assert not r["opened"] and r["messages"] == [] and r["closed"] == 1006, r
        assert signaling.room_sizes() == {}
        r = probe(chromium, site.origin, f"ws://127.0.0.1:{demo.port}/ws", portrait)
        assert not r["opened"] and r["messages"] == [] and r["closed"] == 1006, r
        assert demo.tabs == set()
    finally:
        site.close()


@needs_browser
def test_a_page_from_an_allowed_origin_gets_through(chromium, servers):
    from web_demo.server import Demo

    loop, start = servers
    site = Site()
    try:
        signaling = start(SignalingServer("127.0.0.1", 0, ServerConfig(close_timeout=1,
                                                                        allowed_origins=(site.origin,))))
        demo = start(Demo(port=0, stills=None, allow_origins=[site.origin]))
        r = probe(chromium, site.origin, f"ws://127.0.0.1:{signaling.port}",
                  json.dumps({"type": "join", "room": "friends-room-0123456789"}))
        assert r["opened"] and r["messages"] == ["joined"], r
        r = probe(chromium, site.origin, f"ws://127.0.0.1:{demo.port}/ws", None)
        assert r["opened"] and r["messages"] == ["hello"], r
    finally:
        site.close()


@needs_browser
def test_the_demo_page_suggests_a_room_nobody_can_guess(chromium, servers):
    from signaling.rooms import guessable
    from web_demo.server import Demo

    loop, start = servers
    demo = start(Demo(port=0, stills=None))
    rooms = []
    for _ in range(2):
        context = chromium.new_context()
        page = context.new_page()
        page.goto(demo.url)
        page.wait_for_function("document.getElementById('room').value !== ''", timeout=20000)
        room = page.locator("#room").input_value()
        assert not guessable(room), room
        assert room in page.locator("#share-link").inner_text(), "the link to share names the room"
        rooms.append(room)
        context.close()
    assert rooms[0] != rooms[1], rooms
    context = chromium.new_context()
    page = context.new_page()
    page.goto(demo.url + "?room=typed-by-hand")                    # a link's room wins
    page.wait_for_function("document.querySelectorAll('#sliders input').length > 0", timeout=20000)
    assert page.locator("#room").input_value() == "typed-by-hand"
    context.close()


@needs_browser
def test_the_demo_over_https_talks_wss(chromium, servers, tmp_path):
    from signaling.tls import server_context
    from web_demo.server import Demo

    cert, key = make_cert(tmp_path)
    loop, start = servers
    demo = start(Demo(port=0, stills=None, ssl_context=server_context(cert, key)))
    assert demo.url.startswith("https://127.0.0.1:")
    context = chromium.new_context(ignore_https_errors=True)          # the self-signed certificate
    try:
        page = context.new_page()
        page.goto(demo.url)
        page.wait_for_function("document.querySelectorAll('#sliders input').length > 0", timeout=20000)
        assert page.evaluate("ws.url").startswith(f"wss://127.0.0.1:{demo.port}/")
        assert page.locator("#share-link").inner_text().startswith(demo.url)
    finally:
        context.close()
