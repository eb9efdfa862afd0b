"""Tests of the signaling server: a real server on 127.0.0.1, real websockets clients.

Every test runs its coroutine under a hard timeout, and every receive has its
own timeout, so a broken server fails a test instead of hanging the suite.
Plain pytest with ``asyncio.run`` (no pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from signaling import (
    Answer,
    Bye,
    Candidate,
    Error,
    ErrorCode,
    Join,
    Joined,
    Offer,
    PeerJoined,
    PeerLeft,
    ProtocolError,
    ServerConfig,
    SignalingServer,
    encode,
    parse_client_message,
    parse_server_message,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
RECV_TIMEOUT = 5.0
TEST_TIMEOUT = 20.0

SDP_OFFER = (
    "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    "c=IN IP4 0.0.0.0\r\na=ice-ufrag:Ab12\r\na=ice-pwd:secretsecretsecretsecret\r\n"
    "a=mid:0\r\na=sctp-port:5000\r\na=x-note:visage \u00e9\u00e8 \U0001f600\r\n"
)
SDP_ANSWER = SDP_OFFER.replace("4611731400430051336", "1").replace("Ab12", "Cd34")
CANDIDATE = {
    "candidate": "candidate:1 1 UDP 2122252543 127.0.0.1 54321 typ host",
    "sdpMid": "0",
    "sdpMLineIndex": 0,
    "usernameFragment": "Ab12",
}


# --------------------------------------------------------------------------
# Helpers


def run(test: Callable[[], Awaitable[None]], timeout: float = TEST_TIMEOUT) -> None:
    """Run an async test body under a hard timeout."""

    async def bounded() -> None:
        await asyncio.wait_for(test(), timeout)

    asyncio.run(bounded())


class Harness:
    """A started server plus the clients a test opened (all closed on exit)."""

    def __init__(self, server: SignalingServer) -> None:
        self.server = server
        self.clients: list[ClientConnection] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}"

    async def connect(self) -> ClientConnection:
        ws = await connect(self.url, open_timeout=RECV_TIMEOUT, close_timeout=1, ping_interval=None)
        self.clients.append(ws)
        return ws

    async def join(self, room: str) -> tuple[ClientConnection, dict[str, Any]]:
        ws = await self.connect()
        await send_json(ws, {"type": "join", "room": room})
        return ws, await recv_json(ws)

    async def pair(self, room: str) -> tuple[ClientConnection, ClientConnection]:
        """Two peers in ``room``; the joined / peer-joined messages are checked and consumed."""
        first, joined_first = await self.join(room)
        assert joined_first == {"type": "joined", "room": room, "peers": 1, "initiator": False}
        second, joined_second = await self.join(room)
        assert joined_second == {"type": "joined", "room": room, "peers": 2, "initiator": True}
        assert await recv_json(first) == {"type": "peer-joined"}
        return first, second

    async def wait_rooms(self, expected: dict[str, int]) -> None:
        deadline = time.monotonic() + RECV_TIMEOUT
        while self.server.room_sizes() != expected:
            assert time.monotonic() < deadline, f"rooms {self.server.room_sizes()} != {expected}"
            await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def harness(**config: Any) -> AsyncIterator[Harness]:
    settings: dict[str, Any] = {"close_timeout": 1.0}
    settings.update(config)
    async with SignalingServer("127.0.0.1", 0, ServerConfig(**settings)) as server:
        h = Harness(server)
        try:
            yield h
        finally:
            await asyncio.gather(*(ws.close() for ws in h.clients), return_exceptions=True)


async def send_json(ws: ClientConnection, obj: Any) -> None:
    await ws.send(json.dumps(obj))


async def recv_json(ws: ClientConnection, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
    text = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(text, str), f"server sent a binary frame: {text!r}"
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


async def expect_error(ws: ClientConnection, code: str) -> dict[str, Any]:
    message = await recv_json(ws)
    assert message["type"] == "error", message
    assert message["code"] == code, message
    assert isinstance(message["message"], str) and message["message"], message
    return message


async def assert_silent(ws: ClientConnection, seconds: float = 0.2) -> None:
    """Nothing arrives on ``ws`` for ``seconds``."""
    try:
        message = await asyncio.wait_for(ws.recv(), seconds)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {message!r}")


async def expect_closed(ws: ClientConnection, code: int) -> None:
    """The server closes ``ws`` with ``code`` (any messages before that are ignored)."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await asyncio.wait_for(ws.recv(), RECV_TIMEOUT)
    assert info.value.rcvd is not None, f"no close frame received: {info.value}"
    assert info.value.rcvd.code == code, info.value


