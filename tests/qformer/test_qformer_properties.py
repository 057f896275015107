"""Invariances (hypothesis): causality, batch/padding invariance, window coverage, round trips, diversity masking."""

from __future__ import annotations

import tempfile

import torch
from hypothesis import given
from hypothesis import strategies as st
from qformer_helpers import tiny_model

from favor_qformer import BlockCausalAttention, CausalQFormer, count_windows, diversity_loss, query_similarity


@given(
    direction=st.sampled_from(["future", "past"]),
    frames=st.integers(2, 6),
    frame=st.data(),
    backend=st.sampled_from(["eager", "sdpa"]),
    seed=st.integers(0, 2**16),
)
def test_causal_module_never_sees_hidden_frames(direction, frames, frame, backend, seed):
    torch.manual_seed(seed)
    layer = BlockCausalAttention(dim=8, num_heads=2, direction=direction, backend=backend).eval()
    i = frame.draw(st.integers(0, frames - 1))
    x = torch.randn(1, frames, 3, 8)
    hidden = torch.arange(frames) < i if direction == "future" else torch.arange(frames) > i
    changed = x.clone()
    changed[:, hidden] = torch.randn_like(changed[:, hidden]) * 10
    with torch.no_grad():
        before, after = layer(x), layer(changed)
    torch.testing.assert_close(after[:, i], before[:, i], rtol=0, atol=1e-6)
    visible = ~hidden
    visible[i] = False
    if visible.any():  # and it does see the frames it may see
        changed = x.clone()
        changed[:, visible] += 1.0
        with torch.no_grad():
            assert (layer(changed)[:, i] - before[:, i]).abs().max() > 1e-4


@given(
    lengths=st.lists(st.integers(1, 9), min_size=2, max_size=4),
    extra_padding=st.integers(0, 3),
    stride=st.integers(1, 3),
    attends_padding=st.booleans(),
    stack=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_video_tokens_do_not_depend_on_batch_mates(
    lengths, extra_padding, stride, attends_padding, stack, seed
):
    torch.manual_seed(seed)
    model = tiny_model(
        window_stride=stride, causal_attends_window_padding=attends_padding, stack_causal=stack
    )
    total = max(lengths) + extra_padding
    videos = [torch.randn(n, 2, 12) for n in lengths]
    batch = torch.randn(len(lengths), total, 2, 12) * 100  # padding frames hold garbage
    for b, video in enumerate(videos):
        batch[b, : len(video)] = video
    frame_mask = torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        together = model(batch, frame_mask)
        for b, video in enumerate(videos):
            alone = model(video[None])
            count = count_windows(len(video), 3, stride)
            assert together.window_mask[b].sum() == count == alone.window_mask.sum()
            torch.testing.assert_close(together.tokens[b, :count], alone.tokens[0, :count], rtol=0, atol=1e-5)
            assert together.tokens[b, count:].abs().sum() == 0
            assert torch.equal(together.window_frames[b, :count], alone.window_frames[0, :count])


@given(lengths=st.lists(st.integers(0, 25), min_size=1, max_size=4), size=st.integers(1, 6), data=st.data())
def test_windows_cover_every_real_frame(lengths, size, data):
    stride = data.draw(st.integers(1, size))
    model = tiny_model(window_size=size, window_stride=stride, tokens_per_frame=1, max_position_embeddings=8)
    total = max(max(lengths), 1)
    frame_mask = torch.arange(total)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        out = model(torch.randn(len(lengths), total, 1, 12), frame_mask)
    for b, n in enumerate(lengths):
        real = out.window_frames[b][out.window_mask[b]]  # (windows, 2)
        assert len(real) == count_windows(n, size, stride)
        cover = torch.zeros(total, dtype=torch.long)
        for start, end in real.tolist():
            assert start % stride == 0 and 0 < end - start <= size and end <= n
            cover[start:end] += 1
        if stride == size:
            assert torch.equal(cover[:n], torch.ones(n, dtype=torch.long))  # exactly once
        else:
            assert bool((cover[:n] >= 1).all())
        assert cover[n:].sum() == 0
        assert out.window_frames[b][~out.window_mask[b]].abs().sum() == 0


@given(
    causal=st.booleans(),
    position=st.sampled_from(["window", "none"]),
    every=st.integers(1, 2),
    dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_save_load_round_trip_is_bit_identical(causal, position, every, dtype, seed):
    torch.manual_seed(seed)
    model = tiny_model(causal=causal, position_embedding=position, cross_attention_every=every).to(dtype)
    features = torch.randn(2, 5, 2, 12)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        loaded = CausalQFormer.from_pretrained(tmp).eval()
    assert loaded.config == model.config
    assert loaded.dtype == dtype
    want, got = model.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    with torch.no_grad():
        assert torch.equal(model(features).tokens, loaded(features).tokens)


@given(
    batch=st.integers(1, 3),
    windows=st.integers(1, 4),
    queries=st.integers(2, 5),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_masked_windows_do_not_change_diversity_loss(batch, windows, queries, data, seed):
    torch.manual_seed(seed)
    mask = torch.tensor(
        data.draw(st.lists(st.booleans(), min_size=batch * windows, max_size=batch * windows))
    )
    mask = mask.reshape(batch, windows)
    tokens = torch.randn(batch, windows, queries, 8)
    garbage = tokens.clone()
    garbage[~mask] = torch.randn_like(garbage[~mask]) * 50
    loss = diversity_loss(tokens, mask)
    assert torch.equal(loss, diversity_loss(garbage, mask))
    assert torch.isfinite(loss)
    if mask.any():
        torch.testing.assert_close(loss, diversity_loss(tokens[mask]), rtol=0, atol=1e-7)
    else:
        assert loss.item() == 0.0


@given(
    windows=st.integers(1, 4),
    queries=st.integers(2, 5),
    seed=st.integers(0, 2**16),
)
def test_query_similarity_matrix_is_the_per_window_cosines_averaged(windows, queries, seed):
    """Reference: torch's cosine_similarity per pair and window; its off-diagonal mean is the diversity loss."""
    torch.manual_seed(seed)
    tokens = torch.randn(1, windows, queries, 8, dtype=torch.float64)
    matrix = query_similarity(tokens)
    pairs = torch.nn.functional.cosine_similarity(tokens[0, :, :, None], tokens[0, :, None, :], dim=-1, eps=0)
    torch.testing.assert_close(matrix, pairs.mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(
        torch.diagonal(matrix), torch.ones(queries, dtype=torch.float64), rtol=0, atol=1e-9
    )
    off = ~torch.eye(queries, dtype=torch.bool)
    torch.testing.assert_close(matrix[off].mean(), diversity_loss(tokens), rtol=0, atol=1e-9)
