"""Special text tokens. The BPE tokenizer is trained with these first, so their ids are fixed."""

SPECIAL_TOKENS = (
    "<|endoftext|>",  # text pad: fills the text row after the reply while audio continues
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_pad|>",  # one per question-audio feature frame; overwritten by the audio projector
    "<|image_pad|>",  # 64 per image; overwritten by the vision projector
    "<|audio_start|>",
    "<|audio_end|>",
    "<|image_start|>",
    "<|image_end|>",
)
TEXT_PAD_ID = 0
IM_START_ID = 1
IM_END_ID = 2
AUDIO_PLACEHOLDER_ID = 3
IMAGE_PLACEHOLDER_ID = 4
AUDIO_START_ID = 5
AUDIO_END_ID = 6
IMAGE_START_ID = 7
IMAGE_END_ID = 8
