"""The sending end of a live call: capture, face tracking, key frames, parameter packets.

`python -m sender --signaling ws://HOST:PORT --room NAME --source webcam[:INDEX]|FILE`;
`sender.source` (camera and paced file capture), `sender.analysis` (tracking, crops, key
frames, levels; runs on worker threads), `sender.intra` (when to code intra), `sender.half`
(the sender half of a call: what goes on which channel and when).
"""
