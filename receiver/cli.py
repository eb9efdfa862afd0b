"""Options and set-up of the receiver half, shared by `python -m receiver` and `python -m call`."""

from __future__ import annotations

import argparse
import asyncio

from codec.decoder import DecoderFormatError, check_decoder_choice
from codec.translation import DEFAULT_TRANSLATOR, TRANSLATOR_METHODS
from codec_core.format import FEATURE_FORMATS, format_named
from live.cli import SetupError, feature_format
from live.config import DEFAULT, LiveConfig
from models.face_model import FaceBasis
from models.synthesizers import add_synthesis_options, synthesis_from_args
from receiver.half import ReceiverHalf
from receiver.playback import Latencies, open_player
from receiver.render import DecoderChoice, RenderWorker
from receiver.sinks import Sink, WindowSink, display_available
from receiver.voicefile import VoiceFileSink


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_receiver_options(parser: argparse.ArgumentParser, live: LiveConfig = DEFAULT) -> None:
    parser.add_argument("--output", metavar="OUT.mp4",
                        help="write the received video (H.264); a peer that comes back goes on in OUT-2.mp4, ...")
    parser.add_argument("--audio-output", default="default", metavar="default|DEVICE|none",
                        help="play the other side's voice on this ALSA device (default: default; none: do not "
                             "play; the voice goes into --output either way)")
    parser.add_argument("--window", action="store_true", help="show the received video in a window (q or Esc ends)")
    parser.add_argument("--stats", metavar="STATS.json", help="receiver numbers, rewritten every second, final at exit")
    add_synthesis_options(parser)
    parser.add_argument("--decoder-format", metavar="FORMAT",
                        help=f"the feature format whose synthesizer makes the pictures: {', '.join(FEATURE_FORMATS)} "
                             "(default: the sender's own; another one translates the sender's values; the window's "
                             "edits need ifvc)")
    parser.add_argument("--translator", default=DEFAULT_TRANSLATOR, metavar="METHOD",
                        help=f"how another format's values are translated to the decoder format: "
                             f"{', '.join(TRANSLATOR_METHODS)} (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=live.render_threads,
                        help="torch threads for synthesis (default: %(default)s)")
    parser.add_argument("--wait-peer", type=_seconds, default=live.peer_wait_s, metavar="SECONDS",
                        help="when the peer leaves or vanishes, wait this long for one to come back, then end "
                             "(default: %(default)s)")
    parser.add_argument("--dump-levels", metavar="FILE.jsonl",
                        help="debug: the decoded levels of every frame, one JSON line each")
    parser.add_argument("--trace", metavar="FILE.jsonl", help="debug: per-frame stage times (wall-clock ms)")
    parser.add_argument("--dump-keyframes", metavar="DIR",
                        help="debug: each key frame received, its KEYFRAME payload (DIR/NNN-key-ID-small|sharp.bin)")


def check_receiver_args(args: argparse.Namespace) -> None:
    """SetupError when the machine cannot receive as asked."""
    if args.window and not display_available():
        raise SetupError("--window needs a display, and neither DISPLAY nor WAYLAND_DISPLAY is set")
    if args.threads < 1:
        raise SetupError("--threads must be at least 1")
    try:
        synthesis = synthesis_from_args(args)
    except ValueError as exc:
        raise SetupError(str(exc)) from None
    choice = decoder_choice(args)
    if choice.decoder_format is not None:
        try:
            check_decoder_choice(format_named(choice.decoder_format), synthesis, choice.translator)
        except DecoderFormatError as exc:
            raise SetupError(str(exc)) from None


def decoder_choice(args: argparse.Namespace) -> DecoderChoice:
    """--decoder-format and --translator, checked (SetupError in one line for unknown names)."""
    fmt = None if args.decoder_format is None else feature_format("--decoder-format", args.decoder_format)
    if args.translator not in TRANSLATOR_METHODS:
        raise SetupError(f"--translator: unknown translator {args.translator!r}: choose one of "
                         f"{', '.join(TRANSLATOR_METHODS)}")
    return DecoderChoice(fmt, args.translator)


def build_receiver(args: argparse.Namespace, live: LiveConfig = DEFAULT) -> ReceiverHalf:
    """The receiver half with its synthesis thread and sinks (call on the event loop)."""
    basis = FaceBasis.load()
    choice = decoder_choice(args)
    half = ReceiverHalf(basis, live, args.dump_levels, args.trace, args.dump_keyframes, choice)
    sinks: list[Sink] = []
    if args.output:
        sinks.append(VoiceFileSink(args.output, half.voice, live.max_gap_fill_s))
    window = WindowSink() if args.window else None
    if window:
        sinks.append(window)
    worker = RenderWorker(asyncio.get_running_loop(), half.events(), sinks, basis,
                          synthesis_from_args(args), args.threads, max_setup=live.max_queued_setup_jobs,
                          choice=choice)
    if window:
        window.on_edits = worker.set_edits
    half.window = window
    half.attach(worker)
    player = open_player(args.audio_output, Latencies())
    half.attach_player(player)
    if window is not None and player is not None:      # the voice plays here: the pictures keep pace with it
        window.hold_ms = player.latencies.video_hold_ms
    return half
