"""Optional playback of a streaming reply on the default sound device.

Frames are queued as they are decoded and written to the device by a thread of their own,
so a slow device never holds up generation. PortAudio (through `sounddevice`) may be
missing, or the machine may have no output device: `open_player` then says why and the
caller carries on writing the wav file only.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import torch


class Player:
    def __init__(self, stream):
        self.stream = stream
        self.frames: queue.Queue[np.ndarray | None] = queue.Queue()
        self.thread = threading.Thread(target=self._play, daemon=True)
        self.stream.start()
        self.thread.start()

    def play(self, samples: torch.Tensor) -> None:
        """samples: (N,) float at the player's rate; returns at once."""
        self.frames.put(samples.detach().float().cpu().numpy().reshape(-1, 1))

    def close(self) -> None:
        """Play what is queued, then release the device."""
        self.frames.put(None)
        self.thread.join()
        self.stream.stop()
        self.stream.close()

    def _play(self) -> None:
        while (frame := self.frames.get()) is not None:
            self.stream.write(frame)


def open_player(sample_rate: int) -> tuple[Player | None, str]:
    """(player, "") when a sound device can play, else (None, the reason)."""
    try:
        import sounddevice

        sounddevice.query_devices(kind="output")
        stream = sounddevice.OutputStream(samplerate=sample_rate, channels=1, dtype="float32")
    except Exception as error:  # no PortAudio, no device, device busy: all mean no playback
        return None, f"{type(error).__name__}: {error}"
    return Player(stream), ""
