"""Voices: for every speaker in the speech corpus, reference codes plus a speaker vector.

The reference codes are taken from the codes already made (no second encoding); the
speaker vector comes from the same clip. T2A/A2A rows carry their voice's prompt and
vector, so the Talker learns to speak in the voice it is shown.
"""

from dataclasses import dataclass

import dagster as dg
import polars as pl
import torch

from omni_model.audio_io import load_audio
from omni_model.encoders.speaker import SpeakerEncoder
from omni_model.voices import REFERENCE_SECONDS, Voice
from pipelines.assets.codes import CodecManifest, CodeFile
from pipelines.assets.common import Landed, preview_table
from pipelines.resources import StoreResource

MIN_REFERENCE_SECONDS = 1.5


@dataclass
class VoiceSet:
    """Voice name -> voice file; all made with one codec."""

    codec_id: str
    paths: dict[str, str]


def code_table(code_files: dict[str, CodeFile]) -> pl.DataFrame:
    return pl.concat([pl.read_parquet(f.path) for f in code_files.values()])


def reference_clips(codes: pl.DataFrame, voice_of: dict[str, str]) -> pl.DataFrame:
    """Per voice, the first (by sample id) answer clip long enough to show the voice."""
    return (
        codes.with_columns(voice=pl.col("sample_id").replace_strict(voice_of, default=None))
        .filter(pl.col("voice").is_not_null() & (pl.col("seconds") >= MIN_REFERENCE_SECONDS))
        .sort("sample_id", "turn")
        .group_by("voice", maintain_order=True)
        .first()
    )


@dg.asset(group_name="voices", description="One voice file per speaker of the speech corpus.")
def voices(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    spoken_corpus: dict[str, Landed],
    speech_codes: dict[str, CodeFile],
    speech_codec: CodecManifest,
) -> VoiceSet:
    records = {r.sample_id: r for landed in spoken_corpus.values() for r in landed.records()}
    voice_of = {sample_id: r.voice for sample_id, r in records.items() if r.voice}
    chosen = reference_clips(code_table(speech_codes), voice_of)
    encoder = SpeakerEncoder()
    paths, preview = {}, []
    for row in chosen.iter_rows(named=True):
        clip = records[row["sample_id"]].answer_audio[row["turn"]]
        label = f"{row['sample_id']}#a{row['turn']}"
        audio = load_audio(clip, name=label)
        frames = min(row["frames"], round(REFERENCE_SECONDS * 12.5))
        codes = torch.tensor(row["codes"], dtype=torch.long).view(-1, 8).T[:, :frames]  # (8, F)
        voice = Voice(
            name=row["voice"],
            codes=codes.contiguous(),
            speaker=encoder.embed(audio, 24_000, name=label),
            codec_id=speech_codec.codec_id,
            source={"clip": label, "seconds": row["seconds"]},
        )
        path = store.path("voices", speech_codec.codec_id, f"{row['voice']}.voice")
        path.parent.mkdir(parents=True, exist_ok=True)
        voice.save(path)
        paths[voice.name] = str(path)
        preview.append({"voice": voice.name, "clip": label, "frames": frames})
    missing = sorted(set(voice_of.values()) - set(paths))
    if missing:
        context.log.warning(f"no clip of >= {MIN_REFERENCE_SECONDS} s for voices {missing}")
    context.add_output_metadata(
        {
            "voices": len(paths),
            "codec_id": speech_codec.codec_id,
            "preview": preview_table(preview, 20),
        }
    )
    return VoiceSet(speech_codec.codec_id, paths)
