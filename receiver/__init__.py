"""The receiving end of a live call: parameter packets in, synthesized face pictures out.

`python -m receiver --signaling ws://HOST:PORT --room NAME [--output OUT.mp4] [--window]
[--stats STATS.json]`; `receiver.chain` (which packets may be decoded, when to report a
loss), `receiver.render` (the synthesis thread), `receiver.sinks` (file and window),
`receiver.stats` (the numbers), `receiver.half` (the receiver half of a call).
"""
