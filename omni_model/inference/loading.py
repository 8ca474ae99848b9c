"""Loading a checkpoint to talk to, with the tokenizer, codec and voice it was trained with.

A checkpoint records the ids of its tokenizer and codec, not their files. Files given
explicitly are used as given; otherwise they are looked up in the store under the names the
pipeline writes them with: `tokenizer/tokenizer-{id}.json`, `codecs/{codec_id}.safetensors`
(or the manifest `codecs/current.json`), `voices/{codec_id}/{name}.voice`. Either way the ids
are compared before anything is generated, and a mismatch fails naming both ids: codes of
another codec, or ids of another tokenizer, would be read as noise without any error.

A model can also be named instead of a checkpoint: `tiny` is the last completed stage of the
plan variant trained into `training/tiny/`, `tiny/a2a` that one stage's final checkpoint.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from omni_model.encoders.errors import CheckpointError
from omni_model.generation import SamplingSettings
from omni_model.inference.engine import OmniChat
from omni_model.quantization import CODEC_KINDS, Codec, load_codec
from omni_model.text.tokenizer import ChatTokenizer
from omni_model.training.checkpoint import load_checkpoint, read_meta
from omni_model.training.model import TrainModel
from omni_model.voices import Voice

DEFAULT_STORE = Path("assets_store")
FINAL = "final"
LINEAGE_FILE = "lineage.json"  # the pipeline writes the MLflow run beside the final weights
DOWNLOADED = "huggingface"  # what the codec manifest records for hub-downloaded Mimi weights


class CompatibilityError(CheckpointError):
    """A tokenizer, codec or voice other than the one the checkpoint was trained with."""


def check_compatible(label: str, meta: dict, tokenizer: ChatTokenizer, codec: Codec) -> None:
    """Refuse a tokenizer or codec whose id differs from the checkpoint's.

    A checkpoint that records no codec (trained on text only) accepts any codec.
    """
    trained_with = meta.get("tokenizer_id")
    if trained_with != tokenizer.tokenizer_id:
        raise CompatibilityError(
            label,
            f"trained with tokenizer {trained_with}, but the tokenizer given is "
            f"{tokenizer.tokenizer_id}: pass the tokenizer file it was trained with",
        )
    codec_id = meta.get("codec_id")
    if codec_id is not None and codec_id != codec.codec_id:
        raise CompatibilityError(
            label,
            f"trained on codes of codec {codec_id}, but the codec given is {codec.codec_id}: "
            "pass the codec weights it was trained with",
        )


def resolve_model(name: str, store: Path = DEFAULT_STORE) -> Path:
    """`VARIANT` or `VARIANT/STAGE` under the store's `training/` -> a final checkpoint folder."""
    variant, _, stage = name.partition("/")
    folder = store / "training" / variant
    finals = {p.parent.name: p for p in sorted(folder.glob(f"*/{FINAL}")) if p.is_dir()}
    if not finals:
        known = sorted(p.name for p in (store / "training").glob("*") if p.is_dir())
        raise FileNotFoundError(
            f"model {name!r}: no trained stages in {folder} (trained models: "
            f"{', '.join(known) or 'none'})"
        )
    if stage:
        if stage not in finals:
            raise FileNotFoundError(
                f"model {name!r}: stage {stage!r} has no final checkpoint "
                f"(completed: {', '.join(sorted(finals))})"
            )
        return finals[stage]
    any_meta = read_meta(next(iter(finals.values())))
    order = [s["name"] for s in any_meta.get("plan_spec", {}).get("stages", [])]
    completed = [s for s in order if s in finals] or sorted(finals)
    return finals[completed[-1]]


def find_tokenizer(meta: dict, path: str | Path | None, store: Path) -> ChatTokenizer:
    """The tokenizer at `path`, else the store's file named after the checkpoint's id."""
    if path is None:
        path = store / "tokenizer" / f"tokenizer-{meta.get('tokenizer_id')}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the checkpoint's tokenizer is not in the store; pass --tokenizer FILE"
            )
    elif not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such tokenizer file")
    return ChatTokenizer.load(path)


def find_codec(
    meta: dict,
    weights: str | Path | None,
    store: Path,
    kind: str | None = None,
    allow_download: bool = False,
) -> Codec:
    """The codec from `weights` (kind from `kind` or the checkpoint's codec id), else the
    store's offline codec named by the id, else the store's current codec if its id matches."""
    codec_id = meta.get("codec_id") or ""
    kind = kind or next((k for k in CODEC_KINDS if codec_id.startswith(f"{k}-")), None)
    if weights is not None or (kind == "mimi" and allow_download):
        if kind is None:
            raise ValueError("the checkpoint records no codec: name its kind with --codec")
        return load_codec(kind, weights, allow_download=allow_download)
    fitted = store / "codecs" / f"{codec_id}.safetensors"
    if kind == "offline" and fitted.is_file():
        return load_codec("offline", fitted)
    manifest = store / "codecs" / "current.json"
    if manifest.is_file():
        current = json.loads(manifest.read_text())
        if not codec_id or current.get("codec_id") == codec_id:
            stored = None if current["weights"] == DOWNLOADED else current["weights"]
            return load_codec(current["kind"], stored, allow_download=allow_download)
    raise FileNotFoundError(
        f"codec {codec_id or '(none recorded)'} is not in the store {store}: "
        "pass its weights with --codec-weights FILE"
    )


