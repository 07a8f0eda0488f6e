"""Export -> transformers' Auto classes load it with identical logits and an identical tokenizer."""

from __future__ import annotations

import pytest
import torch
from pretrain_tiny import build_corpus, lee_documents
from transformers import AutoModelForMaskedLM, AutoTokenizer

from data_tools.errors import UserError
from pretrain.export import save_hf
from pretrain.model import build_model

torch.set_num_threads(1)


@pytest.mark.parametrize("arch,kind,nsp", [("bert", "wordpiece", False), ("bert", "wordpiece", True),
                                           ("roberta", "sentencepiece", False)])
def test_export_loads_with_auto_classes_and_same_logits(tmp_path, arch, kind, nsp):
    tok, _ = build_corpus(tmp_path, kind, vocab_size=300, limit=40)
    model = build_model(vocab_size=tok.vocab_size, arch=arch, hidden_size=32, num_layers=2, num_heads=2,
                        max_position_embeddings=64, nsp=nsp, pad_token_id=tok.pad_id, cls_token_id=tok.cls_id,
                        sep_token_id=tok.sep_id, seed=0).eval()
    out = save_hf(model, tok, tmp_path / "export")
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    hf_tok = AutoTokenizer.from_pretrained(out)
    hf = AutoModelForMaskedLM.from_pretrained(out).eval()
    texts = [s for d in lee_documents(5) for s in d][:6]
    for text in texts:
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == tok.encode(text)
    enc = hf_tok(texts[:2], texts[2:4], padding=True, truncation=True, max_length=60, return_tensors="pt")
    ids = enc["input_ids"]
    assert ids[0, 0].item() == tok.cls_id and tok.sep_id in ids[0].tolist()
    labels = torch.where(enc["attention_mask"].bool(), ids, -100)  # predict every real token
    types = enc.get("token_type_ids", torch.zeros_like(ids))
    ours = model(ids, enc["attention_mask"], types, labels)
    theirs = hf(**enc).logits
    torch.testing.assert_close(ours.mlm_logits, theirs[labels != -100], atol=1e-5, rtol=1e-5)


def test_state_dict_export_and_refusals(tmp_path):
    tok, _ = build_corpus(tmp_path, "wordpiece", vocab_size=300, limit=40)
    model = build_model(vocab_size=tok.vocab_size, hidden_size=32, num_layers=1, num_heads=2, seed=1).eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # as DeepSpeed names them
    out = save_hf(state, tok, tmp_path / "from_state", config=model.config, extra_info={"step": 7})
    again = save_hf(model, tok, out)  # replacing an earlier export is fine
    hf = AutoModelForMaskedLM.from_pretrained(again).eval()
    ids = torch.tensor([tok.encode("the minister said the fire was contained")])
    torch.testing.assert_close(hf(input_ids=ids).logits, model.to_hf().eval()(input_ids=ids).logits)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an earlier model export"):
        save_hf(model, tok, tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    small = build_model(vocab_size=50, hidden_size=32, num_layers=1, num_heads=2)
    with pytest.raises(UserError, match="only 50"):
        save_hf(small, tok, tmp_path / "small")
