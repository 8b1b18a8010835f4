"""Every command's config composes with every experiment, the installed commands work from any cwd, and
commands keep freed memory."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import gnnsim.cli.plan  # noqa: F401  (registers the plan config group)
from gnnsim.cli.common import CONF_DIR, typed
from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators import build_simulator
from gnnsim.training import TrainConfig

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
COMMANDS = ("data", "train", "rollout", "render", "eta", "plan")
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_and_instantiates(experiment):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        for command in COMMANDS:
            cfg = compose(command, overrides=[f"experiment={experiment}"])
            OmegaConf.resolve(cfg)
        cfg = compose("train", overrides=[f"experiment={experiment}"])
    model_cfg = typed(ModelConfig, cfg.model, "model")
    typed(TrainConfig, cfg.trainer, "trainer", **OmegaConf.to_container(cfg.optim))
    sim = build_simulator(cfg.simulator.domain, model_cfg, OmegaConf.to_container(cfg.simulator.params))
    assert sum(p.numel() for p in sim.parameters()) > 0


@pytest.mark.parametrize("processor", ["standard", "checkpointed", "reversible"])
def test_processor_group_sets_model_processor(processor):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"processor={processor}"])
    assert cfg.model.processor == processor


def test_unknown_config_key_is_one_line_error():
    with pytest.raises(ValueError, match=r"model: unknown key\(s\) \['latent'\]"):
        typed(ModelConfig, {"latent": 3}, "model")


@pytest.mark.parametrize("command", COMMANDS)
def test_installed_command_prints_job_config_from_any_cwd(command, tmp_path):
    out = subprocess.run([str(BIN / f"gnnsim-{command}"), "--cfg", "job", "experiment=demo"], cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert "name: demo" in out


def test_bad_override_and_missing_data_are_one_line_errors(tmp_path):
    run = subprocess.run([str(BIN / "gnnsim-train"), f"paths.root={tmp_path}", "data.name=nothing", "model.latent=3"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode != 0 and "model.latent" in run.stderr
    run = subprocess.run([str(BIN / "gnnsim-train"), f"paths.root={tmp_path}", "data.name=nothing"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: ") and "nothing/train.h5" in run.stderr


ROUNDS = """
import resource, torch
from gnnsim.cli.common import keep_freed_memory
applied = keep_freed_memory()
def rounds(n):
    for _ in range(n):
        tensors = [torch.empty(6 << 18).fill_(1.0) for _ in range(8)]  # 8 x 6 MiB, then all freed
        del tensors
rounds(2)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(10)
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_keep_freed_memory_stops_page_faults_of_repeated_allocations():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}

    def run(**malloc_env: str) -> tuple[bool, int]:
        out = subprocess.run([sys.executable, "-c", ROUNDS], env={**env, **malloc_env}, capture_output=True,
                             text=True, check=True)
        applied, faults = out.stdout.split()
        return applied == "True", int(faults)

    pages = 8 * 6 * 256  # 4 KiB pages a round touches
    applied, faults = run()
    assert applied and faults < pages / 10, faults  # the same pages again every round
    # The user's own MALLOC_* settings win. With glibc's initial thresholds held fixed (its defaults adapt
    # with the heap's layout, so their faults vary from run to run), every 6 MiB tensor is fresh pages again.
    applied, faults = run(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    assert not applied and faults >= pages, faults
