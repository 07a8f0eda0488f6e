"""--alum: the task loss plus alpha times pretrain.alum's adversarial term, on HF task models."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoModelForSequenceClassification, AutoTokenizer

from finetune.classify import collate, encode_examples
from finetune.data import TaskLayout, read_examples
from finetune.modeling import train_loss
from pretrain.alum import AlumConfig, adversarial_loss


def _batch(model_dir, bbc, n=6, qa=False):
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ex = read_examples(bbc / "dev.tsv", TaskLayout())
    ex.text_a, ex.labels = ex.text_a[:n], ex.labels[:n]
    labels = {lab: i for i, lab in enumerate(sorted(set(read_examples(bbc / "train.tsv", TaskLayout()).labels)))}
    batch = collate(encode_examples(tok, ex, 48, labels), list(range(n)), tok.pad_token_id, False)
    if qa:
        del batch["labels"]
        batch["start_positions"] = torch.tensor([3, 5, 0, 7, 2, 9])
        batch["end_positions"] = torch.tensor([4, 9, 0, 7, 6, 47])
    return batch


def _model(model_dir, qa):
    cls = AutoModelForQuestionAnswering if qa else AutoModelForSequenceClassification
    kw = {} if qa else {"num_labels": 5}
    torch.manual_seed(0)
    return cls.from_pretrained(str(model_dir), **kw).train()  # dropout on: RNG order must match too


@pytest.mark.parametrize("arch,qa", [("bert", False), ("roberta", False), ("bert", True)])
def test_alpha_zero_gives_exactly_the_plain_loss_and_gradients(arch, qa, tiny_bert, tiny_roberta, bbc):
    model_dir = tiny_bert if arch == "bert" else tiny_roberta
    batch = _batch(model_dir, bbc, qa=qa)
    results = []
    for alum in (None, AlumConfig(alpha=0.0, init_std=1e-2)):
        model = _model(model_dir, qa)
        torch.manual_seed(5)
        out = train_loss(model, batch, alum, generator=torch.Generator().manual_seed(1))
        out["loss"].backward()
        results.append((out["loss"].detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]))
        if alum is not None:
            assert out["adv_loss"] is None  # α = 0 is plain training: no extra forward, no RNG draw
    assert torch.equal(results[0][0], results[1][0])
    assert len(results[0][1]) == len(results[1][1])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))


@pytest.mark.parametrize("site", ["word_embeddings", "embedding_output"])
def test_alum_adds_alpha_times_the_adversarial_term_of_pretrain_alum(site, tiny_bert, bbc):
    batch = _batch(tiny_bert, bbc)
    model = _model(tiny_bert, qa=False).eval()  # no dropout: the re-derivation below must see the same net
    cfg = AlumConfig(alpha=2.0, init_std=1e-2, steps=1, site=site)
    out = train_loss(model, batch, cfg, generator=torch.Generator().manual_seed(3))
    plain = model(**batch).loss
    assert torch.allclose(out["task_loss"], plain.detach(), atol=1e-6)
    assert torch.allclose(out["loss"], plain + 2.0 * out["adv_loss"], atol=1e-6)
    # Re-derived on Hugging Face's own forward: hooks replace the embedding module's output by the
    # perturbed one, so nothing of finetune's encoder path is reused.
    emb = model.bert.embeddings.word_embeddings if site == "word_embeddings" else model.bert.embeddings
    kw = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
          "token_type_ids": batch["token_type_ids"]}
    with torch.no_grad():
        clean_embeds = emb(batch["input_ids"]) if site == "word_embeddings" else emb(
            input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
    clean_logits = model(**kw).logits

    def forward_fn(e):
        handle = emb.register_forward_hook(lambda m, i, o: e)
        try:
            return model(**kw).logits
        finally:
            handle.remove()

    ref = adversarial_loss(clean_embeds, clean_logits, forward_fn, cfg, generator=torch.Generator().manual_seed(3))
    assert ref.loss > 0
    torch.testing.assert_close(out["adv_loss"], ref.loss.detach(), atol=1e-6, rtol=1e-4)


def test_alum_refuses_regression(tiny_bert, bbc):
    from data_tools.errors import UserError

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=1)
    batch = _batch(tiny_bert, bbc)
    batch["labels"] = batch["labels"].float()
    with pytest.raises(UserError, match="regression"):
        train_loss(model, batch, AlumConfig(alpha=1.0))


def test_alum_run_logs_its_diagnostics_and_warns_once_when_not_adversarial(bbc, tiny_bert, tmp_path):
    """metrics.jsonl rows and TensorBoard's alum/ tags; the authors' normalisation (gain ≈ 1) warns once."""
    import json

    from ft_helpers import cli
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dev = tmp_path / "dev.tsv"
    lines = (bbc / "dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    dev.write_text("".join(lines[:57]), encoding="utf-8")
    out = tmp_path / "run"
    code, _, err = cli("classify", "--model", str(tiny_bert), "--train", str(dev), "--dev", str(dev), "-o", str(out),
                       "--epochs", "1", "--batch-size", "8", "--max-seq-len", "32", "--threads", "1", "--log-every",
                       "1", "--alum", "--alum-variant", "authors", "--alum-gain-interval", "2")
    assert code == 0, err[-2000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 8))
    for r in rows:
        assert {"delta_ratio", "ascent_gain", "delta_cos_init", "adv_share", "ascent_overflows"} <= set(r)
        assert (r["ascent_gain"] is None) == (r["step"] % 2 == 0)  # measured on steps 1, 3, 5, 7
        assert r["delta_cos_init"] > 0.9  # authors: δ stays where its random init pointed
    assert sum("not adversarial" in line for line in err.splitlines()) == 1
    config = json.loads((out / "config.json").read_text())["alum"]
    assert config["norm"] == "token_linf" and config["variant"] == "authors"  # resolved values recorded
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    assert {"alum/delta_ratio", "alum/ascent_gain", "alum/adv_share"} <= set(acc.Tags()["scalars"])
