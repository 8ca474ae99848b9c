"""`omni info`: what a checkpoint is, without loading its weights.

Prints the training facts (plan, stage, step), the model config, the parameter table, the
tokenizer and codec ids, the side encoders, and the lineage: the MLflow run that trained it
and the datasets it read. The last line is the same as JSON.

    omni info assets_store/training/tiny/a2a/final
    omni info --model tiny
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from omni_model.config import OmniConfig
from omni_model.encoders.errors import CheckpointError
from omni_model.inference.loading import DEFAULT_STORE, lineage, resolve_model
from omni_model.models import OmniModel
from omni_model.models.summary import parameter_table
from omni_model.training.checkpoint import WEIGHTS_FILE, read_meta

ENCODERS = ("audio_encoder", "image_encoder")


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="config, parameters, codec and lineage of a model")
    parser.add_argument("checkpoint", nargs="?", type=Path, help="a checkpoint folder")
    parser.add_argument("--model", help="or a trained model in the store: VARIANT[/STAGE]")
    parser.add_argument("--store", type=Path, default=DEFAULT_STORE)
    parser.set_defaults(run=run)


def stored_counts(checkpoint: Path) -> dict[str, int]:
    """Parameters per side encoder as saved (frozen encoders are not saved: 0)."""
    counts = dict.fromkeys(ENCODERS, 0)
    file = checkpoint / WEIGHTS_FILE
    try:
        with safe_open(str(file), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                owner = key.split(".", 1)[0]
                if owner in counts:
                    counts[owner] += torch.Size(weights.get_slice(key).get_shape()).numel()
    except (SafetensorError, OSError) as error:
        raise CheckpointError(str(file), f"unreadable weights ({error})") from error
    return counts


def describe(checkpoint: Path) -> dict:
    meta = read_meta(checkpoint)
    config = OmniConfig.from_dict(meta["config"])
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        table = parameter_table(OmniModel(config))
    return {
        "checkpoint": str(checkpoint),
        "plan": meta.get("plan"),
        "stage": meta.get("stage"),
        "mode": meta.get("mode"),
        "step": meta.get("step"),
        "total_steps": meta.get("total_steps"),
        "complete": bool(meta.get("complete")),
        "tokenizer_id": meta.get("tokenizer_id"),
        "vocab_size": config.vocab_size,
        "codec_id": meta.get("codec_id"),
        "config": config.to_dict(),
        "encoders": meta.get("encoders"),
        "encoder_parameters": stored_counts(checkpoint),
        "parameters": table,
        "final_losses": meta.get("result", {}).get("final_losses"),
        "lineage": lineage(checkpoint, meta),
    }


def run(args: argparse.Namespace) -> int:
    if (args.checkpoint is None) == (args.model is None):
        raise ValueError("give a checkpoint folder or --model NAME (one of them)")
    info = describe(args.checkpoint or resolve_model(args.model, args.store))
    config = OmniConfig.from_dict(info["config"])
    thinker, talker = config.thinker, config.talker
    progress = "complete" if info["complete"] else "in progress"
    print(f"checkpoint {info['checkpoint']}")
    print(
        f"  plan {info['plan']}, stage {info['stage']} (mode {info['mode']}), "
        f"step {info['step']}/{info['total_steps']}, {progress}"
    )
    print(f"  tokenizer {info['tokenizer_id']} (vocab {config.vocab_size})")
    print(f"  codec {info['codec_id'] or 'none recorded (text only)'}")
    print(
        f"  thinker {thinker.hidden} x {thinker.num_layers} ({thinker.num_heads} heads, "
        f"{thinker.num_kv_heads} KV), talker {talker.hidden} x {talker.num_layers}, "
        f"{'MoE' if thinker.use_moe else 'dense'}, speaker {config.speaker_dim}-d, "
        f"context {config.max_seq_len}"
    )
    encoders = info["encoders"] or {}
    for kind in ("audio", "image"):
        count = info["encoder_parameters"][f"{kind}_encoder"]
        saved = f"{count:,} parameters saved" if count else "frozen, loaded from its own weights"
        print(f"  {kind} encoder {encoders.get(kind)} ({saved})")
    print("parameters")
    for name, count in info["parameters"].items():
        print(f"  {name:<22} {count:>13,}  ({count / 1e6:7.2f} M)")
    found = info["lineage"]
    print("lineage")
    print(f"  mlflow run {found['mlflow_run_id'] or 'not recorded (trained outside the pipeline)'}")
    data = found["data"]
    if data.get("task"):
        print(f"  trained on {data['task']}: {data['rows']} rows in {len(data['files'])} files")
    for item in found["inputs"] or []:
        print(
            f"  dataset {item.get('task')}: {item.get('folder')} content {item.get('content_hash')}"
            f", {item.get('rows')} rows"
        )
    print(json.dumps(info))
    return 0
