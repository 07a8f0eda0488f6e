"""The module DeepSpeed wraps for pre-training: MLM (+NSP) task loss plus ALUM's adversarial term.

Its forward reads as the paper's objective (arXiv:2004.08994, Algorithm 1): the clean task forward of
``PretrainModel.task``, then ``pretrain.alum.regularized_loss(task_loss, ...)`` = ``L + α·l_sym(f(x+δ*), f(x))``,
the same function fine-tuning calls. The ascent runs inside this forward, so ZeRO-3 parameter gathering and
DeepSpeed's precision handling cover its extra forwards.

The wrapper adopts the model's submodules under their own names (as ``PretrainModel`` adopts transformers'),
so its ``state_dict`` is the model's key for key: checkpoints export with ``pretrain.export`` unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from pretrain.alum import AlumConfig, regularized_loss
from pretrain.alum_stats import AlumSums
from pretrain.loss_scale import AscentScaler
from pretrain.model import PretrainModel, PretrainOutput, output_of


class PretrainObjective(nn.Module):
    """``PretrainModel`` + ALUM: what ``train`` hands to DeepSpeed.

    Args:
        model: the encoder and heads (its submodules are adopted, not copied).
        alum: ALUM options (None or inactive: plain MLM, bit for bit the model's own loss).
        ascent_scaler: loss scaler of the ascent gradient (a default one if None); the one owner of that scale
            (``pretrain.engine.sync_ascent_scale`` only seeds it from DeepSpeed's).
    """

    def __init__(self, model: PretrainModel, alum: AlumConfig | None = None,
                 ascent_scaler: AscentScaler | None = None):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        object.__setattr__(self, "model", model)  # not a submodule: no "model." prefix in the state dict
        self.config = model.config
        self.arch = model.arch
        self.alum = alum
        self.ascent_scaler = ascent_scaler if ascent_scaler is not None else AscentScaler()
        self.alum_steps = 0  # ALUM steps run, to measure the gain every alum.gain_interval of them

    @property
    def backbone(self) -> nn.Module:
        """The HF ``BertModel``/``RobertaModel``."""
        return self.model.backbone

    def to_hf(self):
        """The transformers model of these weights (see ``PretrainModel.to_hf``)."""
        return self.model.to_hf()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        nsp_labels: torch.Tensor | None = None,
    ) -> PretrainOutput:
        """Task loss + α·adversarial term in training mode (ALUM active); the plain task loss otherwise.

        Arguments as ``PretrainModel.forward``. Returns a ``PretrainOutput`` whose ``alum_stats`` holds this
        step's diagnostics (``pretrain.alum_stats.AlumSums``).
        """
        if mlm_labels is None:
            raise ValueError("mlm_labels is required ([B, T], -100 at positions not to predict)")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        cfg = self.alum
        # Training mode only (as the authors' code), and never under no_grad, where no ascent is possible.
        use = cfg is not None and cfg.active and self.training and torch.is_grad_enabled()
        t = self.model.task(input_ids, attention_mask, token_type_ids, mlm_labels, nsp_labels,
                            site=cfg.site if use else "embedding_output", all_rows=use and not cfg.masked_only,
                            capture_rng=use and cfg.same_dropout)
        if not use:
            return output_of(t, t.task_loss, t.task_loss.new_zeros(()), overflow=False)
        measure = bool(cfg.gain_interval) and self.alum_steps % cfg.gain_interval == 0
        self.alum_steps += 1
        reg = regularized_loss(t.task_loss, t.embeds, t.logits, t.logits_from, cfg, scaler=self.ascent_scaler,
                               token_mask=attention_mask, measure_gain=measure, replay=t.replay)
        return output_of(t, reg.loss, reg.adv_loss, overflow=reg.adv.overflow, alum_stats=AlumSums.of(reg))
