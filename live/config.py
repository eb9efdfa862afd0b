"""Defaults of the live call, in one place: timeouts, intervals and limits of both ends.

The codec's own settings (crop size, key frame QP, intra interval, quantisation steps)
live in `codec_core/defaults.yaml`; these are the real-time ones.  Commands expose the
ones a user may want to change as options and take the rest from here.
"""

from __future__ import annotations

from dataclasses import dataclass

# the waits of a live end's shutdown (live.runner), in the order they can happen; together
# at most 3 s, so that a kill with a short grace still finds the output file finalised
SHUTDOWN_TIMEOUTS = ("capture_stop_timeout_s", "camera_close_timeout_s", "render_stop_timeout_s",
                     "flush_timeout_s", "pc_close_timeout_s", "signaling_close_timeout_s", "task_wait_timeout_s")


@dataclass(frozen=True)
class LiveConfig:
    # -- connection ---------------------------------------------------------------------
    signaling_timeout_s: float = 10.0      # connecting to the signaling server and joining
    session_open_timeout_s: float = 20.0   # offer/answer until all data channels are open
    peer_wait_s: float = 30.0              # a peer that left: wait this long for one to come back
    reoffer_delay_s: float = 1.0           # the connection broke, both still in the room: offer again after
    # -- receiver -----------------------------------------------------------------------
    end_grace_s: float = 1.0               # after "end": wait this long for the last packets
    loss_report_interval_s: float = 0.1    # repeat a loss report at most this often while broken
    keyframe_request_after_s: float = 0.5  # parameters for an unknown key frame this long: ask
    keyframe_request_interval_s: float = 1.0
    stats_interval_s: float = 1.0          # --stats file rewritten this often
    max_gap_fill_s: float = 2.0            # output file: repeat the last picture over gaps this long
    render_threads: int = 1                # torch threads of the synthesis thread (2 cores shared by both ends)
    # -- sender -------------------------------------------------------------------------
    face_search_interval_s: float = 0.4    # full-picture face search while the face is lost
    no_face_log_interval_s: float = 5.0    # "no face in the picture" at most this often
    recrop_shift: float = 0.15             # face box moved this fraction of the crop side: new crop
    recrop_scale: float = 0.2              # or changed size by this fraction: new crop
    face_switch_s: float = 2.0             # the face followed is gone this long: follow another in the picture
    camera_fail_s: float = 2.0             # a camera that delivers nothing this long is gone
    camera_fps: float = 25.0               # frame rate assumed when the camera does not say
    ready_timeout_s: float = 5.0           # a file waits this long for the receiver's "ready"
    voice_frame_ms: int = 40               # Opus packet length of the voice between call ends (20, 40 or 60)
    # -- key frames in paced pieces (sender.pacing; docs/call.md) ---------------------
    keyframe_piece_bytes: int = 1000       # KEYFRAME payload bytes per piece (256..1024: live.wire)
    pace_drained_ms: float = 50.0          # the link is drained when an RTT is at most this above the least
    pace_shrink_ms: float = 200.0          # a round that raised the RTT more than this halves the window
    pace_window_max: int = 16              # pieces sent back to back in one round, at most
    pace_round_wait_max_s: float = 1.0     # a round waits this long at most for a drained link (then 1 piece)
    # -- shutdown (SHUTDOWN_TIMEOUTS: at most 3 s together) ----------------------------
    capture_stop_timeout_s: float = 0.5    # (1) the sender's capture loop stops, or it is cancelled
    camera_close_timeout_s: float = 0.2    # (1) the camera's reader thread ends, or it is left behind
    render_stop_timeout_s: float = 1.0     # (2) the synthesis thread renders what is queued, closes the files
    flush_timeout_s: float = 0.25          # (3) what the channels sent is acknowledged (also "end")
    pc_close_timeout_s: float = 0.5        # (3) the peer connection closes (also whenever a session ends)
    signaling_close_timeout_s: float = 0.25  # (3) the signaling websocket closes
    task_wait_timeout_s: float = 0.25      # (3) the peer link's own tasks finish
    # -- bounds on what the other side can make an end do or keep (docs/wire.md, "Bounds") --
    reorder_window_frames: int = 3         # receiver: a packet up to this many frames late still counts (not lost)
    max_queued_setup_jobs: int = 8         # receiver: session headers and key frames waiting for the synthesis thread
    keyframe_piece_timeout_s: float = 10.0  # receiver: a partial key frame without a new piece this long is dropped
    keyframe_answer_rate_bytes_s: float = 8000.0   # sender: key frames sent on requests, at most 64 kbit/s on average
    keyframe_answer_max_buffered_bytes: int = 16384  # sender: no answer while `stream` holds more than this unsent
    stats_window: int = 6000               # both: latency and stage samples kept for median and p95 (4 min at 25 fps)

    @property
    def shutdown_budget_s(self) -> float:
        """The longest a shutdown can wait: the SHUTDOWN_TIMEOUTS added up."""
        return sum(getattr(self, name) for name in SHUTDOWN_TIMEOUTS)


DEFAULT = LiveConfig()
