"""End to end through real media files written with PyAV: file -> load_media -> processor -> FavorModel ->
generate / train step / save / load, for video+audio (mp4), audio only (wav), an image (png) and bytes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("av")

from favor_avsync import load_media
from favor_avsync.testing import make_test_clip
from favor_llm import FavorModel, FavorProcessor
from favor_llm.testing import tiny_model_and_processor


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {
        "mp4": make_test_clip(root / "clip.mp4", container="mp4", duration=6.0, fps=25.0, tone_at=1.0),
        "wav": make_test_clip(root / "speech.wav", container="wav", duration=3.0, tone_at=0.5),
        "png": make_test_clip(root / "still.png", container="png"),
    }


def test_files_end_to_end(clips, tmp_path):
    model, processor = tiny_model_and_processor(seed=3)
    mp4, wav, png = clips["mp4"].path, clips["wav"].path, clips["png"].path
    questions = ["What happens in the video?", "What do you hear?", "What colour is it?", "Just text."]
    inputs = processor(text=questions, media=[mp4, wav, png, None])

    clip = load_media(mp4, fps=2.0, sample_rate=16000)
    assert clip.num_frames == 12 and clip.audio is not None  # 6 s at 2 fps
    assert inputs["pixel_lengths"].tolist() == [12, 0, 1, 0]
    assert inputs["frame_lengths"].tolist() == [12, 0, model.config.repeat_image, 0]
    assert inputs["audio_lengths"].tolist() == [clip.audio.shape[0], 3 * 16000, 0, 0]
    # the AAC track may end a few ms after the video: the timeline is the longer stream (released rule)
    frames = max(12, -(-clip.audio.shape[0] // 8000))
    windows = -(-frames // 4)
    av_counts = (inputs["input_ids"] == processor.av_token_id).sum(1).tolist()
    assert av_counts == [windows * 4, 2 * 4, 2 * 4, 0]  # wav: 3 s = 6 frames = 2 windows; png: 8 frames

    # a path, its bytes and its decoded MediaClip are the same input
    same = [processor(text=questions[0], media=m) for m in (mp4, clips["mp4"].path.read_bytes(), clip)]
    for other in same[1:]:
        for key in ("input_ids", "pixel_values", "input_features", "audio_lengths"):
            assert torch.equal(same[0][key], other[key]), key

    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    answers = processor.decode_answers(generated, inputs)
    assert len(answers) == 4 and all(isinstance(a, str) for a in answers)
    # the first sample alone gives the same answer as in the batch
    alone = processor(text=questions[:1], media=[mp4])
    with torch.no_grad():
        single = model.generate(**alone, max_new_tokens=4, do_sample=False)
    assert (
        single[0, alone["input_ids"].shape[1] :].tolist()
        == generated[0, inputs["input_ids"].shape[1] :].tolist()
    )

    # one training step on the file, then a delta save and reload of model and processor
    train = processor(text=questions[:2], media=[mp4, wav], answers=["A red square, then a tone.", "A tone."])
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = model(**train).loss
    loss.backward()
    opt.step()
    model.eval()
    model.save_frozen_components(tmp_path / "base")
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    model2 = FavorModel.from_pretrained(tmp_path / "model")
    processor2 = FavorProcessor.from_pretrained(tmp_path / "model")
    again = processor2(text=questions, media=[mp4, wav, png, None])
    with torch.no_grad():
        torch.testing.assert_close(model2(**again).logits, model(**inputs).logits, rtol=0, atol=0)


def test_file_longer_than_the_maximum(clips):
    _, processor = tiny_model_and_processor(max_media_seconds=4.0)
    with pytest.raises(ValueError, match="max_media_seconds"):
        processor(text="q", media=clips["mp4"].path)


def test_missing_file(tmp_path):
    _, processor = tiny_model_and_processor()
    with pytest.raises(ValueError, match="no such media file"):
        processor(text="q", media=tmp_path / "nope.mp4")
