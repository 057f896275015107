"""The synchroniser on a CUDA device gives what it gives on the CPU (marked ``gpu``: never in CI)."""

from __future__ import annotations

import pytest
import torch

from favor_avsync import TemporalSynchroniser

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _both(sync, visual, audio, **kwargs):
    cpu = sync(visual, audio, **kwargs)
    moved = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
    audio_gpu = [a.cuda() for a in audio] if isinstance(audio, list) else audio.cuda()
    gpu = sync(visual.cuda(), audio_gpu, **moved)
    return cpu, gpu


@pytest.mark.parametrize(
    ("fps", "rates", "overflow", "mode"),
    [
        (2.0, (50.0,), "error", "time"),  # whole-ratio fast path
        (2.0, (50.0,), "error", "released"),
        (30000 / 1001, (50.0, 48.83), "error", "time"),  # scatter path
        (1.0, (50.0,), "pool", "time"),  # pooling
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_equals_cpu(fps, rates, overflow, mode, dtype):
    sync = TemporalSynchroniser(fps=fps, audio_rates=rates, overflow=overflow, mode=mode)
    visual = torch.randn(3, 7, 32, 8, dtype=dtype)
    audio = [torch.randn(3, 175, 5, dtype=dtype) for _ in rates]
    kwargs = {
        "modality_mask": torch.tensor(
            [
                [1, 1] + [1] * (len(rates) - 1),
                [1, 0] + [1] * (len(rates) - 1),
                [0, 1] + [0] * (len(rates) - 1),
            ]
        )
    }
    if mode == "time":
        kwargs["visual_lengths"] = torch.tensor([7, 3, 0])
        kwargs["audio_lengths"] = (
            torch.tensor([[175] * len(rates), [60] * len(rates), [100] * len(rates)])
            if len(rates) > 1
            else torch.tensor([175, 60, 100])
        )
    cpu, gpu = _both(sync, visual, audio if len(rates) > 1 else audio[0], **kwargs)
    assert gpu.features.device.type == "cuda" and gpu.frame_mask.device.type == "cuda"
    torch.testing.assert_close(
        gpu.features.cpu(), cpu.features, rtol=0, atol=0 if overflow == "error" else 1e-2
    )
    assert torch.equal(gpu.frame_mask.cpu(), cpu.frame_mask)
    assert torch.equal(gpu.frame_times.cpu(), cpu.frame_times)
    assert torch.equal(gpu.dropped.cpu(), cpu.dropped)


def test_cuda_gradients():
    sync = TemporalSynchroniser(fps=30000 / 1001, audio_rates=(50.0,))
    visual = torch.randn(2, 5, 32, 4, device="cuda", requires_grad=True)
    audio = torch.randn(2, 60, 3, device="cuda", requires_grad=True)
    sync(visual, audio, audio_lengths=torch.tensor([60, 30], device="cuda")).features.sum().backward()
    assert audio.grad is not None and audio.grad[1, 30:].abs().sum().item() == 0
    assert audio.grad[0].abs().min().item() == 1.0
