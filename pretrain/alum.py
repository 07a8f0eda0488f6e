"""ALUM: adversarial training in embedding space (Liu et al. 2020, "Adversarial Training for Large Neural
Language Models", arXiv:2004.08994), as small pure functions.

The objective, to hold against the code below::

    min_θ  E[ L(f(x;θ), y) + α · max_{‖δ‖≤ε} l_sym(f(x+δ;θ), f(x;θ)) ]
    l_sym(p, q) = KL(p‖q) + KL(q‖p)

Algorithm 1 of the paper: δ ~ N(0, σ²I); K times: g = ∇_δ l(f(x), f(x+δ)); δ ← Π(δ + η·g/‖g‖); then the
parameter gradient is ∇_θ L + α·∇_θ l_sym(f(x), f(x+δ)) (``adversarial_loss`` returns the second term; the
caller adds ``alpha * loss`` to its task loss and runs ONE backward).

Nothing here knows about MLM: the caller passes the clean logits of whatever it compares (MLM logits at the
masked positions, class logits, start/end logits) and ``forward_fn(perturbed_embeds) -> logits`` that maps
perturbed embeddings to the same logits. Fine-tuning reuses these functions unchanged.

Where each default of :class:`AlumConfig` comes from. "Paper" is the arXiv paper; "authors' code" is
namisan/mt-dnn branch v0.2, ``alum/adv_masked_lm.py`` + ``alum/adv_masked_lm_task.py`` + ``alum/alum_train.sh``
(a fairseq plugin), and ``mt_dnn/perturbation.py`` (the same authors' SMART/ALUM fine-tuning code):

- ``alpha=10``: paper (pre-training) and ``alum_train.sh`` (``--adv_alpha 10``). Use 1 for fine-tuning.
- ``steps=1`` (K): paper and authors' code (a single ascent step is hard-coded there).
- ``init_std=1e-5`` (σ): authors' ``--noise_var 1e-5``, used as a standard deviation
  (``normal_(0, 1) * noise_var``); the paper calls it a variance.
- ``step_size=1e-3`` (η): authors' ``--adv_step_size 1e-3``, paper.
- ``eps=1e-5`` (ε): the radius of the ball for ``norm="linf"``/``"l2"`` (paper's Algorithm 1). The default
  ``norm="token_linf"`` has no radius: it normalises each token's δ to ℓ∞ ≈ 1 (authors' code).
- ``norm="token_linf"``: authors' code: after the step ``δ ← (δ + η·g) / (max_token |δ + η·g| + 1e-6)``,
  per token over the hidden dimension (``--project_norm_type inf``, ``--noise_gamma 1e-6``). The ALUM
  plugin applies this to ``embedding + η·g``; we follow ``mt_dnn/perturbation.py``, which applies it to δ,
  as the issue states. ``"linf"`` is Algorithm 1: ``δ ← clip_ε(δ + η·g/‖g‖∞)``; ``"l2"`` the same with
  ℓ2 (both norms per token, so a single large token does not shrink every other token's step).
- ``ascent_loss="kl"``: authors' code computes the ascent gradient from
  ``F.kl_div(log_softmax(adv), softmax(clean))`` = KL(p_clean ‖ p_adv), not from l_sym. ``"sym"`` uses
  l_sym as Algorithm 1 does. The final loss is l_sym in both.
- ``site="embedding_output"``: authors' code perturbs ``inner_states[0]``, the embedding layer's output
  (word + position + type embeddings, LayerNorm, dropout). ``"word_embeddings"`` perturbs the word
  embeddings before position/type are added (FreeLB style).
- ``masked_only=True``: authors' code compares MLM outputs at the masked positions only (the head is only
  run there). With ``False`` every non-padding position is compared. The choice is the caller's: it
  decides which logits ``forward_fn`` returns; the flag is carried here so that one config drives it.
- ``drop_nonfinite=True``: authors' code drops the adversarial term for a batch whose ascent gradient has
  a NaN/inf norm. With ``False`` the ascent step is skipped (δ keeps its init) and the adversarial loss is
  still computed at that δ.

Deliberate departure: in the final l_sym the authors detach the "target" side of each KL term
(``KL(adv, clean.detach()) + KL(clean, adv.detach())``). We keep the paper's objective: the gradient of
l_sym flows through both the clean and the adversarial outputs.

Precision: in float16 an embedding-output entry of magnitude ~1 has an ulp of ~1e-3, so most of a δ drawn
with σ = 1e-5 rounds away in ``x + δ`` (as in the authors' ``--fp16`` runs); the ascent gradient then mostly
comes from the entries near 0 and from dropout. The δ-gradient itself underflows unless the ascent loss is
scaled (``pretrain.loss_scale.AscentScaler``; tested on CPU with float16 weights and with CPU autocast).

Reductions: l_sym and the ascent KL sum over the last (class) axis and average over rows (positions or
examples), so ``alpha`` weighs a per-token quantity against the per-token MLM cross-entropy, as the authors'
sum/sum normalisation does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from pretrain.loss_scale import AscentScaler

Norm = Literal["token_linf", "linf", "l2"]
AscentLoss = Literal["kl", "sym"]
Site = Literal["embedding_output", "word_embeddings"]

NORMS = ("token_linf", "linf", "l2")
ASCENT_LOSSES = ("kl", "sym")
SITES = ("embedding_output", "word_embeddings")

# Added to the per-token max before dividing (authors' --noise_gamma / adv_epsilon).
_NORM_TINY = 1e-6


@dataclass(frozen=True)
class AlumConfig:
    """Options of the ALUM perturbation; see the module docstring for where each default comes from."""

    enabled: bool = True
    """Add the adversarial term at all. ``False`` (or ``alpha == 0``) gives plain MLM training."""
    alpha: float = 10.0
    """α, weight of the adversarial loss (10 for pre-training, 1 for fine-tuning)."""
    steps: int = 1
    """K, number of ascent steps on δ. 0: δ stays at its random init."""
    init_std: float = 1e-5
    """σ, standard deviation of δ's Gaussian init."""
    step_size: float = 1e-3
    """η, ascent step size."""
    eps: float = 1e-5
    """ε, radius of the ball δ is projected onto (``norm`` "linf" or "l2" only)."""
    norm: Norm = "token_linf"
    """"token_linf" (authors' per-token normalisation), "linf" or "l2" (projection onto the ε-ball)."""
    ascent_loss: AscentLoss = "kl"
    """Loss whose δ-gradient drives the ascent: "kl" = KL(clean‖adv) (authors), "sym" = l_sym (paper)."""
    site: Site = "embedding_output"
    """Where δ is added: "embedding_output" (authors) or "word_embeddings" (FreeLB style)."""
    masked_only: bool = True
    """MLM: compare outputs at masked positions only (authors) instead of every non-padding position."""
    drop_nonfinite: bool = True
    """On a NaN/inf ascent gradient drop the adversarial term for the step (authors)."""

    def __post_init__(self) -> None:
        def bad(field: str, value: object, expected: str) -> ValueError:
            return ValueError(f"alum.{field}: got {value!r}, expected {expected}")

        if self.alpha < 0 or not math.isfinite(self.alpha):
            raise bad("alpha", self.alpha, "a finite number >= 0")
        if not isinstance(self.steps, int) or self.steps < 0:
            raise bad("steps", self.steps, "an integer >= 0")
        for name in ("init_std", "step_size", "eps"):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise bad(name, value, "a finite number >= 0")
        if self.norm not in NORMS:
            raise bad("norm", self.norm, f"one of {', '.join(NORMS)}")
        if self.ascent_loss not in ASCENT_LOSSES:
            raise bad("ascent_loss", self.ascent_loss, f"one of {', '.join(ASCENT_LOSSES)}")
        if self.site not in SITES:
            raise bad("site", self.site, f"one of {', '.join(SITES)}")

    @property
    def active(self) -> bool:
        """True when the adversarial term contributes to the loss."""
        return self.enabled and self.alpha > 0