async def exchange(a: ClientConnection, b: ClientConnection) -> None:
    """Offer from b, answer from a, candidates both ways: all relayed exactly."""
    offer = {"type": "offer", "sdp": SDP_OFFER}
    await send_json(b, offer)
    assert await recv_json(a) == offer
    answer = {"type": "answer", "sdp": SDP_ANSWER}
    await send_json(a, answer)
    assert await recv_json(b) == answer
    for sender, receiver in ((a, b), (b, a)):
        for candidate in (CANDIDATE, None):
            message = {"type": "candidate", "candidate": candidate}
            await send_json(sender, message)
            assert await recv_json(receiver) == message


# --------------------------------------------------------------------------
# Protocol module


def test_protocol_parses_client_messages() -> None:
    assert parse_client_message('{"type":"join","room":"Room_1.a-b"}') == Join("Room_1.a-b")
    assert parse_client_message(json.dumps({"type": "offer", "sdp": SDP_OFFER})) == Offer(SDP_OFFER)
    assert parse_client_message('{"type":"answer","sdp":""}') == Answer("")
    assert parse_client_message(json.dumps({"type": "candidate", "candidate": CANDIDATE})) == Candidate(CANDIDATE)
    assert parse_client_message('{"type":"candidate","candidate":null}') == Candidate(None)
    assert parse_client_message('{"type":"bye"}') == Bye()
    for message in (Join("r"), Offer(SDP_OFFER), Answer("x"), Candidate(CANDIDATE), Candidate(None), Bye()):
        assert parse_client_message(encode(message)) == message


def test_protocol_parses_server_messages() -> None:
    for message in (
        Joined("r", 2, True),
        PeerJoined(),
        PeerLeft(),
        Error(ErrorCode.ROOM_FULL, "full"),
        Offer("v=0"),
        Candidate(None),
        Bye(),
    ):
        assert parse_server_message(encode(message)) == message
    assert json.loads(encode(Error(ErrorCode.RATE_LIMITED, "slow down"))) == {
        "type": "error",
        "code": "rate-limited",
        "message": "slow down",
    }


