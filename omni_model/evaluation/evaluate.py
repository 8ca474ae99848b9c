"""Evaluate a checkpoint on probe items: ask each question, then score the reply.

Per item (`ItemResult`):
- text: exact match and token accuracy of the reply against the accepted answers;
- speech (T2A, A2A): the ASR transcript of the reply's speech against the reply's text
  (character and word errors), beside the ASR's own floor, the same errors on an espeak-ng
  rendering of that text in the same voice, and the codec's floor, the errors on that
  rendering encoded and decoded by the model's codec (the best the Talker's codes could
  sound); the mel-cepstral distortion between the reply's
  speech and that rendering; the speaker-vector cosine of the speech to the voice asked
  for and, as a baseline, to the other voices.

Replies are generated with `generate_stream` and decoded in one batch at the end: streaming
decode (the offline codec's per-frame Griffin-Lim) costs ~10x more, and first-audio latency
and real-time factor are the inference benchmark's to measure, not this loop's.

`summarize` turns items into one flat dict of floats (MLflow metrics); `cer_by_length` and
`similarity_by_voice` give the report's tables. DESIGN.md section 7 names CER buckets
short/mid/long without bounds: here they count the words of the spoken reply.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import mean

import torch

from omni_model.audio_io import save_wav
from omni_model.encoders.speaker import SpeakerEncoder, SpeakerError, cosine_similarity
from omni_model.evaluation.asr import Transcriber, build_transcriber
from omni_model.evaluation.metrics import (
    ErrorCounts,
    char_errors,
    exact_match,
    mel_cepstral_distortion,
    normalize_text,
    token_accuracy,
    voice_similarity,
    word_errors,
)
from omni_model.evaluation.probes import PROBE_TASKS, SPOKEN_TASKS, ProbeError, ProbeItem
from omni_model.generation import AudioFrame, SamplingSettings, generate_stream
from omni_model.inference.engine import OmniChat
from omni_model.inference.loading import load_chat
from omni_model.quantization import Codec
from omni_model.text.tokenizer import ChatTokenizer
from omni_model.tts import synthesize
from omni_model.voices import Voice, build_voice

AsrFactory = Callable[[Sequence[str]], Transcriber]  # evaluated texts -> the ASR to read speech

# Greedy text (answers are closed-domain); audio sampled as in the reference.
EVAL_SAMPLING = SamplingSettings(text_temperature=0.0, max_steps=300)
LENGTH_BUCKETS = (("short", 5), ("mid", 10), ("long", None))  # most words in the bucket
VOICE_TEXT = (
    "Every morning the little boat sails across the quiet river, "
    "and the children on the bridge wave hello."
)  # ~5 s: the reference clip an espeak-ng voice is built from


@dataclass
class Reply:
    """What the model said to one item."""

    text: str
    audio: torch.Tensor  # (samples,) 24 kHz, empty when no frame was made
    seconds: float  # encoding the question, generating and decoding


@dataclass
class ItemResult:
    """Every score of one item; speech fields are None where they could not be measured."""

    item_id: str
    task: str
    voice: str | None
    voice_seen: bool
    question: str
    answer: str  # the canonical accepted answer
    reply: str
    exact_match: bool
    token_accuracy: float
    audio_seconds: float
    seconds: float
    held_out: bool = False  # a validation row, not one of the fixed probes
    seed: int = 0  # the sampling seed the reply was made with
    length_bucket: str | None = None
    transcript: str | None = None  # ASR of the reply's speech
    floor_transcript: str | None = None  # ASR of the espeak-ng rendering of the reply
    chars: int | None = None  # of the normalised reply text: the reference of both ASRs
    words: int | None = None
    char_errors: int | None = None
    word_errors: int | None = None
    floor_char_errors: int | None = None
    floor_word_errors: int | None = None
    codec_transcript: str | None = None  # ASR of that rendering through the codec
    codec_char_errors: int | None = None
    mcd_db: float | None = None
    similarity: float | None = None  # to the voice asked for
    other_similarity: float | None = None  # mean over the other voices


@dataclass
class Evaluation:
    items: list[ItemResult]
    metrics: dict[str, float]
    transcriber: str  # which ASR read the speech, and the words it could not look up
    sampling: SamplingSettings  # how the replies were generated and their speech decoded

    def rows(self) -> list[dict]:
        """One plain dict per item, for tables and parquet."""
        return [dataclasses.asdict(item) for item in self.items]


def length_bucket(text: str) -> str:
    words = len(normalize_text(text).split())
    return next(name for name, most in LENGTH_BUCKETS if most is None or words <= most)


def espeak_voices(names: Sequence[str], codec: Codec, encoder: SpeakerEncoder) -> dict[str, Voice]:
    """A voice per espeak-ng voice name, from its rendering of `VOICE_TEXT` with this codec."""
    voices = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            clip = Path(folder) / "clip.wav"
            save_wav(clip, synthesize(VOICE_TEXT, name, sample_rate=codec.sample_rate))
            voices[name] = build_voice(clip, codec, encoder, name=name)
    return voices


@torch.no_grad()
def ask(chat: OmniChat, item: ProbeItem, voice: Voice | None, seed: int = 0) -> Reply:
    """A fresh single-turn dialogue, prompted as `chat` prompts; the sampling seed depends on
    the item id, so a reply does not depend on the items asked before it."""
    started = time.perf_counter()
    chat.reset()
    chat.system = item.system
    chat.set_voice(voice)
    text = "" if item.task == "a2a" else item.question
    prompt, max_steps = chat.fit_prompt(
        chat.user_turn(text, audio=item.question_audio, image=item.image)
    )
    generator = torch.Generator().manual_seed(seed + zlib.crc32(item.item_id.encode()))
    token_ids, frames, distributions = [], [], []
    for event in generate_stream(
        chat.model,
        prompt.streams,
        prompt.audio_features,
        prompt.image_features,
        prompt.speaker,
        dataclasses.replace(chat.settings, max_steps=max_steps),
        generator,
        chat.tokenizer.piece,
    ):
        if isinstance(event, AudioFrame):
            frames.append(event.codes)
            distributions.append(event.distributions)
        elif not event.is_end:
            token_ids.append(event.token_id)
    audio = torch.zeros(0)
    if frames:
        codes = torch.stack(frames, dim=1)[None]  # (1, 8, F)
        expected = None if distributions[0] is None else torch.stack(distributions, dim=1)[None]
        audio = chat.codec.decode(codes, distributions=expected)[0][0]  # (F * 1920,)
    return Reply(chat.tokenizer.decode(token_ids), audio, time.perf_counter() - started)


@dataclass(frozen=True)
class Reference:
    """What a reply's speech is measured against: espeak-ng's rendering of its text and
    the ASR's transcripts of that rendering as is and through the codec (None: no codec)."""

    rendering: torch.Tensor  # (samples,)
    transcript: str
    codec_transcript: str | None


