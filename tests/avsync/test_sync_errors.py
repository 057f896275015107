"""Bad input to the synchroniser: each a ValueError naming the argument and showing what came."""

from __future__ import annotations

import pytest
import torch

from favor_avsync import TemporalSynchroniser

V = torch.zeros(2, 3, 32, 4)
A = torch.zeros(2, 75, 5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fps": 0.0}, "fps must be > 0, got 0.0"),
        ({"fps": -2.0}, "fps must be > 0"),
        ({"fps": float("nan")}, "fps must be a positive finite"),
        ({"audio_rates": (50.0, 0.0)}, r"audio_rates\[1\] must be > 0"),
        ({"audio_rates": (-50.0,)}, r"audio_rates\[0\] must be > 0"),
        ({"audio_rates": ()}, "audio_rates must name at least one"),
        ({"audio_rates": 50.0}, "audio_rates must be a sequence"),
        ({"tokens_per_frame": 0}, "tokens_per_frame must be an int >= 1, got 0"),
        ({"mode": "fast"}, "mode must be one of"),
        ({"overflow": "drop"}, "overflow must be one of"),
        ({"repeat_image": 0}, "repeat_image must be an int >= 1"),
        ({"timeline": "audio"}, "timeline must be one of"),
        ({"mode": "released", "fps": 3.0}, r"audio_rates\[0\] / fps"),
        ({"mode": "released", "tokens_per_frame": 16}, "tokens_per_frame=16"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TemporalSynchroniser(**kwargs)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda s: s(V[0], A), r"visual must have shape \(B, Tv, N, Dv\) \(4 dims\), got \(3, 32, 4\)"),
        (lambda s: s(V, A[0]), r"audio must have shape \(B, S, Da\) \(3 dims\), got \(75, 5\)"),
        (lambda s: s(V, A[:1]), "audio has batch size 1 but visual has 2"),
        (lambda s: s(V[:, :, :16], A), "tokens_per_frame=32"),
        (lambda s: s(V, [A, A]), r"one tensor per entry of audio_rates=\(50.0,\) \(1\), got 2"),
        (lambda s: s(V, A.double()), "audio has dtype torch.float64 but visual has torch.float32"),
        (lambda s: s(V.long(), A), "visual must be a floating-point tensor"),
        (lambda s: s(None, A), "visual must be a torch.Tensor"),
        (lambda s: s(V, "audio"), "audio must be a tensor"),
        (lambda s: s(V, A, visual_lengths=[3, 4]), r"visual_lengths must be in \[0, 3\].*\[3, 4\]"),
        (lambda s: s(V, A, visual_lengths=[-1, 2]), r"visual_lengths must be in \[0, 3\]"),
        (lambda s: s(V, A, visual_lengths=[1, 2, 3]), r"visual_lengths must have shape \(2,\)"),
        (lambda s: s(V, A, audio_lengths=torch.tensor([76, 2])), r"audio_lengths must be in \[0, 75\]"),
        (lambda s: s(V, A, audio_lengths=torch.tensor([1.0, 2.0])), "audio_lengths must hold integers"),
        # Python floats and bools were truncated silently (1.5 frames became 1).
        (lambda s: s(V, A, visual_lengths=[1.5, 3]), r"visual_lengths must hold integers, got \[1.5, 3\]"),
        (lambda s: s(V, A, visual_lengths=(2.0, 3.0)), r"visual_lengths must hold integers"),
        (lambda s: s(V, A, visual_lengths=[True, 3]), r"visual_lengths must hold integers"),
        (lambda s: s(V, A, audio_lengths=[70.7, 75]), r"audio_lengths must hold integers, got \[70.7, 75\]"),
        (
            lambda s: s(V, A, modality_mask=torch.ones(2, 3)),
            r"modality_mask must have shape .* \(2, 2\).*\(2, 3\)",
        ),
        (lambda s: s(V, A, modality_mask=torch.ones(2)), r"modality_mask must have shape"),
    ],
)
def test_sync_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call(TemporalSynchroniser())


def test_two_stream_errors():
    s = TemporalSynchroniser(audio_rates=(50.0, 25.0))
    b = torch.zeros(2, 10, 3)
    with pytest.raises(ValueError, match=r"audio\[1\] has batch size 1"):
        s(V, [A, b[:1]])
    with pytest.raises(ValueError, match=r"audio_lengths\[1\] must be in \[0, 10\]"):
        s(V, [A, b], audio_lengths=[[75, 75], [11, 0]])
    with pytest.raises(ValueError, match=r"audio_lengths must hold one \(B,\) length per audio stream \(2\)"):
        s(V, [A, b], audio_lengths=[[75, 75]])
    with pytest.raises(ValueError, match=r"modality_mask must have shape .* \(2, 3\)"):
        s(V, [A, b], modality_mask=torch.ones(2, 2))


def test_overflow_error_names_the_frame():
    s = TemporalSynchroniser(fps=1.0, audio_rates=(50.0,))  # 50 steps per frame, 32 slots
    with pytest.raises(ValueError, match="audio has 50 steps in frame 0 of sample 0 but tokens_per_frame=32"):
        s(torch.zeros(1, 2, 32, 4), torch.zeros(1, 100, 5))
    # The same input pools without error.
    out = TemporalSynchroniser(fps=1.0, audio_rates=(50.0,), overflow="pool")(
        torch.zeros(1, 2, 32, 4), torch.ones(1, 100, 5)
    )
    assert torch.equal(out.features[..., 4:], torch.ones(1, 2, 32, 5))


def test_released_mode_errors():
    s = TemporalSynchroniser(mode="released")
    with pytest.raises(ValueError, match="multiple of 25 steps"):
        s(V, A[:, :70])
    with pytest.raises(ValueError, match="mode='released' has no per-sample lengths"):
        s(V, A, visual_lengths=[3, 3])


def test_helper_errors():
    s = TemporalSynchroniser()
    with pytest.raises(ValueError, match="audio_steps must be an int >= 0, got -1"):
        s.num_frames(-1)
    with pytest.raises(ValueError, match="stream must be in"):
        s.num_frames(10, stream=1)
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0"):
        s.frames_for_duration(-1.0)
    with pytest.raises(ValueError, match=r"image must have shape \(B, N, Dv\)"):
        s.image_as_video(torch.zeros(2, 3, 32, 4))
