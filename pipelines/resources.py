"""Resources: where artefacts live and which codec makes the codes.

Both are `ConfigurableResource`s so that a run (or `dagster dev`'s launchpad) can point
the store elsewhere or switch the codec with config alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg

from omni_model.quantization import Codec, load_codec

REPO_ROOT = Path(__file__).resolve().parent.parent


class StoreResource(dg.ConfigurableResource):
    """The `assets_store/` folder: every materialized artefact is a file under it."""

    root: str = str(REPO_ROOT / "assets_store")

    def path(self, *parts: str) -> Path:
        return Path(self.root).joinpath(*parts)

    def codec_manifest(self) -> Path:
        return self.path("codecs", "current.json")


class CodecResource(dg.ConfigurableResource):
    """The one codec setting: `offline` (fitted by the `speech_codec` asset) or `mimi`.

    Mimi weights come from `mimi_weights` (a local safetensors file) or, only when
    `allow_download` is set, from the Hugging Face hub.
    """

    kind: str = "offline"
    mimi_weights: str | None = None
    allow_download: bool = False

    def load(self, store: StoreResource) -> Codec:
        """The codec the `speech_codec` asset settled on (its manifest names the weights)."""
        manifest_path = store.codec_manifest()
        if not manifest_path.exists():
            raise dg.Failure(f"no codec yet: materialize `speech_codec` first ({manifest_path})")
        manifest = json.loads(manifest_path.read_text())
        if manifest["kind"] != self.kind:
            raise dg.Failure(
                f"the store's codec is {manifest['kind']!r} but this run asks for {self.kind!r}: "
                "re-materialize `speech_codec` and everything downstream"
            )
        codec = load_codec(manifest["kind"], manifest["weights"], self.allow_download)
        if codec.codec_id != manifest["codec_id"]:
            raise dg.Failure(
                f"codec weights changed since `speech_codec` ran: {codec.codec_id} != "
                f"{manifest['codec_id']}"
            )
        return codec
