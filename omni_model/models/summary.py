"""Parameter counts per part of the model, as listed in DESIGN.md section 2."""

from __future__ import annotations

from torch import nn

# (row name, attribute prefixes) in display order; every parameter falls in one row.
PARAMETER_GROUPS = (
    ("thinker", ("thinker.",)),
    ("talker.blocks", ("talker.stack.", "talker.norm.")),
    ("talker.embedding", ("talker.embedding.",)),
    ("talker.mtp_head", ("talker.head.",)),
    (
        "talker.bridge",
        ("talker.embed_proj.", "talker.codec_proj.", "talker.text_scale", "talker.audio_scale"),
    ),
    ("talker.speaker_proj", ("talker.speaker_proj.",)),
    ("audio_projector", ("audio_projector.",)),
    ("vision_projector", ("vision_projector.",)),
)


def parameter_table(model: nn.Module) -> dict[str, int]:
    """Counts per group plus `talker` (all talker rows), `projectors` and `total_trainable`."""
    counts = {name: 0 for name, _ in PARAMETER_GROUPS}
    for param_name, param in model.named_parameters():
        group = next(
            (name for name, prefixes in PARAMETER_GROUPS if param_name.startswith(prefixes)), None
        )
        if group is None:
            raise KeyError(f"parameter {param_name} belongs to no group in PARAMETER_GROUPS")
        counts[group] += param.numel()
    counts["talker"] = sum(v for k, v in counts.items() if k.startswith("talker."))
    counts["projectors"] = counts["audio_projector"] + counts["vision_projector"]
    counts["total_trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
