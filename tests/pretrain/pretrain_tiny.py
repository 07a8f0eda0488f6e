"""Tiny models and batches shared by the pretrain core tests (hidden 32, 2 layers)."""

from __future__ import annotations

import torch

from pretrain.alum import AlumConfig
from pretrain.model import PretrainModel, build_model

VOCAB = 120


def tiny_model(arch: str = "bert", alum: AlumConfig | None = None, nsp: bool = False, dropout: float = 0.0,
               seed: int = 0) -> PretrainModel:
    return build_model(vocab_size=VOCAB, arch=arch, hidden_size=32, num_layers=2, num_heads=2,
                       max_position_embeddings=64, dropout=dropout, nsp=nsp, pad_token_id=0, alum=alum,
                       seed=seed)


def tiny_batch(batch: int = 3, seq: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ids (pad 0) with ~20% of the real tokens selected for prediction."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (batch, seq), generator=g)
    attention = torch.ones_like(ids)
    attention[1, seq - 5:] = 0
    ids[attention == 0] = 0
    token_types = torch.zeros_like(ids)
    token_types[:, seq // 2:] = 1
    token_types[attention == 0] = 0
    pick = (torch.rand(ids.shape, generator=g) < 0.2) & (attention == 1)
    pick[0, 1] = True
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    return {"input_ids": ids, "attention_mask": attention, "token_type_ids": token_types, "mlm_labels": labels}
