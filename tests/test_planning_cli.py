"""gnnsim-plan end to end in its smoke setting: the report has every method and ordered buckets."""

import json
import subprocess
import sys
from pathlib import Path

from gnnsim.planning.benchmark import METHODS


def test_plan_smoke_writes_report(tmp_path):
    bin_dir = Path(sys.executable).parent
    proc = subprocess.run([str(bin_dir / "gnnsim-plan"), "plan=smoke", f"paths.root={tmp_path}"], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "rollouts" / "plan"
    report = json.loads((out / "report.json").read_text())
    assert list(report) == list(METHODS)
    for buckets in report.values():
        lows = [float(b.split("-")[0]) for b in buckets]
        assert lows == sorted(lows) and all(0.0 <= v <= 1.0 for v in buckets.values())
    for name in ("table.md", "success_vs_distance.png", "maze_landmarks.png"):
        assert (out / name).stat().st_size > 0
