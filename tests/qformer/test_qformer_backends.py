"""Every attention backend agrees with eager; the dispatcher explains refusals and falls back with one log line."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from qformer_helpers import tiny_model

import favor_qformer.backends as backends
import favor_qformer.backends.xformers as xformers_backend
from favor_qformer import BlockCausalAttention
from favor_qformer.backends import AttentionInputs, refusal_reasons, select_backend


@pytest.fixture(autouse=True)
def _fresh_dispatch_state():
    """Each test sees unprobed xformers and an empty log-once memory."""
    xformers_backend.reset_probe_cache()
    backends._LOGGED.clear()
    yield
    xformers_backend.reset_probe_cache()
    backends._LOGGED.clear()


def _fake_memory_efficient_attention(calls: list):
    """A pure-torch stand-in for xformers' kernel, honouring tensor biases and xformers' own attn_bias objects."""

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
        calls.append(type(attn_bias).__name__)
        q_len, k_len = q.shape[1], k.shape[1]
        qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))  # (B, h, L, d)
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(q.shape[-1])
        if isinstance(attn_bias, torch.Tensor):
            scores = scores + attn_bias
        elif attn_bias is not None:
            scores = scores + attn_bias.materialize((q_len, k_len), dtype=q.dtype, device=q.device)
        return (torch.softmax(scores, dim=-1) @ vh).transpose(1, 2)

    return memory_efficient_attention


class _StandInBlockDiagonalMask:
    """xformers' ``BlockDiagonalMask`` API surface we use, for environments without xformers."""

    def __init__(self, q_seqlen, kv_seqlen):
        self.q_seqlen, self.kv_seqlen = list(q_seqlen), list(kv_seqlen)

    @classmethod
    def from_seqlens(cls, q_seqlen, kv_seqlen):
        return cls(q_seqlen, kv_seqlen)

    def materialize(self, shape, dtype=torch.float32, device="cpu"):
        bias = torch.full(shape, float("-inf"), dtype=dtype, device=device)
        q0 = k0 = 0
        for q_len, k_len in zip(self.q_seqlen, self.kv_seqlen):
            bias[..., q0 : q0 + q_len, k0 : k0 + k_len] = 0
            q0, k0 = q0 + q_len, k0 + k_len
        return bias


def _block_diagonal_mask():
    try:  # the real class when xformers is installed (its Python part imports even without kernels)
        from xformers.ops.fmha.attn_bias import BlockDiagonalMask
    except Exception:
        return _StandInBlockDiagonalMask
    return BlockDiagonalMask


@pytest.fixture
def working_xformers(monkeypatch):
    """Simulate "xformers installed and its kernels run" with a pure-torch kernel."""
    calls: list[str] = []
    fake = _fake_memory_efficient_attention(calls)
    monkeypatch.setattr(xformers_backend, "_load_xformers", lambda: (fake, _block_diagonal_mask()))
    return calls


def _inputs(mask=None, key_lengths=None, batch=3, lq=5, lk=7):
    q = torch.randn(batch, 2, lq, 4)
    k = torch.randn(batch, 2, lk, 4)
    v = torch.randn(batch, 2, lk, 4)
    return AttentionInputs(q, k, v, mask=mask, key_lengths=key_lengths)


def _models_agree(model, features, frame_mask, backend, atol=1e-5):
    model.set_attention_backend("eager")
    with torch.no_grad():
        want = model(features, frame_mask, output_hidden_states=True)
    model.set_attention_backend(backend)
    with torch.no_grad():
        got = model(features, frame_mask, output_hidden_states=True)
    torch.testing.assert_close(got.tokens, want.tokens, rtol=0, atol=atol)
    for g, w in zip(got.causal_hidden_states, want.causal_hidden_states):
        torch.testing.assert_close(g, w, rtol=0, atol=atol)


@pytest.mark.parametrize("backend", ["sdpa", "auto", "xformers"])
@pytest.mark.parametrize("direction", ["future", "past"])
@pytest.mark.parametrize("attends_padding", [False, True])
def test_backend_equals_eager_on_the_model(backend, direction, attends_padding):
    model = tiny_model(causal_direction=direction, causal_attends_window_padding=attends_padding)
    features = torch.randn(3, 8, 2, 12)
    frame_mask = torch.arange(8)[None, :] < torch.tensor([8, 5, 1])[:, None]  # partial windows everywhere
    _models_agree(model, features, frame_mask, backend)


