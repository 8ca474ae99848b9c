"""OmniModel invariants: causality, KV cache, bridge, MoE, training modes, overfitting."""

import copy

import pytest
import torch

from omni_model import OmniModel, make_config
from omni_model.config import AUDIO_VOCAB_SIZE, CODEBOOK_SIZE, OmniConfig
from omni_model.data import build_sample, collate
from omni_model.data.sample import IGNORE_INDEX
from omni_model.models.summary import parameter_table
from omni_model.text.special_tokens import AUDIO_PLACEHOLDER_ID, IMAGE_PLACEHOLDER_ID
from omni_model.text.tokenizer import TokenizedConversation
from omni_model.training import omni_loss
from omni_model.training.loss import audio_targets


def random_streams(config, batch: int, length: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    streams = torch.randint(0, CODEBOOK_SIZE, (batch, 9, length), generator=generator)
    streams[:, 8] = torch.randint(20, config.vocab_size, (batch, length), generator=generator)
    return streams


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return OmniModel(make_config("tiny")).eval()


def test_future_positions_do_not_change_earlier_logits(tiny):
    streams = random_streams(tiny.config, 2, 24)
    changed = streams.clone()
    changed[:, :, 15:] = random_streams(tiny.config, 2, 9, seed=1)
    before, after = tiny(streams), tiny(changed)
    torch.testing.assert_close(before.text_logits[:, :15], after.text_logits[:, :15])
    for k in range(8):
        torch.testing.assert_close(before.audio_logits[:, k, :15], after.audio_logits[:, k, :15])
    assert not torch.allclose(before.text_logits[:, 15:], after.text_logits[:, 15:])
    assert not torch.allclose(before.audio_logits[:, :, 15:], after.audio_logits[:, :, 15:])


def test_kv_cache_decoding_equals_full_forward(tiny):
    streams = random_streams(tiny.config, 1, 20)
    full = tiny(streams)
    cache = tiny.new_cache(1, 32)
    chunks = [tiny(streams[:, :, :12], cache=cache)]  # prefill, then one position at a time
    chunks += [tiny(streams[:, :, t : t + 1], cache=cache) for t in range(12, 17)]
    chunks.append(tiny(streams[:, :, 17:], cache=cache))  # a multi-position chunk after the cache
    text = torch.cat([c.text_logits for c in chunks], dim=1)
    audio = torch.cat([c.audio_logits for c in chunks], dim=2)
    torch.testing.assert_close(text, full.text_logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(audio, full.audio_logits, atol=1e-4, rtol=0)
    assert cache.length == 20


def test_bridge_taps_the_configured_layer(tiny):
    """Thinker layers after the bridge change text logits but never audio logits."""
    assert tiny.config.bridge_layer == tiny.config.thinker.num_layers // 2 - 1
    tapped = {}
    layer = tiny.thinker.stack.layers[tiny.config.bridge_layer]
    hooks = [
        layer.register_forward_hook(lambda m, i, o: tapped.__setitem__("layer", o)),
        tiny.talker.embed_proj.register_forward_hook(
            lambda m, i, o: tapped.__setitem__("in", i[0])
        ),
    ]
    streams = random_streams(tiny.config, 1, 10)
    before = tiny(streams)
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(tapped["in"], tapped["layer"])

    altered = copy.deepcopy(tiny)
    with torch.no_grad():
        for later in altered.thinker.stack.layers[tiny.config.bridge_layer + 1 :]:
            for param in later.parameters():
                param.add_(torch.randn_like(param))
    after = altered(streams)
    torch.testing.assert_close(after.audio_logits, before.audio_logits)
    assert not torch.allclose(after.text_logits, before.text_logits)


def test_moe_aux_loss_only_with_moe():
    streams = random_streams(make_config("tiny"), 2, 12)
    dense = OmniModel(make_config("tiny"))(streams)
    moe_model = OmniModel(make_config("tiny", moe=True))
    moe = moe_model(streams)
    assert dense.aux_loss.item() == 0.0
    # Balanced routing gives 1 per layer, collapsed routing up to 4; scaled by 5e-4.
    layers = moe_model.config.thinker.num_layers + moe_model.config.talker.num_layers
    assert layers * 5e-4 * 0.99 <= moe.aux_loss.item() <= layers * 5e-4 * 4
    assert moe.aux_loss.requires_grad
    text_only = moe_model(streams, text_only=True)
    assert text_only.audio_logits is None
    assert text_only.aux_loss.item() < moe.aux_loss.item()


@pytest.mark.parametrize(
    "mode, trained", [("audio_proj", "audio_projector."), ("vision_proj", "vision_projector.")]
)
def test_projector_modes_freeze_everything_else(mode, trained):
    torch.manual_seed(0)
    model = OmniModel(make_config("tiny"))
    model.set_training_mode(mode)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    streams = random_streams(model.config, 1, 70)
    streams[0, 8, 2:6] = AUDIO_PLACEHOLDER_ID
    streams[0, 8, 6:70] = IMAGE_PLACEHOLDER_ID
    output = model(
        streams,
        audio_features=torch.randn(4, model.config.audio_feature_dim),
        image_features=torch.randn(64, model.config.image_feature_dim),
    )
    (output.text_logits.logsumexp(-1).mean() + output.audio_logits.logsumexp(-1).mean()).backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    for name, param in model.named_parameters():
        moved = not torch.equal(before[name], param.detach())
        assert param.requires_grad == name.startswith(trained), name
        assert moved == name.startswith(trained), name
    model.set_training_mode("all")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="unknown training mode"):
        model.set_training_mode("talker_only")


def test_placeholder_count_must_match_features(tiny):
    streams = random_streams(tiny.config, 1, 10)
    streams[0, 8, 3] = AUDIO_PLACEHOLDER_ID
    with pytest.raises(ValueError, match="1 audio placeholder tokens but 0"):
        tiny(streams)
    out = tiny(streams, audio_features=torch.randn(1, tiny.config.audio_feature_dim))
    assert out.text_logits.shape == (1, 10, tiny.config.vocab_size)


def test_speaker_vector_replaces_the_marker_position(tiny):
    streams = random_streams(tiny.config, 1, 10)
    streams[0, :8, 4] = 2051  # speaker marker column
    first = tiny(streams, speaker=torch.randn(1, tiny.config.speaker_dim))
    second = tiny(streams, speaker=torch.randn(1, tiny.config.speaker_dim))
    torch.testing.assert_close(first.audio_logits[:, :, :4], second.audio_logits[:, :, :4])
    assert not torch.allclose(first.audio_logits[:, :, 4:], second.audio_logits[:, :, 4:])
    torch.testing.assert_close(first.text_logits, second.text_logits)


def test_talker_initialised_from_last_thinker_blocks():
    model = OmniModel(make_config("tiny"))
    model.init_talker_from_thinker()
    thinker_layers = model.thinker.stack.layers
    for source, target in zip(thinker_layers[-2:], model.talker.stack.layers, strict=True):
        for (name, a), (_, b) in zip(
            source.state_dict().items(), target.state_dict().items(), strict=True
        ):
            assert torch.equal(a, b), name
    narrow = OmniModel(make_config("tiny", talker_hidden=384))
    with pytest.raises(ValueError, match="differs"):
        narrow.init_talker_from_thinker()


def test_parameter_counts_match_the_design():
    counts = parameter_table(OmniModel(make_config("reference")))
    assert abs(counts["total_trainable"] - 113e6) / 113e6 < 0.05
    assert abs(counts["thinker"] - 64e6) / 64e6 < 0.05
    assert abs(counts["talker"] - 47e6) / 47e6 < 0.05
    assert counts["total_trainable"] == sum(
        counts[k] for k in counts if k not in ("talker", "projectors", "total_trainable")
    )


def test_talker_widths_and_moe_change_the_count():
    totals = {
        width: parameter_table(OmniModel(make_config("tiny", talker_hidden=width)))["talker"]
        for width in (384, 512, 768)
    }
    assert totals[384] < totals[512] < totals[768]
    dense = parameter_table(OmniModel(make_config("tiny")))
    moe = parameter_table(OmniModel(make_config("tiny", moe=True)))
    assert moe["thinker"] > dense["thinker"]


def test_audio_logits_at_target_positions_equal_the_full_logits_and_loss_there(tiny):
    """Training computes the Talker's head only where it has targets: same logits, same loss."""
    generator = torch.Generator().manual_seed(1)
    samples = []
    for prompt, reply, frames in ((6, 4, 3), (9, 5, 6)):
        ids = torch.randint(20, tiny.config.vocab_size, (prompt + reply,), generator=generator)
        codes = torch.randint(0, CODEBOOK_SIZE, (8, frames), generator=generator)
        samples.append(
            build_sample(TokenizedConversation(ids.tolist(), prompt, prompt + reply), codes)
        )
    batch = collate(samples)
    positions, labels = audio_targets(batch["audio_labels"])
    assert 0 < positions.sum() < positions.numel()  # prompts and padding have no targets
    with torch.no_grad():
        full = tiny(batch["input_ids"])
        part = tiny(batch["input_ids"], audio_positions=positions)
    count = int(positions.sum())
    assert part.audio_logits.shape == (1, 8, count, AUDIO_VOCAB_SIZE) and labels.shape == (
        1,
        8,
        count,
    )
    chosen = full.audio_logits.transpose(0, 1)[:, positions]  # (8, N, vocab)
    torch.testing.assert_close(part.audio_logits[0], chosen, atol=1e-5, rtol=0)
    torch.testing.assert_close(part.text_logits, full.text_logits)
    whole = omni_loss(
        full.text_logits,
        full.audio_logits,
        batch["text_labels"],
        batch["audio_labels"],
        full.aux_loss,
    )
    targets_only = omni_loss(
        part.text_logits, part.audio_logits, batch["text_labels"], labels, part.aux_loss
    )
    torch.testing.assert_close(targets_only.per_codebook, whole.per_codebook)
    torch.testing.assert_close(targets_only.total, whole.total)


def test_first_codebook_weight_scales_its_share_of_the_audio_loss():
    generator = torch.Generator().manual_seed(0)
    text_logits = torch.randn(2, 6, 32, generator=generator)
    text_labels = torch.randint(0, 32, (2, 6), generator=generator)
    audio_logits = torch.randn(2, 8, 6, AUDIO_VOCAB_SIZE, generator=generator)
    audio_labels = torch.randint(0, CODEBOOK_SIZE, (2, 8, 6), generator=generator)
    audio_labels[:, 7] = IGNORE_INDEX  # the last codebook has no targets in this batch
    aux = torch.zeros(())
    plain = omni_loss(text_logits, audio_logits, text_labels, audio_labels, aux)
    weighted = omni_loss(
        text_logits, audio_logits, text_labels, audio_labels, aux, first_codebook_weight=5.0
    )
    losses = plain.per_codebook  # (8,), codebook 7 contributes nothing
    torch.testing.assert_close(weighted.per_codebook, losses)
    torch.testing.assert_close(plain.audio, losses[:7].mean())
    torch.testing.assert_close(weighted.audio, (5.0 * losses[0] + losses[1:7].sum()) / 11.0)
    torch.testing.assert_close(weighted.total - weighted.audio, plain.total - plain.audio)


def test_overfitting_one_batch_drives_both_losses_near_zero():
    torch.manual_seed(0)
    config = make_config("tiny", vocab_size=64)
    model = OmniModel(config)
    generator = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(2):
        ids = torch.randint(10, 64, (14,), generator=generator).tolist()
        codes = torch.randint(0, CODEBOOK_SIZE, (8, 5), generator=generator)
        samples.append(build_sample(TokenizedConversation(ids, 8, 14), codes))
    batch = collate(samples)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        out = model(batch["input_ids"])
        loss = omni_loss(
            out.text_logits,
            out.audio_logits,
            batch["text_labels"],
            batch["audio_labels"],
            out.aux_loss,
        )
        first = first or (loss.text.item(), loss.audio.item())
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    assert first[1] > 0.9 * torch.log(torch.tensor(float(AUDIO_VOCAB_SIZE))).item()
    assert loss.text.item() < 0.05 and loss.audio.item() < 0.05, (loss.text, loss.audio)


def test_text_layout_is_checked_and_older_configs_read_as_sequential():
    with pytest.raises(ValueError, match="unknown text layout"):
        make_config("tiny", text_layout="interleaved")
    saved = make_config("tiny", text_layout="aligned").to_dict()
    assert OmniConfig.from_dict(saved).text_layout == "aligned"
    del saved["text_layout"]  # checkpoints written before the option existed
    assert OmniConfig.from_dict(saved).text_layout == "sequential"
