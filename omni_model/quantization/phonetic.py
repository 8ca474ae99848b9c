"""A phonetic first stage for the offline codec: the first code of a frame names its phone.

Mimi's first codebook is semantic (distilled from WavLM): it says what is being said, and
the later ones how. A first stage fitted by k-means on log-mel instead follows the voice:
the same sentence in two voices shares under a fifth of its first codes, so a Talker must
learn every voice's codes for every sound. Here the first stage is distilled from phones:

- `ForcedAligner` (fitting only) aligns each fitting clip with its text by pocketsphinx,
  giving one of 40 labels (39 ARPAbet phones and silence) per 10 ms mel frame;
- `PhoneTagger`, a small convolutional net over log-mel, learns to name those phones from
  the audio alone, so any speech can be encoded without its text;
- the first code of an 80 ms frame is the phone the tagger finds most of in its 8 mel frames.
"""

from __future__ import annotations

import logging

import torch
from pocketsphinx import Decoder
from torch import nn
from tqdm import tqdm

from omni_model.audio_io import padded_pcm16
from omni_model.text.normalize import normalize_text
from omni_model.text.pronunciation import espeak_pronunciations

log = logging.getLogger(__name__)

# silence, then the 39 phones of pocketsphinx's English model
PHONES = (
    "SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D",
    "DH", "EH", "ER", "EY", "F", "G", "HH", "IH", "IY", "JH",
    "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S",
    "SH", "T", "TH", "UH", "UW", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
SILENCE = 0
ALIGN_RATE = 16_000  # pocketsphinx's acoustic model
TAGGER_STEPS = 1500  # on 10 minutes of espeak speech: 86% of held-out mel frames named right
ALIGN_PAD_FRAMES = 30  # 0.3 s of silence around the speech: pocketsphinx finds its edges


class ForcedAligner:
    """Audio + its text -> a phone label per 10 ms frame, by pocketsphinx's forced alignment.

    pocketsphinx frames are 10 ms like the codec's mel frames. Words outside its dictionary
    take espeak-ng's pronunciation; a clip it cannot align gives None.
    """

    def __init__(self):
        self.decoder = Decoder(samprate=ALIGN_RATE, lm=None, loglevel="FATAL")
        self.index = {phone: i for i, phone in enumerate(PHONES)}

    def _add_missing_words(self, words: list[str]) -> None:
        missing = {word for word in words if not self.decoder.lookup_word(word)}
        if not missing:
            return
        for word, phones in espeak_pronunciations(missing).items():
            if phones:
                self.decoder.add_word(word, phones, True)

    def _decode(self, raw: bytes) -> None:
        self.decoder.start_utt()
        self.decoder.process_raw(raw, full_utt=True)
        self.decoder.end_utt()

    def align(
        self, audio: torch.Tensor, sample_rate: int, text: str, frames: int
    ) -> torch.Tensor | None:
        """audio (samples,) of `text` -> labels (frames,) in 0..39, or None if unalignable."""
        words = normalize_text(text).split()
        if not words:
            return None
        self._add_missing_words(words)
        raw = padded_pcm16(audio, sample_rate, ALIGN_RATE, ALIGN_PAD_FRAMES / 100)
        try:
            self.decoder.set_align_text(" ".join(w for w in words if self.decoder.lookup_word(w)))
            self._decode(raw)  # first pass: where each word is
            self.decoder.set_alignment()
            self._decode(raw)  # second pass: the phones within each word
            alignment = self.decoder.get_alignment()
        except RuntimeError as error:
            log.debug("no alignment for %r: %s", text, error)
            return None
        if alignment is None:
            return None
        labels = torch.full((frames,), SILENCE, dtype=torch.long)
        for word in alignment:
            for phone in word:
                start = phone.start - ALIGN_PAD_FRAMES
                label = self.index.get(phone.name, SILENCE)
                labels[max(start, 0) : max(start + phone.duration, 0)] = label
        return labels


class PhoneTagger(nn.Module):
    """log-mel (B, T, 80) -> phone logits (B, T, 40); sees 130 ms around each frame."""

    def __init__(self, n_mels: int = 80, width: int = 192, kernel: int = 5, layers: int = 3):
        super().__init__()
        self.settings = {"n_mels": n_mels, "width": width, "kernel": kernel, "layers": layers}
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))
        blocks: list[nn.Module] = []
        channels = n_mels
        for _ in range(layers):
            blocks += [nn.Conv1d(channels, width, kernel, padding=kernel // 2), nn.GELU()]
            channels = width
        blocks.append(nn.Conv1d(width, len(PHONES), 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        x = ((log_mel - self.mean) / self.std).transpose(1, 2)  # (B, 80, T)
        return self.net(x).transpose(1, 2)  # (B, T, 40)

    @torch.no_grad()
    def frame_phones(self, log_mel: torch.Tensor, mels_per_frame: int) -> torch.Tensor:
        """log-mel (T, 80), T a multiple of `mels_per_frame` -> the most present phone per
        codec frame (T / mels_per_frame,)."""
        probabilities = self(log_mel[None]).softmax(dim=-1)[0]  # (T, 40)
        return probabilities.reshape(-1, mels_per_frame, len(PHONES)).sum(dim=1).argmax(dim=1)


def train_tagger(
    log_mels: list[torch.Tensor],
    labels: list[torch.Tensor],
    *,
    steps: int = TAGGER_STEPS,
    batch: int = 16,
    crop: int = 200,
    seed: int = 0,
    progress: bool = True,
) -> tuple[PhoneTagger, float]:
    """Fit a tagger on (T, 80) log-mels and their (T,) labels; returns it and its accuracy
    on the last tenth of the clips (held out)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(len(log_mels), generator=generator).tolist()
    held = max(1, len(order) // 10)
    train, test = order[held:], order[:held]
    tagger = PhoneTagger(log_mels[0].shape[1])
    stacked = torch.cat([log_mels[i] for i in train])
    tagger.mean.copy_(stacked.mean(dim=0))
    tagger.std.copy_(stacked.std(dim=0).clamp(min=1e-3))
    optimizer = torch.optim.AdamW(tagger.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps)
    for _ in tqdm(range(steps), desc="phone tagger", disable=not progress):
        chosen = torch.randint(len(train), (batch,), generator=generator).tolist()
        mels, targets = [], []
        for i in chosen:
            mel, label = log_mels[train[i]], labels[train[i]]
            start = int(torch.randint(max(1, len(mel) - crop + 1), (1,), generator=generator))
            mels.append(mel[start : start + crop])
            targets.append(label[start : start + crop])
        padded = nn.utils.rnn.pad_sequence(mels, batch_first=True)
        target = nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=-100)
        loss = nn.functional.cross_entropy(tagger(padded).transpose(1, 2), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    tagger.eval()
    with torch.no_grad():
        right = sum(int((tagger(log_mels[i][None])[0].argmax(1) == labels[i]).sum()) for i in test)
    accuracy = right / sum(len(labels[i]) for i in test)
    return tagger, accuracy
