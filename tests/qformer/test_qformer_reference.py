"""Golden equivalence with the released FAVOR implementation (../shared/reference, both files), float32, CPU."""

from __future__ import annotations

import pytest
import torch
from qformer_helpers import official_state_dict, reference_config

from favor_qformer import CausalQFormer, block_causal_additive_bias, block_causal_mask, diversity_loss

ATOL = 1e-5


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(B, W, ...) -> (B*W, ...): the reference orders windows w = b * n_windows + k."""
    return t.reshape(-1, *t.shape[2:])


def _features(reference):
    synced = reference["synced_features"]  # (B, T*32, 96), already synchronised
    return synced.reshape(synced.shape[0], -1, 32, synced.shape[-1])  # (2, 23, 32, 96)


def _run(reference, keywords=None, **overrides):
    model = CausalQFormer.from_favor_official(
        official_state_dict(reference), reference_config(**overrides), **(keywords or {})
    ).eval()
    features = _features(reference)
    frame_mask = torch.ones(features.shape[:2], dtype=torch.bool)
    with torch.no_grad():
        return model(features, frame_mask, output_hidden_states=True)


def _close(name, got, want, atol=ATOL):
    diff = (got - want).abs().max().item()
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} vs {tuple(want.shape)}"
    assert diff <= atol, f"{name}: max abs diff {diff:.3g} > {atol}"


@pytest.mark.parametrize("backend", ["eager", "sdpa", "auto"])
def test_causal_outputs_match_release(reference, backend):
    out = _run(reference, attention_backend=backend)
    assert out.tokens.shape == (2, 3, 32, 64)
    assert out.window_mask.all()
    assert out.window_frames.tolist() == [[[0, 10], [10, 20], [20, 23]]] * 2
    _close("encoder_hidden_states", _flat(out.encoder_hidden_states), reference["encoder_hidden_states"])
    _close("query_embeddings", _flat(out.hidden_states[0]), reference["query_embeddings"])
    _close(
        "layer0_causal_attention_output",
        _flat(out.causal_hidden_states[0]),
        reference["layer0_causal_attention_output"],
    )
    _close(
        "layer1_causal_attention_output",
        _flat(out.causal_hidden_states[1]),
        reference["layer1_causal_attention_output"],
    )
    _close("layer0_query_output", _flat(out.hidden_states[1]), reference["layer0_query_output"])
    _close("qformer_output_causal", _flat(out.tokens), reference["qformer_output_causal"])
    loss = diversity_loss(out.tokens, out.window_mask)
    _close("diversity_loss_causal", loss, reference["diversity_loss_causal"])


def test_noncausal_outputs_match_release(reference):
    state = {k: v for k, v in official_state_dict(reference).items() if "encoder_causal_attention" not in k}
    model = CausalQFormer.from_favor_official(state, reference_config(causal=False)).eval()
    with torch.no_grad():
        out = model(_features(reference))
    _close("qformer_output_noncausal", _flat(out.tokens), reference["qformer_output_noncausal"])
    _close("diversity_loss_noncausal", diversity_loss(out.tokens), reference["diversity_loss_noncausal"])


def test_diversity_probe(reference):
    probe = reference["diversity_probe_input"]  # (6, 32, 64), entry [0, 5] all zero
    assert probe[0, 5].abs().sum() == 0
    _close("diversity_probe_loss", diversity_loss(probe), reference["diversity_probe_loss"], atol=1e-6)
    as_batch = diversity_loss(probe.reshape(2, 3, 32, 64), torch.ones(2, 3, dtype=torch.bool))
    _close("diversity_probe_loss (B, W) form", as_batch, reference["diversity_probe_loss"], atol=1e-6)


def test_masks_match_release(reference):
    frame = block_causal_mask(10, 1, "future")
    assert torch.equal(frame.float(), reference["causal_mask_frame"])
    token = block_causal_mask(10, 32, "future")
    assert torch.equal(token.float(), reference["causal_mask_token"])
    assert torch.equal(block_causal_additive_bias(10, 32, "future"), reference["causal_mask_additive"])


def test_padding_quirk_is_what_the_release_does(reference):
    """Masking the padding in the causal module (our default) moves the output: the flag is load-bearing."""
    released = _run(reference)
    masked = _run(reference, keywords={"causal_attends_window_padding": False})  # a keyword opts out
    last = masked.tokens[:, 2]  # the partial windows
    assert (last - released.tokens[:, 2]).abs().max() > 1e-5
    # full windows do not care about the flag
    torch.testing.assert_close(masked.tokens[:, :2], released.tokens[:, :2], rtol=0, atol=0)


def test_sizes_inferred_from_state_dict(reference):
    """config=None infers every size but the head count, which the released 12 does not fit here."""
    state = official_state_dict(reference)
    with pytest.raises(ValueError, match="num_heads"):
        CausalQFormer.from_favor_official(state)
    model = CausalQFormer.from_favor_official(state, num_heads=4, attention_backend="eager").eval()
    config = model.config
    assert (config.hidden_size, config.encoder_hidden_size, config.num_queries, config.num_layers) == (
        64,
        96,
        32,
        2,
    )
    assert config.causal_attends_window_padding and config.input_layer_norm_eps == 1e-5
    with torch.no_grad():
        out = model(_features(reference))
    _close("qformer_output_causal (inferred config)", _flat(out.tokens), reference["qformer_output_causal"])


def test_official_loading_is_strict(reference):
    state = official_state_dict(reference)
    extra = {**state, "video_Qformer.cls.predictions.bias": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"cls\.predictions"):
        CausalQFormer.from_favor_official(extra, reference_config())
    missing = {k: v for k, v in state.items() if k != "ln_video.bias"}
    with pytest.raises(ValueError, match=r"input_layernorm\.bias"):
        CausalQFormer.from_favor_official(missing, reference_config())
    wrong = {**state, "ln_video.bias": torch.zeros(95)}
    with pytest.raises(ValueError, match=r"input_layernorm.bias: expected \(96,\), got \(95,\)"):
        CausalQFormer.from_favor_official(wrong, reference_config())


def test_explicit_config_without_the_quirk_gets_it_and_a_warning(reference):
    """A config that leaves ``causal_attends_window_padding`` at our default still reproduces the release (issue 10):
    from_favor_official switches the quirk on and warns that the config disagreed; a keyword keeps the user's value."""
    state = official_state_dict(reference)
    plain = reference_config(causal_attends_window_padding=False)
    with pytest.warns(UserWarning, match=r"causal_attends_window_padding=False \(released True\)"):
        model = CausalQFormer.from_favor_official(state, plain)
    assert model.config.causal_attends_window_padding and not model.training
    assert not plain.causal_attends_window_padding  # the caller's config object is not mutated
    with torch.no_grad():
        out = model(_features(reference))
    _close(
        "qformer_output_causal (config without the quirk)",
        _flat(out.tokens),
        reference["qformer_output_causal"],
    )

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit keyword is the user's decision: no warning
        kept = CausalQFormer.from_favor_official(state, plain, causal_attends_window_padding=False)
        CausalQFormer.from_favor_official(state, reference_config())  # agrees with the release: no warning
    assert not kept.config.causal_attends_window_padding
