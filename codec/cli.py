"""Command line of the offline codec: encode, decode and inspect stream files.

    python -m codec_core encode INPUT -o STREAM [--format ifvc|fomm|fv2v|cfte] [--qp|--iframe-qp N]
                                [--size 256|512] [--frames N] [--no-crop] [--quantization-factor F] [--global-step S]
                                [--save-crop CROP.mp4] [--config FILE.yaml] [--container native|vvc]
    python -m codec_core decode STREAM -o OUT.mp4 [--decoder-format FORMAT] [--translator geometry|learned]
                                [--synth warp|learned] [--backend torch|onnx] [--device cpu|cuda]
                                [--onnx-model PATH] [--edit NAME=VALUE ...]
    python -m codec_core info STREAM

INPUT is a video file, or a raw RGB 4:4:4 sequence of the GFVC common test conditions
(`NAME_256x256_25_8bit_444.rgb`); `--iframe-qp` and `--quantization-factor` follow the GFVC
software's conventions (docs/bitstream.md, "GFVC conventions").  `--format` is the stream's
feature format; `decode --decoder-format` plays it with another format's synthesizer, its
values translated (docs/bitstream.md, "Feature formats").  `--container vvc` writes the stream
as one VVC bitstream (`.266`, its features in SEI messages; docs/bitstream.md, "VVC
container"); `decode` and `info` read both kinds of file, told apart by their first bytes.

Errors end with one line on stderr and exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from pathlib import Path

from codec.translation import DEFAULT_TRANSLATOR, TRANSLATOR_METHODS
from codec_core.bitstream import StreamError
from codec_core.config import SIZES, ConfigError, check_size, load_config
from codec_core.format import FEATURE_FORMATS, IFVC, format_named
from codec_core.keyframe import KeyframeError
from codec_core.param_coding import ParamDecodeError
from codec_core.video import VideoError
from models.synthesizers import add_synthesis_options, synthesis_from_args

log = logging.getLogger("codec_core")


def cmd_encode(args) -> int:
    from codec.encoder import encode_video
    from models.face_model import FaceBasis

    fmt = format_named(args.format).name
    cfg = load_config(args.config).with_overrides(keyframe_qp=args.qp, size=args.size, global_step=args.global_step)
    cfg = cfg.with_quantization_factor(args.quantization_factor, fmt)
    check_size(cfg.size)
    start = time.perf_counter()
    res = encode_video(args.input, args.output, cfg, FaceBasis.load(), args.frames, args.save_crop,
                       progress=sys.stderr.isatty(), no_crop=args.no_crop, fmt=fmt, container=args.container)
    took = time.perf_counter() - start
    log.info("encoded %d frames in %.1f s (%.1f fps): key frame %d bytes (QP %d), file %d bytes%s",
             res.frames, took, res.frames / took, res.keyframe_bytes, res.keyframe_qp, res.file_bytes,
             f", face lost in {res.lost_frames} frames" if res.lost_frames else "")
    return 0


def cmd_decode(args) -> int:
    from codec.decoder import decode_frames, read_stream
    from codec_core.video import VideoWriter
    from models.editing import Edits

    edits = Edits.parse(args.edit)
    synthesis = synthesis_from_args(args)
    decoder_format = None if args.decoder_format is None else format_named(args.decoder_format).name
    parsed = read_stream(args.stream)
    frames = decode_frames(parsed, synthesis, edits, decoder_format, args.translator)
    first = next(frames, None)          # the decoder is set up (or refused) before the output is opened
    if first is None:
        raise StreamError("the stream holds no frames: nothing to decode")
    start, n = time.perf_counter(), 0
    # written aside and put in place whole: a stream that fails half-way leaves no shorter video behind
    output = Path(args.output)
    partial = output.with_name(f"{output.stem}.partial{output.suffix}")
    try:
        with VideoWriter(partial, parsed.header.fps_num / parsed.header.fps_den) as writer:
            for frame in itertools.chain([first], frames):
                writer.write(frame)
                n += 1
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)
    took = time.perf_counter() - start
    log.info("decoded %d frames in %.1f s (%.1f fps) to %s", n, took, n / took, args.output)
    return 0


def cmd_info(args) -> int:
    from codec.decoder import read_stream, stream_info

    print(json.dumps(stream_info(read_stream(args.stream))))
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m codec_core", description="Generative face video codec (offline).")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("encode", help="video file -> stream file")
    e.add_argument("input")
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--format", default=IFVC.name, metavar="FORMAT",
                   help=f"feature format of the stream: {', '.join(FEATURE_FORMATS)} (default: %(default)s)")
    e.add_argument("--qp", "--iframe-qp", dest="qp", type=int, metavar="N",
                   help="VVC QP of the key frame (default from the configuration; --iframe-qp is GFVC's name)")
    e.add_argument("--size", type=int, choices=SIZES, help="crop size (default 256)")
    e.add_argument("--frames", type=int, help="encode at most N frames")
    e.add_argument("--no-crop", action="store_true",
                   help="the input is already the square face crop at --size: code it as it is")
    e.add_argument("--quantization-factor", type=float, metavar="F",
                   help="GFVC's quantisation factor: ifvc divides its per-frame steps by F, fomm, fv2v and cfte "
                        "quantise value * F (step 1/F); default: the configured steps (docs/bitstream.md)")
    e.add_argument("--global-step", type=float, metavar="S",
                   help="step of every frame's global picture motion, normalised crop units (default from the "
                        "configuration, 0.004; --quantization-factor leaves it)")
    e.add_argument("--container", choices=("native", "vvc"), default="native",
                   help="native: our stream file; vvc: one Annex-B VVC bitstream (.266), the features in SEI "
                        "messages (default: %(default)s)")
    e.add_argument("--save-crop", help="also write the coded crops losslessly to this video file")
    e.add_argument("--config", help="YAML file overriding codec_core/defaults.yaml")
    e.set_defaults(func=cmd_encode)
    d = sub.add_parser("decode", help="stream file -> video file")
    d.add_argument("stream")
    d.add_argument("-o", "--output", required=True)
    d.add_argument("--decoder-format", metavar="FORMAT",
                   help=f"the feature format whose synthesizer makes the pictures: {', '.join(FEATURE_FORMATS)} "
                        "(default: the stream's own; another one translates the stream's values)")
    d.add_argument("--translator", default=DEFAULT_TRANSLATOR, metavar="METHOD",
                   help=f"how values are translated to the decoder format: {', '.join(TRANSLATOR_METHODS)} "
                        "(default: %(default)s)")
    add_synthesis_options(d)
    d.add_argument("--edit", action="append", default=[], metavar="NAME=VALUE",
                   help="edit the decoded face, e.g. yaw=15 smile=0.8 (repeatable; controls in docs/editing.md; "
                        "ifvc decoder format only)")
    d.set_defaults(func=cmd_decode)
    i = sub.add_parser("info", help="print a stream's numbers as JSON")
    i.add_argument("stream")
    i.set_defaults(func=cmd_info)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    from models.editing import EditError
    from models.learned import WeightsError
    from models.onnx_synth import OnnxBackendError
    from models.tracking import NoFaceError

    try:
        return args.func(args)
    except (StreamError, ParamDecodeError, KeyframeError, VideoError, ConfigError, NoFaceError, EditError,
            WeightsError, OnnxBackendError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the last guard: one line, never a traceback
        log.debug("unexpected failure", exc_info=True)
        print(f"error: unexpected failure: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1
