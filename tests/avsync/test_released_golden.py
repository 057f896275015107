"""Golden test: both modes reproduce the released ``sequence_align_v2`` output stored in ../shared/reference."""

from __future__ import annotations

import pytest
import torch

from favor_avsync import TemporalSynchroniser

FILES = ["favor_official_tiny.safetensors", "favor_official_tiny_unitln.safetensors"]


def _inputs(read, reference_dir, name):
    d = read(reference_dir / name, ["video_features", "audio_features", "modality_masks", "synced_features"])
    audio = d["audio_features"]  # (B, frames, 25, D): 25 Whisper steps per 0.5 s frame
    steps = audio.reshape(audio.shape[0], -1, audio.shape[-1])  # (B, frames * 25, D) at 50 Hz
    return d["video_features"], steps, d["modality_masks"], d["synced_features"]


@pytest.mark.parametrize("name", FILES)
@pytest.mark.parametrize("mode", ["released", "time"])
def test_synced_features_match_released(safetensors_reader, reference_dir, name, mode):
    visual, audio, mask, expected = _inputs(safetensors_reader, reference_dir, name)
    out = TemporalSynchroniser(fps=2.0, audio_rates=(50.0,), tokens_per_frame=32, mode=mode)(
        visual, audio, modality_mask=mask
    )
    assert out.features.shape == (2, 23, 32, 96)
    assert torch.equal(out.tokens, expected)  # bit for bit
    assert out.frame_mask.all()
    assert out.dropped.tolist() == [0, 0]
    # The second sample has its audio masked off (modality mask [1, 0]).
    assert torch.count_nonzero(out.features[1, :, :, 48:]) == 0
    torch.testing.assert_close(out.frame_times[0, 22], torch.tensor([11.0, 11.5], dtype=torch.float64))


@pytest.mark.parametrize("name", FILES)
def test_golden_is_sensitive_to_slot_layout(safetensors_reader, reference_dir, name):
    """The golden comparison can fail: audio slots padded at the front instead of the end differ."""
    visual, audio, mask, expected = _inputs(safetensors_reader, reference_dir, name)
    out = TemporalSynchroniser(mode="released")(visual, audio, modality_mask=mask).features
    wrong = torch.cat([out[..., :48], out[..., 48:].roll(7, dims=2)], dim=-1)
    assert not torch.equal(wrong.flatten(1, 2), expected)
