"""ALUM: adversarial training in embedding space (Liu et al. 2020, "Adversarial Training for Large Neural
Language Models", arXiv:2004.08994), as small pure functions.

The objective, to hold against :func:`regularized_loss`::

    min_θ  E[ L(f(x;θ), y) + α · max_{δ ∈ B_ε} l_sym(f(x+δ;θ), f(x;θ)) ]
    l_sym(p, q) = KL(p‖q) + KL(q‖p)

The inner max is approximated as in the paper's Algorithm 1: δ drawn small and random, K steps
``δ ← Π(δ + η·g/‖g‖)`` with ``g = ∇_δ l(f(x), f(x+δ))``, then ONE backward of ``L + α·l_sym`` at the final δ.
Nothing here knows about MLM: the caller passes the clean logits of whatever it compares (MLM logits at the
masked positions, class logits, start/end logits) and ``forward_fn(perturbed_embeds) -> logits``; pre-training
(``pretrain.objective``) and fine-tuning (``finetune.modeling``) call :func:`regularized_loss` unchanged.

Named variants (``AlumConfig.from_variant``; each field below can still be overridden):

- ``default``: normalised ascent (per-token ℓ2 direction ``g/‖g‖``) and projection onto a per-token ℓ2 ball of
  radius ``eps`` RELATIVE to the token's own embedding norm (``units="relative"``: ‖δ_t‖ ≤ ε·‖x_t‖). δ, σ and η are
  in the same unit. Its ε, η, σ, K were chosen by ``benchmarks/alum_sweep.py`` on the demo corpus (README, "ALUM").
- ``paper``: Algorithm 1 with the paper's settings: ℓ∞ ball of absolute radius ε = 1e-5, η = 1e-3, σ = 1e-5, K = 1,
  ascent on l_sym (arXiv:2004.08994: Algorithm 1 and the pre-training settings of its experiments). At that
  radius the term is negligible next to the MLM loss (measured share < 1e-3, README).
- ``authors``: the released fairseq plugin, namisan/mt-dnn branch v0.2 @ a1b63fbb, ``alum/adv_masked_lm.py``
  (``AdvMaskedLmLoss.forward``): δ ~ N(0,1)·``noise_var`` (1e-5), ONE step ``noise = noise + delta_grad *
  adv_step_size`` on the raw gradient of ``KL(adv_logits, logits.detach())`` (one-sided, "batchmean"), then
  ``noise = adv_project(noise)``, which divides δ by its per-token max (+``noise_gamma`` 1e-6): ℓ∞ = 1 per token
  whatever the gradient (σ·randn ≫ η·g), so it reduces to scaled random noise (measured gain ≈ 1, README).
  The adversarial forwards start from ``embed.data.detach() + noise``, so no gradient reaches the embedding layer
  through that branch (``embed_grad=False``). Defaults from ``alum/adv_masked_lm_task.py`` (same commit):
  ``--adv_step_size 1e-3``, ``--noise_var 1e-5``, ``--noise_gamma 1e-6``, ``--project_norm_type inf``; α = 10 from
  ``alum/alum_train.sh`` (``--adv_alpha 10``). That script never passes ``--adv_opt`` (default 0 in
  ``adv_masked_lm_task.py``), so the adversarial branch never runs as released, and enabling it fails:
  ``alum/adv_model/model.py`` calls ``self.embed_forward(embed, padding_mask, player)`` (3 arguments) but defines
  ``embed_forward(self, embed, padding_mask)``. The authors' values are thus those of code never run as released.
- ``noise``: the control every ALUM claim needs (Aghajanyan et al. 2020, "Better Fine-Tuning by Reducing
  Representational Collapse", R3F, arXiv:2008.03156): δ random, on the sphere of the SAME per-token radius as
  ``default`` (ε·‖x_t‖), no ascent (K = 0). Its gain is 1 by construction.

Choices stated explicitly (fields of :class:`AlumConfig`):

- ``embed_grad``: whether the parameter gradient of l_sym flows into the embedding layer through x + δ
  (True: the paper's objective, ∇_θ of l_sym(f(x+δ;θ), f(x;θ)) with x = embed(θ)); the authors detach it (False).
- ``ascent_loss``: "sym" ascends l_sym (Algorithm 1); "kl" ascends KL(p_clean‖p_adv) (authors' plugin). The final
  term is l_sym either way. Both share their Hessian at δ = 0, so the first step's direction is nearly the same.
- ``same_dropout``: every perturbed forward of one step (the ascent's, the final one, the gain probe) replays the
  dropout masks of the CLEAN forward (the caller captures the RNG state just before it: :class:`DropoutReplay`),
  so δ is the only thing that differs between f(x) and f(x+δ): l_sym is the paper's divergence of one function,
  ε = 0 gives exactly 0 in training mode too, and the ascent optimises the very function the final term
  evaluates. The authors draw fresh masks per forward (``False``); l_sym then mostly measures the dropout
  difference (at ε = 1e-5 all of it), and so does its ascent gradient.
- Detached target sides: the authors detach the target of each KL in the final term
  (``KL(adv, clean.detach()) + KL(clean, adv.detach())``, ``adv_masked_lm.py``). We keep the paper's objective:
  l_sym's gradient flows through both the clean and the adversarial outputs.
- ``drop_nonfinite``: the authors skip the adversarial term for a batch whose ascent-gradient norm is NaN/inf.
- SMART fine-tuning (namisan/mt-dnn v0.2 @ a1b63fbb, ``mt_dnn/perturbation.py`` with ``train.py``'s
  ``--adv_step_size 1e-5``, ``--adv_noise_var 1e-5``, ``--adv_epsilon 1e-6``) uses η = 1e-5, not 1e-3, and its
  ``SmartPerturbation.forward`` asserts a Classification/Ranking/Regression task (no span QA); it is not a variant.

Diagnostics (:class:`AdvResult`; measured and summed into log rows by ``pretrain.alum_stats``): ``delta_ratio``,
``delta_cos_init`` and, every ``gain_interval`` steps, ``ascent_gain`` (l_sym at the final δ over l_sym at a random
δ of the same per-token norms; near 1 the "adversarial" term is noise injection).

Reductions: l_sym and the ascent KL sum over the class axis and average over rows (positions or examples), so
``alpha`` weighs a per-token quantity against a per-token cross-entropy.

Precision: the ascent loss is scaled by ``pretrain.loss_scale.AscentScaler`` before ``autograd.grad`` so that a
float16 δ-gradient does not underflow; softmax/KL run in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

import torch

# The divergences and norms live in alum_math (alum_stats measures δ with them too); imported here by name,
# so ``from pretrain.alum import sym_kl, project_l2, ...`` keeps working.
from pretrain.alum_math import kl, l2_direction, project_l2, safe_divisor, sym_kl, upcast_half
from pretrain.alum_stats import ascent_gain, delta_diagnostics
from pretrain.loss_scale import AscentScaler

Norm = Literal["l2", "linf", "token_linf"]
Units = Literal["relative", "absolute"]
AscentLoss = Literal["kl", "sym"]
Site = Literal["embedding_output", "word_embeddings"]
Init = Literal["gaussian", "sphere"]

NORMS = ("l2", "linf", "token_linf")
UNITS = ("relative", "absolute")
ASCENT_LOSSES = ("kl", "sym")
SITES = ("embedding_output", "word_embeddings")
INITS = ("gaussian", "sphere")
VARIANTS = ("default", "paper", "authors", "noise")

# Added to the per-token max before dividing (authors' --noise_gamma).
_NORM_TINY = 1e-6

# The perturbation each variant names (α, site, masked_only, ... are not part of a variant). The default's
# ε, η, σ, K come from benchmarks/alum_sweep.py (README "ALUM": the sweep table).
_DEFAULT = dict(steps=1, init_std=1e-3, step_size=0.1, eps=0.1, norm="l2", units="relative", ascent_loss="sym",
                init="gaussian", embed_grad=True, same_dropout=True)
VARIANT_VALUES: dict[str, dict] = {
    "default": _DEFAULT,
    "paper": dict(steps=1, init_std=1e-5, step_size=1e-3, eps=1e-5, norm="linf", units="absolute",
                  ascent_loss="sym", init="gaussian", embed_grad=True, same_dropout=True),
    "authors": dict(steps=1, init_std=1e-5, step_size=1e-3, eps=1e-5, norm="token_linf", units="absolute",
                    ascent_loss="kl", init="gaussian", embed_grad=False, same_dropout=False),
    "noise": {**_DEFAULT, "steps": 0, "init": "sphere"},
}


@dataclass(frozen=True)
class AlumConfig:
    """Options of the ALUM perturbation. Field defaults are the ``default`` variant's; see the module docstring.

    Build a named variant with :meth:`from_variant`; ``variant`` itself only records the name.
    """

    variant: str = "default"
    """Name of the variant these values started from (default, paper, authors, noise)."""
    enabled: bool = True
    """Add the adversarial term at all. ``False`` (or ``alpha == 0``) gives plain training, bit for bit."""
    alpha: float = 10.0
    """α, weight of the adversarial loss (10 for pre-training in the paper, 1 for fine-tuning)."""
    steps: int = _DEFAULT["steps"]
    """K, number of ascent steps on δ. 0: δ stays at its random init (the ``noise`` control)."""
    init_std: float = _DEFAULT["init_std"]
    """σ: δ's init is N(0, σ²) per coordinate (absolute units) or has per-token norm ≈ σ·‖x_t‖ (relative)."""
    step_size: float = _DEFAULT["step_size"]
    """η: length of each ascent step along the normalised gradient (in ``units``); unused by ``token_linf``."""
    eps: float = _DEFAULT["eps"]
    """ε: per-token radius of the ball δ is projected onto (in ``units``); for ``init="sphere"`` δ's norm."""
    norm: Norm = _DEFAULT["norm"]
    """"l2" or "linf": per-token ball and matching normalised direction; "token_linf": authors' δ normalisation."""
    units: Units = _DEFAULT["units"]
    """"relative": σ, η, ε are fractions of each token's ‖x_t‖ (needs norm "l2"); "absolute": raw embedding units."""
    ascent_loss: AscentLoss = _DEFAULT["ascent_loss"]
    """Loss whose δ-gradient drives the ascent: "sym" = l_sym (paper), "kl" = KL(clean‖adv) (authors)."""
    init: Init = _DEFAULT["init"]
    """"gaussian" (Algorithm 1) or "sphere" (random direction with per-token norm exactly ε; the noise control)."""
    embed_grad: bool = _DEFAULT["embed_grad"]
    """Let l_sym's gradient reach the embedding layer through x + δ (paper) or not (authors: detached)."""
    same_dropout: bool = _DEFAULT["same_dropout"]
    """Replay one set of dropout masks in every perturbed forward of a step (False: fresh masks, as the authors)."""
    site: Site = "embedding_output"
    """Where δ is added: "embedding_output" (authors' ``inner_states[0]``) or "word_embeddings" (FreeLB style)."""
    masked_only: bool = True
    """MLM: compare outputs at masked positions only (authors) instead of every non-padding position."""
    drop_nonfinite: bool = True
    """On a NaN/inf ascent gradient drop the adversarial term for the step (authors)."""
    gain_interval: int = 10
    """Measure the ascent gain every this many ALUM steps (one extra no-grad forward); 0: never."""

    def __post_init__(self) -> None:
        def bad(name: str, value: object, expected: str) -> ValueError:
            return ValueError(f"alum.{name}: got {value!r}, expected {expected}")

        if self.variant not in VARIANTS:
            raise bad("variant", self.variant, f"one of {', '.join(VARIANTS)}")
        if self.alpha < 0 or not math.isfinite(self.alpha):
            raise bad("alpha", self.alpha, "a finite number >= 0")
        for name in ("steps", "gain_interval"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, value, "an integer >= 0")
        for name in ("init_std", "step_size", "eps"):
            value = getattr(self, name)
            if value < 0 or not math.isfinite(value):
                raise bad(name, value, "a finite number >= 0")
        for name, allowed in (("norm", NORMS), ("units", UNITS), ("ascent_loss", ASCENT_LOSSES),
                              ("site", SITES), ("init", INITS)):
            if getattr(self, name) not in allowed:
                raise bad(name, getattr(self, name), f"one of {', '.join(allowed)}")
        if self.units == "relative" and self.norm != "l2":
            raise bad("units", self.units, f"'absolute' with alum.norm={self.norm!r} (relative units need 'l2')")

    @classmethod
    def from_variant(cls, name: str = "default", **overrides) -> AlumConfig:
        """The named variant's values, then ``overrides`` (any field), e.g. ``from_variant("paper", alpha=1)``."""
        if name not in VARIANTS:
            raise ValueError(f"alum.variant: got {name!r}, expected one of {', '.join(VARIANTS)}")
        return cls(**{**VARIANT_VALUES[name], "variant": name, **overrides})

    @property
    def active(self) -> bool:
        """True when the adversarial term contributes to the loss."""
        return self.enabled and self.alpha > 0

    def to_dict(self) -> dict:
        """Every resolved value (what a run's config.json records)."""
        return asdict(self)

    def with_(self, **changes) -> AlumConfig:
        """A copy with some fields changed."""
        return replace(self, **changes)