@pytest.mark.parametrize(
    "data, words",
    [
        ("not json", "invalid JSON"),
        ("[1, 2]", "JSON object, got array"),
        ('{"room": "r"}', "no 'type'"),
        ('{"type": "dance"}', "unknown message type 'dance'"),
        ('{"type": "join"}', "missing the 'room'"),
        ('{"type": "join", "room": "a/b"}', "invalid room name"),
        ('{"type": "join", "room": "' + "a" * 65 + '"}', "invalid room name"),
        ('{"type": "offer", "sdp": 5}', "'sdp' must be a string, got number"),
        ('{"type": "bye", "x": 1}', "unexpected field(s) 'x'"),
        ('{"type": "candidate", "candidate": [1]}', "object or null"),
        ('{"type": "candidate", "candidate": {"sdpMLineIndex": "0"}}', "candidate.sdpMLineIndex"),
        (b'{"type": "bye"}', "binary frames"),
        ("[" * 100_000, "invalid JSON"),
    ],
)
def test_protocol_errors_say_what_is_wrong(data: str | bytes, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(data)
    assert words in str(info.value)
    assert info.value.code is ErrorCode.BAD_MESSAGE


def test_protocol_wire_text_is_compact_json_in_field_order() -> None:
    assert encode(Join("demo")) == '{"type":"join","room":"demo"}'
    assert encode(Joined("demo", 1, initiator=False)) == '{"type":"joined","room":"demo","peers":1,"initiator":false}'
    assert encode(Candidate(None)) == '{"type":"candidate","candidate":null}'
    assert encode(Offer("v=0 \u00e9\r\n")) == '{"type":"offer","sdp":"v=0 \u00e9\\r\\n"}'
    assert encode(Error(ErrorCode.NOT_JOINED, "x")) == '{"type":"error","code":"not-joined","message":"x"}'
    assert Join("demo").type == "join" and PeerLeft().type == "peer-left"


def test_protocol_candidate_keeps_the_fields_it_does_not_know() -> None:
    candidate = {**CANDIDATE, "relayProtocol": "udp", "priority": 5, "weight": 0.5, "x": True, "y": None}
    text = json.dumps({"type": "candidate", "candidate": candidate}, separators=(",", ":"))
    assert encode(parse_client_message(text)) == text
    assert parse_client_message('{"type":"candidate","candidate":{}}') == Candidate({})


@pytest.mark.parametrize(
    "data, words",
    [
        ('{"type": "join", "room": ""}', "invalid room name"),
        ('{"type": "join", "room": "room\\n"}', "invalid room name"),
        ('{"type": "join", "room": 5}', "'room' must be a string, got number"),
        ('{"type": "offer", "sdp": null}', "'sdp' must be a string, got null"),
        ('{"type": "offer"}', "missing the 'sdp' field"),
        ('{"type": "candidate"}', "missing the 'candidate' field"),
        ('{"type": "candidate", "candidate": {"candidate": 5}}', "'candidate.candidate' must be a string, got number"),
        ('{"type": "candidate", "candidate": {"sdpMid": 0}}', "'candidate.sdpMid' must be a string or null"),
        ('{"type": "candidate", "candidate": {"sdpMLineIndex": true}}', "'candidate.sdpMLineIndex' must be an integer"),
        ('{"type": "candidate", "candidate": {"x": {"y": 1}}}', "must be a string, a number, a boolean or null"),
        ('{"type": 7}', "'type' must be a string"),
        ('{"type": "' + "x" * 1000 + '"}', "unknown message type 'xxxxxxxx"),
        ('{"type": "joined", "room": "r", "peers": 1, "initiator": true}', "unknown message type 'joined'"),
        ('{"type": "bye"} {"type": "bye"}', "invalid JSON: trailing characters"),
        ("", "invalid JSON"),
    ],
)
def test_protocol_refuses_each_limit_in_words(data: str, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_client_message(data)
    assert words in str(info.value)
    assert len(str(info.value)) < 200


@pytest.mark.parametrize(
    "data, words",
    [
        ('{"type": "joined", "room": "r", "peers": 3, "initiator": true}', "'peers' must be an integer <= 2"),
        ('{"type": "joined", "room": "r", "peers": 0, "initiator": true}', "'peers' must be an integer >= 1"),
        ('{"type": "joined", "room": "r", "peers": 1, "initiator": 1}', "'initiator' must be a boolean"),
        ('{"type": "error", "code": "oops", "message": "m"}', "'code': invalid enum value 'oops'"),
        ('{"type": "join", "room": "r"}', "unknown message type 'join'"),
    ],
)
def test_protocol_refuses_bad_server_messages(data: str, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        parse_server_message(data)


@pytest.mark.parametrize(
    "nested",
    [
        '{"type": "candidate", "candidate": {"x": ' + "[" * 100_000 + "]" * 100_000 + "}}",
        '{"candidate": ' + "[" * 100_000 + "]" * 100_000 + ', "type": "candidate"}',   # skipped before the type
        '{"type": "offer", "sdp": "v=0", "x": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}",
    ],
)
def test_protocol_refuses_deeply_nested_json_cleanly(nested: str) -> None:
    for parse in (parse_client_message, parse_server_message):
        with pytest.raises(ProtocolError, match="invalid JSON: nested too deeply"):
            parse(nested)


# --------------------------------------------------------------------------
# Server


def test_two_peers_join_and_relay_exactly() -> None:
    async def body() -> None:
        async with harness() as h:
            a, b = await h.pair("call-1")
            assert h.server.room_sizes() == {"call-1": 2}
            await exchange(a, b)
            await send_json(b, {"type": "bye"})
            assert await recv_json(a) == {"type": "bye"}
            # Nothing is echoed back to a sender.
            await assert_silent(b, 0.1)
            await assert_silent(a, 0.1)

    run(body)


def test_the_log_never_names_a_room(caplog: pytest.LogCaptureFixture) -> None:
    """A room's name is its only key: the server's log says a hash of it."""
    from signaling.server import room_label

    async def body() -> None:
        async with harness() as h:
            a, b = await h.pair("k3y-of-the-room-5521")
            await a.close()
            await h.wait_rooms({"k3y-of-the-room-5521": 1})

    with caplog.at_level(logging.DEBUG, logger="signaling.server"):
        run(body)
    assert "k3y-of-the-room" not in caplog.text and room_label("k3y-of-the-room-5521") in caplog.text


def test_third_peer_gets_room_full_and_the_pair_is_unaffected() -> None:
    async def body() -> None:
        async with harness() as h:
            a, b = await h.pair("r")
            c, reply = await h.join("r")
            assert reply["type"] == "error" and reply["code"] == "room-full", reply
            await expect_closed(c, 1008)
            assert h.server.room_sizes() == {"r": 2}
            await exchange(a, b)
            # Neither member heard anything about the rejected peer.
            await assert_silent(a, 0.1)
            await assert_silent(b, 0.1)

    run(body)


GARBAGE: list[str | bytes] = [
    "not json",
    "[1, 2]",
    '"just a string"',
    "null",
    '{"type": "dance"}',
    '{"room": "r"}',
    '{"type": 5}',
    '{"type": "join"}',
    '{"type": "join", "room": ""}',
    '{"type": "join", "room": "a/b"}',
    '{"type": "join", "room": "' + "a" * 65 + '"}',
    '{"type": "join", "room": "r", "extra": 1}',
    b"\x00\x01binary frame",
    "[" * 10_000,
    '{"type": "joined", "room": "r", "peers": 1, "initiator": true}',
    '{"type": "offer", "sdp": 5}',
    '{"type": "candidate"}',
    '{"type": "candidate", "candidate": "x"}',
    '{"candidate": ' + "[" * 20_000 + "]" * 20_000 + ', "type": "candidate"}',   # nested before the type
    '{"type": "candidate", "candidate": {"x": ' + "[" * 20_000 + "]" * 20_000 + "}}",
]


def test_garbage_gets_bad_message_and_the_server_keeps_serving() -> None:
    async def body() -> None:
        async with harness(max_bad_messages=100) as h:
            a, b = await h.pair("pair")
            g = await h.connect()
            for data in GARBAGE:
                await g.send(data)
                await expect_error(g, "bad-message")
            # Relaying before joining is refused with its own code.
            await send_json(g, {"type": "offer", "sdp": "v=0"})
            await expect_error(g, "not-joined")
            # The same connection can still join and talk.
            first_g, joined = await h.join("g")
            assert joined["peers"] == 1
            await send_json(g, {"type": "join", "room": "g"})
            joined = await recv_json(g)
            assert joined == {"type": "joined", "room": "g", "peers": 2, "initiator": True}
            assert await recv_json(first_g) == {"type": "peer-joined"}
            # Joining twice and relaying a non-relay type are errors; nothing leaks to the peer.
            await send_json(g, {"type": "join", "room": "g"})
            assert "already joined" in (await expect_error(g, "bad-message"))["message"]
            await send_json(g, {"type": "peer-joined"})
            await expect_error(g, "bad-message")
            await assert_silent(first_g, 0.1)
            await exchange(first_g, g)
            # The other room never noticed.
            await exchange(a, b)
            await assert_silent(a, 0.1)

    run(body)


def test_too_many_bad_messages_close_the_connection() -> None:
    async def body() -> None:
        async with harness(max_bad_messages=5) as h:
            a, b = await h.pair("r")
            for _ in range(4):
                await b.send("nope")
                await expect_error(b, "bad-message")
            await b.send("nope")
            await expect_error(b, "bad-message")
            await expect_closed(b, 1008)
            assert await recv_json(a) == {"type": "peer-left"}

    run(body)


def test_oversized_message_disconnects_only_that_client() -> None:
    async def body() -> None:
        limit = 4096
        async with harness(max_message_bytes=limit) as h:
            a, b = await h.pair("big")
            x, y = await h.pair("other")
            # Just under the limit is fine.
            offer = {"type": "offer", "sdp": "v" * (limit - 40)}
            assert len(json.dumps(offer)) <= limit
            await send_json(b, offer)
            assert await recv_json(a) == offer
            # Over it: that client is closed with 1009, its peer hears peer-left.
            await send_json(b, {"type": "offer", "sdp": "v" * (2 * limit)})
            await expect_closed(b, 1009)
            assert await recv_json(a) == {"type": "peer-left"}
            await h.wait_rooms({"big": 1, "other": 2})
            # Everyone else keeps being served.
            await exchange(x, y)
            c, joined = await h.join("big")
            assert joined == {"type": "joined", "room": "big", "peers": 2, "initiator": True}
            assert await recv_json(a) == {"type": "peer-joined"}
            await exchange(a, c)

    run(body)


def test_vanished_peer_is_removed_and_the_other_gets_peer_left() -> None:
    async def body() -> None:
        async with harness() as h:
            a, b = await h.pair("r")
            b.transport.abort()  # TCP reset, no close frame, no bye
            assert await recv_json(a) == {"type": "peer-left"}
            await h.wait_rooms({"r": 1})

    run(body)


def test_a_connection_that_joins_no_room_is_closed_and_frees_its_place() -> None:
    """A client that connects and never joins (it answers pings, so keepalive keeps it) is
    closed after `join_timeout`: a stranger cannot hold every `max_connections` place."""
    async def body() -> None:
        async with harness(join_timeout=0.5, max_connections=2) as h:
            idle = [await h.connect(), await h.connect()]
            for ws in idle:
                await expect_closed(ws, 1008)
            a, b = await h.pair("r")                   # both places free again
            await asyncio.sleep(0.8)                   # and a peer that joined is not closed
            await send_json(a, {"type": "offer", "sdp": "v=0"})
            assert (await recv_json(b))["type"] == "offer"

    run(body)


def test_one_address_cannot_take_every_place() -> None:
    """Past `max_connections_per_address` connections from one address, the handshake is
    refused with HTTP 503 in words; a place freed there can be taken again."""
    async def body() -> None:
        async with harness(max_connections_per_address=2) as h:
            a, b = await h.pair("r")
            with pytest.raises(InvalidStatus) as refused:
                await h.connect()
            assert refused.value.response.status_code == 503
            assert b"from your address" in refused.value.response.body
            await a.close()
            deadline = time.monotonic() + RECV_TIMEOUT
            while h.server.connections > 1:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            c, joined = await h.join("r")
            assert joined["peers"] == 2

    run(body)


def test_silent_peer_is_dropped_by_keepalive() -> None:
    async def body() -> None:
        async with harness(ping_interval=0.2, ping_timeout=0.3, close_timeout=0.3) as h:
            a, b = await h.pair("r")
            b.transport.pause_reading()  # TCP stays up, but b never answers a ping again
            started = time.monotonic()
            assert await recv_json(a) == {"type": "peer-left"}
            assert time.monotonic() - started < 3.0
            await h.wait_rooms({"r": 1})
            # a itself answers pings and stays connected.
            await asyncio.sleep(0.7)
            c, joined = await h.join("r")
            assert joined["initiator"] is True
            assert await recv_json(a) == {"type": "peer-joined"}

    run(body)


def test_a_full_rooms_vanished_member_gives_its_place_to_a_newcomer_at_once() -> None:
    """A member whose connection vanished without closing (keepalive still minutes away)
    is pinged when a third peer asks for its place, and removed when it does not answer."""
    async def body() -> None:
        async with harness(ping_interval=60.0, ping_timeout=60.0, ) as h:
            a, b = await h.pair("r")
            b.transport.pause_reading()  # TCP stays up, but b never answers a ping again
            started = time.monotonic()
            c, joined = await h.join("r")
            assert joined == {"type": "joined", "room": "r", "peers": 2, "initiator": True}
            assert time.monotonic() - started < 5.0
            assert await recv_json(a) == {"type": "peer-left"}
            assert await recv_json(a) == {"type": "peer-joined"}
            await exchange(a, c)
            await h.wait_rooms({"r": 2})

    run(body)


def test_peer_can_leave_and_rejoin_and_empty_rooms_are_deleted() -> None:
    async def body() -> None:
        async with harness() as h:
            a, b = await h.pair("r")
            await b.close()
            assert await recv_json(a) == {"type": "peer-left"}
            await h.wait_rooms({"r": 1})
            b2, joined = await h.join("r")
            assert joined == {"type": "joined", "room": "r", "peers": 2, "initiator": True}
            assert await recv_json(a) == {"type": "peer-joined"}
            await exchange(a, b2)
            # The first peer leaves; the one left behind waits for the next one.
            await a.close()
            assert await recv_json(b2) == {"type": "peer-left"}
            await b2.close()
            await h.wait_rooms({})
            c, joined = await h.join("r")
            assert joined == {"type": "joined", "room": "r", "peers": 1, "initiator": False}

    run(body)


def test_rate_limit_drops_messages_over_the_budget() -> None:
    async def body() -> None:
        rate = 2.0
        async with harness(rate_limit=rate, rate_burst=10) as h:
            a, b = await h.pair("r")  # the join spent one of b's tokens
            started = time.monotonic()
            sent = 30
            for i in range(sent):
                await send_json(b, {"type": "candidate", "candidate": {"candidate": f"c{i}"}})
            relayed: list[dict[str, Any]] = []
            with contextlib.suppress(asyncio.TimeoutError):
                while True:
                    relayed.append(await recv_json(a, timeout=0.3))
            errors: list[dict[str, Any]] = []
            with contextlib.suppress(asyncio.TimeoutError):
                while True:
                    errors.append(await recv_json(b, timeout=0.3))
            # Nine banked tokens, plus whatever trickled in while this ran (slow machines).
            refill = int(rate * (time.monotonic() - started)) + 1
            assert 9 <= len(relayed) <= 9 + refill, relayed
            assert len(errors) >= sent - 9 - refill
            assert all(e["type"] == "error" and e["code"] == "rate-limited" for e in errors), errors
            assert len(relayed) + len(errors) == sent
            # What got through is the start of the burst, in order.
            assert [m["candidate"]["candidate"] for m in relayed] == [f"c{i}" for i in range(len(relayed))]
            # Tokens come back with time; being rate-limited is no disconnection.
            await asyncio.sleep(1.5 / rate)
            await send_json(b, {"type": "bye"})
            assert await recv_json(a) == {"type": "bye"}

    run(body)


def test_a_flood_over_the_rate_is_closed() -> None:
    """Messages over the rate in a row, `max_dropped` of them: the connection is closed;
    the other peer hears it left."""
    async def body() -> None:
        async with harness(rate_limit=1.0, rate_burst=2, max_dropped=20) as h:
            a, b = await h.pair("r")
            for i in range(40):
                with contextlib.suppress(ConnectionClosed):
                    await b.send("x" * i)
            await expect_closed(b, 1008)
            assert await recv_json(a) == {"type": "peer-left"}

    run(body)


# --------------------------------------------------------------------------
# Command line


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _start_cli(*args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling", *args,
        cwd=REPO_ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def _wait_listening(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """Read the log until the server says where it listens; return (port, log so far)."""
    assert proc.stderr is not None
    seen = ""
    marker = "signaling server listening on ws://"
    while marker not in seen:
        line = await asyncio.wait_for(proc.stderr.readline(), RECV_TIMEOUT)
        assert line, f"server exited early: {seen}"
        seen += line.decode()
    address = seen.split(marker, 1)[1].split()[0]
    return int(address.rsplit(":", 1)[1]), seen


@pytest.mark.parametrize("sig, fixed_port", [(signal.SIGINT, False), (signal.SIGTERM, True)])
def test_cli_serves_and_shuts_down_cleanly(sig: signal.Signals, fixed_port: bool) -> None:
    async def body() -> None:
        port = _free_port() if fixed_port else 0
        proc = await _start_cli("--port", str(port), "--log-level", "INFO", "--ping-interval", "5")
        try:
            bound, log = await _wait_listening(proc)
            if fixed_port:
                assert bound == port
            async with connect(f"ws://127.0.0.1:{bound}", open_timeout=RECV_TIMEOUT, ping_interval=None) as ws:
                await send_json(ws, {"type": "join", "room": "cli"})
                assert await recv_json(ws) == {"type": "joined", "room": "cli", "peers": 1, "initiator": False}
                proc.send_signal(sig)
                await expect_closed(ws, 1001)
            _, stderr = await asyncio.wait_for(proc.communicate(), 10)
            log += stderr.decode()
            assert proc.returncode == 0, log
            assert "Traceback" not in log, log
            assert "shutting down" in log
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    run(body)


def test_cli_reports_a_port_it_cannot_bind() -> None:
    async def body() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            proc = await _start_cli("--port", str(port))
            try:
                _, stderr = await asyncio.wait_for(proc.communicate(), 10)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        log = stderr.decode()
        assert proc.returncode == 1, log
        assert "cannot listen" in log and "Traceback" not in log, log

    run(body)


# --------------------------------------------------------------------------
# Load and abuse (benchmarks/signaling_load.py, small)


def test_rooms_survive_every_abusive_client_at_once() -> None:
    """20 rooms of two peers held while one client of each hostile kind goes at the server
    (garbage, oversized frames, a flood, a connection storm, half-open connections, a peer
    that stops answering pings, a third peer): each meets the documented answer, every
    room's offer/answer/candidates are relayed exactly before, during and after, and new
    rooms still open."""
    from benchmarks.signaling_load import ABUSE, run_scenario

    async def body() -> None:
        config = ServerConfig(open_timeout=1.0, ping_interval=0.5, ping_timeout=0.5, close_timeout=1.0)
        async with SignalingServer("127.0.0.1", 0, config) as server:
            report = await run_scenario(f"ws://127.0.0.1:{server.port}", rooms=20, per_kind=1, open_timeout=1.0,
                                        flood_s=1.0)
            assert sorted(report.abuse) == sorted(ABUSE)
            assert report.unexpected == {}, report.abuse
            assert report.exchanges_failed == [] and report.exchanges_ok == 3 * 20, report.exchanges_failed
            assert report.late_rooms_ok == 2 and report.late_rooms_failed == []
            deadline = time.monotonic() + RECV_TIMEOUT
            while server.connections or server.room_sizes():
                assert time.monotonic() < deadline, (server.connections, server.room_sizes())
                await asyncio.sleep(0.05)

    run(body, timeout=60)
