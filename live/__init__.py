"""What both live ends of a WebRTC face call share (below `sender`, `receiver` and `call`).

- `live.config`: the live-call defaults (timeouts, intervals), in one place;
- `live.clock`: wall-clock capture stamps, latency with wrap-around, frame-number unwrapping;
- `live.wire`: the data channels and the messages on them (docs/wire.md);
- `live.peer`: one peer connection at a time, set up through the signaling server and set
  up again when the other side leaves and comes back;
- `live.stats`: distribution summaries, the JSON stats file, per-frame JSON-lines traces;
- `live.cli`: command-line options every live command shares (signaling, room, ICE servers),
  and the one-line error exit;
- `live.runner`: the one runner every live end starts and stops through (and the shutdown
  order: capture, outputs, peer connection);
- `live.threads`: one OpenMP thread per native pool, imported first by every live command.
"""
