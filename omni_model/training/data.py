"""Shards -> training batches: an index pass, a per-epoch batch plan, and a DataLoader.

Shards are parquet files in the reference schema (DESIGN.md section 6), ours with lineage
columns, the reference's released files without. Reading has three parts:

- `index_shards`: one pass over the light columns. Every row is validated (a bad row is
  skipped and counted by reason), tokenized and measured in positions, so that batches can
  be planned by length without loading audio or images. Texts are kept tokenized, except
  for spoken questions, whose placeholder count depends on the augmented audio's length.
- `plan_batches`: a deterministic function of (seed, epoch). A stage may mix in other
  tasks' rows: each epoch draws a share of them afresh beside the stage's own rows (so that
  a small model does not forget earlier tasks, or has more text to learn from). Row groups
  are shuffled and taken a window at a time (a streaming shuffle: only a window's row
  groups are read); `bucket` batching sorts each window by length so a batch pads to a
  similar longest sample, `pad_to_max` pads every sample to max_seq_len as the reference
  trainer does.
- `ShardDataset`: batch i of the plan, loaded from the parquet row groups (cached),
  question audio decoded and augmented, images decoded, collated. Every random choice
  (augmentation, dropping the voice prompt, scheduled sampling) is seeded by
  (seed, epoch, sample), so workers and resumed runs see the same batches.

Codes from different codecs never mix: the index refuses shards with different codec ids.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import soundfile as sf
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from omni_model.audio_io import AudioError, load_audio
from omni_model.config import AUDIO_PAD_ID, CODEBOOK_SIZE, NUM_CODEBOOKS, check_text_layout
from omni_model.data.sample import (
    IGNORE_INDEX,
    TEXT_ROW,
    Sample,
    build_sample,
    build_streams,
    collate,
)
from omni_model.encoders.audio import SAMPLE_RATE, feature_frames
from omni_model.encoders.image import ImageError, load_image, preprocess
from omni_model.errors import LabelledError
from omni_model.text.letters import NONE
from omni_model.text.special_tokens import TEXT_PAD_ID
from omni_model.text.tokenizer import IMAGE_MARKER, ChatTokenizer, TokenizedConversation
from omni_model.training.augment import AugmentSettings, augment_speech

TASKS = ("text", "t2a", "a2a", "i2t")
BATCHING = ("bucket", "pad_to_max")
SPLITS = ("train", "validation")
COLUMNS = (
    "conversations",
    "question_audios",
    "answer_audios",
    "image_bytes",
    "ref_audios",
    "spk_emb",
    "sample_id",
    "codec_id",
    "split",
)
GROUP_CACHE = 8  # row groups each loader process keeps decoded


class InputError(LabelledError):
    """A training input that cannot be used; the message names the file(s) and the reason."""


class ShardError(InputError):
    """Shards that cannot be trained on."""


class TokenizerError(InputError):
    """A tokenizer file that is not the pipeline's chat tokenizer."""


