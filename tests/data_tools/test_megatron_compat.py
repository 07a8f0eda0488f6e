"""Both directions against Megatron's own reader and builder (megatron-core, installed --no-deps)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from data_tools.indexed import IndexedCorpus, IndexedCorpusWriter

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import torch
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder


def docs(seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 60000, rng.integers(0, 12)) for _ in range(rng.integers(1, 6))] for _ in range(25)]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_our_files_open_in_megatron(tmp_path, dtype):
    data = docs()
    with IndexedCorpusWriter(tmp_path / "ours", dtype) as w:
        for doc in data:
            for sent in doc:
                w.add_sequence(sent)
            w.end_document()
    meg = IndexedDataset(str(tmp_path / "ours"))
    flat = [s for d in data for s in d]
    assert len(meg) == len(flat)
    assert meg.sequence_lengths.tolist() == [len(s) for s in flat]
    assert meg.document_indices.tolist() == IndexedCorpus(tmp_path / "ours").document_indices.tolist()
    assert len(meg.document_indices) == len(data) + 1
    for i, sent in enumerate(flat):
        got = meg[i]
        assert got.dtype == np.dtype(dtype) and got.tolist() == sent.tolist()


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_megatron_files_open_in_ours(tmp_path, dtype):
    data = docs(1)
    builder = IndexedDatasetBuilder(str(tmp_path / "meg.bin"), dtype=dtype)
    for doc in data:
        for sent in doc:
            builder.add_item(torch.tensor(sent.astype(np.int64)))
        builder.end_document()
    builder.finalize(str(tmp_path / "meg.idx"))
    ours = IndexedCorpus(tmp_path / "meg")
    assert ours.dtype == np.dtype(dtype) and ours.num_documents == len(data)
    for d, doc in enumerate(data):
        assert [s.tolist() for s in ours.document(d)] == [s.tolist() for s in doc]


def test_same_bytes_as_megatron_builder(tmp_path):
    """Given the same sequences and documents, our writer emits byte-identical .bin and .idx."""
    data = docs(2)
    builder = IndexedDatasetBuilder(str(tmp_path / "meg.bin"), dtype=np.uint16)
    with IndexedCorpusWriter(tmp_path / "ours", np.uint16) as w:
        for doc in data:
            for sent in doc:
                builder.add_item(torch.tensor(sent.astype(np.int64)))
                w.add_sequence(sent)
            builder.end_document()
            w.end_document()
    builder.finalize(str(tmp_path / "meg.idx"))
    for ext in ("bin", "idx"):
        assert (tmp_path / f"ours.{ext}").read_bytes() == (tmp_path / f"meg.{ext}").read_bytes()


def test_megatron_multimodal_index_opens(tmp_path):
    """Megatron's multimodal files append one mode byte per sequence to the .idx; the tokens still read."""
    builder = IndexedDatasetBuilder(str(tmp_path / "mm.bin"), dtype=np.int32, multimodal=True)
    builder.add_item(torch.tensor([1, 2, 3]), mode=1)
    builder.add_item(torch.tensor([4]), mode=0)
    builder.end_document()
    builder.finalize(str(tmp_path / "mm.idx"))
    ours = IndexedCorpus(tmp_path / "mm")
    assert [s.tolist() for s in ours.document(0)] == [[1, 2, 3], [4]]
