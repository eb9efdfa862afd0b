"""The interoperability benchmark on a tiny run: one clip, four frames, two formats."""

import json

from conftest import clip

from benchmarks.interop import main


def test_interop_smoke(tmp_path):
    clip("rt__3.mp4")
    assert main(["--clips", "rt__3", "--frames", "4", "--formats", "ifvc", "fomm", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    decodings = {(e["stream"], e["decoder"], e["method"]) for e in results[0]["decodings"]}
    assert decodings == {("ifvc", "ifvc", "native"), ("fomm", "fomm", "native"), ("ifvc", "fomm", "geometry"),
                         ("ifvc", "fomm", "learned"), ("fomm", "ifvc", "geometry"), ("fomm", "ifvc", "learned")}
    assert all(0 < e["lpips"] < 1 for e in results[0]["decodings"])
    assert set(results[0]["streams"]) == {"ifvc", "fomm"}
    assert all(stream["levels_exact"] is True for stream in results[0]["streams"].values())
    report = (tmp_path / "report.md").read_text()
    assert "Translator `learned`" in report and "Translator `geometry`" in report
    assert (tmp_path / "interop.png").stat().st_size > 0
    assert (tmp_path / "grid_rt__3_learned.png").stat().st_size > 0