def load_tokenizer(path: str | Path) -> ChatTokenizer:
    """The pipeline's tokenizer JSON, or a TokenizerError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(str(path), "no such tokenizer file")
    try:
        return ChatTokenizer.load(path)
    except Exception as error:  # `tokenizers` raises a bare Exception for unreadable files
        raise TokenizerError(str(path), f"not a chat tokenizer JSON ({error})") from error


@dataclass(frozen=True)
class DataSettings:
    """How one stage reads its shards."""

    task: str
    max_seq_len: int
    batch_size: int
    split: str = "train"
    batching: str = "bucket"
    bucket_batches: int = 32  # batches sorted together: a larger window pads less
    mix: tuple[str, ...] = ()  # other tasks whose rows are mixed into every epoch
    mix_share: float = 0.5  # mixed-in rows per epoch, as a share of the task's own rows
    augment: bool = True  # augment spoken questions (A2A rows)
    augment_settings: AugmentSettings = field(default_factory=AugmentSettings)
    all_tokens: bool = False  # next-token loss on every text token (the Thinker text stage)
    drop_reference: float = 0.5  # share of samples trained on the speaker vector alone
    scheduled_sampling: float = 0.05
    keep_transcript: bool = False  # A2A: keep the question's text beside its audio
    image_tokens: int = 64
    text_layout: str = "sequential"  # a spoken reply's text row: see omni_model.data.sample
    letter_window: int = 0  # > 0: the letters each reply column reads (omni_model.text.letters)
    seed: int = 0

    def __post_init__(self) -> None:
        for task in (self.task, *self.mix):
            if task not in TASKS:
                raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
        if self.task in self.mix:
            raise ValueError(f"task {self.task!r} cannot be mixed into itself")
        if self.batching not in BATCHING:
            raise ValueError(f"unknown batching {self.batching!r}; choose one of {BATCHING}")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose one of {SPLITS}")
        check_text_layout(self.text_layout)
        if self.batch_size < 1 or self.max_seq_len < 2:
            raise ValueError("batch_size must be >= 1 and max_seq_len >= 2")

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task read: the stage's own, then the mixed-in ones."""
        return (self.task, *self.mix)

    @property
    def longest_stretch(self) -> float:
        """How much longer augmentation can make a question clip (slowest speed)."""
        return 1 / min(self.augment_settings.speed_range) if self.augment else 1.0


@dataclass(slots=True)
class IndexedRow:
    """Where a usable row lives and how long its sample is (before augmentation)."""

    file: int
    group: int
    row: int
    length: int  # input positions, at most max_seq_len
    conversation: TokenizedConversation | None  # None: tokenized at load (spoken questions)
    mixed: bool = False  # from a mixed-in task, not the stage's own


@dataclass
class ShardIndex:
    files: list[Path]
    tasks: list[str]  # the task of each file
    rows: list[IndexedRow]
    codec_id: str | None  # None when no row holds codes (text, I2T)
    speaker_dim: int | None  # None when no row holds a speaker vector
    skipped: Counter = field(default_factory=Counter)  # reason -> rows


def task_files(root: str | Path, task: str, split: str) -> list[Path]:
    """Parquet files of one task and split under `root` (the shards folder or a task folder).

    `{split}-*.parquet` hold one split; other files (`reference-*`, released files) are
    read for every split and filtered by their `split` column (rows without one: train).
    """
    root = Path(root)
    folder = root / task if (root / task).is_dir() else root
    if not folder.is_dir():
        raise ShardError(str(folder), "no such shards folder")
    other_splits = tuple(f"{s}-" for s in SPLITS if s != split)
    files = [p for p in sorted(folder.glob("*.parquet")) if not p.name.startswith(other_splits)]
    if not files:
        raise ShardError(str(folder), f"no parquet shards for task {task!r}, split {split!r}")
    return files


