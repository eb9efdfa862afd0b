"""Benchmarks: frame-quality metrics, conventional-codec anchors, rate-distortion and latency reports."""
