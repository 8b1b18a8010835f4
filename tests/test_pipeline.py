"""The four installed commands end to end on a DeepMind-format data set, run from another directory."""

import json
import subprocess
import sys
from pathlib import Path

from gnnsim.data.format import Split
from tfrecord_fixtures import write_dataset

BIN = Path(sys.executable).parent


def run(tmp_path, command, *args):
    proc = subprocess.run([str(BIN / f"gnnsim-{command}"), f"paths.root={tmp_path / 'root'}", "threads=1", *args],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_convert_train_rollout_render(tmp_path):
    write_dataset(tmp_path / "dm", {"train": [40, 40], "valid": [30], "test": [36]}, seed=3)
    out = run(tmp_path, "data", "data=deepmind", f"data.source={tmp_path / 'dm'}", "data.name=dm")
    assert "test:" in out
    common = ["data=deepmind", "data.name=dm", "name=dmrun"]
    run(tmp_path, "train", *common, "debug=overfit", "trainer.steps=20")
    out = run(tmp_path, "rollout", "run=dmrun")  # no data arguments: the run's own data set, from its checkpoint
    metrics = json.loads((tmp_path / "root" / "rollouts" / "dmrun" / "test_metrics.json").read_text())
    assert metrics["checkpoint_step"] == 20 and set(metrics["rmse"]) == {"1", "all"}
    assert len(Split(tmp_path / "root" / "rollouts" / "dmrun" / "test.h5")) == 1
    out = run(tmp_path, "render", *common, "frames=3", "xdmf=true")
    for name in ("test_traj0.gif", "test_rmse.png", "test_traj0.xdmf"):
        assert (tmp_path / "root" / "rollouts" / "dmrun" / name).stat().st_size > 0, name
    assert not list((tmp_path).glob("outputs"))  # nothing written to the working directory