def open_shard(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as error:
        raise ShardError(str(path), f"not a readable parquet file ({error})") from error


def shard_speaker_dim(root: str | Path) -> int | None:
    """Length of the first speaker vector in the spoken tasks' shards (None if there is none)."""
    for task in ("t2a", "a2a"):
        for path in sorted((Path(root) / task).glob("*.parquet")):
            parquet = open_shard(path)
            if "spk_emb" not in parquet.schema_arrow.names:
                continue
            column = parquet.read(columns=["spk_emb"]).column("spk_emb")
            lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
            nonzero = lengths[lengths > 0]
            if len(nonzero):
                return int(nonzero[0])
    return None


def user_turns_with_audio(messages: list[dict], keep_transcript: bool) -> list[dict]:
    """Spoken user turns carry audio instead of text, unless the transcript is kept."""
    if keep_transcript:
        return messages
    return [{**m, "content": ""} if m.get("role") == "user" else m for m in messages]


def images_of(value: bytes | list | None) -> list[bytes]:
    """`image_bytes` is binary in our shards, list<binary> in some released files."""
    if value is None:
        return []
    return [value] if isinstance(value, bytes) else [v for v in value if v is not None]


def question_frames(data: bytes, stretch: float = 1.0) -> int:
    """Feature frames of an encoded clip at 16 kHz (`stretch` times longer), from its header."""
    info = sf.info(io.BytesIO(data))
    samples = math.ceil(info.frames * stretch * SAMPLE_RATE / info.samplerate)
    return int(feature_frames(torch.tensor(samples)))


def answer_codes(row: dict) -> np.ndarray | None:
    """The last assistant turn's codes (8, F), or None; raises ValueError when malformed."""
    turns = row.get("answer_audios") or []
    if not turns or not turns[-1]:
        return None
    return frame_major(turns[-1], "answer codes")


def frame_major(flat: list[int], name: str) -> np.ndarray:
    """Codes flattened frame-major (f0 c0..c7, f1 c0..c7, ...) -> (8, frames)."""
    codes = np.asarray(flat, dtype=np.int64)
    if len(codes) % NUM_CODEBOOKS:
        raise ValueError(f"{name}: {len(codes)} values is not a multiple of {NUM_CODEBOOKS}")
    if codes.min() < 0 or codes.max() >= CODEBOOK_SIZE:
        raise ValueError(f"{name} outside 0..{CODEBOOK_SIZE - 1}")
    return codes.reshape(-1, NUM_CODEBOOKS).T


def measure_row(
    row: dict, tokenizer: ChatTokenizer, settings: DataSettings, task: str
) -> IndexedRow:
    """Validate and tokenize one row of `task`; raises ValueError naming what is wrong."""
    try:
        messages = json.loads(row["conversations"])
    except (TypeError, json.JSONDecodeError) as error:
        raise ValueError(f"conversations is not JSON ({error})") from error
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("conversations is not a list of turns")
    users = [m for m in messages if m.get("role") == "user"]
    questions = row.get("question_audios") or []
    frames: list[int] = []
    stretch = 0  # extra prompt positions the slowest augmented speed can add
    if questions:
        if len(questions) != len(users):
            raise ValueError(f"{len(questions)} question audios for {len(users)} user turns")
        try:
            frames = [question_frames(q) for q in questions]
            longest = [question_frames(q, settings.longest_stretch) for q in questions]
        except (sf.LibsndfileError, TypeError) as error:
            raise ValueError("question audio is not readable audio") from error
        stretch = sum(longest) - sum(frames)
        messages = user_turns_with_audio(messages, settings.keep_transcript)
    markers = sum(str(m.get("content", "")).count(IMAGE_MARKER) for m in users)
    images = len(images_of(row.get("image_bytes")))
    if markers != images:
        raise ValueError(f"{markers} {IMAGE_MARKER} markers but {images} images")
    conversation = tokenizer.encode_chat(messages, frames, settings.image_tokens)
    codes = answer_codes(row)
    if task in ("t2a", "a2a") and codes is None:
        raise ValueError("no answer codes")
    reference = frame_major(row["ref_audios"], "ref codes") if row.get("ref_audios") else None
    layout = build_streams(
        conversation,
        None if codes is None else torch.from_numpy(codes),
        None if reference is None else torch.from_numpy(reference),
        with_speaker=bool(row.get("spk_emb")),
        reply_weights=reply_weights(tokenizer, conversation, settings),
    )
    if layout.reply_start + stretch >= settings.max_seq_len:
        raise ValueError(f"prompt longer than max_seq_len {settings.max_seq_len}")
    length = min(layout.streams.shape[1] - 1, settings.max_seq_len)
    return IndexedRow(
        -1, -1, -1, length, None if questions else conversation, task != settings.task
    )


def index_shards(
    files: list[Path],
    tasks: list[str],
    tokenizer: ChatTokenizer,
    settings: DataSettings,
    codec_id: str | None = None,
) -> ShardIndex:
    """Index every usable row of `settings.split` in `files` (of `tasks`, one per file).

    codec_id: the codec the model's codes belong to (a previous stage's); rows holding
    codes must match it, and files without a `codec_id` column are taken to be in it.
    """
    rows: list[IndexedRow] = []
    skipped: Counter = Counter()
    codecs: dict[str, set[str]] = {}
    speaker_dims: set[int] = set()
    for file_id, (path, task) in enumerate(zip(files, tasks, strict=True)):
        parquet = open_shard(path)
        names = set(parquet.schema_arrow.names)
        if "conversations" not in names:
            raise ShardError(str(path), "no `conversations` column: not a reference-schema shard")
        heavy = {"image_bytes"} | ({"question_audios"} if task != "a2a" else set())
        columns = [c for c in COLUMNS if c in names and c not in heavy]
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=columns)
            if "image_bytes" in names:  # only whether images exist and how many
                table = table.append_column("image_bytes", image_counts(parquet, group))
            for number, row in enumerate(table.to_pylist()):
                if row.get("split", "train") != settings.split:
                    continue
                try:
                    indexed = measure_row(row, tokenizer, settings, task)
                except ValueError as error:
                    skipped[str(error)] += 1
                    continue
                indexed.file, indexed.group, indexed.row = file_id, group, number
                rows.append(indexed)
                if row.get("answer_audios") or row.get("ref_audios"):
                    codec = row.get("codec_id") or codec_id
                    if not codec:
                        raise ShardError(
                            str(path), "rows hold codes but no codec_id; pass the codec's id"
                        )
                    codecs.setdefault(codec, set()).add(str(path))
                if row.get("spk_emb"):
                    speaker_dims.add(len(row["spk_emb"]))
    check_codecs(codecs, codec_id)
    if len(speaker_dims) > 1:
        raise ShardError(", ".join(map(str, files)), f"speaker vectors of sizes {speaker_dims}")
    if not rows:
        reasons = "; ".join(f"{n} x {r}" for r, n in skipped.most_common(3)) or "no rows"
        raise ShardError(", ".join(map(str, files)), f"no usable {settings.split} rows ({reasons})")
    return ShardIndex(
        files,
        tasks,
        rows,
        next(iter(codecs), None),
        next(iter(speaker_dims), None),
        skipped,
    )


