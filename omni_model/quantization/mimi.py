"""Mimi (Kyutai's streaming neural codec) behind the project's codec interface.

The model is built and loaded by `moshi.models.loaders.get_mimi`, the loader moshi's own
tools use, from a local safetensors file. The released checkpoint is fetched from the
Hugging Face hub only when the caller explicitly allows it; nothing else here touches the
network. Mimi is fully causal, so right-padding a batch leaves every item's valid frames
unchanged, and streaming decode runs on moshi's own per-module streaming state.

`save_random_mimi` writes a random-weight checkpoint in the same format, for tests and
benchmarks on machines that cannot download the real one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from moshi.models import loaders
from moshi.models.compression import MimiModel
from safetensors import SafetensorError
from safetensors.torch import save_file

from omni_model.quantization.base import (
    CODEBOOK_SIZE,
    NUM_CODEBOOKS,
    SAMPLES_PER_FRAME,
    Codec,
    StreamingDecoder,
)

HF_REPO = "kyutai/moshiko-pytorch-bf16"
HF_FILENAME = "tokenizer-e351c8d8-checkpoint125.safetensors"
SAFETENSORS_SUFFIXES = (".safetensors", ".sft", ".sfts")  # what moshi's loader reads as such

_hash_cache: dict[tuple[str, int, int], str] = {}


class MimiWeightsError(ValueError):
    """The Mimi weights file is missing, unreadable or not a Mimi checkpoint."""


def weights_hash(path: Path) -> str:
    """First 16 hex digits of the file's sha256, streamed, cached per (path, size, mtime)."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with path.open("rb") as file:
            while chunk := file.read(1 << 20):
                digest.update(chunk)
        _hash_cache[key] = digest.hexdigest()[:16]
    return _hash_cache[key]


