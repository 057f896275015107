"""Invariances of ``mode="time"`` (hypothesis): conservation, order, the time rule, batch independence, and
agreement with ``mode="released"`` where the released code applies (2 fps, 50 Hz, whole frames)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from hypothesis import given
from hypothesis import strategies as st

from favor_avsync import TemporalSynchroniser

FPS = [2.0, 1.0, 30000 / 1001, 29.97, 15.0, 2.5, 0.7]
RATES = [50.0, 25.0, 48.83, 12.5, 100.0, 7.3, 1.0]


@st.composite
def configs(draw):
    fps = draw(st.sampled_from(FPS))
    rates = draw(st.lists(st.sampled_from(RATES), min_size=1, max_size=2))
    # Enough slots that no frame overflows: at most ceil(rate / fps) + 1 steps share a frame.
    slots = max(math.ceil(r / fps) + 1 for r in rates)
    batch = draw(st.integers(1, 3))
    tv = draw(st.integers(0, 6))
    steps = [draw(st.integers(0, 40)) for _ in rates]
    v_len = [draw(st.integers(0, tv)) for _ in range(batch)]
    a_len = [[draw(st.integers(0, s)) for _ in range(batch)] for s in steps]
    timeline = draw(st.sampled_from(["longest", "visual"]))
    return SimpleNamespace(
        fps=fps,
        rates=rates,
        slots=slots,
        batch=batch,
        tv=tv,
        steps=steps,
        v_len=v_len,
        a_len=a_len,
        timeline=timeline,
    )


def _id_streams(batch, steps):
    """Audio whose single feature is ``1 + step index`` (+ 1000 * sample), so every step is identifiable."""
    return [
        (torch.arange(s, dtype=torch.float64)[None, :, None] + 1 + 1000 * torch.arange(batch)[:, None, None])
        for s in steps
    ]


def _run(c):
    fps, rates, slots, batch, tv, steps, v_len, a_len, timeline = (
        c.fps,
        c.rates,
        c.slots,
        c.batch,
        c.tv,
        c.steps,
        c.v_len,
        c.a_len,
        c.timeline,
    )
    sync = TemporalSynchroniser(fps=fps, audio_rates=rates, tokens_per_frame=slots, timeline=timeline)
    visual = torch.ones(batch, tv, slots, 2, dtype=torch.float64)
    audio = _id_streams(batch, steps)
    out = sync(visual, audio, visual_lengths=v_len, audio_lengths=a_len)
    return sync, out


@given(configs())
def test_conservation_order_and_time_rule(cfg):
    rates, batch, v_len, a_len, timeline = cfg.rates, cfg.batch, cfg.v_len, cfg.a_len, cfg.timeline
    sync, out = _run(cfg)
    feats = out.features  # (B, T, N, 2 + K)
    frames = feats.shape[1]
    assert out.frame_times.shape == (batch, frames, 2)
    total_dropped = torch.zeros(batch, dtype=torch.int64)
    for k, rate in enumerate(rates):
        col = feats[..., 2 + k]  # (B, T, N)
        for b in range(batch):
            ids = col[b].flatten()
            present = ids[ids != 0] - 1 - 1000 * b  # step indices, in (frame, slot) order
            # Order preserved: the steps read frame by frame, slot by slot, are increasing.
            assert torch.all(present[1:] > present[:-1])
            # Conservation: present steps are exactly a prefix of the real steps; the rest were dropped.
            kept = present.numel()
            assert torch.equal(present, torch.arange(kept, dtype=present.dtype))
            total_dropped[b] += a_len[k][b] - kept
            # Time rule: each step sits in the frame whose [start, end) contains its centre.
            t_of = torch.nonzero(col[b] != 0)[:, 0]
            centre = (present + 0.5) / rate
            start, end = out.frame_times[b, t_of, 0], out.frame_times[b, t_of, 1]
            assert torch.all(start <= centre + 1e-9) and torch.all(centre < end + 1e-9)
            # Slots 0..k-1 of a frame are filled, the rest are zero.
            filled = col[b] != 0
            assert torch.all(filled[:, 1:] <= filled[:, :-1])
    assert torch.equal(out.dropped, total_dropped)
    if timeline == "longest":
        assert out.dropped.sum() == 0
    # frame_mask marks the frames a sample has: visual length (and audio frames with "longest").
    for b in range(batch):
        n_b = int(out.frame_mask[b].sum())
        assert bool(out.frame_mask[b, :n_b].all())
        need = v_len[b]
        if timeline == "longest":
            need = max([need, *(sync.num_frames(a_len[k][b], k) for k in range(len(rates)))])
        assert n_b == need
    # Visual frames are real exactly up to the visual length.
    vis_real = feats[..., 0].abs().sum(-1) != 0
    assert torch.equal(vis_real.sum(1), torch.tensor(v_len))


@given(configs())
def test_independent_of_batch_composition(cfg):
    rates, slots, batch, tv, steps, v_len, a_len = (
        cfg.rates,
        cfg.slots,
        cfg.batch,
        cfg.tv,
        cfg.steps,
        cfg.v_len,
        cfg.a_len,
    )
    sync, out = _run(cfg)
    visual = torch.ones(batch, tv, slots, 2, dtype=torch.float64)
    audio = _id_streams(batch, steps)
    for b in range(batch):
        alone = sync(
            visual[b : b + 1],
            [a[b : b + 1] for a in audio],
            visual_lengths=[v_len[b]],
            audio_lengths=[[a_len[k][b]] for k in range(len(rates))],
        )
        n_b = alone.features.shape[1]
        assert n_b == int(out.frame_mask[b].sum())
        assert torch.equal(alone.features[0], out.features[b, :n_b])
        assert torch.count_nonzero(out.features[b, n_b:]) == 0  # batch padding stays zero
        assert alone.dropped.item() == out.dropped[b].item()


@given(
    batch=st.integers(1, 3),
    tv=st.integers(0, 5),
    ta=st.integers(0, 5),
    equal=st.booleans(),
    mask=st.lists(st.integers(0, 1), min_size=2, max_size=2),
)
def test_agrees_with_released_at_2fps_50hz(batch, tv, ta, equal, mask):
    if equal:
        ta = tv
    visual = torch.randn(batch, tv, 32, 3)
    audio = torch.randn(batch, 25 * ta, 4)
    m = torch.tensor([mask] * batch)
    timed = TemporalSynchroniser(mode="time")(visual, audio, modality_mask=m)
    released = TemporalSynchroniser(mode="released")(visual, audio, modality_mask=m)
    assert torch.equal(timed.features, released.features)
    assert torch.equal(timed.frame_mask, released.frame_mask)
    assert torch.equal(timed.frame_times, released.frame_times)


def test_pool_averages_consecutive_runs():
    # 100 steps per 1 s frame into 32 slots: slot s averages steps i with floor(i * 32 / 100) == s.
    sync = TemporalSynchroniser(fps=1.0, audio_rates=(100.0,), tokens_per_frame=32, overflow="pool")
    audio = torch.arange(250, dtype=torch.float64)[None, :, None]
    out = sync(torch.zeros(1, 0, 32, 1, dtype=torch.float64), audio)
    assert out.features.shape == (1, 3, 32, 2)
    for t, k in [(0, 100), (1, 100), (2, 50)]:
        steps = torch.arange(t * 100, t * 100 + k, dtype=torch.float64)
        if k > 32:
            slot = (torch.arange(k) * 32) // k
            want = torch.stack([steps[slot == s].mean() for s in range(32)])
        else:
            want = torch.cat([steps, torch.zeros(32 - k, dtype=torch.float64)])
        torch.testing.assert_close(out.features[0, t, :, 1], want)
    assert out.dropped.item() == 0


def test_29_97_fps_against_50hz_boundaries():
    # 30000/1001 fps: frame t covers [t * 1001/30000, (t + 1) * 1001/30000). Step centres of 50 Hz audio are
    # (j + 0.5) / 50; check a few by exact arithmetic.
    from fractions import Fraction

    sync = TemporalSynchroniser(fps=30000 / 1001, audio_rates=(50.0,), tokens_per_frame=4)
    audio = torch.arange(1, 301, dtype=torch.float64)[None, :, None]
    out = sync(torch.zeros(1, 0, 4, 1, dtype=torch.float64), audio)
    fps = Fraction(30000, 1001)
    col = out.features[0, :, :, 1]
    for j in range(300):
        t = math.floor(Fraction(2 * j + 1, 100) * fps)
        assert (col[t] == j + 1).sum() == 1
    assert out.features.shape[1] == math.floor(Fraction(599, 100) * fps) + 1


@given(configs(), st.sampled_from([1, 5, 25]))
def test_fast_path_equals_scatter_path(cfg, per_frame):
    """The view-and-copy path for whole steps-per-frame ratios equals the plain scatter path."""
    fps = 2.0
    rates = [fps * per_frame] + [r for r in cfg.rates[1:]]
    slots = max(32, *(math.ceil(r / fps) + 1 for r in rates))
    steps = [min(s, 40) for s in cfg.steps[: len(rates)]] + [0] * (len(rates) - len(cfg.steps))
    a_len = [[min(x, steps[k]) for x in cfg.a_len[k]] for k in range(len(rates))]
    sync = TemporalSynchroniser(fps=fps, audio_rates=rates, tokens_per_frame=slots, timeline=cfg.timeline)
    visual = torch.randn(cfg.batch, cfg.tv, slots, 2, dtype=torch.float64)
    audio = [torch.randn(cfg.batch, s, 3, dtype=torch.float64) for s in steps]
    mask = torch.randint(0, 2, (cfg.batch, 1 + len(rates)))
    fast = sync(visual, audio, visual_lengths=cfg.v_len, audio_lengths=a_len, modality_mask=mask)
    sync.fast_path = False
    plain = sync(visual, audio, visual_lengths=cfg.v_len, audio_lengths=a_len, modality_mask=mask)
    assert torch.equal(fast.features, plain.features)
    assert torch.equal(fast.dropped, plain.dropped)
    assert torch.equal(fast.frame_mask, plain.frame_mask)


@given(
    data_dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    mask_dtype=st.sampled_from([torch.int64, torch.bool, torch.float32, torch.float64]),
    mask=st.lists(st.integers(0, 1), min_size=2, max_size=2),
    mode=st.sampled_from(["time", "released"]),
)
def test_features_keep_the_input_dtype_whatever_the_modality_mask_dtype(data_dtype, mask_dtype, mask, mode):
    # The modality mask only selects streams: a float64 (or float32) mask must not promote the features.
    visual = torch.randn(2, 3, 32, 3).to(data_dtype)
    audio = torch.randn(2, 50, 4).to(data_dtype)
    m = torch.tensor([mask] * 2).to(mask_dtype)
    out = TemporalSynchroniser(mode=mode)(visual, audio, modality_mask=m)
    assert out.features.dtype == data_dtype
    want = TemporalSynchroniser(mode=mode)(visual, audio, modality_mask=torch.tensor([mask] * 2))
    assert torch.equal(out.features, want.features)


@given(
    dtype=st.sampled_from([torch.bfloat16, torch.float16]),
    rate=st.sampled_from([100.0, 2000.0, 16000.0, 333.0]),
    value=st.floats(-4.0, 4.0, allow_nan=False, width=16),
    length=st.integers(1, 3000),
)
def test_pool_averages_half_precision_like_float32(dtype, rate, value, length):
    # Pooling hundreds of steps per slot: the running sum must not be kept in bf16/fp16 (a constant came out 2% low).
    sync = TemporalSynchroniser(fps=2.0, audio_rates=(rate,), tokens_per_frame=32, overflow="pool")
    steps = min(length, int(rate))
    noise = torch.randn(1, steps, 3).to(dtype)
    constant = torch.full((1, steps, 3), value, dtype=dtype)
    visual = torch.zeros(1, 0, 32, 1, dtype=dtype)
    out = sync(visual, constant, modality_mask=torch.tensor([[0, 1]]))
    real = out.features[0, :, :, 1:][out.features[0, :, :, 1:] != 0]
    assert torch.all(real == constant[0, 0, 0]) or value == 0
    want = sync(visual.float(), noise.float(), modality_mask=torch.tensor([[0, 1]])).features.to(dtype)
    assert torch.equal(sync(visual, noise, modality_mask=torch.tensor([[0, 1]])).features, want)
