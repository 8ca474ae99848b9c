"""Checkpoints: a folder holding safetensors weights, a JSON of everything else, trainer state.

    step-000120/
      model.safetensors    weights under canonical names (no `_orig_mod.`, no `module.`)
      checkpoint.json      config, encoders, tokenizer and codec ids, plan/stage, step,
                           data position (epoch, batch), metrics
      trainer_state.pt     optimizer state and RNG states (absent from exported weights)

Loading is strict: every expected tensor must be in the file with its shape, or the load
fails listing the missing, unexpected and mis-shaped keys. The reference trainer's
non-strict load silently skipped every weight of a `torch.compile`d model on resume, since
its keys carried `_orig_mod.`; names are therefore canonicalised on both sides, so compiled,
DDP-wrapped and plain models read each other's checkpoints. Frozen side encoders (Whisper,
SigLIP) come from their own checkpoints: their keys are neither saved nor expected.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from omni_model.config import OmniConfig
from omni_model.encoders.errors import CheckpointError
from omni_model.training.model import EncoderSpec, TrainModel

FORMAT_NAME = "tiny-omni-checkpoint"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "checkpoint.json"
STATE_FILE = "trainer_state.pt"
COMPILE_SEGMENT = "_orig_mod"  # torch.compile wraps a module as `_orig_mod`
DDP_PREFIX = "module."
LISTED_KEYS = 20  # keys named per category in a mismatch error


class CheckpointMismatchError(CheckpointError):
    """Weights that do not fit the model; lists every missing, unexpected, mis-shaped key."""

    def __init__(self, label: str, missing: list[str], unexpected: list[str], misshaped: list[str]):
        parts = [
            f"{len(keys)} {name}: {', '.join(keys[:LISTED_KEYS])}"
            + (" ..." if len(keys) > LISTED_KEYS else "")
            for name, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("mis-shaped", misshaped),
            )
            if keys
        ]
        super().__init__(label, "weights do not fit the model: " + "; ".join(parts))
        self.missing, self.unexpected, self.misshaped = missing, unexpected, misshaped


def canonical_name(key: str) -> str:
    """Drop wrapper segments: `module.` (DDP, outermost) and `_orig_mod.` (torch.compile,
    wherever a submodule was compiled): `module._orig_mod.model.x` -> `model.x`.
    """
    key = key.removeprefix(DDP_PREFIX)
    return ".".join(part for part in key.split(".") if part != COMPILE_SEGMENT)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside torch.compile and DDP wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def frozen_prefixes(model: nn.Module) -> tuple[str, ...]:
    return getattr(unwrap(model), "frozen_prefixes", ())


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Canonical name -> tensor of every saved weight (frozen side encoders left out)."""
    skip = frozen_prefixes(model)
    tensors = {}
    for key, tensor in model.state_dict().items():
        name = canonical_name(key)
        if not name.startswith(skip):
            tensors[name] = tensor
    return tensors


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict,
    trainer_state: dict | None = None,
) -> Path:
    """Write the checkpoint folder atomically (a reader never sees half of one)."""
    path = Path(path)
    temp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    tensors = {k: t.detach().contiguous().cpu() for k, t in model_tensors(model).items()}
    save_file(tensors, str(temp / WEIGHTS_FILE))
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, **meta}
    (temp / META_FILE).write_text(json.dumps(header, indent=2, sort_keys=True))
    if trainer_state is not None:
        torch.save(trainer_state, temp / STATE_FILE)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(temp, path)
        shutil.rmtree(old)
    else:
        os.replace(temp, path)
    return path


def read_meta(path: str | Path) -> dict:
    """The checkpoint's JSON, checked to be this format."""
    file = Path(path) / META_FILE
    if not file.is_file():
        raise CheckpointError(str(path), f"not a checkpoint folder (no {META_FILE})")
    try:
        meta = json.loads(file.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(str(file), f"not valid JSON ({error})") from error
    if meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            str(file), f"format {meta.get('format')} v{meta.get('version')}, not {FORMAT_NAME}"
        )
    return meta


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Strictly load a checkpoint's weights into `model` (plain, compiled or DDP-wrapped)."""
    file = Path(path) / WEIGHTS_FILE
    try:
        stored = load_file(str(file))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(str(file), f"unreadable weights ({error})") from error
    skip = frozen_prefixes(model)
    stored = {
        canonical_name(k): t for k, t in stored.items() if not canonical_name(k).startswith(skip)
    }
    expected = model_tensors(model)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    misshaped = [
        f"{k} {tuple(stored[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(stored) & set(expected))
        if stored[k].shape != expected[k].shape
    ]
    if missing or unexpected or misshaped:
        raise CheckpointMismatchError(str(file), missing, unexpected, misshaped)
    with torch.no_grad():
        for key, tensor in expected.items():
            tensor.copy_(stored[key])


def load_trainer_state(path: str | Path) -> dict | None:
    """Optimizer and RNG states, or None for an exported (weights-only) checkpoint."""
    file = Path(path) / STATE_FILE
    return torch.load(file, map_location="cpu", weights_only=True) if file.is_file() else None


def build_model(meta: dict) -> TrainModel:
    """A randomly initialised model of the checkpoint's config and encoders."""
    encoders = EncoderSpec.from_dict(meta["encoders"])
    return TrainModel(OmniConfig.from_dict(meta["config"]), encoders)


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[TrainModel, dict]:
    """Model and metadata of a checkpoint folder, weights loaded strictly."""
    meta = read_meta(path)
    model = build_model(meta)
    load_weights(model, path)
    return model.to(device), meta


def step_folder(stage_dir: str | Path, step: int) -> Path:
    return Path(stage_dir) / f"step-{step:07d}"


def latest_checkpoint(stage_dir: str | Path) -> Path | None:
    """The complete `step-*` checkpoint with the highest step in a stage folder, if any."""
    folders = [p for p in Path(stage_dir).glob("step-*") if (p / META_FILE).is_file()]
    return max(folders, key=lambda p: int(p.name.split("-")[1]), default=None)