@pytest.mark.parametrize("attends_padding", [False, True])
def test_working_xformers_equals_eager_and_packs_cross_attention(working_xformers, attends_padding):
    model = tiny_model(causal_attends_window_padding=attends_padding, stack_causal=True)
    features = torch.randn(3, 8, 2, 12)
    frame_mask = torch.arange(8)[None, :] < torch.tensor([8, 5, 1])[:, None]
    _models_agree(model, features, frame_mask, "xformers")
    assert any(
        "BlockDiagonalMask" in c for c in working_xformers
    )  # cross-attention of partial windows was packed
    assert "Tensor" in working_xformers  # the block-causal module ran with a dense bias
    # with no padding at all, cross-attention needs no bias
    working_xformers.clear()
    _models_agree(model, torch.randn(2, 6, 2, 12), None, "xformers")
    assert "NoneType" in working_xformers and not any("BlockDiagonalMask" in c for c in working_xformers)


def test_auto_prefers_working_xformers(working_xformers):
    inputs = _inputs()
    assert select_backend("auto", inputs).name == "xformers"
    assert refusal_reasons(inputs)["xformers"] == []


def test_xformers_present_but_failing_falls_back_once(caplog):
    """The real situation on this CPU machine: xformers imports (or not) but its kernels cannot run."""
    inputs = _inputs()
    reasons = refusal_reasons(inputs)
    assert reasons["xformers"], "xformers kernels cannot run on CPU, so it must refuse"
    assert reasons["sdpa"] == [] and reasons["eager"] == []
    with caplog.at_level(logging.WARNING, logger="favor_qformer"):
        for _ in range(3):
            assert select_backend("xformers", inputs).name == "sdpa"
        # Another dtype falls back too, for its own reason, without a second warning.
        doubles = AttentionInputs(*(t.double() for t in (inputs.query, inputs.key, inputs.value)))
        assert select_backend("xformers", doubles).name == "sdpa"
    lines = [r for r in caplog.records if r.name == "favor_qformer"]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert "xformers unavailable, using sdpa" in lines[0].getMessage()


