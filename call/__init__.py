"""The live call: what both ends of a WebRTC face call share, and the two-way peer command.

- `call.config`: the live-call defaults (timeouts, intervals), in one place;
- `call.clock`: wall-clock capture stamps, latency with wrap-around, frame-number unwrapping;
- `call.wire`: the data channels and the messages on them (docs/wire.md);
- `call.peer`: one peer connection at a time, set up through the signaling server and set
  up again when the other side leaves and comes back;
- `call.stats`: distribution summaries, the JSON stats file, per-frame JSON-lines traces;
- `call.cli`: command-line options every live command shares (signaling, room, ICE servers);
- `python -m call`: a two-way peer (a sender half and a receiver half on one connection).

The one-way ends are the `sender` and `receiver` packages.
"""