def voice_folder(store: Path, codec_id: str) -> Path:
    return store / "voices" / codec_id


def find_voice(spec: str | Path, codec_id: str, store: Path) -> Voice:
    """A voice file path, or the name of one of the store's voices for this codec."""
    path = Path(spec)
    if not path.is_file():
        folder = voice_folder(store, codec_id)
        path = folder / f"{spec}.voice"
        if not path.is_file():
            known = sorted(p.stem for p in folder.glob("*.voice"))
            raise FileNotFoundError(
                f"voice {spec!r}: no such file, and not a voice of codec {codec_id} in the store"
                f" ({', '.join(known) or 'none built'})"
            )
    return Voice.load(path, codec_id=codec_id)


def lineage(checkpoint: str | Path, meta: dict) -> dict:
    """MLflow run id and the datasets read: from the meta, else the pipeline's lineage file."""
    found = {"mlflow_run_id": meta.get("mlflow_run_id"), "inputs": meta.get("inputs")}
    file = Path(checkpoint) / LINEAGE_FILE
    if file.is_file():
        try:
            written = json.loads(file.read_text())
        except json.JSONDecodeError as error:
            raise CheckpointError(str(file), f"not valid JSON ({error})") from error
        found = {key: found[key] or written.get(key) for key in found}
    data = meta.get("result", {}).get("data") or {}
    found["data"] = {key: data.get(key) for key in ("task", "files", "rows", "codec_id")}
    return found


@dataclass
class Loaded:
    """A checkpoint and everything it needs to talk; `chat()` gives independent dialogues."""

    checkpoint: Path
    meta: dict
    trained: TrainModel
    tokenizer: ChatTokenizer
    codec: Codec
    store: Path

    def chat(
        self,
        voice: Voice | None = None,
        settings: SamplingSettings | None = None,
        system: str | None = None,
        seed: int | None = None,
        compute_lock: threading.Lock | None = None,
    ) -> OmniChat:
        """A dialogue of its own over the shared weights (history, voice and sampler apart)."""
        return OmniChat(
            self.trained.model,
            self.tokenizer,
            self.codec,
            audio_encoder=self.trained.audio_encoder,
            image_encoder=self.trained.image_encoder,
            voice=voice,
            settings=settings,
            system=system,
            seed=seed,
            compute_lock=compute_lock,
        )

    def voice(self, spec: str | Path) -> Voice:
        return find_voice(spec, self.codec.codec_id, self.store)

    def voice_names(self) -> list[str]:
        return sorted(p.stem for p in voice_folder(self.store, self.codec.codec_id).glob("*.voice"))


def load(
    checkpoint: str | Path | None = None,
    *,
    model: str | None = None,
    store: str | Path = DEFAULT_STORE,
    tokenizer: str | Path | ChatTokenizer | None = None,
    codec: Codec | None = None,
    codec_weights: str | Path | None = None,
    codec_kind: str | None = None,
    allow_download: bool = False,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Loaded:
    """A checkpoint folder (or a model name in the store) with its tokenizer and codec,
    their ids checked against the checkpoint's before the weights are read.

    `dtype` (e.g. torch.bfloat16) converts the Thinker-Talker's weights; the side encoders
    stay in float32 and their features are cast where they enter the projectors. A batch-1
    step reads every weight once, so half the bytes is close to half the time."""
    store = Path(store)
    if (checkpoint is None) == (model is None):
        raise ValueError("give exactly one of a checkpoint folder or a model name")
    path = Path(checkpoint) if checkpoint is not None else resolve_model(model, store)
    meta = read_meta(path)
    if not isinstance(tokenizer, ChatTokenizer):
        tokenizer = find_tokenizer(meta, tokenizer, store)
    if codec is None:
        codec = find_codec(meta, codec_weights, store, codec_kind, allow_download)
    check_compatible(str(path), meta, tokenizer, codec)
    trained, _ = load_checkpoint(path, device)
    if dtype is not None:
        trained.model.to(dtype)
    return Loaded(path, meta, trained.eval(), tokenizer, codec, store)


def load_chat(
    checkpoint: str | Path,
    tokenizer: ChatTokenizer,
    codec: Codec,
    *,
    voice: Voice | None = None,
    settings: SamplingSettings | None = None,
    system: str | None = None,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> OmniChat:
    """An OmniChat over a checkpoint folder, after checking its tokenizer and codec ids."""
    loaded = load(checkpoint, tokenizer=tokenizer, codec=codec, device=device)
    return loaded.chat(voice, settings, system, seed)