def variant_fields() -> tuple[str, ...]:
    """Names of the fields a variant sets."""
    return tuple(VARIANT_VALUES["default"])


def config_fields() -> tuple[str, ...]:
    """Every field of :class:`AlumConfig`."""
    return tuple(f.name for f in fields(AlumConfig))


@dataclass
class AdvResult:
    """What :func:`adversarial_loss` returns.

    Attributes:
        loss: scalar l_sym(f(x+δ), f(x)) at the final δ, differentiable w.r.t. the parameters (and the
            clean logits); a detached 0 when the term was dropped.
        delta: the final δ (detached), shape of ``embeds``.
        overflow: True if an ascent gradient was non-finite (step skipped, scale backed off).
        delta_ratio: mean over real tokens of ‖δ_t‖/‖x_t‖ (0-d float tensor, detached).
        delta_cos_init: mean over real tokens of cos(δ_final, δ_init) (detached).
        ascent_gain: l_sym(final δ) / l_sym(random δ of the same per-token norms), or None if not measured.
    """

    loss: torch.Tensor
    delta: torch.Tensor
    overflow: bool
    delta_ratio: torch.Tensor | None = None
    delta_cos_init: torch.Tensor | None = None
    ascent_gain: torch.Tensor | None = None



def token_scale(embeds: torch.Tensor, cfg: AlumConfig) -> torch.Tensor:
    """Per-token length unit ``[..., 1]`` (detached, at least float32): ‖x_t‖ in relative units, 1 in absolute."""
    x = upcast_half(embeds.detach())
    if cfg.units == "absolute":
        return torch.ones((*x.shape[:-1], 1), dtype=x.dtype, device=x.device)
    return x.norm(dim=-1, keepdim=True)


