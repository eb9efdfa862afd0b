"""What both live ends of a WebRTC face call share (below `sender`, `receiver` and `call`).

- `live.config`: the live-call defaults (timeouts, intervals), in one place;
- `live.clock`: wall-clock capture stamps, latency with wrap-around, frame-number unwrapping;
- `live.wire`: the data channels and the messages on them (docs/wire.md);
- `live.peer`: one peer connection at a time, set up through the signaling server and set
  up again when the other side leaves and comes back;
- `live.stats`: distribution summaries, the JSON stats file, per-frame JSON-lines traces;
- `live.cli`: command-line options every live command shares (signaling, room, ICE servers).
"""
