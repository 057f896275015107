"""Layer structure: every parameter the model owns takes part in the forward pass (DDP needs no
``find_unused_parameters``), for every combination of cross-attention frequency and causal stacking."""

from __future__ import annotations

import pytest
import torch
from qformer_helpers import tiny_model


@pytest.mark.parametrize("every", [1, 2, 3])
@pytest.mark.parametrize("stack", [False, True])
@pytest.mark.parametrize("causal", [False, True])
def test_every_parameter_gets_a_gradient(every, stack, causal):
    model = tiny_model(num_layers=3, cross_attention_every=every, stack_causal=stack, causal=causal).train()
    out = model(torch.randn(2, 7, 2, 12), torch.arange(7)[None, :] < torch.tensor([[7], [4]]))
    out.tokens.square().sum().backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert not unused, unused


def test_a_causal_module_exists_only_where_a_cross_attention_reads_it():
    plain = tiny_model(num_layers=2, cross_attention_every=2, stack_causal=False)
    assert plain.layers[0].causal_attention is not None and plain.layers[1].causal_attention is None
    stacked = tiny_model(
        num_layers=3, cross_attention_every=2, stack_causal=True
    )  # cross-attention in 0 and 2
    assert all(layer.causal_attention is not None for layer in stacked.layers)
    tail = tiny_model(num_layers=3, cross_attention_every=3, stack_causal=True)  # only layer 0 cross-attends
    assert [layer.causal_attention is not None for layer in tail.layers] == [True, False, False]
