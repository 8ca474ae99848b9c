"""The offline codec: a codec fitted on the project's own corpus, with nothing to download.

Audio -> 80-bin log-mel at 100 Hz (hop 240 at 24 kHz) -> one 640-d vector per 80 ms codec
frame (8 mel frames x 80 bins) -> 8-stage residual VQ fitted by k-means, each stage using the
first entries of its 2,048 (`stage_sizes`). Fitted on minutes of speech, 2,048 centroids hold
about 4 frames each, so a frame's code is close to unique and the Talker cannot learn to
predict it. The first stage therefore uses 256 entries (`FIRST_STAGE_CODES`: after 3,000 T2A
steps the Talker named 12% of first codes with 2,048 against 23% with 256; the ASR's CER on
speech through the codec about the same, 0.057 against 0.052), and so do the seven later ones
(`RESIDUAL_STAGE_CODES`: on unseen frames their mean squared residual is 0.37 against 0.48 with
2,048, and the tiny plan's T2A stage speaks its probes at CER 0.47 against 0.53; 64 entries:
0.45 and 0.59). Fitted with the clips' texts, the first stage is phonetic instead
(`phonetic`): its 40 codes name each frame's phone, as Mimi's first codebook names what is
said, and its entries are each phone's mean frame.
Decoding sums the chosen centroids back into log-mel (for stages 1..7, given the model's
distributions over their codes, the expected centroids), maps mel to linear magnitude with the
filterbank's pseudo-inverse and recovers phase with (fast) Griffin-Lim. The streaming decoder
runs Griffin-Lim over a few frames of left context with the already-played samples held
fixed, so each new 80 ms chunk continues the waveform instead of starting a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm import tqdm

from omni_model.quantization.base import (
    CODEBOOK_SIZE,
    NUM_CODEBOOKS,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    Codec,
    StreamingDecoder,
    frames_for_samples,
)
from omni_model.quantization.phonetic import (
    PHONES,
    TAGGER_STEPS,
    ForcedAligner,
    PhoneTagger,
    train_tagger,
)

FORMAT_NAME = "tiny-omni-offline-codec"
FORMAT_VERSION = 3  # 2 added `stage_sizes`, 3 the phone tagger; 1 uses every entry everywhere
FIRST_STAGE_CODES = 256  # coarse first stage: predictable from text (see the module docstring)
RESIDUAL_STAGE_CODES = 256  # entries of each later stage (see the module docstring)
FULL_STAGES = (CODEBOOK_SIZE,) * NUM_CODEBOOKS  # every entry of every stage in use
DISTANCE_CHUNK = 4096  # rows per distance matrix: 4096 x 2048 floats = 32 MB
GRIFFIN_LIM_MOMENTUM = 0.99  # "fast Griffin-Lim" (Perraudin, Balazs and Søndergaard, 2013)


@dataclass(frozen=True)
class MelSettings:
    """How audio becomes log-mel; stored with the codebooks and hashed into `codec_id`."""

    sample_rate: int = SAMPLE_RATE
    n_fft: int = 1024  # 42.7 ms Hann window: resolves the pitch harmonics of speech
    hop_length: int = 240  # 10 ms: 8 mel frames per 80 ms codec frame
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 12_000.0
    log_floor: float = 1e-3  # mel magnitudes below this all read as one "silence" value

    @property
    def mels_per_frame(self) -> int:
        return SAMPLES_PER_FRAME // self.hop_length

    @property
    def vector_size(self) -> int:
        return self.mels_per_frame * self.n_mels

    @property
    def linear_bins(self) -> int:
        return self.n_fft // 2 + 1


def mel_filterbank(mel: MelSettings) -> torch.Tensor:
    """HTK-scale triangular filters, (n_mels, linear_bins)."""

    def hz_to_mel(hz: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    low, high = hz_to_mel(torch.tensor([mel.f_min, mel.f_max], dtype=torch.float64)).tolist()
    points = mel_to_hz(torch.linspace(low, high, mel.n_mels + 2, dtype=torch.float64))
    freqs = torch.linspace(0.0, mel.sample_rate / 2, mel.linear_bins, dtype=torch.float64)
    left, center, right = points[:-2, None], points[1:-1, None], points[2:, None]
    rising = (freqs - left) / (center - left)
    falling = (right - freqs) / (right - center)
    return torch.minimum(rising, falling).clamp(min=0.0).float()


class LogMel:
    """Log-mel analysis into codec-frame vectors, and Griffin-Lim synthesis back to audio."""

    def __init__(self, mel: MelSettings, griffin_lim_iterations: int = 32):
        if mel.sample_rate != SAMPLE_RATE or SAMPLES_PER_FRAME % mel.hop_length:
            raise ValueError(f"mel settings do not tile 80 ms frames at 24 kHz: {mel}")
        self.mel = mel
        self.griffin_lim_iterations = griffin_lim_iterations
        self.filterbank = mel_filterbank(mel)  # (n_mels, bins)
        self.inverse_filterbank = torch.linalg.pinv(self.filterbank)  # (bins, n_mels)
        self.window = torch.hann_window(mel.n_fft)

    def frame_vectors(
        self, audio: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, samples), lengths (B,) -> vectors (B, F, 640), frames (B,).

        Samples past each item's length read as silence, so an item gives the same vectors
        alone and inside a padded batch.
        """
        if audio.ndim != 2 or 0 in audio.shape:
            raise ValueError(f"expected audio of shape (batch, samples), got {tuple(audio.shape)}")
        batch = audio.shape[0]
        if lengths is None:
            lengths = torch.full((batch,), audio.shape[1], dtype=torch.long)
        if lengths.shape != (batch,) or lengths.min() < 0 or lengths.max() > audio.shape[1]:
            raise ValueError(f"lengths must be (batch,) = ({batch},) values in 0..{audio.shape[1]}")
        lengths = lengths.long().cpu()
        frames = frames_for_samples(lengths)  # (B,) ceil(seconds * 12.5)
        total = max(int(frames.max()), 1) * SAMPLES_PER_FRAME  # all-empty input: one silent frame
        padded = torch.zeros(batch, total)
        keep = min(total, audio.shape[1])
        padded[:, :keep] = audio[:, :keep].float()
        padded[torch.arange(total)[None, :] >= lengths[:, None]] = 0.0
        spectrum = self.stft(padded).abs()[..., :-1]  # (B, bins, 8F): drop the end frame
        log_mel = (self.filterbank @ spectrum).clamp(min=self.mel.log_floor).log()
        vectors = log_mel.transpose(1, 2).reshape(batch, -1, self.mel.vector_size)
        return vectors, frames

    def magnitudes(self, vectors: torch.Tensor) -> torch.Tensor:
        """vectors (B, F, 640) of log-mel -> linear STFT magnitudes (B, bins, 8F)."""
        log_mel = vectors.reshape(vectors.shape[0], -1, self.mel.n_mels).transpose(1, 2)
        return (self.inverse_filterbank @ log_mel.exp()).clamp(min=0.0)

    def griffin_lim(
        self,
        magnitude: torch.Tensor,
        generator: torch.Generator,
        prefix: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """magnitude (B, bins, T) -> audio (B, T * hop); `prefix` (B, P) samples stay fixed.

        The frame centred on the last sample has no mel frame of its own: it repeats the
        last one, the same guess at the end of an utterance and at the edge of a stream.
        """
        magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)
        length = (magnitude.shape[-1] - 1) * self.mel.hop_length
        angles = 2 * torch.pi * torch.rand(magnitude.shape, generator=generator)
        phase = torch.polar(torch.ones_like(magnitude), angles)
        previous = torch.zeros_like(phase)
        for _ in range(self.griffin_lim_iterations):
            audio = _with_prefix(self.istft(magnitude * phase, length), prefix)
            rebuilt = self.stft(audio)
            phase = rebuilt - previous * (GRIFFIN_LIM_MOMENTUM / (1 + GRIFFIN_LIM_MOMENTUM))
            phase = phase / phase.abs().clamp(min=1e-8)
            previous = rebuilt
        return _with_prefix(self.istft(magnitude * phase, length), prefix)

    def stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> complex (B, bins, samples / hop + 1), zero-padded at both ends."""
        return torch.stft(
            audio,
            self.mel.n_fft,
            self.mel.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )

    def istft(self, spectrum: torch.Tensor, length: int) -> torch.Tensor:
        return torch.istft(
            spectrum, self.mel.n_fft, self.mel.hop_length, window=self.window, length=length
        )


def _with_prefix(audio: torch.Tensor, prefix: torch.Tensor | None) -> torch.Tensor:
    if prefix is None:
        return audio
    return torch.cat([prefix, audio[:, prefix.shape[1] :]], dim=1)


class OfflineCodec(Codec):
    """Log-mel residual-VQ codec. Build with `fit` or `load`; codebooks (8, 2048, 640).

    Stage k encodes with its first `stage_sizes[k]` entries only; the entries past them are
    zero, so a code there (a model may still sample one) decodes as adding nothing.
    """

    def __init__(
        self,
        codebooks: torch.Tensor,
        mel: MelSettings | None = None,
        *,
        stage_sizes: tuple[int, ...] = FULL_STAGES,
        tagger: PhoneTagger | None = None,
        griffin_lim_iterations: int = 32,
        context_frames: int = 3,
    ):
        self.log_mel = LogMel(mel or MelSettings(), griffin_lim_iterations)
        self.mel = self.log_mel.mel
        expected = (NUM_CODEBOOKS, CODEBOOK_SIZE, self.mel.vector_size)
        if tuple(codebooks.shape) != expected:
            raise ValueError(f"codebooks must have shape {expected}, got {tuple(codebooks.shape)}")
        self.stage_sizes = stage_sizes = checked_stage_sizes(stage_sizes)
        self.codebooks = codebooks.float().clone()
        for stage, size in enumerate(stage_sizes):
            self.codebooks[stage, size:] = 0.0
        if tagger is not None and stage_sizes[0] != len(PHONES):
            raise ValueError(
                f"a phonetic first stage has {len(PHONES)} codes, not {stage_sizes[0]}"
            )
        self.tagger = tagger.eval() if tagger is not None else None
        self.context_frames = context_frames
        self.fit_summary: dict[str, float] = {}  # what `fit` measured; empty once loaded
        self._codec_id = _hash_codec(self.codebooks, self.mel, stage_sizes, self.tagger)

    @property
    def codec_id(self) -> str:
        return self._codec_id

    @classmethod
    def fit(
        cls,
        audios: list[torch.Tensor],
        *,
        texts: list[str] | None = None,
        mel: MelSettings | None = None,
        seed: int = 0,
        iterations: int = 4,
        first_stage_codes: int = FIRST_STAGE_CODES,
        residual_stage_codes: int = RESIDUAL_STAGE_CODES,
        tagger_steps: int = TAGGER_STEPS,
        progress: bool = True,
        **kwargs,
    ) -> OfflineCodec:
        """Fit the 8 residual stages on every frame vector of `audios` (24 kHz).

        Without `texts`, every stage is k-means: `first_stage_codes` centroids for the
        first, `residual_stage_codes` for each later one. A corpus of minutes gives only a
        few vectors per centroid, so k-means settles within a few iterations: more change the
        error on unseen audio by well under 1%. With `texts` (what each clip says), the first
        stage is phonetic (`fit_phone_stage`, its tagger trained for `tagger_steps`) and
        `first_stage_codes` is not used.
        """
        analysis = LogMel(mel or MelSettings())
        kept = [i for i, audio in enumerate(audios) if audio.numel()]
        vectors = [analysis.frame_vectors(audios[i].reshape(1, -1))[0][0] for i in kept]
        residual = torch.cat(vectors) if vectors else torch.zeros(0)  # (N, 640)
        if len(residual) == 0:
            raise ValueError("cannot fit the offline codec on an empty corpus")
        generator = torch.Generator().manual_seed(seed)
        codebooks, tagger, summary = [], None, {}
        if texts is not None:
            if len(texts) != len(audios):
                raise ValueError(f"{len(texts)} texts for {len(audios)} clips")
            clips = [(audios[i], texts[i]) for i in kept]
            tagger, centroids, residual, summary = fit_phone_stage(
                analysis, clips, vectors, tagger_steps, seed, progress
            )
            codebooks.append(centroids)
            first_stage_codes = len(PHONES)
        stage_sizes = checked_stage_sizes(
            (first_stage_codes, *(residual_stage_codes,) * (NUM_CODEBOOKS - 1))
        )
        with tqdm(
            total=(NUM_CODEBOOKS - len(codebooks)) * iterations,
            desc=f"k-means on {len(residual)} frames",
            disable=not progress,
        ) as bar:
            for size in stage_sizes[len(codebooks) :]:
                centroids = kmeans(residual, size, iterations, generator, bar.update)
                residual = held_out_residual(residual, centroids)
                codebooks.append(centroids)
        codebooks = [
            torch.cat([c, torch.zeros(CODEBOOK_SIZE - len(c), c.shape[1])]) for c in codebooks
        ]
        codec = cls(
            torch.stack(codebooks), analysis.mel, stage_sizes=stage_sizes, tagger=tagger, **kwargs
        )
        codec.fit_summary = summary
        return codec

    def save(self, path: str | Path) -> None:
        """One safetensors file (written atomically); settings and version in its metadata."""
        path = Path(path)
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
        settings = {"mel": dataclasses.asdict(self.mel), "stage_sizes": list(self.stage_sizes)}
        tensors = {"codebooks": self.codebooks}
        if self.tagger is not None:
            settings["tagger"] = self.tagger.settings
            tensors |= {f"tagger.{k}": v for k, v in self.tagger.state_dict().items()}
        metadata = {"offline_codec": json.dumps(header | settings)}
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, temp, metadata=metadata)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | Path, **kwargs) -> OfflineCodec:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"offline codec weights not found: {path}")
        try:
            with safe_open(path, framework="pt") as file:
                header = json.loads((file.metadata() or {}).get("offline_codec", "null"))
                tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (safe_open has no __iter__) if header else {}
        except (SafetensorError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: unreadable offline codec file ({error})") from error
        if not header or header.get("format") != FORMAT_NAME:
            raise ValueError(f"{path}: not an offline codec file (no offline_codec metadata)")
        if header.get("version") not in (1, 2, FORMAT_VERSION):
            raise ValueError(f"{path}: unknown offline codec format version {header['version']}")
        sizes = tuple(header.get("stage_sizes", FULL_STAGES))
        tagger = None
        if "tagger" in header:
            tagger = PhoneTagger(**header["tagger"])
            prefix = "tagger."
            weights = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            tagger.load_state_dict(weights)
        codebooks = tensors["codebooks"]
        return cls(
            codebooks, MelSettings(**header["mel"]), stage_sizes=sizes, tagger=tagger, **kwargs
        )

    def _residual_vq(
        self, vectors: torch.Tensor, first_codes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[float]]:
        """vectors (N, 640) -> codes (N, 8) and mean squared residual before/after each stage.

        `first_codes` (N,), the tagger's phones, replace the first stage's nearest entries.
        """
        residual = vectors
        codes, energies = [], [residual.pow(2).mean().item()]
        for stage, (centroids, size) in enumerate(
            zip(self.codebooks, self.stage_sizes, strict=True)
        ):
            if stage == 0 and first_codes is not None:
                index = first_codes
            else:
                index = nearest(residual, centroids[:size])[:, 0]
            residual = residual - centroids[index]
            codes.append(index)
            energies.append(residual.pow(2).mean().item())
        return torch.stack(codes, dim=1), energies

    def residual_energies(self, audio: torch.Tensor) -> list[float]:
        """audio (samples,) -> 9 mean squared residuals: unquantized, then after stages 1..8."""
        vectors, frames = self.log_mel.frame_vectors(audio.reshape(1, -1))
        return self._residual_vq(vectors[0], self.first_codes(vectors, frames))[1]

    def first_codes(self, vectors: torch.Tensor, frames: torch.Tensor) -> torch.Tensor | None:
        """vectors (B, F, 640), frames (B,) -> the tagger's phone per frame, (B * F,); None
        without a tagger. Each item is tagged over its own frames only, so it gets the same
        codes alone and inside a padded batch."""
        if self.tagger is None:
            return None
        codes = torch.zeros(vectors.shape[:2], dtype=torch.long)
        for item, count in enumerate(frames.tolist()):
            if count:
                log_mel = vectors[item, :count].reshape(-1, self.mel.n_mels)  # (8F, 80)
                codes[item, :count] = self.tagger.frame_phones(log_mel, self.mel.mels_per_frame)
        return codes.reshape(-1)

    @torch.no_grad()
    def encode(
        self, audio: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        vectors, frames = self.log_mel.frame_vectors(audio, lengths)  # (B, F, 640)
        batch, count = vectors.shape[:2]
        first = self.first_codes(vectors, frames)
        codes, _ = self._residual_vq(vectors.reshape(-1, self.mel.vector_size), first)
        codes = codes.reshape(batch, count, NUM_CODEBOOKS).transpose(1, 2)  # (B, 8, F)
        padding = torch.arange(count)[None, None, :] >= frames[:, None, None]
        return codes.masked_fill(padding, 0).contiguous(), frames

    def magnitudes(
        self, codes: torch.Tensor, distributions: torch.Tensor | None = None
    ) -> torch.Tensor:
        """codes (B, 8, F) -> linear STFT magnitudes (B, bins, 8F) of the summed centroids.

        With distributions (B, 8, F, 2048), stages 1..7 add their expected centroid instead
        of the chosen one (over the stage's entries in use): a model unsure of a detail code
        then adds the mean of its guesses, not one guess's whole spectrum."""
        if codes.ndim != 3 or codes.shape[1] != NUM_CODEBOOKS or codes.is_floating_point():
            raise ValueError(
                f"expected integer codes of shape (batch, 8, frames), got {tuple(codes.shape)}"
            )
        if codes.numel() and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
            raise ValueError(f"codes must lie in 0..{CODEBOOK_SIZE - 1}")
        stages = torch.arange(NUM_CODEBOOKS)[None, :, None]
        if distributions is None:
            return self.log_mel.magnitudes(self.codebooks[stages, codes].sum(dim=1))
        if distributions.shape != (*codes.shape, CODEBOOK_SIZE):
            raise ValueError(
                f"distributions must be (batch, 8, frames, {CODEBOOK_SIZE}) like the codes "
                f"{tuple(codes.shape)}, got {tuple(distributions.shape)}"
            )
        in_use = torch.arange(CODEBOOK_SIZE) < torch.tensor(self.stage_sizes)[:, None]
        weights = distributions.float() * in_use[None, :, None, :]  # (B, 8, F, 2048)
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        expected = torch.einsum("bkfc,kcd->bfd", weights[:, 1:], self.codebooks[1:])
        chosen = self.codebooks[0, codes[:, 0]]  # (B, F, 640): codebook 0 as chosen
        return self.log_mel.magnitudes(chosen + expected)  # (B, bins, 8F)

    @torch.no_grad()
    def decode(
        self,
        codes: torch.Tensor,
        frames: torch.Tensor | None = None,
        distributions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        magnitude = self.magnitudes(codes, distributions)  # (B, bins, 8F), checked
        batch, _, count = codes.shape
        if frames is None:
            frames = torch.full((batch,), count, dtype=torch.long)
        if frames.shape != (batch,) or frames.min() < 0 or frames.max() > count:
            raise ValueError(f"frames must be (batch,) = ({batch},) values in 0..{count}")
        frames = frames.long().cpu()
        if count == 0:
            return torch.zeros(batch, 0), frames
        valid = torch.arange(magnitude.shape[-1]) < frames[:, None] * self.mel.mels_per_frame
        generator = torch.Generator().manual_seed(0)
        audio = self.log_mel.griffin_lim(magnitude * valid[:, None], generator)
        lengths = frames * SAMPLES_PER_FRAME
        audio[torch.arange(audio.shape[1])[None, :] >= lengths[:, None]] = 0.0
        return audio, lengths

    def streaming_decoder(self) -> StreamingDecoder:
        return OfflineStreamingDecoder(self)


class OfflineStreamingDecoder(StreamingDecoder):
    """One frame in, 1,920 samples out, continuing the waveform already played.

    Keeps the last `context_frames` frames of magnitudes and output samples (silence before
    the first frame); Griffin-Lim runs over context + new frame with the context samples
    held fixed, so the new chunk's phase follows what the listener already heard.
    """

    def __init__(self, codec: OfflineCodec):
        self.codec = codec
        context_mels = codec.context_frames * codec.mel.mels_per_frame
        self.magnitude = torch.zeros(1, codec.mel.linear_bins, context_mels)
        self.played = torch.zeros(1, codec.context_frames * SAMPLES_PER_FRAME)
        self.generator = torch.Generator().manual_seed(0)

    @torch.no_grad()
    def decode_frame(
        self, codes: torch.Tensor, distributions: torch.Tensor | None = None
    ) -> torch.Tensor:
        if codes.shape != (NUM_CODEBOOKS,):
            raise ValueError(f"expected one frame of codes, shape (8,), got {tuple(codes.shape)}")
        if distributions is not None:
            distributions = distributions.reshape(1, NUM_CODEBOOKS, 1, -1)
        new = self.codec.magnitudes(codes.reshape(1, NUM_CODEBOOKS, 1), distributions)
        magnitude = torch.cat([self.magnitude, new], dim=-1)
        audio = self.codec.log_mel.griffin_lim(magnitude, self.generator, prefix=self.played)
        context = self.played.shape[1]
        self.magnitude = magnitude[..., new.shape[-1] :]
        self.played = audio[:, audio.shape[1] - context :]
        return audio[0, context:]


def fit_phone_stage(
    analysis: LogMel,
    clips: list[tuple[torch.Tensor, str]],
    vectors: list[torch.Tensor],
    steps: int,
    seed: int,
    progress: bool,
) -> tuple[PhoneTagger, torch.Tensor, torch.Tensor, dict[str, float]]:
    """The phonetic first stage: a tagger trained on the clips' forced alignments, its
    40 entries the mean frame vector of each phone it names, the residual it leaves (N, 640),
    and how the fit went (clips aligned, the tagger's accuracy on held-out aligned clips).
    Clips pocketsphinx cannot align still count in the entries and the residual."""
    aligner = ForcedAligner()
    mels = [v.reshape(-1, analysis.mel.n_mels) for v in vectors]  # each (8F, 80)
    aligned = [
        (mel, aligner.align(audio, analysis.mel.sample_rate, text, len(mel)))
        for (audio, text), mel in tqdm(
            list(zip(clips, mels, strict=True)), desc="aligning", disable=not progress
        )
    ]
    aligned = [(mel, labels) for mel, labels in aligned if labels is not None]
    if not aligned:
        raise ValueError("pocketsphinx aligned none of the clips with its text")
    tagger, accuracy = train_tagger(
        *map(list, zip(*aligned, strict=True)), steps=steps, seed=seed, progress=progress
    )
    summary = {"aligned_clips": len(aligned), "clips": len(clips), "tagger_accuracy": accuracy}
    frames = torch.cat(vectors)  # (N, 640)
    phones = torch.cat([tagger.frame_phones(mel, analysis.mel.mels_per_frame) for mel in mels])
    sums = torch.zeros(len(PHONES), frames.shape[1]).index_add_(0, phones, frames)
    counts = torch.bincount(phones, minlength=len(PHONES))[:, None]
    centroids = torch.where(counts > 0, sums / counts.clamp(min=1), frames.mean(dim=0))
    return tagger, centroids, frames - centroids[phones], summary


def checked_stage_sizes(sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Codes in use per stage: 8 sizes in 1..2048 (checked before any k-means runs)."""
    sizes = tuple(int(size) for size in sizes)
    if len(sizes) != NUM_CODEBOOKS or not all(1 <= size <= CODEBOOK_SIZE for size in sizes):
        expected = f"{NUM_CODEBOOKS} sizes in 1..{CODEBOOK_SIZE}"
        raise ValueError(f"stage_sizes must be {expected}, got {sizes}")
    return sizes


def nearest(vectors: torch.Tensor, centroids: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Indices of the k closest centroids for each row, closest first: (N, D), (K, D) -> (N, k).

    Distances are computed DISTANCE_CHUNK rows at a time, so memory stays flat on long corpora.
    """
    squared_norms = centroids.pow(2).sum(dim=1)  # (K,)
    chunks = [
        (squared_norms - 2 * chunk @ centroids.T).topk(k, dim=1, largest=False).indices
        for chunk in vectors.split(DISTANCE_CHUNK)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, k, dtype=torch.long)


def held_out_residual(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """What is left of each row after this stage, as if the row had not been in the fit.

    With ~3 rows per centroid, a row's own centroid is pulled towards it and the next
    stage would learn residuals far smaller than unseen audio leaves (zero for a
    singleton), so later stages would add nothing on unseen audio. Each row is instead
    quantized by the mean of the other rows of its cluster (leave-one-out), or, alone in
    its cluster, by the nearest other centroid.
    """
    two_nearest = nearest(vectors, centroids, k=2)  # (N, 2)
    assignment = two_nearest[:, 0]
    sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
    sizes = torch.bincount(assignment, minlength=len(centroids))[assignment, None]
    others = (sums[assignment] - vectors) / (sizes - 1).clamp(min=1)
    alone = sizes == 1
    return vectors - torch.where(alone, centroids[two_nearest[:, 1]], others)


def kmeans(
    vectors: torch.Tensor,
    count: int,
    iterations: int,
    generator: torch.Generator,
    on_iteration: Callable[[int], object] | None = None,
) -> torch.Tensor:
    """Lloyd's k-means: (N, D) -> (count, D) centroids.

    Starts from distinct random rows; a cluster left empty is re-seeded on the row worst
    served by its centroid. With no more rows than `count` (a tiny corpus), every row is
    its own centroid and the spare ones sit at the rows' mean with tiny jitter: every code
    in 0..count-1 still names a usable centroid, and one near the mean means a stage never
    leaves a residual larger than the mean would.
    """
    rows, dim = vectors.shape
    jitter = 1e-4 * vectors.std().clamp(min=1e-6)
    if rows <= count:
        spare = vectors.mean(dim=0) + jitter * torch.randn(count - rows, dim, generator=generator)
        if on_iteration is not None:
            on_iteration(iterations)
        return torch.cat([vectors, spare])
    centroids = vectors[torch.randperm(rows, generator=generator)[:count]]
    for _ in range(iterations):
        assignment = nearest(vectors, centroids)[:, 0]
        sums = torch.zeros_like(centroids).index_add_(0, assignment, vectors)
        sizes = torch.bincount(assignment, minlength=count)
        filled = sizes > 0
        centroids[filled] = sums[filled] / sizes[filled, None]
        empty = (~filled).nonzero().squeeze(1)
        if len(empty):
            errors = (vectors - centroids[assignment]).pow(2).sum(dim=1)
            worst = errors.topk(len(empty)).indices
            fresh = torch.randn(len(empty), dim, generator=generator)
            centroids[empty] = vectors[worst] + jitter * fresh
        if on_iteration is not None:
            on_iteration(1)
    return centroids


def _hash_codec(
    codebooks: torch.Tensor,
    mel: MelSettings,
    stage_sizes: tuple[int, ...],
    tagger: PhoneTagger | None,
) -> str:
    settings = dataclasses.asdict(mel)
    if any(size < CODEBOOK_SIZE for size in stage_sizes):  # full stages: version 1's ids
        settings["stage_sizes"] = list(stage_sizes)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(codebooks.numpy().tobytes())
    if tagger is not None:
        for name, value in sorted(tagger.state_dict().items()):
            digest.update(name.encode() + value.numpy().tobytes())
    return "offline-" + digest.hexdigest()[:16]
