"""Image loading (every bad kind of file), preprocessing, the two 64-token encoders, and
pretraining the patch encoder on per-cell labels."""

import io
import struct
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from omni_model.config import OmniConfig
from omni_model.encoders.errors import CheckpointError
from omni_model.encoders.image import (
    IMAGE_TOKENS,
    ImageError,
    PatchImageEncoder,
    SiglipImageEncoder,
    build_image_encoder,
    load_image,
    normalise,
    preprocess,
    resize,
)
from omni_model.encoders.pretraining import (
    COUNTS,
    EMPTY,
    IGNORE,
    CellData,
    CellHead,
    PretrainSettings,
    cell_accuracy,
    cell_loss,
    cell_pooling,
    colour_counts,
    count_accuracy,
    pretrain_image_encoder,
    recoloured,
)


def encoded(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (valid chunk CRCs) but holds no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def noise_image(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


BAD_IMAGES = {
    "empty": (lambda: b"", "empty file"),
    "text": (lambda: b"hello, I am not a picture\n" * 20, "not a recognised image"),
    "truncated_png": (lambda: encoded(noise_image(0))[:3_000], "truncated"),
    "truncated_jpeg": (lambda: encoded(noise_image(1), "JPEG")[:2_000], "truncated"),
    "zero_size": (lambda: png_header(0, 0), r"empty image \(0x0\)"),
    "over_our_limit": (lambda: png_header(8_000, 7_000), "over the limit"),
    "decompression_bomb": (lambda: png_header(60_000, 60_000), "too large"),
    "16_bit": (
        lambda: encoded(Image.fromarray(np.full((8, 8), 40_000, dtype=np.uint16))),
        "unsupported pixel mode 'I;16'",
    ),
    "float": (lambda: encoded(Image.new("F", (8, 8), 0.5), "TIFF"), "unsupported pixel mode 'F'"),
}


@pytest.mark.parametrize("kind", sorted(BAD_IMAGES))
def test_each_bad_image_raises_image_error_naming_the_file(kind, tmp_path):
    make, reason = BAD_IMAGES[kind]
    path = tmp_path / f"{kind}.img"
    path.write_bytes(make())
    with pytest.raises(ImageError, match=reason) as raised:
        load_image(path)
    assert str(path) in str(raised.value)
    with pytest.raises(ImageError, match=f"upload 7: .*{reason}"):
        load_image(make(), name="upload 7")


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match=r"nothing\.png: no such file"):
        load_image(tmp_path / "nothing.png")


def test_load_image_converts_modes_and_flattens_transparency_onto_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    image = load_image(encoded(rgba))
    assert image.mode == "RGB" and image.size == (4, 4)
    assert image.getpixel((0, 0)) == (0, 0, 255)
    assert image.getpixel((1, 1)) == (255, 255, 255)
    gray = load_image(encoded(Image.new("L", (4, 2), 200)))
    assert gray.mode == "RGB" and gray.getpixel((3, 1)) == (200, 200, 200)


def test_preprocess_resizes_to_256_and_scales_to_unit_range():
    white, black = Image.new("RGB", (300, 120), "white"), Image.new("RGB", (20, 20), "black")
    pixels = preprocess([white, black])
    assert pixels.shape == (2, 3, 256, 256)
    assert torch.all(pixels[0] == 1.0) and torch.all(pixels[1] == -1.0)


def test_resize_keeps_exact_uint8_pixels_that_normalise_scales_like_preprocess():
    red = Image.new("RGB", (240, 240), (220, 30, 30))
    pixels = resize([red, noise_image(4)])
    assert pixels.dtype == torch.uint8 and pixels.shape == (2, 3, 256, 256)
    assert pixels[0, :, 100, 100].tolist() == [220, 30, 30]
    assert torch.equal(normalise(pixels), preprocess([red, noise_image(4)]))


def test_patch_encoder_saves_and_loads_back_frozen_with_identical_tokens(tmp_path):
    torch.manual_seed(1)
    encoder = PatchImageEncoder(40, width=32, layers=1, heads=2)
    encoder.save(tmp_path / "patch.safetensors", {"note": "made by a test"})
    loaded = PatchImageEncoder.load(tmp_path / "patch.safetensors")
    assert (loaded.feature_dim, loaded.shape) == (40, encoder.shape)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    pixels = preprocess([noise_image(5)])
    # Frozen, torch takes its fused inference path: equal up to float rounding.
    torch.testing.assert_close(loaded(pixels), encoder.eval()(pixels), atol=1e-5, rtol=1e-5)


def test_patch_encoder_load_names_the_file_and_the_reason(tmp_path):
    with pytest.raises(CheckpointError, match="no such patch image encoder file"):
        PatchImageEncoder.load(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=f"{garbage}: not a loadable patch image encoder"):
        PatchImageEncoder.load(garbage)
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(CheckpointError, match="not a tiny-omni-patch-image-encoder file"):
        PatchImageEncoder.load(other)


def quadrant_pictures(count: int, seed: int) -> CellData:
    """Pictures of 2 x 2 cells, each empty (white) or filled with one of three colours."""
    colours = [(255, 255, 255), (220, 30, 30), (30, 150, 60), (40, 80, 220)]
    labels = torch.randint(0, 4, (count, 4), generator=torch.Generator().manual_seed(seed))
    pixels = torch.zeros(count, 3, 256, 256, dtype=torch.uint8)
    for index, row in enumerate(labels.tolist()):
        for cell, colour in enumerate(row):
            top, left = 128 * (cell // 2), 128 * (cell % 2)
            pixels[index, :, top : top + 128, left : left + 128] = torch.tensor(colours[colour])[
                :, None, None
            ]
    return CellData(pixels, {"colour": labels}, {"colour": 4})


def test_pretraining_learns_what_is_in_each_cell_of_unseen_pictures():
    train, test = quadrant_pictures(64, seed=0), quadrant_pictures(32, seed=1)
    torch.manual_seed(0)
    encoder = PatchImageEncoder(32, width=32, layers=1, heads=2)
    assert cell_accuracy(encoder, CellHead(32, 4, {"colour": 4}), test)["colour"] < 0.6
    losses = []
    settings = PretrainSettings(steps=120, batch_size=16, lr=3e-3, warmup_steps=5)
    head = pretrain_image_encoder(encoder, train, settings, lambda step, loss: losses.append(loss))
    assert len(losses) == 120 and sum(losses[-5:]) < 0.1 * sum(losses[:5])
    assert cell_accuracy(encoder, head, test)["colour"] > 0.95
    assert count_accuracy(encoder, head, test) > 0.9  # how many quadrants of each colour


def test_colour_counts_count_each_colour_and_skip_pictures_not_wholly_labelled():
    colour = torch.tensor([[0, 1, 1, 3], [2, 0, 0, 0], [IGNORE, 1, 0, 0], [0, 0, 0, 0]])
    counts = colour_counts(colour, colours=3)
    assert counts.tolist() == [[2, 0, 1], [0, 1, 0], [IGNORE] * 3, [0, 0, 0]]


def test_cell_head_names_a_count_per_colour_only_with_a_colour_attribute():
    tokens = torch.randn(2, 64, 32)
    logits = CellHead(32, 4, {"colour": 4, "shape": 3})(tokens)
    assert logits[COUNTS].shape == (2, 3, 5)  # 3 colours (EMPTY is none), counts 0..4 cells
    assert logits["colour"].shape == (2, 4, 4) and logits["shape"].shape == (2, 4, 3)
    assert COUNTS not in CellHead(32, 4, {"shape": 3})(tokens)
    labels = {"colour": torch.tensor([[1, 1, 0, 2], [IGNORE, 0, 0, 0]])}
    only_cells = cell_loss({"colour": logits["colour"]}, labels)
    with_counts = cell_loss({"colour": logits["colour"], COUNTS: logits[COUNTS]}, labels)
    expected = torch.nn.functional.cross_entropy(logits[COUNTS][0], torch.tensor([2, 1, 0]))
    assert torch.allclose(with_counts - only_cells, expected)  # the second picture skipped


def test_cell_pooling_averages_the_patches_centred_in_each_cell():
    weights = cell_pooling(9, 64)  # 3 x 3 cells over 8 x 8 patches: rows of 3, 2, 3 patches
    assert weights.shape == (9, 64)
    assert torch.allclose(weights.sum(dim=1), torch.ones(9))
    assert (weights > 0).sum(dim=0).tolist() == [1] * 64  # each patch in exactly one cell
    per_cell = (weights > 0).sum(dim=1).tolist()
    assert per_cell == [9, 6, 9, 6, 4, 6, 9, 6, 9]
    assert weights[0].reshape(8, 8)[:3, :3].eq(1 / 9).all()  # top-left cell: patches (0..2)^2
    with pytest.raises(ValueError, match="square grids"):
        cell_pooling(6, 64)


def test_cell_data_refuses_labels_that_do_not_fit():
    pixels = torch.zeros(2, 3, 256, 256, dtype=torch.uint8)
    with pytest.raises(ValueError, match="shape"):
        CellData(pixels, {"colour": torch.zeros(3, 4, dtype=torch.long)}, {"colour": 2})
    with pytest.raises(ValueError, match=r"ids outside 0\.\.1"):
        CellData(pixels, {"colour": torch.full((2, 4), 2)}, {"colour": 2})


def test_cell_data_accepts_ignored_labels():
    pixels = torch.zeros(2, 3, 256, 256, dtype=torch.uint8)
    labels = torch.tensor([[IGNORE, 1, 0, 0], [IGNORE] * 4])
    assert CellData(pixels, {"colour": labels}, {"colour": 2}).cells == 4


def test_recolouring_shuffles_channels_and_unnames_only_the_colours():
    data = quadrant_pictures(8, seed=2)
    pixels, colour = data.pixels, data.labels["colour"]
    shape = (colour > 0).long() * 3  # any second attribute: recolouring must keep it
    generator = torch.Generator().manual_seed(0)
    same, kept = recoloured(pixels, {"colour": colour, "shape": shape}, 0.0, generator)
    assert torch.equal(same, pixels) and torch.equal(kept["colour"], colour)
    shuffled, labels = recoloured(pixels, {"colour": colour, "shape": shape}, 1.0, generator)
    assert torch.equal(labels["shape"], shape)
    assert torch.equal(labels["colour"] == IGNORE, colour != EMPTY)  # empty cells stay EMPTY
    assert torch.equal(labels["colour"][colour == EMPTY], colour[colour == EMPTY])
    for before, after in zip(pixels, shuffled, strict=True):
        # the same three channels in another order, and every coloured picture changes
        assert sorted(map(bytes, after.flatten(1).unbind())) == sorted(
            map(bytes, before.flatten(1).unbind())
        )
        coloured = (before != before[:1]).any()
        assert bool((after != before).any()) == bool(coloured)


def test_recolour_share_must_be_a_share():
    with pytest.raises(ValueError, match="recolour is a share"):
        PretrainSettings(recolour=1.5)


def test_cell_loss_counts_only_labelled_cells():
    logits = {"colour": torch.randn(2, 4, 3)}
    labels = torch.tensor([[0, 1, 2, 1], [2, 2, 0, 1]])
    ignored = labels.clone()
    ignored[1] = IGNORE
    expected = torch.nn.functional.cross_entropy(logits["colour"][0], labels[0])
    assert torch.allclose(cell_loss(logits, {"colour": ignored}), expected)
    nothing = cell_loss(logits, {"colour": torch.full((2, 4), IGNORE)})
    assert nothing.item() == 0.0


def test_patch_encoder_gives_64_trainable_tokens():
    torch.manual_seed(0)
    encoder = build_image_encoder("patch", feature_dim=48)
    pixels = preprocess([noise_image(2), noise_image(3)])
    tokens = encoder(pixels)
    assert tokens.shape == (2, IMAGE_TOKENS, 48)
    assert not torch.allclose(tokens[0], tokens[1], atol=1e-3)
    torch.testing.assert_close(encoder(pixels[:1]), tokens[:1], atol=1e-5, rtol=1e-5)
    tokens.pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())
    with pytest.raises(ValueError, match="expected pixels"):
        encoder(torch.zeros(1, 3, 224, 224))


def test_default_dims_match_the_config():
    assert build_image_encoder("patch").feature_dim == OmniConfig().image_feature_dim
    with pytest.raises(ValueError, match="unknown image encoder"):
        build_image_encoder("clip")


def test_siglip_without_the_extra_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match=r"tiny-omni\[siglip\]"):
        SiglipImageEncoder("google/siglip2-base-patch32-256")