def resolve_weights(weights: str | Path | None, allow_download: bool) -> Path:
    """A local checkpoint path; the released one from the hub only when allowed."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise MimiWeightsError(f"{path}: no such Mimi weights file")
        if path.suffix not in SAFETENSORS_SUFFIXES:
            raise MimiWeightsError(f"{path}: Mimi weights must be a safetensors file")
        return path
    if not allow_download:
        raise MimiWeightsError(
            f"no Mimi weights given: pass a local checkpoint (--weights FILE, e.g. {HF_FILENAME})"
            f" or allow downloading it from the Hugging Face repo {HF_REPO}"
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(HF_REPO, HF_FILENAME))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
        raise MimiWeightsError(
            f"hf://{HF_REPO}/{HF_FILENAME}: download failed ({error.__class__.__name__}); "
            "pass a local checkpoint with --weights FILE"
        ) from error


def load_mimi(
    weights: str | Path | None = None,
    allow_download: bool = False,
    device: str | torch.device = "cpu",
) -> MimiCodec:
    """Mimi from a local safetensors file, or from the hub when `allow_download` is set."""
    path = resolve_weights(weights, allow_download)
    try:
        model = loaders.get_mimi(path, device=device, num_codebooks=NUM_CODEBOOKS)
    except SafetensorError as error:
        raise MimiWeightsError(f"{path}: not a readable safetensors file ({error})") from error
    except RuntimeError as error:
        if "state_dict" not in str(error):  # torch's missing/unexpected/mismatched keys report
            raise
        raise MimiWeightsError(
            f"{path}: not a Mimi checkpoint (its tensors do not match Mimi's state dict)"
        ) from error
    return MimiCodec(model, f"mimi-{weights_hash(path)}")


class MimiCodec(Codec):
    def __init__(self, model: MimiModel, codec_id: str):
        self.model = model.eval()
        self._codec_id = codec_id

    @property
    def codec_id(self) -> str:
        return self._codec_id

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode(
        self, audio: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if audio.dim() != 2 or 0 in audio.shape:
            raise ValueError(
                f"audio must be a non-empty (batch, samples), got {tuple(audio.shape)}"
            )
        if not torch.isfinite(audio).all():
            raise ValueError("audio contains NaN or infinite samples")
        if lengths is None:
            lengths = torch.full((audio.shape[0],), audio.shape[1])
        check_lengths(lengths, audio.shape[0], audio.shape[1], "lengths")
        frames = (lengths.cpu().long() + SAMPLES_PER_FRAME - 1) // SAMPLES_PER_FRAME  # (B,)
        codes = self.model.encode(audio.float().to(self.device)[:, None])  # (B, 8, ceil(S/1920))
        codes = codes[:, :, : int(frames.max())].to(audio.device)
        return mask_frames(codes, frames), frames

    @torch.no_grad()
    def decode(
        self,
        codes: torch.Tensor,
        frames: torch.Tensor | None = None,
        distributions: torch.Tensor | None = None,  # not used: Mimi decodes the codes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shape_ok = codes.dim() == 3 and codes.shape[1] == NUM_CODEBOOKS and 0 not in codes.shape
        check_codes(codes, shape_ok, "(batch, 8, frames), non-empty")
        if frames is None:
            frames = torch.full((codes.shape[0],), codes.shape[2])
        check_lengths(frames, codes.shape[0], codes.shape[2], "frames")
        samples = frames.cpu().long() * SAMPLES_PER_FRAME  # (B,)
        audio = self.model.decode(codes.long().to(self.device))[:, 0]  # (B, F * 1920)
        audio = audio.to(codes.device)
        positions = torch.arange(audio.shape[1], device=audio.device)
        return audio * (positions < samples.to(audio.device)[:, None]), samples

    def streaming_decoder(self) -> MimiStreamingDecoder:
        return MimiStreamingDecoder(self.model)


class MimiStreamingDecoder(StreamingDecoder):
    """One stream's moshi streaming state, swapped into the shared model for each frame.

    Keeping the state here rather than leaving the model in streaming mode lets several
    decoders (and batch encode/decode) use the same model in turn.
    """

    def __init__(self, model: MimiModel):
        self.model = model
        with model.streaming(batch_size=1):
            self.state = model.get_streaming_state()
        self.idle = dict.fromkeys(self.state)

    @torch.no_grad()
    def decode_frame(
        self,
        codes: torch.Tensor,
        distributions: torch.Tensor | None = None,  # not used: Mimi decodes the codes
    ) -> torch.Tensor:
        check_codes(codes, codes.shape == (NUM_CODEBOOKS,), "(8,)")
        device = next(self.model.parameters()).device
        self.model.set_streaming_state(self.state)
        try:
            audio = self.model.decode(codes.long().to(device).view(1, NUM_CODEBOOKS, 1))
        finally:
            self.model.set_streaming_state(self.idle)
        return audio.view(SAMPLES_PER_FRAME).to(codes.device)  # (1920,)


def check_codes(codes: torch.Tensor, shape_ok: bool, expected: str) -> None:
    """Reject what Mimi would turn into an indexing error deep inside the quantizer."""
    if not shape_ok or codes.is_floating_point():
        raise ValueError(f"codes must be integers of shape {expected}, got {tuple(codes.shape)}")
    if codes.numel() and (codes.min() < 0 or codes.max() >= CODEBOOK_SIZE):
        raise ValueError(f"codes must lie in 0..{CODEBOOK_SIZE - 1}")


def check_lengths(lengths: torch.Tensor, batch: int, longest: int, unit: str) -> None:
    if lengths.shape != (batch,) or lengths.min() < 0 or lengths.max() > longest:
        raise ValueError(f"{unit} must be (batch,) = ({batch},) values in 0..{longest}")


def mask_frames(codes: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """Zero the codes of padding frames: codes (B, 8, F), frames (B,)."""
    positions = torch.arange(codes.shape[2], device=codes.device)
    return codes * (positions < frames.to(codes.device)[:, None])[:, None]


@torch.no_grad()
def save_random_mimi(path: str | Path, seed: int = 0) -> Path:
    """A random-weight Mimi saved as moshi's loader expects it: one safetensors state dict.

    A fresh Mimi's codebooks are empty (all zeros), so it encodes everything to code 0.
    Each codebook instead gets random entries at the scale of its latents, usage 1 and
    the initialised flag. The latents of a random encoder are a large constant offset plus
    a small spread, so each quantizer's first codebook is centred on the latents' mean
    (later stages quantize residuals, centred on zero); without that the first codebooks
    would pick only a handful of codes.
    """
    with torch.random.fork_rng(devices=[]):  # seeds the layers' init, not the caller's stream
        torch.manual_seed(seed)
        model = loaders.get_mimi(None, device="cpu", num_codebooks=NUM_CODEBOOKS)
    quantizers = (model.quantizer.rvq_first, model.quantizer.rvq_rest)
    latents: list[torch.Tensor] = []
    hooks = [
        rvq.input_proj.register_forward_hook(lambda _m, _i, out: latents.append(out[0]))
        for rvq in quantizers
    ]
    generator = torch.Generator().manual_seed(seed)
    probe = 0.1 * torch.randn(1, 1, 2 * loaders.SAMPLE_RATE, generator=generator)
    model.encode(probe)
    for hook in hooks:
        hook.remove()
    for rvq, latent in zip(quantizers, latents, strict=True):  # latent (D, frames)
        mean, spread = latent.mean(dim=1), latent.std(dim=1).mean()
        for stage, layer in enumerate(rvq.vq.layers):
            codebook = layer._codebook
            entries = spread * torch.randn(codebook.embedding_sum.shape, generator=generator)
            codebook.embedding_sum.copy_(entries + (mean if stage == 0 else 0.0))
            codebook.cluster_usage.fill_(1.0)
            codebook._initialized.fill_(1.0)
    path = Path(path)
    save_file({name: t.contiguous() for name, t in model.state_dict().items()}, str(path))
    return path
