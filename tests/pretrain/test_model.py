"""PretrainModel against transformers' own classes, and the embed/encode_from split used by ALUM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pretrain_tiny import tiny_batch, tiny_model
from transformers import BertForMaskedLM, BertForPreTraining, RobertaForMaskedLM

from data_tools.errors import UserError
from pretrain.alum import AlumConfig, sym_kl
from pretrain.model import embed, encode_from, load_model

torch.set_num_threads(1)

VARIANTS = [("bert", False, BertForMaskedLM), ("bert", True, BertForPreTraining), ("roberta", False, RobertaForMaskedLM)]


@pytest.mark.parametrize("arch,nsp,hf_class", VARIANTS)
def test_state_dict_and_outputs_match_transformers(arch, nsp, hf_class):
    model = tiny_model(arch, nsp=nsp, alum=AlumConfig()).eval()  # the training module: the model's state dict
    hf = model.to_hf().eval()
    assert isinstance(hf, hf_class)
    assert list(model.state_dict()) == list(hf.state_dict())
    batch = tiny_batch()
    if arch == "roberta":
        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    nsp_labels = torch.tensor([0, 1, 0])
    out = model(**batch, nsp_labels=nsp_labels if nsp else None)
    ref = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
             token_type_ids=batch["token_type_ids"], labels=batch["mlm_labels"],
             **({"next_sentence_label": nsp_labels} if nsp else {}))
    ref_logits = ref.prediction_logits if nsp else ref.logits
    picked = batch["mlm_labels"] != -100
    torch.testing.assert_close(out.mlm_logits, ref_logits[picked], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-6)
    assert out.masked_count.item() == picked.sum().item()
    assert out.masked_correct.item() == (ref_logits.argmax(-1)[picked] == batch["input_ids"][picked]).sum().item()
    assert out.adv_loss.item() == 0.0  # eval mode: no adversarial term


def test_alpha_zero_gives_exactly_the_plain_loss_and_gradients():
    batch = tiny_batch()
    grads = []
    for alum in (None, AlumConfig(alpha=0.0)):
        model = tiny_model(alum=alum, dropout=0.1)
        torch.manual_seed(11)
        out = model(**batch)
        out.loss.backward()
        grads.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))


@pytest.mark.parametrize("site", ["embedding_output", "word_embeddings"])
@pytest.mark.parametrize("masked_only", [True, False])
def test_adversarial_term_matches_a_rederivation_with_hooks_on_the_hf_model(site, masked_only):
    """K=0 fixes δ at its seeded init; the reference adds δ with a forward hook on HF's own model."""
    cfg = AlumConfig(steps=0, init_std=1e-2, units="absolute", alpha=3.0, site=site, masked_only=masked_only)
    model = tiny_model(alum=cfg)  # dropout 0: train mode is deterministic
    batch = tiny_batch()
    torch.manual_seed(5)
    out = model(**batch)
    out.loss.backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters()}

    hf = model.to_hf().train()
    torch.manual_seed(5)
    delta = torch.randn(3, 16, 32) * 1e-2  # the same draw as inside the model
    delta = delta * batch["attention_mask"].unsqueeze(-1)  # padding is never perturbed
    target = hf.bert.embeddings if site == "embedding_output" else hf.bert.embeddings.word_embeddings
    args = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                token_type_ids=batch["token_type_ids"])
    clean = hf(**args).logits
    handle = target.register_forward_hook(lambda module, inputs, output: output + delta)
    adv = hf(**args).logits
    handle.remove()
    rows = batch["mlm_labels"] != -100 if masked_only else batch["attention_mask"] == 1
    mlm = F.cross_entropy(clean[batch["mlm_labels"] != -100], batch["mlm_labels"][batch["mlm_labels"] != -100])
    adv_loss = sym_kl(adv[rows], clean[rows])
    torch.testing.assert_close(out.adv_loss, adv_loss, atol=1e-7, rtol=1e-4)
    (mlm + 3.0 * adv_loss).backward()
    for name, p in hf.named_parameters():
        torch.testing.assert_close(ours[name], p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_options_change_the_adversarial_loss():
    batch = tiny_batch()
    losses = {}
    for key, cfg in {"base": AlumConfig(steps=0, init_std=1e-2, units="absolute"),
                     "site": AlumConfig(steps=0, init_std=1e-2, units="absolute", site="word_embeddings"),
                     "all": AlumConfig(steps=0, init_std=1e-2, units="absolute", masked_only=False)}.items():
        torch.manual_seed(0)
        losses[key] = tiny_model(alum=cfg)(**batch).adv_loss.item()
    assert len({round(v, 9) for v in losses.values()}) == 3


@pytest.mark.parametrize("arch", ["bert", "roberta"])
@pytest.mark.parametrize("site", ["embedding_output", "word_embeddings"])
def test_embed_then_encode_from_equals_the_backbone(arch, site):
    model = tiny_model(arch).eval()
    batch = tiny_batch()
    types = None if arch == "roberta" else batch["token_type_ids"]
    backbone = model.backbone
    ref = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   token_type_ids=types).last_hidden_state
    ours = encode_from(backbone, embed(backbone, batch["input_ids"], types, site), batch["attention_mask"], site, types)
    real = batch["attention_mask"] == 1
    torch.testing.assert_close(ours[real], ref[real], atol=1e-5, rtol=1e-5)


def test_a_batch_without_masked_tokens_gives_zero_loss_not_nan():
    model = tiny_model(alum=AlumConfig())
    batch = tiny_batch()
    batch["mlm_labels"] = torch.full_like(batch["mlm_labels"], -100)
    out = model(**batch)
    assert out.loss.item() == 0.0 and out.masked_count.item() == 0
    out.loss.backward()


def test_load_model_roundtrip_and_clear_errors(tmp_path):
    model = tiny_model(alum=AlumConfig()).eval()
    model.to_hf().save_pretrained(tmp_path / "hf")
    loaded = load_model(tmp_path / "hf").eval()
    batch = tiny_batch()
    torch.testing.assert_close(loaded(**batch).mlm_logits, model(**batch).mlm_logits)
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(UserError, match="expected 'bert' or 'roberta'"):
        load_model(tmp_path / "bad")