def init_delta(embeds: torch.Tensor, cfg: AlumConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """δ's init in at least float32 (so that float16 does not round it), shaped like ``embeds``.

    "gaussian": N(0, σ²) per coordinate (absolute) or N(0, σ²/H)·‖x_t‖ (relative: per-token norm ≈ σ·‖x_t‖).
    "sphere": a uniformly random direction per token with norm exactly ε (in ``cfg.units``).
    """
    scale = token_scale(embeds, cfg)
    noise = torch.randn(embeds.shape, generator=generator, device=embeds.device, dtype=torch.float32).to(scale.dtype)
    if cfg.init == "sphere":
        return l2_direction(noise) * cfg.eps * scale
    if cfg.units == "relative":
        return noise * (cfg.init_std / math.sqrt(embeds.size(-1))) * scale
    return noise * cfg.init_std


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, cfg: AlumConfig,
                scale: torch.Tensor | None = None) -> torch.Tensor:
    """One ascent update of δ along ``grad``, then ``cfg.norm``'s projection (or normalisation).

    Args:
        delta: current δ, ``[..., H]``.
        grad: ∇_δ of the ascent loss, same shape (unscaled, finite).
        cfg: gives ``norm``, ``step_size`` (η) and ``eps`` (ε).
        scale: per-token length unit ``[..., 1]`` (:func:`token_scale`); None: 1.

    Returns:
        The new δ (at least float32). Norms are per token, over the last axis.
    """
    delta, grad = upcast_half(delta), upcast_half(grad)
    unit = 1.0 if scale is None else scale
    if cfg.norm == "token_linf":
        # Authors (adv_masked_lm.py): step along the raw gradient, then rescale each token to ℓ∞ ≈ 1.
        moved = delta + cfg.step_size * grad
        return moved / (moved.abs().amax(-1, keepdim=True) + _NORM_TINY)
    if cfg.norm == "linf":
        direction = grad / safe_divisor(grad.abs().amax(-1, keepdim=True))
        radius = cfg.eps * unit
        return torch.clamp(delta + cfg.step_size * unit * direction, -radius, radius)
    moved = delta + cfg.step_size * unit * l2_direction(grad)
    return project_l2(moved, cfg.eps * unit)