@dataclass
class AdvResult:
    """What :func:`adversarial_loss` returns.

    Attributes:
        loss: scalar l_sym(f(x+δ), f(x)) at the final δ, differentiable w.r.t. the parameters (and the
            clean logits); a detached 0 when the term was dropped.
        delta: the final δ (detached), shape of ``embeds``.
        overflow: True if an ascent gradient was non-finite (step skipped, scale backed off).
    """

    loss: torch.Tensor
    delta: torch.Tensor
    overflow: bool


def _up(x: torch.Tensor) -> torch.Tensor:
    # Softmax/KL in at least float32: half precision cannot resolve the tiny divergences of the ascent.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def sym_kl(logits_p: torch.Tensor, logits_q: torch.Tensor) -> torch.Tensor:
    """Symmetric KL, KL(p‖q) + KL(q‖p), between the softmax distributions of two sets of logits.

    Args:
        logits_p: ``[..., C]`` logits.
        logits_q: ``[..., C]`` logits, same shape.

    Returns:
        Scalar: summed over the class axis, averaged over all other positions; computed in (at least) float32.
    """
    logp = F.log_softmax(_up(logits_p), dim=-1)
    logq = F.log_softmax(_up(logits_q), dim=-1)
    # KL(p‖q) + KL(q‖p) = Σ (p - q)(log p - log q): one pass instead of two kl_div calls.
    per_row = ((logp.exp() - logq.exp()) * (logp - logq)).sum(-1)
    return per_row.mean() if per_row.numel() else per_row.sum()


def kl(logits_target: torch.Tensor, logits_input: torch.Tensor) -> torch.Tensor:
    """KL(p_target ‖ p_input), summed over classes and averaged over rows, in (at least) float32.

    The authors' ascent loss ``KL(adv_logits, clean_logits)`` is ``kl(clean, adv)`` here.
    """
    logt = F.log_softmax(_up(logits_target), dim=-1)
    logi = F.log_softmax(_up(logits_input), dim=-1)
    per_row = (logt.exp() * (logt - logi)).sum(-1)
    return per_row.mean() if per_row.numel() else per_row.sum()