def image_counts(parquet: pq.ParquetFile, group: int) -> pa.Array:
    """Per row: as many placeholder bytes as images, so validation reads no pixels."""
    column = parquet.read_row_group(group, columns=["image_bytes"]).column("image_bytes")
    counts = [len(images_of(value)) for value in column.to_pylist()]
    return pa.array([[b""] * n if n else None for n in counts], pa.list_(pa.binary()))


def check_codecs(codecs: dict[str, set[str]], expected: str | None) -> None:
    """Refuse codes from two codecs, or from a codec other than the model's."""
    if len(codecs) > 1:
        listing = "; ".join(f"{c}: {', '.join(sorted(f))}" for c, f in sorted(codecs.items()))
        raise ShardError("shards", f"codes from different codecs cannot mix ({listing})")
    if expected and codecs and expected not in codecs:
        found = next(iter(codecs))
        raise ShardError(
            ", ".join(sorted(codecs[found])),
            f"codes from codec {found}, but the model was trained on codec {expected}",
        )


def plan_batches(
    index: ShardIndex, settings: DataSettings, epoch: int, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's batches (lists of row numbers in `index.rows`) for one epoch: every row
    of the stage's task plus a fresh draw of `mix_share` times as many mixed-in rows."""
    rng = np.random.default_rng([settings.seed, epoch])
    own = [number for number, row in enumerate(index.rows) if not row.mixed]
    others = [number for number, row in enumerate(index.rows) if row.mixed]
    draw = min(len(others), round(settings.mix_share * len(own)))
    if draw:
        own += sorted(rng.choice(others, draw, replace=False).tolist())
    groups: dict[tuple[int, int], list[int]] = {}
    for number in own:
        row = index.rows[number]
        groups.setdefault((row.file, row.group), []).append(number)
    keys = list(groups)
    window_rows = settings.batch_size * settings.bucket_batches
    batches: list[list[int]] = []
    window: list[int] = []
    for position in rng.permutation(len(keys)):
        window += groups[keys[position]]
        if len(window) >= window_rows:
            batches += window_batches(index, settings, window, rng)
            window = []
    if window:
        batches += window_batches(index, settings, window, rng)
    usable = len(batches) - len(batches) % world_size
    return batches[rank:usable:world_size]


def window_batches(
    index: ShardIndex, settings: DataSettings, window: list[int], rng: np.random.Generator
) -> list[list[int]]:
    """Shuffle a window; with `bucket`, sort it by length; cut it into batches; shuffle them."""
    order = rng.permutation(np.asarray(window))
    if settings.batching == "bucket":
        lengths = np.asarray([index.rows[number].length for number in order])
        order = order[np.argsort(lengths, kind="stable")]
    size = settings.batch_size
    batches = [order[start : start + size].tolist() for start in range(0, len(order), size)]
    return [batches[i] for i in rng.permutation(len(batches))]


@dataclass
class LoadedSample:
    sample: Sample
    speaker: torch.Tensor | None  # (D,)
    questions: list[torch.Tensor]  # (samples,) at 16 kHz, one per spoken user turn
    pixels: torch.Tensor | None  # (images, 3, 256, 256)


class ShardDataset(Dataset):
    """Map-style over one epoch's batches: item i is the collated batch i of the plan."""

    def __init__(
        self,
        index: ShardIndex,
        tokenizer: ChatTokenizer,
        settings: DataSettings,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.index, self.tokenizer, self.settings = index, tokenizer, settings
        self.rank, self.world_size = rank, world_size
        self.groups: OrderedDict[tuple[int, int], pa.Table] = OrderedDict()
        self.planned: tuple[int, list[list[int]]] = (-1, [])

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's plan (kept for the epoch being read)."""
        if self.planned[0] != epoch:
            plan = plan_batches(self.index, self.settings, epoch, self.rank, self.world_size)
            self.planned = (epoch, plan)
        return self.planned[1]

    def __getitem__(self, position: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Batch `item` of `epoch`, with its position (epoch, batch) for resuming."""
        epoch, item = position
        samples = [self.load(number, epoch) for number in self.batches(epoch)[item]]
        pad_to = self.settings.max_seq_len if self.settings.batching == "pad_to_max" else None
        batch = collate_batch(samples, pad_to)
        batch["epoch"], batch["batch"] = torch.tensor(epoch), torch.tensor(item)
        return batch

    def row(self, indexed: IndexedRow) -> dict:
        """The full row (heavy columns too), from an LRU cache of decoded row groups."""
        key = (indexed.file, indexed.group)
        if key not in self.groups:
            path = self.index.files[indexed.file]
            self.groups[key] = pq.ParquetFile(path).read_row_group(indexed.group)
            if len(self.groups) > GROUP_CACHE:
                self.groups.popitem(last=False)
        self.groups.move_to_end(key)
        return self.groups[key].slice(indexed.row, 1).to_pylist()[0]

    def load(self, number: int, epoch: int) -> LoadedSample:
        """Row `number` of the index as a sample; random choices seeded by (seed, epoch, row)."""
        indexed = self.index.rows[number]
        row = self.row(indexed)
        label = f"{self.index.files[indexed.file]} row {row.get('sample_id') or indexed.row}"
        settings = self.settings
        rng = np.random.default_rng([settings.seed, epoch, number])
        questions = [
            self.question(data, f"{label} question {turn}", rng)
            for turn, data in enumerate(row.get("question_audios") or [])
        ]
        conversation = indexed.conversation
        if conversation is None:
            frames = [int(feature_frames(torch.tensor(len(q)))) for q in questions]
            messages = user_turns_with_audio(
                json.loads(row["conversations"]), settings.keep_transcript
            )
            conversation = self.tokenizer.encode_chat(messages, frames, settings.image_tokens)
        codes = answer_codes(row)
        keep_reference = row.get("ref_audios") and rng.random() >= settings.drop_reference
        reference = frame_major(row["ref_audios"], "ref codes") if keep_reference else None
        speaker = torch.tensor(row["spk_emb"], dtype=torch.float32) if row.get("spk_emb") else None
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        sample = build_sample(
            conversation,
            None if codes is None else torch.from_numpy(codes),
            None if reference is None else torch.from_numpy(reference),
            with_speaker=speaker is not None,
            max_len=settings.max_seq_len,
            scheduled_sampling=settings.scheduled_sampling,
            generator=generator,
            reply_weights=reply_weights(self.tokenizer, conversation, settings),
            reply_pieces=reply_pieces(self.tokenizer, conversation, settings),
            letter_window=settings.letter_window,
        )
        if settings.all_tokens:
            sample = with_all_token_labels(sample)
        images = images_of(row.get("image_bytes"))
        pixels = None
        if images:
            try:
                pixels = preprocess([load_image(data, name=label) for data in images])
            except ImageError as error:
                raise ShardError(label, f"image: {error.reason}") from error
        return LoadedSample(sample, speaker, questions, pixels)

    def question(self, data: bytes, label: str, rng: np.random.Generator) -> torch.Tensor:
        try:
            audio = load_audio(data, name=label, sample_rate=SAMPLE_RATE, allow_silent=True)
        except AudioError as error:
            raise ShardError(label, error.reason) from error
        if self.settings.augment:
            augmented = augment_speech(
                audio.numpy(), SAMPLE_RATE, rng, self.settings.augment_settings
            )
            audio = torch.from_numpy(augmented)
        return audio


def reply_weights(
    tokenizer: ChatTokenizer, conversation: TokenizedConversation, settings: DataSettings
) -> list[float] | None:
    """What `build_streams` needs for the settings' text layout (None: sequential)."""
    return tokenizer.reply_weights(conversation) if settings.text_layout == "aligned" else None


def reply_pieces(
    tokenizer: ChatTokenizer, conversation: TokenizedConversation, settings: DataSettings
) -> list[str] | None:
    """Each reply token's text when the Talker reads letters (None: it does not)."""
    return tokenizer.reply_pieces(conversation) if settings.letter_window else None


def with_all_token_labels(sample: Sample) -> Sample:
    """Next-token labels on every text position (the text stage), not only the last reply;
    the reply keeps its own labels (in the aligned layout they include the pads)."""
    text = sample.input_ids[TEXT_ROW]  # (T,)
    # Input t predicts input t + 1; the last input's target only the reply labels hold
    # (IGNORE_INDEX clamps to the pad id, which is ignored too).
    following = torch.cat([text[1:], sample.text_labels[-1:].clamp_min(TEXT_PAD_ID)])
    labels = torch.where(following == TEXT_PAD_ID, IGNORE_INDEX, following)
    labels = torch.where(sample.text_labels != IGNORE_INDEX, sample.text_labels, labels)
    return dataclasses.replace(sample, text_labels=labels)


def collate_batch(
    samples: list[LoadedSample], pad_to: int | None = None
) -> dict[str, torch.Tensor]:
    """Pad to the longest sample (or to `pad_to`); side inputs in placeholder order.

    Keys: input_ids (B, 9, T), text_labels (B, T), audio_labels (B, 8, T), letters (B, W, T)
    for a Talker with a letter window, positions
    (a 0-d count of non-padding input positions) and, when any sample has them, speaker
    (B, D; zeros for samples without), question_audio (N, S) + question_lengths (N,) and
    pixels (M, 3, 256, 256).
    """
    batch = collate([loaded.sample for loaded in samples])
    if pad_to is not None:
        width = batch["input_ids"].shape[-1]
        padded = F.pad(batch["input_ids"], (0, pad_to - width), value=AUDIO_PAD_ID)
        padded[:, TEXT_ROW, width:] = TEXT_PAD_ID
        letters = batch.get("letters")
        batch = {
            "input_ids": padded,
            "text_labels": F.pad(batch["text_labels"], (0, pad_to - width), value=IGNORE_INDEX),
            "audio_labels": F.pad(batch["audio_labels"], (0, pad_to - width), value=IGNORE_INDEX),
        }
        if letters is not None:
            batch["letters"] = F.pad(letters, (0, pad_to - width), value=NONE)
    batch["positions"] = torch.tensor(sum(s.sample.input_ids.shape[1] for s in samples))
    speakers = [s.speaker for s in samples]
    present = [s for s in speakers if s is not None]
    if present:
        zeros = torch.zeros_like(present[0])
        batch["speaker"] = torch.stack([zeros if s is None else s for s in speakers])
    questions = [clip for s in samples for clip in s.questions]
    if questions:
        batch["question_audio"] = nn.utils.rnn.pad_sequence(questions, batch_first=True)
        batch["question_lengths"] = torch.tensor([len(clip) for clip in questions])
    pixels = [s.pixels for s in samples if s.pixels is not None]
    if pixels:
        batch["pixels"] = torch.cat(pixels)
    return batch


class ShardData:
    """One task's shards for one split (plus mixed-in tasks' shards from `root/TASK/`): the
    index, its facts, and epoch loaders.

    `codec_id` is the model's codec (from a previous stage's checkpoint), if it has one.
    """

    def __init__(
        self,
        root: str | Path,
        tokenizer: ChatTokenizer,
        settings: DataSettings,
        codec_id: str | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.settings = settings
        self.files = task_files(root, settings.task, settings.split)
        tasks = [settings.task] * len(self.files)
        for task in settings.mix:
            folder = Path(root) / task
            if not folder.is_dir():
                raise ShardError(str(folder), f"no shards folder for mixed-in task {task!r}")
            files = task_files(folder, task, settings.split)
            self.files, tasks = self.files + files, tasks + [task] * len(files)
        self.index = index_shards(self.files, tasks, tokenizer, settings, codec_id)
        self.dataset = ShardDataset(self.index, tokenizer, settings, rank, world_size)

    @property
    def rows(self) -> int:
        return len(self.index.rows)

    @property
    def codec_id(self) -> str | None:
        return self.index.codec_id

    @property
    def speaker_dim(self) -> int | None:
        return self.index.speaker_dim

    def batches_per_epoch(self, epoch: int = 0) -> int:
        return len(self.dataset.batches(epoch))

    def describe(self) -> dict:
        """Facts for logs and lineage: files, rows (per task), codec, skipped rows by reason."""
        per_task = Counter(self.index.tasks[row.file] for row in self.index.rows)
        return {
            "task": self.settings.task,
            "mix": list(self.settings.mix),
            "split": self.settings.split,
            "files": [str(p) for p in self.files],
            "rows": self.rows,
            "task_rows": dict(per_task),
            "codec_id": self.codec_id,
            "skipped": dict(self.index.skipped),
            "batches_per_epoch": self.batches_per_epoch(),
        }

    def loader(
        self, epoch: int = 0, start: int = 0, num_workers: int = 0, epochs: int | None = None
    ) -> DataLoader:
        """Batches from (epoch, start) on, through `epochs` epochs (None: without end), loaded
        by `num_workers` processes (0: in this one) that live as long as the loader."""
        return DataLoader(
            self.dataset,
            batch_size=None,
            sampler=Positions(self.dataset, epoch, start, epochs),
            num_workers=num_workers,
            prefetch_factor=4 if num_workers else None,
        )


class Positions(Sampler):
    """(epoch, batch) positions from a starting one, epoch after epoch."""

    def __init__(self, dataset: ShardDataset, epoch: int, start: int, epochs: int | None):
        self.dataset, self.epoch, self.start, self.epochs = dataset, epoch, start, epochs

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, start = self.epoch, self.start
        while self.epochs is None or epoch < self.epoch + self.epochs:
            for item in range(start, len(self.dataset.batches(epoch))):
                yield epoch, item
            epoch, start = epoch + 1, 0
