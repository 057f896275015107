"""The diversity loss on query tokens (FAVOR, arXiv 2310.05863, Sec. 3.3).

It keeps the Q queries of a window from collapsing onto each other: the mean signed cosine similarity between
distinct queries of a window, averaged over windows. Released formula (``calc_diversity_loss``):
cos(i, j) = <q_i, q_j> / (|q_i| |q_j| + 1e-9), summed over i != j, divided by (Q² - Q) per window.
The 1e-9 guard makes a zero vector's cosines 0 instead of NaN.

Shape legend: B videos, W windows, Q queries, H width, Nw windows selected.
"""

from __future__ import annotations

import torch

_EPS = 1e-9


def _selected_windows(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Checked ``tokens`` (and ``mask``) -> the selected windows ``(Nw, Q, H)`` (float32 for half precision)."""
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"tokens: expected a torch.Tensor, got {type(tokens).__name__}")
    if tokens.dim() not in (3, 4):
        raise ValueError(
            f"tokens: expected (batch, windows, queries, hidden) or (windows, queries, hidden), got shape {tuple(tokens.shape)}"
        )
    if tokens.shape[-2] < 2:
        raise ValueError(f"tokens: expected at least 2 queries per window, got {tokens.shape[-2]}")
    lead = tuple(tokens.shape[:-2])
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"mask: expected a bool tensor of shape {lead}, got {type(mask).__name__}")
        if mask.dtype != torch.bool or tuple(mask.shape) != lead:
            raise ValueError(
                f"mask: expected a bool tensor of shape {lead}, got {mask.dtype} of shape {tuple(mask.shape)}"
            )
    flat = tokens.reshape(-1, *tokens.shape[-2:])  # (Nw, Q, H)
    if flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()
    if mask is not None:
        flat = flat[mask.reshape(-1)]
    return flat


def _cosines(flat: torch.Tensor) -> torch.Tensor:
    """``(Nw, Q, H)`` -> ``(Nw, Q, Q)`` cosine similarities with the released 1e-9 guard."""
    dot = torch.einsum("wqh,wkh->wqk", flat, flat)  # (Nw, Q, Q)
    norm = flat.pow(2).sum(-1).sqrt()  # (Nw, Q)
    return dot / (norm[:, :, None] * norm[:, None, :] + _EPS)


def query_similarity(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The ``(Q, Q)`` cosine similarities between the queries of a window, averaged over real windows (the
    paper's Figure 5 matrices; `diversity_loss` is the mean of its off-diagonal entries).

    Args:
        tokens: (B, W, Q, H) or (Nw, Q, H) query tokens.
        mask: Which windows count, as for `diversity_loss`.

    Returns:
        ``(Q, Q)`` float tensor (float32 for half-precision tokens, else the tokens' dtype).

    Raises:
        ValueError: as `diversity_loss`, and when no window is selected (an average over nothing: no matrix).
    """
    flat = _selected_windows(tokens, mask)
    if flat.shape[0] == 0:
        where = "mask: no window selected" if mask is not None else "tokens: no window"
        raise ValueError(f"{where} (shape {tuple(tokens.shape)}); the average needs at least one window")
    return _cosines(flat).mean(dim=0)


def diversity_loss(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean off-diagonal cosine similarity between the queries of each window, averaged over real windows.

    Args:
        tokens: (B, W, Q, H) or (Nw, Q, H) query tokens.
        mask: Which windows count: (B, W) bool for 4-D tokens, (Nw,) bool for 3-D ones; ``None`` = all.

    Returns:
        Scalar (float32 for half-precision tokens, else the tokens' dtype). 0.0 (still attached to the graph)
        when no window is selected.

    Raises:
        ValueError: wrong rank, fewer than 2 queries, or a mask of the wrong shape or dtype.
    """
    flat = _selected_windows(tokens, mask)
    windows, queries = flat.shape[0], flat.shape[1]
    if windows == 0:
        # The sum over no window: 0, still attached to the graph, and blind to what the masked windows hold (a
        # NaN/inf there would make ``tokens.sum() * 0`` NaN).
        return flat.sum()
    cos = _cosines(flat)  # (Nw, Q, Q)
    off_diagonal = ~torch.eye(queries, dtype=torch.bool, device=flat.device)
    return (cos * off_diagonal).sum() / ((queries * queries - queries) * windows)
