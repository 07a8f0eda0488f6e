"""Damaged or hostile model files: one line naming the file, no traceback, no code run."""

from __future__ import annotations

import builtins
import shutil

import pytest
import torch
from safetensors.torch import load_file

from data_tools.errors import UserError
from finetune.modeling import load_task_model
from pretrain.model import load_model


class _Payload:
    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return builtins.exec, (self.code,)


def _copy(exported_bert, tmp_path):
    out = tmp_path / "model"
    shutil.copytree(exported_bert, out)
    return out


@pytest.mark.parametrize("load", [lambda d: load_task_model(d, "classify"), lambda d: load_model(d)])
def test_truncated_safetensors(exported_bert, tmp_path, load):
    model = _copy(exported_bert, tmp_path)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(UserError, match=r"model\.safetensors: cannot load the model weights .*damaged or incomplete"):
        load(model)


@pytest.mark.parametrize("load", [lambda d: load_task_model(d, "classify"), lambda d: load_model(d)])
def test_pickle_in_pytorch_model_bin_is_refused_not_run(exported_bert, tmp_path, load):
    model = _copy(exported_bert, tmp_path)
    state = load_file(model / "model.safetensors")
    marker = tmp_path / "pwned"
    state["note"] = _Payload(f"open({str(marker)!r}, 'w').close()")
    torch.save(state, model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"pytorch_model\.bin: holds \S*exec, not just tensors; refusing"):
        load(model)
    assert not marker.exists()
