"""Image encoders: one image -> 64 feature tokens (B, 64, dim) for the `<|image_pad|>` slots.

Every image enters through `load_image` (a clear `ImageError` for files that are not usable
images) and `preprocess`, which resizes to 256 x 256 and scales to [-1, 1] exactly as
SigLIP2's fixed-resolution processor does, so both encoders read the same pixels.
`feature_dim` is what `OmniConfig.image_feature_dim` must be set to.

- `PatchImageEncoder`: the offline default, 32 x 32 patches -> an 8 x 8 grid. It trains with
  the model, or is pretrained on its own (`omni_model.encoders.pretraining`), saved as one
  safetensors file (`save` / `load`) and read frozen, as SigLIP is.
- `SiglipImageEncoder`: frozen SigLIP2 base patch-32 at 256 (optional `transformers` extra).
"""

from __future__ import annotations

import io
import json
import re
import struct
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from omni_model.encoders.errors import CheckpointError
from omni_model.errors import LabelledError

IMAGE_SIZE = 256
PATCH_SIZE = 32
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 64
MAX_PIXELS = 50_000_000  # about 7,000 x 7,000: any photo fits, a decompression bomb does not
SIGLIP2_MODEL = "google/siglip2-base-patch32-256"
IMAGE_ENCODERS = ("patch", "siglip")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# 8-bit modes that convert to RGB faithfully. 16-bit and float images ("I;16", "I", "F")
# would be clipped to white by PIL's conversion, and LAB/HSV converted channel by channel.
SUPPORTED_MODES = frozenset({"1", "L", "P", "LA", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr"})
HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name, as Hugging Face repo ids are
PATCH_FORMAT = "tiny-omni-patch-image-encoder"


class ImageError(LabelledError):
    """An image input that cannot be used; the message names the input and the reason."""


def load_image(
    source: str | Path | bytes, *, name: str | None = None, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Decode `source` (a path or encoded bytes) to an RGB image, or raise `ImageError`.

    The size and pixel mode are checked from the header before any pixel is decoded. EXIF
    rotation is applied and transparent pixels become white.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<image bytes>")
    data = _read_bytes(source, label)
    if not data:
        raise ImageError(label, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():  # PIL warns below its own hard limit; we check ours
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise ImageError(label, f"too large to decode safely ({error})") from error
    except UnidentifiedImageError as error:
        raise ImageError(label, _unidentified_reason(data)) from error
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(label, f"empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(
            label,
            f"{width}x{height} is over the limit of {max_pixels} pixels (decompression bomb?)",
        )
    if image.mode not in SUPPORTED_MODES:
        raise ImageError(
            label,
            f"unsupported pixel mode {image.mode!r}; save it as 8-bit RGB, RGBA or grayscale",
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageError(label, f"truncated or corrupt ({error})") from error
    return _to_rgb(ImageOps.exif_transpose(image))


def preprocess(images: Image.Image | Sequence[Image.Image], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Images -> (B, 3, size, size) in [-1, 1]: bilinear resize without crop, as SigLIP2."""
    return normalise(resize(images, size))


def resize(images: Image.Image | Sequence[Image.Image], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Images -> (B, 3, size, size) uint8: a quarter of the memory of `preprocess`'s floats,
    for holding many pictures (encoder pretraining); `normalise` turns them into its input."""
    if isinstance(images, Image.Image):
        images = [images]
    arrays = [
        np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        for image in images
    ]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)


def normalise(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> floats in [-1, 1], the scaling SigLIP2 was trained with."""
    return pixels.float() / 127.5 - 1.0


def _read_bytes(source: str | Path | bytes, label: str) -> bytes:
    if isinstance(source, bytes):
        return source
    try:
        return Path(source).read_bytes()
    except FileNotFoundError as error:
        raise ImageError(label, "no such file") from error
    except OSError as error:
        raise ImageError(label, f"cannot be read ({error.strerror})") from error


def _unidentified_reason(data: bytes) -> str:
    """PIL rejects zero-sized images as unidentified; name that case for PNG, the common one."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            return f"empty image ({width}x{height})"
    return "not a recognised image format, or its header is corrupt"


def _to_rgb(image: Image.Image) -> Image.Image:
    """Composite transparency onto white rather than keep whatever colour hides under it."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


class ImageEncoder(nn.Module, ABC):
    """Shared contract: pixels (B, 3, 256, 256) from `preprocess` -> (B, 64, feature_dim)."""

    feature_dim: int

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        expected = (3, IMAGE_SIZE, IMAGE_SIZE)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise ValueError(f"expected pixels (batch, {expected}), got {tuple(pixels.shape)}")
        return self.encode(pixels)

    @abstractmethod
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, 256, 256) -> (B, 64, feature_dim)."""


class PatchImageEncoder(ImageEncoder):
    """Offline encoder: linear embedding of 32 x 32 patches + a small transformer."""

    def __init__(self, feature_dim: int = 768, width: int = 256, layers: int = 2, heads: int = 4):
        super().__init__()
        self.feature_dim = feature_dim
        self.shape = {"feature_dim": feature_dim, "width": width, "layers": layers, "heads": heads}
        # A stride-32 convolution is a linear map of each flattened 32 x 32 x 3 patch.
        self.embed = nn.Conv2d(3, width, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)
        self.position = nn.Parameter(torch.randn(1, IMAGE_TOKENS, width) * 0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width, heads, 4 * width, 0.0, "gelu", batch_first=True, norm_first=True
            )
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, feature_dim)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixels).flatten(2).transpose(1, 2) + self.position  # (B, 64, width)
        for block in self.blocks:
            x = block(x)
        return self.out(self.norm(x))

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """One safetensors file: the weights, and the sizes `load` rebuilds the encoder from
        (plus `metadata`, e.g. how it was pretrained)."""
        header = {**(metadata or {}), "format": PATCH_FORMAT, "shape": json.dumps(self.shape)}
        tensors = {name: tensor.detach().contiguous() for name, tensor in self.state_dict().items()}
        save_file(tensors, str(path), metadata=header)

    @classmethod
    def load(cls, path: str | Path) -> PatchImageEncoder:
        """The encoder `save` wrote, frozen (no gradients) and in eval mode."""
        label = str(path)
        if not Path(path).is_file():
            raise CheckpointError(label, "no such patch image encoder file")
        try:
            with safe_open(label, framework="pt") as weights:
                header = weights.metadata() or {}
                if header.get("format") != PATCH_FORMAT:
                    raise CheckpointError(label, f"not a {PATCH_FORMAT} file (see `save`)")
                tensors = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118
            encoder = cls(**json.loads(header["shape"]))
            encoder.load_state_dict(tensors)
        except (SafetensorError, OSError, KeyError, TypeError, RuntimeError) as error:
            raise CheckpointError(label, f"not a loadable patch image encoder ({error})") from error
        return encoder.requires_grad_(False).eval()


class SiglipImageEncoder(ImageEncoder):
    """Frozen SigLIP2 vision tower: its 8 x 8 patch states after the final LayerNorm.

    `name_or_path` is a local `save_pretrained` folder (offline) or a Hugging Face repo name
    (downloaded on first use). Full SigLIP checkpoints (text and vision) load too: only the
    vision tower is kept.
    """

    def __init__(
        self, name_or_path: str | Path = SIGLIP2_MODEL, device: str | torch.device = "cpu"
    ):
        super().__init__()
        transformers = _import_transformers()
        label = str(name_or_path)
        if not Path(name_or_path).is_dir() and not HUB_NAME.fullmatch(label):
            raise CheckpointError(
                label, "no such checkpoint folder, and not a Hugging Face repo name (owner/name)"
            )
        try:
            model = transformers.SiglipVisionModel.from_pretrained(name_or_path)
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(label, f"not a loadable SigLIP checkpoint ({error})") from error
        config = model.config
        tokens = (config.image_size // config.patch_size) ** 2
        if config.image_size != IMAGE_SIZE or tokens != IMAGE_TOKENS:
            raise CheckpointError(
                label,
                f"takes {config.image_size} px images as {tokens} patches; "
                f"this model needs {IMAGE_SIZE} px and {IMAGE_TOKENS} patches (patch 32)",
            )
        self.feature_dim = config.hidden_size
        self.model = model.requires_grad_(False).eval().to(device)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        device = next(self.model.parameters()).device
        with torch.no_grad():
            states = self.model(pixel_values=pixels.to(device)).last_hidden_state  # (B, 64, dim)
        return states.to(pixels.device)


def _import_transformers():
    try:
        import transformers
    except ImportError as error:
        raise ImportError(
            "the SigLIP image encoder needs the optional extra: pip install 'tiny-omni[siglip]'"
        ) from error
    return transformers


def build_image_encoder(
    kind: str,
    *,
    feature_dim: int | None = None,
    siglip_model: str | Path = SIGLIP2_MODEL,
    device: str | torch.device = "cpu",
) -> ImageEncoder:
    """The encoder named in config: `patch` (offline, trainable) or `siglip` (frozen).

    SigLIP's width is fixed by its checkpoint, so a `feature_dim` that differs is an error.
    Leave `feature_dim` out and read the encoder's instead.
    """
    if kind == "patch":
        return PatchImageEncoder(feature_dim=feature_dim or 768).to(device)
    if kind == "siglip":
        encoder = SiglipImageEncoder(siglip_model, device=device)
        if feature_dim is not None and feature_dim != encoder.feature_dim:
            raise ValueError(
                f"image feature dim {feature_dim} does not match {siglip_model}'s width "
                f"{encoder.feature_dim}"
            )
        return encoder
    raise ValueError(f"unknown image encoder {kind!r}; choose one of {IMAGE_ENCODERS}")
