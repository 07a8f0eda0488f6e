"""The tensor math ALUM is made of: divergences between output distributions (l_sym, KL) and per-token
vector norms (safe division, ℓ2 direction, ℓ2 projection).

Kept apart from ``pretrain.alum`` (the perturbation and the objective) so that ``pretrain.alum_stats`` can
measure δ with the same functions without importing the objective; ``pretrain.alum`` re-exports them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def upcast_half(x: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32, other dtypes unchanged: softmax/KL and δ in at least float32, since half
    precision cannot resolve the tiny divergences of the ascent."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _mean_rows(per_row: torch.Tensor) -> torch.Tensor:
    return per_row.mean() if per_row.numel() else per_row.sum()


def sym_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Symmetric KL, KL(p‖q) + KL(q‖p), between the softmax distributions of two sets of logits.

    Args:
        logits_p: ``[..., C]`` logits.
        logits_q: ``[..., C]`` logits, same shape.

    Returns:
        Scalar: summed over the class axis, averaged over all other positions; computed in (at least) float32.
    """
    logp = F.log_softmax(upcast_half(logits_p), dim=-1)
    logq = F.log_softmax(upcast_half(logits_q), dim=-1)
    # KL(p‖q) + KL(q‖p) = Σ (p - q)(log p - log q): one pass instead of two kl_div calls.
    return _mean_rows(((logp.exp() - logq.exp()) * (logp - logq)).sum(-1))


def kl(logits_target: torch.Tensor, logits_input: torch.Tensor) -> torch.Tensor:
    """KL(p_target ‖ p_input), summed over classes and averaged over rows, in (at least) float32.

    The authors' ascent loss ``KL(adv_logits, logits.detach())`` is ``kl(clean, adv)`` here.
    """
    logt = F.log_softmax(upcast_half(logits_target), dim=-1)
    logi = F.log_softmax(upcast_half(logits_input), dim=-1)
    return _mean_rows((logt.exp() * (logt - logi)).sum(-1))


def safe_divisor(norms: torch.Tensor) -> torch.Tensor:
    """``norms`` with exact zeros replaced by 1, to divide by: a zero vector (a padding token's gradient) stays 0.

    Only exact zeros need protecting; an additive guard (``norm + tiny``) would swamp the tiny δ-gradients of
    small inits.
    """
    return torch.where(norms > 0, norms, torch.ones_like(norms))


def l2_direction(x: torch.Tensor) -> torch.Tensor:
    """Each token's vector (last axis) scaled to ℓ2 norm 1; an all-zero vector stays 0 (see :func:`safe_divisor`)."""
    return x / safe_divisor(x.norm(dim=-1, keepdim=True))


def project_l2(delta: torch.Tensor, radius: float | torch.Tensor) -> torch.Tensor:
    """Project each token's ``delta`` (last axis) onto the ℓ2 ball of ``radius``: longer vectors are scaled down
    to norm ``radius``, shorter ones are unchanged.

    Args:
        delta: ``[..., H]``.
        radius: a float, or a per-token ``[..., 1]`` tensor (relative units: ε·‖x_t‖).
    """
    norms = delta.norm(dim=-1, keepdim=True)
    return delta * torch.clamp(radius / (norms + 1e-12), max=1.0)

