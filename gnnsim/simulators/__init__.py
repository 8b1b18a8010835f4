"""Domain simulators, looked up by the domain name stored in data configs and checkpoints."""

from __future__ import annotations

import importlib
from typing import Any

from gnnsim.nn.encode_process_decode import ModelConfig
from gnnsim.simulators.base import Simulator

DOMAINS = {
    "flow": "gnnsim.simulators.flow:FlowSimulator",
    "cloth": "gnnsim.simulators.cloth:ClothSimulator",
    "traffic": "gnnsim.simulators.traffic:TrafficSimulator",
}


def simulator_class(domain: str) -> type[Simulator]:
    """Return the simulator class of ``domain``."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(DOMAINS)}")
    module, name = DOMAINS[domain].split(":")
    return getattr(importlib.import_module(module), name)


def build_simulator(domain: str, model: ModelConfig | dict[str, Any], params: dict[str, Any] | None = None) -> Simulator:
    """Build a simulator from its domain name, model config and domain parameters (as in ``Simulator.spec``)."""
    cls = simulator_class(domain)
    model_cfg = model if isinstance(model, ModelConfig) else ModelConfig(**model)
    try:
        return cls(model_cfg, **(params or {}))
    except TypeError as e:
        raise ValueError(f"simulator '{domain}': bad parameter ({e})") from None
