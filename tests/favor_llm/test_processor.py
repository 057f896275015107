"""FavorProcessor: prompt + placeholder expansion, labels, padding, media normalisation, errors, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from favor_llm import FavorProcessor


def _av(processor, ids):
    return int((ids == processor.av_token_id).sum())


def test_template_and_expansion(tiny, media):
    _, processor = tiny
    inputs = processor(text="What happens?", media={"video": media["video"], "audio": media["audio"]})
    ids = inputs["input_ids"][0]
    # 7 s of audio at 2 fps -> 14 frames -> windows of 4 -> 4 windows x 4 queries
    assert _av(processor, ids) == 4 * 4
    text = processor.tokenizer.decode(ids, skip_special_tokens=False)
    assert text.startswith("<s>USER: <Img><AV>") and text.endswith("</Img> What happens?\nASSISTANT:")
    assert ids[0] == processor.tokenizer.bos_token_id
    assert inputs["pixel_lengths"].tolist() == [6] and inputs["frame_lengths"].tolist() == [6]
    assert inputs["audio_lengths"].tolist() == [7 * 16000]
    # 7 s in windows of 5 s: two windows of Whisper features
    assert tuple(inputs["input_features"].shape) == (1, 2, 80, 500)


def test_text_only_uses_the_text_template(tiny):
    _, processor = tiny
    inputs = processor(text="Hello?")
    text = processor.tokenizer.decode(inputs["input_ids"][0], skip_special_tokens=False)
    assert text == "<s>USER: Hello?\nASSISTANT:"
    assert "pixel_values" not in inputs and "input_features" not in inputs


def test_labels_cover_only_the_answer(tiny, media):
    _, processor = tiny
    inputs = processor(
        text=["Q one?", "A longer second question?"],
        media=[media["video"], None],
        answers=["red", "two people"],
    )
    tok = processor.tokenizer
    for b, answer in enumerate(["red", "two people"]):
        labels = inputs["labels"][b]
        kept = labels[labels != -100].tolist()
        assert kept == tok(answer, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        # the answer is the tail of the (left-padded) row and equals the input ids there
        n = len(kept)
        assert inputs["input_ids"][b, -n:].tolist() == kept
        assert (labels[:-n] == -100).all()
    # left padding: the shorter row starts with pad tokens and a zero mask
    assert inputs["attention_mask"][0, 0] == 0 or inputs["attention_mask"][1, 0] == 0


def test_right_padding(tiny):
    _, processor = tiny
    inputs = processor(text=["a", "a much longer question here"], padding_side="right")
    assert inputs["attention_mask"][0, -1] == 0 and inputs["attention_mask"][0, 0] == 1


def test_image_and_audio_frame_counts(tiny, media):
    _, processor = tiny
    inputs = processor(
        text=["x", "y", "z"],
        media=[
            {"image": media["image"]},
            {"image": media["image"], "audio": media["short_audio"]},
            media["short_audio"],
        ],
    )
    # image alone: image_repeat (8 in the tiny config) frames; with 2 s of audio: the audio's 4 frames
    assert inputs["pixel_lengths"].tolist() == [1, 1, 0]
    assert inputs["frame_lengths"].tolist() == [8, 4, 0]
    counts = [_av(processor, row) for row in inputs["input_ids"]]
    assert counts == [2 * 4, 1 * 4, 1 * 4]


def test_array_forms_are_equivalent(tiny, media):
    _, processor = tiny
    video = media["video"]
    a = processor(text="q", media={"video": video})
    b = processor(text="q", media=video.permute(0, 2, 3, 1).numpy())  # (T, H, W, 3) numpy
    c = processor(text="q", media=video.float() / 255.0)  # float frames in [0, 1]
    for other in (b, c):
        assert torch.equal(a["input_ids"], other["input_ids"])
        assert torch.allclose(a["pixel_values"], other["pixel_values"], atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"text": "what is <AV> here?", "media": np.zeros(16000, np.float32)}, "placeholder"),
        (
            {"text": "no placeholder", "media": np.zeros(16000, np.float32), "apply_template": False},
            "placeholder",
        ),
        (
            {"text": "<AV> twice <AV>", "media": np.zeros(16000, np.float32), "apply_template": False},
            "placeholder",
        ),
        ({"text": "<AV> but no media", "apply_template": False}, "placeholder"),
        ({"text": ["a", "b"], "media": [None]}, "one item per question"),
        ({"text": ["a", "b"], "answers": ["x"]}, "answers"),
        ({"text": "a", "media": {"audio": np.zeros(8000), "sample_rate": 8000}}, "sample_rate"),
        ({"text": "a", "media": np.zeros((2, 3, 4, 5, 6))}, "array"),
        ({"text": "a", "media": {"vidéo": np.zeros(3)}}, "unknown keys"),
        ({"text": "a", "media": 3.5}, "expected a path"),
        ({"text": "a", "media": {"audio": np.full(16000, np.nan, np.float32)}}, "NaN"),
        ({"text": None}, "text"),
    ],
)
def test_bad_inputs(tiny, kwargs, match):
    _, processor = tiny
    with pytest.raises(ValueError, match=match):
        processor(**kwargs)


def test_media_longer_than_the_maximum(tiny):
    _, processor = tiny
    limit = processor.layout.max_media_seconds
    too_long = np.zeros(int((limit + 1) * 16000), np.float32)
    with pytest.raises(ValueError, match="max_media_seconds"):
        processor(text="q", media=too_long)
    frames = np.zeros((int((limit + 1) * processor.layout.fps), 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="max_media_seconds"):
        processor(text="q", media=frames)


def test_save_and_load(tiny, media, tmp_path):
    _, processor = tiny
    processor.save_pretrained(tmp_path)
    loaded = FavorProcessor.from_pretrained(tmp_path)
    args = {
        "text": ["q?", "r"],
        "media": [{"video": media["video"], "audio": media["audio"]}, None],
        "answers": ["a", "b"],
    }
    a, b = processor(**args), loaded(**args)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(ValueError, match="favor_processor_config"):
        FavorProcessor.from_pretrained(tmp_path / "image_processor")


@given(frames=st.integers(0, 13), audio_tenths=st.integers(0, 80), image=st.booleans())
def test_placeholder_count_matches_model_windows(tiny, frames, audio_tenths, image):
    """The processor's expansion and the model's windows agree for any mix of frame count and audio length."""
    model, processor = tiny
    item: dict = {}
    if frames:
        g = torch.Generator().manual_seed(frames)
        pixels = torch.randint(0, 256, (frames, 3, 8, 8), dtype=torch.uint8, generator=g)
        item["image" if image else "video"] = pixels[0] if image else pixels
    if audio_tenths:
        item["audio"] = torch.zeros(audio_tenths * 1600)
    if not item:
        return
    inputs = processor(text="q", media=item)
    batch = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        tokens, window_mask, _ = model.encode_media(**batch)
    assert _av(processor, inputs["input_ids"]) == int(window_mask.sum()) * tokens.shape[2]


def test_long_questions_are_truncated_for_the_vision_qformer(tiny, media):
    model, processor = tiny
    question = "what colour is the screen " * 60
    inputs = processor(text=question, media=media["video"])
    assert inputs["qformer_input_ids"].shape[1] == model.config.vision_qformer_config.max_position_embeddings
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_collate_is_the_processor_on_a_list_of_examples(tiny, media):
    _, processor = tiny
    examples = [{"text": "q?", "media": media["video"], "answer": "red"}, {"text": "r", "answer": "blue"}]
    a = processor.collate(examples)
    b = processor(text=["q?", "r"], media=[media["video"], None], answers=["red", "blue"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="answer"):
        processor.collate([{"text": "q", "answer": "x"}, {"text": "r"}])
    with pytest.raises(ValueError, match="examples"):
        processor.collate([])