def _ascent_objective(clean_logits: torch.Tensor, adv_logits: torch.Tensor, cfg: AlumConfig) -> torch.Tensor:
    if cfg.ascent_loss == "kl":
        return kl(clean_logits, adv_logits)
    return sym_kl(adv_logits, clean_logits)


class DropoutReplay:
    """Runs a function with the RNG state captured at construction, leaving the caller's RNG untouched after.

    Capture it just before the clean forward from the perturbation site (``forward_fn(embeds)``) and pass it to
    :func:`regularized_loss`: every perturbed forward then draws the clean forward's dropout masks
    (``same_dropout``). Disabled, it just calls the function (fresh masks).
    """

    def __init__(self, device: torch.device, enabled: bool = True):
        self.enabled = enabled
        self.devices = [device] if device.type == "cuda" else []
        if enabled:
            self.cpu = torch.get_rng_state()
            self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    def __call__(self, fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return fn(x)
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for d, state in zip(self.devices, self.cuda):
                torch.cuda.set_rng_state(state, d)
            return fn(x)


def adversarial_loss(
    embeds: torch.Tensor,
    clean_logits: torch.Tensor,
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    cfg: AlumConfig,
    scaler: AscentScaler | None = None,
    generator: torch.Generator | None = None,
    token_mask: torch.Tensor | None = None,
    measure_gain: bool = False,
    replay: DropoutReplay | None = None,
) -> AdvResult:
    """The adversarial term of ALUM: K ascent steps on δ, then l_sym at the final δ.

    During the ascent only ∇_δ is computed (``torch.autograd.grad`` w.r.t. δ; no parameter gradient is
    accumulated) and the clean logits are detached. The returned loss keeps the graph of the last forward
    and of ``clean_logits``, so the caller's single backward of ``task_loss + alpha * loss`` gives the
    paper's parameter gradient.

    Args:
        embeds: ``[B, T, H]`` embeddings at the perturbation site, part of the clean graph (with
            ``cfg.embed_grad`` gradients flow into the embedding layer through the final forward).
        clean_logits: logits of the clean forward (any shape ``[..., C]``).
        forward_fn: maps perturbed embeddings ``[B, T, H]`` to logits shaped like ``clean_logits``.
        cfg: the ALUM options (``alpha`` is NOT applied here).
        scaler: dynamic loss scaler for the ascent gradient (needed in float16, harmless otherwise); on a
            non-finite gradient it is backed off and counts the overflow.
        generator: RNG for δ's init and the gain probe (default: torch's global RNG).
        token_mask: ``[B, T]`` 1 for real tokens: padding is never perturbed and not counted in diagnostics.
        measure_gain: also compute ``ascent_gain`` (one more forward, without gradients).
        replay: the RNG state captured before the clean forward (``cfg.same_dropout``); None: captured here,
            so the perturbed forwards share masks with each other but not with the clean one.

    Returns:
        :class:`AdvResult` with the scalar loss, the final δ, overflow and diagnostics.
    """
    target = clean_logits.detach()
    scale = token_scale(embeds, cfg)  # [B, T, 1]
    keep = None if token_mask is None else token_mask.unsqueeze(-1).to(scale.dtype)
    delta = init_delta(embeds, cfg, generator)
    if keep is not None:
        delta = delta * keep
    start = delta
    base = embeds.detach()
    if replay is None or not cfg.same_dropout:
        replay = DropoutReplay(embeds.device, cfg.same_dropout)
    overflow = False
    for _ in range(cfg.steps):
        delta = delta.to(embeds.dtype).requires_grad_(True)
        adv_logits = replay(forward_fn, base + delta)
        objective = _ascent_objective(target, adv_logits, cfg)
        loss_scale = scaler.scale if scaler is not None else 1.0
        # Scaled so that float16 activations' gradients do not underflow to zero; unscaled in float32.
        (grad,) = torch.autograd.grad(objective * loss_scale, delta)
        grad = upcast_half(grad) / loss_scale
        if not bool(torch.isfinite(grad).all()):
            overflow = True
            if scaler is not None:
                scaler.update(overflow=True)
            delta = delta.detach()
            break
        if scaler is not None:
            scaler.update(overflow=False)
        delta = ascent_step(delta.detach(), grad, cfg, scale)
        if keep is not None:
            delta = delta * keep
    delta = delta.detach().to(embeds.dtype)
    diag = delta_diagnostics(embeds, delta, start, token_mask)
    if overflow and cfg.drop_nonfinite:
        return AdvResult(loss=clean_logits.new_zeros((), dtype=torch.float32), delta=delta, overflow=True, **diag)
    x = embeds if cfg.embed_grad else embeds.detach()
    adv_logits = replay(forward_fn, x + delta)
    loss = sym_kl(adv_logits, clean_logits)
    if cfg.drop_nonfinite and not bool(torch.isfinite(loss)):
        # A NaN here would reach every weight through the single backward; drop the term instead.
        return AdvResult(loss=clean_logits.new_zeros((), dtype=torch.float32), delta=delta, overflow=True, **diag)
    gain = None
    if measure_gain:
        gain = ascent_gain(loss, delta, base, target, lambda x: replay(forward_fn, x), generator)
    return AdvResult(loss=loss, delta=delta, overflow=overflow, ascent_gain=gain, **diag)



@dataclass
class Regularized:
    """What :func:`regularized_loss` returns (all 0-d tensors; ``loss`` carries the graph).

    Attributes:
        loss: ``task_loss + α·adv_loss`` (exactly ``task_loss`` when ALUM is inactive).
        task_loss: the task loss passed in.
        adv_loss: l_sym at the adversarial δ (detached zero when inactive or dropped).
        adv: the :class:`AdvResult` (None when inactive).
        adv_share: ``α·adv_loss / loss`` (detached; 0 when inactive).
    """

    loss: torch.Tensor
    task_loss: torch.Tensor
    adv_loss: torch.Tensor
    adv: AdvResult | None = None
    adv_share: torch.Tensor | None = None
    extra: dict = field(default_factory=dict)


def regularized_loss(
    task_loss: torch.Tensor,
    embeds: torch.Tensor,
    clean_logits: torch.Tensor,
    forward_fn: Callable[[torch.Tensor], torch.Tensor],
    cfg: AlumConfig | None,
    scaler: AscentScaler | None = None,
    generator: torch.Generator | None = None,
    token_mask: torch.Tensor | None = None,
    measure_gain: bool = False,
    replay: DropoutReplay | None = None,
) -> Regularized:
    """The ALUM objective ``L(f(x), y) + α · l_sym(f(x + δ*), f(x))`` with δ* from :func:`adversarial_loss`.

    The one place where the task loss and the adversarial term are combined; pre-training and fine-tuning
    both call it. With ``cfg`` None, disabled or ``alpha == 0`` nothing else runs and ``loss is task_loss``
    (plain training, bit for bit: no extra forward, no RNG draw).

    Args:
        task_loss: scalar task loss of the clean forward (MLM cross-entropy, classification CE, ...).
        embeds, clean_logits, forward_fn, scaler, generator, token_mask, measure_gain, replay: as
            :func:`adversarial_loss`.
        cfg: the ALUM options.

    Returns:
        :class:`Regularized`.
    """
    zero = task_loss.detach().new_zeros(())
    if cfg is None or not cfg.active:
        return Regularized(loss=task_loss, task_loss=task_loss, adv_loss=zero, adv=None, adv_share=zero)
    adv = adversarial_loss(embeds, clean_logits, forward_fn, cfg, scaler=scaler, generator=generator,
                           token_mask=token_mask, measure_gain=measure_gain, replay=replay)
    weighted = cfg.alpha * adv.loss
    loss = task_loss + weighted
    share = (weighted.detach() / loss.detach()).float() if bool(loss.detach() != 0) else zero.float()
    return Regularized(loss=loss, task_loss=task_loss, adv_loss=adv.loss, adv=adv, adv_share=share)