def test_kernel_probe_runs_once_per_device_and_dtype(monkeypatch):
    calls = []

    def broken(q, k, v, attn_bias=None, p=0.0):
        calls.append(q.dtype)
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward`")

    monkeypatch.setattr(xformers_backend, "_load_xformers", lambda: (broken, object))
    for _ in range(3):
        failure = xformers_backend.xformers_failure(torch.device("cpu"), torch.float32)
    assert "NotImplementedError" in failure and "cpu/float32" in failure
    xformers_backend.xformers_failure(torch.device("cpu"), torch.bfloat16)
    assert calls == [torch.float32, torch.bfloat16]


def test_missing_xformers_is_not_importable_reason(monkeypatch):
    monkeypatch.setattr(
        xformers_backend, "_load_xformers", lambda: "ModuleNotFoundError: No module named 'xformers'"
    )
    reasons = refusal_reasons(_inputs())["xformers"]
    assert any("not importable" in r for r in reasons)
    assert select_backend("auto", _inputs()).name == "sdpa"


def test_refusals_are_listed_when_nothing_accepts():
    bad = AttentionInputs(torch.randn(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(1, 2, 5, 4).double())
    with pytest.raises(ValueError) as error:
        select_backend("auto", bad)
    message = str(error.value)
    for name in ("xformers", "sdpa", "eager"):
        assert f"{name}:" in message
    assert "dtypes differ" in message
    with pytest.raises(ValueError, match="expected one of"):
        select_backend("flash9", _inputs())


@pytest.mark.parametrize("backend", ["sdpa", "xformers"])
def test_backends_equal_eager_on_raw_calls(backend, working_xformers):
    lengths = [7, 3, 1]
    key_mask = (torch.arange(7)[None, :] < torch.tensor(lengths)[:, None])[:, None, None, :]
    for mask, key_lengths in ((None, None), (key_mask, lengths), (torch.rand(3, 1, 5, 7) > 0.3, None)):
        if mask is not None and key_lengths is None:
            mask[..., 0] = True  # no fully masked row
        inputs = _inputs(mask, key_lengths)
        want = backends.BACKENDS["eager"](inputs)
        got = backends.BACKENDS[backend](inputs)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_block_causal_attention_alone_on_every_backend():
    layer = BlockCausalAttention(dim=8, num_heads=2, direction="past").eval()
    x = torch.randn(2, 4, 3, 8)
    frame_mask = torch.tensor([[True] * 4, [True, True, False, False]])
    outs = {}
    for backend in ("eager", "sdpa", "auto"):
        layer.backend = backend
        with torch.no_grad():
            outs[backend] = layer(x, frame_mask)
    assert outs["eager"].shape == x.shape
    for backend in ("sdpa", "auto"):
        torch.testing.assert_close(outs[backend], outs["eager"], rtol=0, atol=1e-5)


def test_half_precision_runs_close_to_float32():
    model = tiny_model()
    features = torch.randn(2, 7, 2, 12)
    with torch.no_grad():
        want = model(features).tokens
        got = model.to(torch.bfloat16)(features).tokens
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want, rtol=0, atol=0.1)


def test_refusal_names_the_torch_xformers_was_built_for(monkeypatch):
    """A GPU whose torch differs from xformers' build: the reason says which torch each side has."""
    import sys
    import types

    build_info = types.SimpleNamespace(metadata={"version": {"torch": "2.10.0+cu128", "python": "3.10.19"}})
    fake_cpp = types.ModuleType("xformers._cpp_lib")
    fake_cpp._cpp_library_load_exception = RuntimeError(build_info)
    fake_xformers = types.ModuleType("xformers")
    fake_xformers._cpp_lib = fake_cpp
    monkeypatch.setitem(sys.modules, "xformers", fake_xformers)
    monkeypatch.setitem(sys.modules, "xformers._cpp_lib", fake_cpp)

    def broken(q, k, v, attn_bias=None, p=0.0):
        raise NotImplementedError("No operator found for `memory_efficient_attention_forward`")

    monkeypatch.setattr(xformers_backend, "_load_xformers", lambda: (broken, object))
    xformers_backend._PROBES.clear()
    failure = xformers_backend.xformers_failure(torch.device("cpu"), torch.bfloat16)
    xformers_backend._PROBES.clear()
    assert "NotImplementedError" in failure
    assert "built for torch 2.10.0+cu128" in failure and f"running torch {torch.__version__}" in failure


def test_xformers_refusing_a_shape_falls_back_to_sdpa(monkeypatch, caplog):
    """xformers' kernels refuse some shapes the probe does not cover (on A100/H100 in half precision its cutlass
    kernel needs ``head_dim % 8 == 0``; it raises NotImplementedError "No operator found"). That must fall back
    like any other refusal, never fail the forward pass."""
    calls: list[str] = []
    kernel = _fake_memory_efficient_attention(calls)

    def picky(q, k, v, attn_bias=None, p=0.0, scale=None):  # xformers' dispatcher, in miniature
        if q.shape[-1] % 8:
            raise NotImplementedError(
                f"No operator found for `memory_efficient_attention_forward`: K={q.shape[-1]}"
            )
        return kernel(q, k, v, attn_bias=attn_bias, p=p, scale=scale)

    monkeypatch.setattr(xformers_backend, "_load_xformers", lambda: (picky, _block_diagonal_mask()))
    model = tiny_model()  # Q-Former head dim 16 / 2 = 8 (runs), causal module 12 / 2 = 6 (refused)
    features = torch.randn(2, 5, 2, 12)
    frame_mask = torch.arange(5)[None, :] < torch.tensor([5, 2])[:, None]
    with caplog.at_level(logging.WARNING, logger="favor_qformer"):
        _models_agree(model, features, frame_mask, "xformers")
        _models_agree(model, features, frame_mask, "auto")
    assert calls, "the shapes xformers accepts still run on it"
    lines = [r.getMessage() for r in caplog.records if r.name == "favor_qformer"]
    assert len(lines) == 1 and "using sdpa" in lines[0] and "No operator found" in lines[0], lines
