"""Side encoders that feed the Thinker and the Talker (not counted in the 0.1B).

- `audio`: question audio -> (B, frames, feature_dim) at 12.5 Hz (Whisper, or the offline
  log-mel encoder); `build_audio_encoder`.
- `image`: images -> (B, 64, feature_dim) (SigLIP2, or the offline patch encoder);
  `load_image`, `preprocess`, `build_image_encoder`.
- `speaker`: clips -> 256-d speaker vectors (resemblyzer) and `cosine_similarity`.

Each is imported from its module, so using one does not load the others' libraries.
The model's `audio_feature_dim`, `image_feature_dim` and `speaker_dim` are set from the
chosen encoders' `feature_dim` / `dim`.
"""