class Scorer:
    """Scores replies; holds the ASR, the speaker encoder, the voices (name -> Voice) and,
    for the codec's floor, the codec that made the replies' speech (None: no codec floor)."""

    def __init__(
        self,
        transcriber: Transcriber,
        encoder: SpeakerEncoder,
        voices: Mapping[str, Voice],
        codec: Codec | None = None,
    ):
        self.transcriber = transcriber
        self.codec = codec
        self.encoder = encoder
        self.voices = dict(voices)
        self.names = list(self.voices)
        # (V, D); none when only pictures are asked about (replies without speech)
        self.speakers = (
            torch.stack([voice.speaker for voice in self.voices.values()]) if voices else None
        )
        # (normalised text, voice, rate) -> Reference: a reply's text is usually the same
        # under every sampling seed, and its floors depend on nothing else.
        self._references: dict[tuple[str, str, int], Reference] = {}

    def score(self, item: ProbeItem, reply: Reply, sample_rate: int = 24_000) -> ItemResult:
        result = ItemResult(
            item_id=item.item_id,
            task=item.task,
            voice=item.voice,
            voice_seen=item.voice_seen,
            question=item.question,
            answer=item.answers[0],
            reply=reply.text,
            exact_match=exact_match(reply.text, item.answers),
            token_accuracy=token_accuracy(reply.text, item.answers),
            audio_seconds=len(reply.audio) / sample_rate,
            seconds=reply.seconds,
            held_out=item.held_out,
        )
        if item.task in SPOKEN_TASKS and reply.audio.numel() and normalize_text(reply.text):
            self._score_speech(result, item.voice, reply, sample_rate)
        return result

    def _reference(self, text: str, voice: str, rate: int) -> Reference:
        """The espeak-ng rendering of `text` in `voice` and the ASR's transcripts of it, as
        is and after the codec's round trip: the floors a reply's CER is read against."""
        # The normalised words only: symbols espeak-ng would read aloud are not in the text.
        key = (normalize_text(text), voice, rate)
        if key not in self._references:
            rendering = synthesize(key[0], voice, sample_rate=rate)  # (samples,)
            codec_transcript = None
            if self.codec is not None:
                codes, _ = self.codec.encode(rendering[None])  # (1, 8, F)
                round_trip = self.codec.decode(codes)[0][0]  # (samples,)
                codec_transcript = self.transcriber.transcribe(round_trip, rate)
            self._references[key] = Reference(
                rendering, self.transcriber.transcribe(rendering, rate), codec_transcript
            )
        return self._references[key]

    def _score_speech(self, result: ItemResult, voice: str, reply: Reply, rate: int) -> None:
        reference = self._reference(reply.text, voice, rate)
        result.transcript = self.transcriber.transcribe(reply.audio, rate)
        result.floor_transcript = reference.transcript
        chars, words = (
            char_errors(reply.text, result.transcript),
            word_errors(reply.text, result.transcript),
        )
        result.chars, result.char_errors = chars.length, chars.errors
        result.words, result.word_errors = words.length, words.errors
        result.floor_char_errors = char_errors(reply.text, result.floor_transcript).errors
        result.floor_word_errors = word_errors(reply.text, result.floor_transcript).errors
        if reference.codec_transcript is not None:
            result.codec_transcript = reference.codec_transcript
            result.codec_char_errors = char_errors(reply.text, result.codec_transcript).errors
        result.length_bucket = length_bucket(reply.text)
        result.mcd_db = mel_cepstral_distortion(reply.audio, reference.rendering, rate)
        try:
            cosines = voice_similarity(
                self.encoder, reply.audio, self.speakers, rate, result.item_id
            )
        except SpeakerError:  # too little speech to embed: no voice score for this item
            return
        own = self.names.index(voice)
        result.similarity = float(cosines[own])
        result.other_similarity = _mean(float(c) for i, c in enumerate(cosines) if i != own)


