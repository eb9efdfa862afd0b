"""The codec sessions: the encoder and decoder of one face stream, and the offline command.

They join the wire layer (`codec_core`: syntax, coding, key frame) with the face models
(`models`: analysis, reference, synthesizer).  Used by the offline command
(`python -m codec_core encode|decode|info`, whose parser is `codec.cli`), by the live ends,
the portrait mode and the benchmarks; nothing here knows about networks.

- `codec.encoder`: `FaceEncoder` (key frames, parameter levels) and the file encoder;
- `codec.decoder`: `FaceDecoder` (key frame in, pictures out), stream parsing and `info`;
- `codec.cli`: the `encode`, `decode` and `info` commands.
"""
