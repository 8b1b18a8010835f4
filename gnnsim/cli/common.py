"""What every hydra entry point shares: the config directory, path resolvers, typed configs, clean errors, and
the allocator setting."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

import gnnsim
from gnnsim.data.format import FormatError

PROJECT_ROOT = Path(gnnsim.__file__).resolve().parents[1]
# Absolute, so installed entry points find it from any working directory (hydra would treat a relative
# config_path as a package); the package is installed editable from the repository (see README).
CONF_DIR = str(PROJECT_ROOT / "conf")

if not OmegaConf.has_resolver("gnnsim_root"):
    OmegaConf.register_new_resolver("gnnsim_root", lambda: str(PROJECT_ROOT))

T = TypeVar("T")


def typed(cls: type[T], node: DictConfig | dict | None, where: str, **extra: Any) -> T:
    """Build dataclass ``cls`` from a config node; unknown keys give a one-line error naming ``where``."""
    values = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    values.update(extra)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    tuples = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
    return cls(**{k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in values.items()})


def plain(cfg: DictConfig) -> dict[str, Any]:
    """Return the resolved config as plain JSON-able containers."""
    return OmegaConf.to_container(cfg, resolve=True)


# glibc's mallopt parameters and the values ``keep_freed_memory`` sets (mallopt takes a C int).
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
KEEP_FREED = {M_MMAP_THRESHOLD: 32 << 20, M_TRIM_THRESHOLD: (1 << 31) - 1, M_TOP_PAD: 256 << 20}


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for the next allocation instead of handing it back to the kernel.

    A training or rollout step allocates and frees the same large tensors every step; by default glibc serves
    them with fresh pages (mmap above its threshold, and trims the heap's top), and every first touch of a
    page is a page fault: 2-3M per 300 demo training steps, 4-7 s of kernel time. With these settings the
    heap keeps up to 2 GiB free (tensors up to 32 MiB come from it), a process's memory stays at its peak,
    and the faults fall 17-26x (``docs/benchmarks.md``). Skipped when the user set any ``MALLOC_*`` variable
    (their settings win) or the C library is not glibc. Returns whether the settings were applied.
    """
    if any(key.startswith("MALLOC_") for key in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    applied = [mallopt(param, value) == 1 for param, value in KEEP_FREED.items()]  # each one, even if one fails
    return all(applied)


def command(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a command's body: keep freed memory (``keep_freed_memory``), apply ``cfg.threads`` (torch
    intra-op threads, 0 keeps torch's default) and turn expected user errors (bad config, missing or malformed
    files) into one line on stderr, exit 2."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig):
        keep_freed_memory()
        try:
            if cfg.threads:
                import torch  # here, so commands that never touch torch start without it

                torch.set_num_threads(cfg.threads)
            return fn(cfg)
        except (ValueError, FileNotFoundError, FormatError, KeyError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else e
            print(f"error: {msg}", file=sys.stderr)
            sys.exit(2)

    return wrapper
