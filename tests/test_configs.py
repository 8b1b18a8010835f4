"""Every command's config composes with every experiment, and the installed commands work from any cwd."""

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