def init_delta(
    embeds: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """δ ~ N(0, std²), shaped and typed like ``embeds`` (drawn in float32 so that fp16 does not round it)."""
    noise = torch.randn(embeds.shape, generator=generator, device=embeds.device, dtype=torch.float32)
    return (noise * std).to(embeds.dtype)


def _safe(norms: torch.Tensor) -> torch.Tensor:
    # The δ-gradient is tiny (~1e-10 at σ = 1e-5), so an additive guard like 1e-6 would swamp it; only a
    # token whose gradient is exactly 0 needs protecting (its direction stays 0).
    return torch.where(norms > 0, norms, torch.ones_like(norms))


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, cfg: AlumConfig) -> torch.Tensor:
    """One ascent update of δ along ``grad`` followed by the normalisation/projection of ``cfg.norm``.

    Args:
        delta: current δ, ``[..., H]``.
        grad: ∇_δ of the ascent loss, same shape (unscaled, finite).
        cfg: gives ``norm``, ``step_size`` (η) and ``eps`` (ε).

    Returns:
        The new δ (at least float32). Norms are taken per token, over the last axis.
    """
    delta, grad = _up(delta), _up(grad)
    if cfg.norm == "token_linf":
        # Authors: step along the raw gradient, then rescale each token to ℓ∞ ≈ 1.
        moved = delta + cfg.step_size * grad
        return moved / (moved.abs().amax(-1, keepdim=True) + _NORM_TINY)
    if cfg.norm == "linf":
        direction = grad / _safe(grad.abs().amax(-1, keepdim=True))
        return (delta + cfg.step_size * direction).clamp(-cfg.eps, cfg.eps)
    direction = grad / _safe(grad.norm(dim=-1, keepdim=True))
    moved = delta + cfg.step_size * direction
    norms = moved.norm(dim=-1, keepdim=True)
    return moved * torch.clamp(cfg.eps / (norms + 1e-12), max=1.0)


def _ascent_objective(clean_logits: torch.Tensor, adv_logits: torch.Tensor, cfg: AlumConfig) -> torch.Tensor:
    if cfg.ascent_loss == "kl":
        return kl(clean_logits, adv_logits)
    return sym_kl(adv_logits, clean_logits)


def adversarial_loss(
    embeds: torch.Tensor,
    clean_logits: torch.Tensor,
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    cfg: AlumConfig,
    scaler: AscentScaler | None = None,
    generator: torch.Generator | None = None,
) -> AdvResult:
    """The adversarial term of ALUM: K ascent steps on δ, then l_sym at the final δ.

    During the ascent only ∇_δ is computed (``torch.autograd.grad`` w.r.t. δ; no parameter gradient is
    accumulated) and the clean logits are detached. The returned loss keeps the graph of the last forward
    and of ``clean_logits``, so the caller's single backward of ``task_loss + alpha * loss`` gives the
    paper's parameter gradient.

    Args:
        embeds: ``[B, T, H]`` embeddings at the perturbation site, part of the clean graph (gradients flow
            into the embedding layer through the final forward).
        clean_logits: logits of the clean forward (any shape ``[..., C]``).
        forward_fn: maps perturbed embeddings ``[B, T, H]`` to logits shaped like ``clean_logits``.
        cfg: the ALUM options (``alpha`` is NOT applied here).
        scaler: dynamic loss scaler for the ascent gradient (needed in float16, harmless otherwise); on a
            non-finite gradient it is backed off and counts the overflow.
        generator: RNG for δ's init (default: torch's global RNG).

    Returns:
        :class:`AdvResult` with the scalar loss, the final δ and whether an overflow occurred.
    """
    target = clean_logits.detach()
    delta = init_delta(embeds, cfg.init_std, generator)
    base = embeds.detach()
    overflow = False
    for _ in range(cfg.steps):
        delta.requires_grad_(True)
        adv_logits = forward_fn(base + delta)
        objective = _ascent_objective(target, adv_logits, cfg)
        scale = scaler.scale if scaler is not None else 1.0
        # Scaled so that float16 activations' gradients do not underflow to zero; unscaled in float32.
        (grad,) = torch.autograd.grad(objective * scale, delta)
        grad = _up(grad) / scale
        if not bool(torch.isfinite(grad).all()):
            overflow = True
            if scaler is not None:
                scaler.update(overflow=True)
            delta = delta.detach()
            break
        if scaler is not None:
            scaler.update(overflow=False)
        delta = ascent_step(delta.detach(), grad, cfg).to(embeds.dtype)
    delta = delta.detach()
    if overflow and cfg.drop_nonfinite:
        return AdvResult(loss=clean_logits.new_zeros((), dtype=torch.float32), delta=delta, overflow=True)
    adv_logits = forward_fn(embeds + delta)
    loss = sym_kl(adv_logits, clean_logits)
    if cfg.drop_nonfinite and not bool(torch.isfinite(loss)):
        # A NaN here would reach every weight through the single backward; drop the term instead.
        return AdvResult(loss=clean_logits.new_zeros((), dtype=torch.float32), delta=delta, overflow=True)
    return AdvResult(loss=loss, delta=delta, overflow=overflow)