def evaluate(
    chat: OmniChat,
    items: Sequence[ProbeItem],
    voices: Mapping[str, Voice],
    encoder: SpeakerEncoder,
    asr: AsrFactory = build_transcriber,
    seeds: Sequence[int] = (0,),
) -> Evaluation:
    """Ask every item once per sampling seed, then score the replies; `voices` must hold
    every voice the items ask for. The ASR is built once the replies are known: `asr(texts)`
    gets every reply text and reference answer, which a grammar-constrained ASR needs as its
    sentences. Speech is sampled, so one seed's speech CER over 16 replies varies by about
    0.1 from seed to seed; more seeds pool more replies into each metric."""
    missing = sorted({item.voice for item in items if item.voice} - set(voices))
    if missing:
        raise ProbeError("probe items", f"no voice given for {', '.join(missing)}")
    if not seeds:
        raise ValueError("evaluate needs at least one sampling seed")
    asked = [(item, seed) for seed in seeds for item in items]
    replies = [ask(chat, item, voices.get(item.voice), seed) for item, seed in asked]
    texts = [*(a for item in items for a in item.answers), *(reply.text for reply in replies)]
    transcriber = asr(texts)
    scorer = Scorer(transcriber, encoder, voices, chat.codec)
    results = [
        dataclasses.replace(scorer.score(item, reply, chat.codec.sample_rate), seed=seed)
        for (item, seed), reply in zip(asked, replies, strict=True)
    ]
    metrics = summarize(results, voices)
    return Evaluation(results, metrics, transcriber.describe(), chat.settings)


def evaluate_checkpoint(
    checkpoint: str | Path,
    items: Sequence[ProbeItem],
    tokenizer: ChatTokenizer,
    codec: Codec,
    *,
    asr: AsrFactory = build_transcriber,
    encoder: SpeakerEncoder | None = None,
    voices: Mapping[str, Voice] | None = None,
    sampling: SamplingSettings = EVAL_SAMPLING,
    seeds: Sequence[int] = (0,),
    device: str | torch.device = "cpu",
) -> Evaluation:
    """`evaluate` on a checkpoint folder. By default the ASR is pocketsphinx constrained by
    the evaluated texts (`build_transcriber`) and each espeak-ng voice the items name is
    built with this codec."""
    chat = load_chat(checkpoint, tokenizer, codec, settings=sampling, device=device)
    encoder = encoder or SpeakerEncoder()
    if voices is None:
        names = sorted({item.voice for item in items if item.voice})
        voices = espeak_voices(names, codec, encoder)
    return evaluate(chat, items, voices, encoder, asr, seeds)


def cer_by_length(results: Sequence[ItemResult]) -> dict[str, ErrorCounts]:
    """Character errors of the reply speech per length bucket (only buckets with items)."""
    buckets: dict[str, list[ItemResult]] = {}
    for result in results:
        if result.length_bucket is not None:
            buckets.setdefault(result.length_bucket, []).append(result)
    return {
        name: _total(buckets[name], "char_errors", "chars")
        for name, _ in LENGTH_BUCKETS
        if name in buckets
    }


