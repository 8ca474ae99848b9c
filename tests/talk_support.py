"""A store with a tiny random-weight model to talk to, as the pipeline would leave it.

Shared by the inference, session and browser tests: a tokenizer, a fitted offline codec
(with few Griffin-Lim iterations, so frames decode fast), two voices, and a checkpoint
saved through the training checkpoint API with a lineage file beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from omni_model.config import AUDIO_STOP_ID, make_config
from omni_model.quantization import NUM_CODEBOOKS, OfflineCodec
from omni_model.text import train_tokenizer
from omni_model.training.checkpoint import save_checkpoint
from omni_model.training.model import EncoderSpec, TrainModel
from omni_model.tts import synthesize
from omni_model.voices import Voice

SPEAKER_DIM = 256  # resemblyzer's, so cloned voices fit
STAGES = ("text", "t2a", "a2a")
VOICE_NAMES = ("alto", "bass")
RUN_ID = "0123456789abcdef0123456789abcdef"
SENTENCES = (
    "What colour is the ball? The ball is red.",
    "How many circles are there? There are three circles.",
    "Where is the small boat? The boat is near the bridge.",
    "Café au lait, naïve façade: a little non-ASCII text.",
)


def fast_codec(codec: OfflineCodec, path: Path) -> OfflineCodec:
    """The same codec (same id) decoding with 4 Griffin-Lim iterations instead of 32."""
    codec.save(path)
    return OfflineCodec.load(path, griffin_lim_iterations=4)


def build_store(root: Path, codec: OfflineCodec, seed: int = 0) -> tuple[Path, OfflineCodec]:
    """Write a store under `root`; returns the last stage's checkpoint and the fast codec."""
    tokenizer = train_tokenizer(SENTENCES, vocab_size=320)
    (root / "tokenizer").mkdir(parents=True)
    tokenizer.save(root / "tokenizer" / f"tokenizer-{tokenizer.tokenizer_id}.json")
    (root / "codecs").mkdir()
    weights = root / "codecs" / f"{codec.codec_id}.safetensors"
    codec = fast_codec(codec, weights)
    manifest = {"kind": "offline", "codec_id": codec.codec_id, "weights": str(weights)}
    (root / "codecs" / "current.json").write_text(json.dumps(manifest))

    generator = torch.Generator().manual_seed(seed)
    folder = root / "voices" / codec.codec_id
    folder.mkdir(parents=True)
    for name in VOICE_NAMES:
        codes = torch.randint(0, 2048, (NUM_CODEBOOKS, 12), generator=generator)
        speaker = torch.randn(SPEAKER_DIM, generator=generator)
        speaker = speaker / speaker.norm()
        Voice(name, codes, speaker, codec.codec_id, {"clip": f"{name}.wav"}).save(
            folder / f"{name}.voice"
        )

    torch.manual_seed(seed)
    config = make_config("tiny", vocab_size=tokenizer.vocab_size)
    config.speaker_dim = SPEAKER_DIM
    model = TrainModel(config, EncoderSpec(width=32))
    with torch.no_grad():  # random codebook-0 logits might end speech at once: keep it going
        model.model.talker.head.up_bias[0, 0, AUDIO_STOP_ID] = -30.0
    meta = {
        "config": model.config.to_dict(),
        "encoders": model.encoders.to_dict(),
        "tokenizer_id": tokenizer.tokenizer_id,
        "vocab_size": tokenizer.vocab_size,
        "codec_id": codec.codec_id,
        "plan": "test",
        "plan_spec": {"stages": [{"name": name} for name in STAGES]},
        "step": 5,
        "total_steps": 5,
        "complete": True,
    }
    for stage in STAGES:
        path = root / "training" / "test" / stage / "final"
        save_checkpoint(path, model, meta | {"stage": stage, "mode": "all"})
    lineage = {"mlflow_run_id": RUN_ID, "inputs": [{"task": "a2a", "rows": 7}]}
    (path / "lineage.json").write_text(json.dumps(lineage))
    return path, codec


def speech16k(text: str, voice: str = "en-us+f2") -> np.ndarray:
    """espeak-ng speech at the microphone rate, (samples,) float32."""
    return synthesize(text, voice, sample_rate=16_000).numpy()


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy two-core machine waking
    it for every small operation costs more than the operation (threads spawned inside,
    like reply workers, inherit the setting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
