"""The codec and the codes: answer speech as (8, frames) codes, one parquet file per bucket.

The offline codec is itself an asset, fitted on the speech corpus; Mimi is loaded through
the codec resource. Either way `speech_codec` writes a manifest naming the codec id and
weights, and every code file records that id, so codes of different codecs never mix.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from omni_model.audio_io import AudioError, load_audio
from omni_model.quantization import Codec, OfflineCodec, load_codec
from omni_model.quantization.offline import FIRST_STAGE_CODES, RESIDUAL_STAGE_CODES
from omni_model.quantization.phonetic import TAGGER_STEPS
from pipelines.assets.common import Landed, preview_table
from pipelines.partitions import BUCKETS
from pipelines.quarantine import quarantine_rows, write_quarantine
from pipelines.records import RawRecord, Rejected
from pipelines.resources import CodecResource, StoreResource
from pipelines.storage import atomic_path, write_parquet

CODES_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("turn", pa.int32()),  # index of the assistant turn
        ("codes", pa.list_(pa.int16())),  # frame-major: frame 0 codebooks 0..7, frame 1 ...
        ("frames", pa.int32()),
        ("seconds", pa.float64()),
        ("codec_id", pa.string()),
    ]
)


class SpeechCodecConfig(dg.Config):
    """How much speech the offline codec is fitted on, and how its first stage is made
    (all ignored for Mimi): `phones` names each frame's phone, learnt in `tagger_steps` from
    forced alignments of the clips with their text (like Mimi's semantic first codebook), so
    that a Talker reading the reply's letters can say them; `kmeans` clusters log-mel into
    `first_stage_codes` entries, as the later stages do (its first codes follow the voice more
    than the phones: README, Results)."""

    fit_minutes: float = 10.0
    kmeans_iterations: int = 4
    first_stage: Literal["kmeans", "phones"] = "phones"
    first_stage_codes: int = FIRST_STAGE_CODES
    residual_stage_codes: int = RESIDUAL_STAGE_CODES
    tagger_steps: int = TAGGER_STEPS
    seed: int = 0


@dataclass
class CodecManifest:
    kind: str
    codec_id: str
    weights: str


def fitting_audio(corpora: list[Landed], minutes: float) -> tuple[list[torch.Tensor], list[str]]:
    """Answer clips and what they say, in sample-id order until `minutes` of audio:
    deterministic for a corpus."""
    records = sorted((r for c in corpora for r in c.records()), key=lambda r: r.sample_id)
    clips, texts, total = [], [], 0.0
    for record in records:
        for index, (clip, text) in enumerate(
            zip(record.answer_audio, record.turns("assistant"), strict=False)
        ):
            try:
                audio = load_audio(clip, name=f"{record.sample_id}#a{index}")
            except AudioError:
                continue  # unreadable clips are quarantined by `speech_codes`
            clips.append(audio)
            texts.append(text)
            total += len(audio) / 24_000 / 60
            if total >= minutes:
                return clips, texts
    return clips, texts


@dg.asset(group_name="codes", description="The codec every code in the store is made with.")
def speech_codec(
    context: dg.AssetExecutionContext,
    config: SpeechCodecConfig,
    store: StoreResource,
    codec: CodecResource,
    spoken_corpus: dict[str, Landed],
) -> CodecManifest:
    if codec.kind == "offline":
        clips, texts = fitting_audio(list(spoken_corpus.values()), config.fit_minutes)
        if not clips:
            raise dg.Failure("no readable answer speech to fit the offline codec on")
        fitted = OfflineCodec.fit(
            clips,
            texts=texts if config.first_stage == "phones" else None,
            seed=config.seed,
            iterations=config.kmeans_iterations,
            first_stage_codes=config.first_stage_codes,
            residual_stage_codes=config.residual_stage_codes,
            tagger_steps=config.tagger_steps,
        )
        weights = store.path("codecs", f"{fitted.codec_id}.safetensors")
        weights.parent.mkdir(parents=True, exist_ok=True)
        fitted.save(weights)
        loaded: Codec = fitted
        minutes = sum(len(c) for c in clips) / 24_000 / 60
        context.add_output_metadata(
            output_name="result",
            metadata={"fitted_on_minutes": round(minutes, 2), **fitted.fit_summary},
        )
    else:
        loaded = load_codec(codec.kind, codec.mimi_weights, codec.allow_download)
        weights = codec.mimi_weights or "huggingface"
    manifest = CodecManifest(codec.kind, loaded.codec_id, str(weights))
    with atomic_path(store.codec_manifest()) as temporary:
        temporary.write_text(json.dumps(manifest.__dict__, indent=2))
    context.add_output_metadata(
        output_name="result", metadata={"codec_id": manifest.codec_id, "weights": manifest.weights}
    )
    return manifest


@dataclass
class CodeFile:
    """One bucket's codes: where they are, what made them, and what they were made from."""

    path: str
    codec_id: str
    input_hash: str
    rows: int
    rejected: int
    entered: int


def answer_clips(records: Iterator[RawRecord]) -> Iterator[tuple[str, int, bytes]]:
    for record in records:
        for turn, clip in enumerate(record.answer_audio):
            yield record.sample_id, turn, clip


def encode_clips(
    codec: Codec, clips: Iterator[tuple[str, int, bytes]], source: str, batch_size: int = 8
) -> tuple[list[dict], list[Rejected]]:
    """Encode every clip (batched, padded with lengths); unreadable clips become rejections."""
    rows, rejected, batch = [], [], []

    def flush() -> None:
        lengths = torch.tensor([len(audio) for _, _, audio in batch])
        padded = torch.nn.utils.rnn.pad_sequence([audio for _, _, audio in batch], True)
        codes, frames = codec.encode(padded, lengths)  # (B, 8, F), (B,)
        for (sample_id, turn, audio), item_codes, item_frames in zip(
            batch, codes, frames, strict=True
        ):
            kept = item_codes[:, : int(item_frames)]  # (8, frames)
            rows.append(
                {
                    "sample_id": sample_id,
                    "turn": turn,
                    "codes": kept.T.reshape(-1).tolist(),
                    "frames": int(item_frames),
                    "seconds": len(audio) / codec.sample_rate,
                    "codec_id": codec.codec_id,
                }
            )
        batch.clear()

    for sample_id, turn, clip in tqdm(clips, desc="encoding", unit=" clips", mininterval=2.0):
        try:
            audio = load_audio(clip, name=f"{sample_id}#a{turn}", sample_rate=codec.sample_rate)
        except AudioError as error:
            rejected.append(Rejected(source, f"{sample_id}#a{turn}", error.reason))
            continue
        batch.append((sample_id, turn, audio))
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    return rows, rejected


def existing_input_hash(path) -> str | None:
    if not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    return metadata.get(b"input_hash", b"").decode() or None


@dg.asset(
    partitions_def=BUCKETS,
    group_name="codes",
    check_specs=[dg.AssetCheckSpec("codes_are_valid", asset="speech_codes")],
    description="Answer speech as codes; buckets with unchanged input are not re-encoded.",
)
def speech_codes(
    context: dg.AssetExecutionContext,
    store: StoreResource,
    codec: CodecResource,
    spoken_corpus: Landed,
    speech_codec: CodecManifest,
):
    """Checked in the same step: a check of one partition cannot load the asset's value."""
    bucket = context.partition_key
    input_hash = hashlib.sha256(
        f"{spoken_corpus.content_hash}:{speech_codec.codec_id}".encode()
    ).hexdigest()[:16]
    path = store.path("codes", speech_codec.codec_id, f"{bucket}.parquet")
    step = f"speech_codes.{bucket}"
    entered = sum(len(r.answer_audio) for r in spoken_corpus.records())
    if existing_input_hash(path) == input_hash:
        context.log.info(f"{bucket}: input unchanged ({input_hash}), keeping {path}")
        rows = pq.read_metadata(path).num_rows
        rejected = quarantine_rows(store.path("quarantine"), step)
        reused = True
    else:
        loaded = codec.load(store)
        table_rows, rejections = encode_clips(
            loaded, answer_clips(iter(spoken_corpus.records())), source=step
        )
        table = pa.Table.from_pylist(table_rows, schema=CODES_SCHEMA)
        table = table.replace_schema_metadata({"input_hash": input_hash})
        write_parquet(table, path)
        write_quarantine(store.path("quarantine"), step, rejections)
        rows, rejected, reused = len(table_rows), len(rejections), False
    summary = pq.read_table(path, columns=["sample_id", "turn", "frames", "seconds"]).to_pylist()
    context.add_output_metadata(
        output_name="result",
        metadata={
            "clips": rows,
            "quarantined": rejected,
            "hours": round(sum(row["seconds"] for row in summary) / 3600, 4),
            "codec_id": speech_codec.codec_id,
            "path": str(path),
            "reused": reused,
            "preview": preview_table(summary),
        },
    )
    code_file = CodeFile(str(path), speech_codec.codec_id, input_hash, rows, rejected, entered)
    yield dg.Output(code_file)
    yield check_code_file(code_file)


def check_code_file(speech_codes: CodeFile) -> dg.AssetCheckResult:
    """Codes in 0..2047, frames match durations, clips in = clips out + quarantined."""
    table = pq.read_table(speech_codes.path)
    problems = code_problems(table.to_pylist())
    accounted = speech_codes.rows + speech_codes.rejected == speech_codes.entered
    return dg.AssetCheckResult(
        check_name="codes_are_valid",
        passed=not problems and accounted,
        metadata={
            "problems": dg.MetadataValue.json(problems[:20]),
            "clips_in": speech_codes.entered,
            "clips_out": speech_codes.rows,
            "quarantined": speech_codes.rejected,
        },
    )


def code_problems(
    rows: list[dict], samples_per_frame: int = 1_920, rate: int = 24_000
) -> list[str]:
    """Every row whose codes are out of range, misshapen, or disagree with its duration.

    A row is one clip, or (with a `clips` count) several clips' codes concatenated.
    """
    problems = []
    for row in rows:
        codes, frames = row["codes"], row["frames"]
        expected = row["seconds"] * rate / samples_per_frame
        where = f"{row['sample_id']}#a{row['turn']}"
        if len(codes) != 8 * frames:
            problems.append(f"{where}: {len(codes)} codes for {frames} frames")
        elif codes and (min(codes) < 0 or max(codes) > 2047):
            problems.append(f"{where}: codes outside 0..2047")
        if abs(frames - expected) > row.get("clips", 1):  # each clip rounds up once
            problems.append(f"{where}: {frames} frames for {row['seconds']:.2f} s")
    return problems