def similarity_by_voice(results: Sequence[ItemResult]) -> dict[str, tuple[float, float | None]]:
    """Voice -> (mean cosine of its replies to itself, mean cosine to the other voices)."""
    groups: dict[str, list[ItemResult]] = {}
    for result in results:
        if result.similarity is not None:
            groups.setdefault(result.voice, []).append(result)
    return {
        voice: (_mean(r.similarity for r in group), _mean(r.other_similarity for r in group))
        for voice, group in sorted(groups.items())
    }


def summarize(results: Sequence[ItemResult], voices: Mapping[str, Voice]) -> dict[str, float]:
    """Flat metrics: `{task}/items|exact_match|token_accuracy|cer` over all items,
    `{task}/probe_exact_match` and `{task}/held_out_exact_match` over the fixed probes and the
    validation rows apart, `speech/...` and `voice/...`. A metric with nothing to average over
    is left out. With replies under several sampling seeds, `items` counts questions, every
    other metric pools all replies, and `speech/cer_seed_min|max` give the spread of the
    seeds' own CERs."""
    metrics: dict[str, float | None] = {}
    for task in PROBE_TASKS:
        of_task = [r for r in results if r.task == task]
        spoken = [r for r in of_task if r.chars is not None]
        if of_task:
            metrics[f"{task}/items"] = float(len({r.item_id for r in of_task}))
            metrics[f"{task}/exact_match"] = _mean(float(r.exact_match) for r in of_task)
            metrics[f"{task}/token_accuracy"] = _mean(r.token_accuracy for r in of_task)
            for part, held_out in (("probe", False), ("held_out", True)):
                metrics[f"{task}/{part}_exact_match"] = _mean(
                    float(r.exact_match) for r in of_task if r.held_out == held_out
                )
        if spoken:
            metrics[f"{task}/cer"] = _total(spoken, "char_errors", "chars").rate
    spoken = [r for r in results if r.chars is not None]
    if spoken:
        metrics["speech/items"] = float(len({r.item_id for r in spoken}))
        metrics["speech/cer"] = _total(spoken, "char_errors", "chars").rate
        seeds = sorted({r.seed for r in spoken})
        if len(seeds) > 1:
            by_seed = [
                _total([r for r in spoken if r.seed == seed], "char_errors", "chars").rate
                for seed in seeds
            ]
            metrics["speech/cer_seed_min"], metrics["speech/cer_seed_max"] = (
                min(by_seed),
                max(by_seed),
            )
        metrics["speech/wer"] = _total(spoken, "word_errors", "words").rate
        metrics["speech/asr_floor_cer"] = _total(spoken, "floor_char_errors", "chars").rate
        metrics["speech/asr_floor_wer"] = _total(spoken, "floor_word_errors", "words").rate
        if all(r.codec_char_errors is not None for r in spoken):
            metrics["speech/codec_floor_cer"] = _total(spoken, "codec_char_errors", "chars").rate
        # A sentence grammar mostly hears a whole sentence or nothing: these say which.
        metrics["speech/heard_whole"] = _mean(float(r.char_errors == 0) for r in spoken)
        metrics["speech/asr_floor_heard_whole"] = _mean(
            float(r.floor_char_errors == 0) for r in spoken
        )
        metrics["speech/heard_nothing"] = _mean(
            float(not normalize_text(r.transcript or "")) for r in spoken
        )
        metrics["speech/mcd_db"] = _mean(r.mcd_db for r in spoken)
        for bucket, counts in cer_by_length(spoken).items():
            metrics[f"speech/cer_{bucket}"] = counts.rate
    voiced = [r for r in results if r.task in SPOKEN_TASKS]
    metrics["voice/similarity_seen"] = _mean(r.similarity for r in voiced if r.voice_seen)
    metrics["voice/similarity_unseen"] = _mean(r.similarity for r in voiced if not r.voice_seen)
    metrics["voice/similarity_other_voices"] = _mean(r.other_similarity for r in voiced)
    metrics["voice/different_voices"] = _mean(
        float(cosine_similarity(a.speaker, b.speaker))
        for a, b in itertools.combinations(voices.values(), 2)
    )
    return {key: value for key, value in metrics.items() if value is not None}


def _total(results: Sequence[ItemResult], errors: str, length: str) -> ErrorCounts:
    counts = (ErrorCounts(getattr(r, errors), getattr(r, length)) for r in results)
    return sum(counts, ErrorCounts(0, 0))


def _mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that exist, None when none does."""
    present = [value for value in values if value is not None]
    return mean(present) if present else None
