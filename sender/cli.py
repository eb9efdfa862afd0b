"""Options of the sender half, shared by `python -m sender` and `python -m call`."""

from __future__ import annotations

import argparse

from codec_core.config import SIZES, CodecConfig, ConfigError, check_size, load_config
from codec_core.format import FEATURE_FORMATS, IFVC
from live.audio import DEFAULT_BITRATE, MAX_BITRATE, MIN_BITRATE
from live.cli import SetupError, feature_format
from live.config import DEFAULT, LiveConfig
from models.face_model import FaceBasis
from sender.analysis import Analyser
from sender.audio import open_audio
from sender.half import SenderHalf, SenderOptions
from sender.source import open_source


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _audio_kbps(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected kbit/s, e.g. 12, got {text!r}") from None
    bitrate = int(round(value * 1000))
    if not MIN_BITRATE <= bitrate <= MAX_BITRATE:
        raise argparse.ArgumentTypeError(f"must be {MIN_BITRATE // 1000} to {MAX_BITRATE // 1000} kbit/s, got {text}")
    return bitrate


def add_sender_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", required=True, metavar="webcam[:INDEX]|FILE",
                        help="camera (webcam, webcam:1, /dev/video2) or a video file, played at its frame rate")
    parser.add_argument("--loop", action="store_true", help="play a video file over and over")
    parser.add_argument("--frames", type=_positive, help="stop after sending this many frames")
    parser.add_argument("--config", help="codec settings (YAML, any keys of codec_core/defaults.yaml)")
    parser.add_argument("--size", type=int, choices=SIZES,
                        help="crop and picture side in pixels (default: the codec configuration's, 256)")
    parser.add_argument("--format", default=IFVC.name, metavar="FORMAT",
                        help=f"the feature format of the face parameters sent: {', '.join(FEATURE_FORMATS)} "
                             "(default: %(default)s; docs/formats.md)")
    parser.add_argument("--audio-source", default="auto", metavar="auto|default|DEVICE|FILE|none",
                        help="the voice: auto (a file's own audio track, a camera's default microphone), "
                             "default or an ALSA DEVICE (hw:1, plughw:1,0), an audio FILE, none (default: auto)")
    parser.add_argument("--audio-bitrate", type=_audio_kbps, default=DEFAULT_BITRATE, metavar="KBPS",
                        help=f"Opus bitrate of the voice, mono, kbit/s (default: {DEFAULT_BITRATE // 1000})")
    parser.add_argument("--drop-params", type=_fraction, default=0.0, metavar="P",
                        help="testing: drop this fraction of parameter packets at random after coding them")
    parser.add_argument("--seed", type=int, help="random seed of --drop-params")
    parser.add_argument("--sender-stats", dest="sender_stats", metavar="FILE.json",
                        help="sender numbers (frames, bytes, stage times), rewritten every second")
    parser.add_argument("--dump-sent", dest="dump_sent", metavar="FILE.jsonl",
                        help="debug: the levels of every frame sent, one JSON line each")
    parser.add_argument("--trace-sender", dest="trace_sender", metavar="FILE.jsonl",
                        help="debug: per-frame stage times of the sender (wall-clock ms)")
    parser.add_argument("--dump-keyframe-crops", dest="dump_keyframe_crops", metavar="DIR",
                        help="debug: the captured crop of every key frame coded, DIR/key-ID-small|sharp-crop.png")


def sender_config(args: argparse.Namespace) -> CodecConfig:
    """The codec settings of --config, with --size over them (SetupError when they are bad)."""
    try:
        config = load_config(args.config).with_overrides(size=args.size)
        check_size(config.size)
    except ConfigError as exc:
        raise SetupError(str(exc)) from None
    return config


def build_sender(args: argparse.Namespace, live: LiveConfig = DEFAULT) -> SenderHalf:
    """Open the source and its voice and load the models (raises SetupError for a bad
    --config, --size, --format or --audio-source FILE, SourceError)."""
    config = sender_config(args)
    fmt = feature_format("--format", args.format)
    source = open_source(args.source, args.loop, args.frames, live.camera_fail_s, live.camera_fps,
                         live.camera_close_timeout_s)
    audio = None
    try:
        audio = open_audio(args.audio_source, args.source, args.loop, args.frames, source.fps)
        analyser = Analyser(config, FaceBasis.load(), live, fmt)
    except BaseException:
        source.close()
        if audio is not None:
            audio.close()
        raise
    options = SenderOptions(args.frames, args.drop_params, args.seed, args.dump_sent, args.trace_sender,
                            args.dump_keyframe_crops)
    return SenderHalf(source, analyser, options, live, audio, args.audio_bitrate)