def tiny_siglip_config(transformers, patch_size: int = 32):
    return transformers.SiglipVisionConfig(
        image_size=256,
        patch_size=patch_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
    )


def test_siglip_loads_a_saved_checkpoint_and_gives_64_frozen_tokens(tmp_path):
    transformers = pytest.importorskip(
        "transformers", reason="the optional `siglip` extra (transformers) is not installed"
    )
    torch.manual_seed(0)
    model = transformers.SiglipVisionModel(tiny_siglip_config(transformers)).eval()
    model.save_pretrained(tmp_path / "siglip")
    encoder = build_image_encoder("siglip", siglip_model=tmp_path / "siglip")
    pixels = preprocess([noise_image(4), noise_image(5)])
    tokens = encoder(pixels)
    assert encoder.feature_dim == 32 and tokens.shape == (2, IMAGE_TOKENS, 32)
    with torch.no_grad():
        expected = model(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(tokens, expected)
    assert not any(parameter.requires_grad for parameter in encoder.parameters())

    with pytest.raises(ValueError, match="does not match"):
        build_image_encoder("siglip", siglip_model=tmp_path / "siglip", feature_dim=768)
    transformers.SiglipVisionModel(tiny_siglip_config(transformers, 16)).save_pretrained(
        tmp_path / "patch16"
    )
    with pytest.raises(CheckpointError, match="256 patches"):
        SiglipImageEncoder(tmp_path / "patch16")
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        SiglipImageEncoder(tmp_path / "missing")
