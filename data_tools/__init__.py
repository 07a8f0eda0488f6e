"""Corpus building for masked-LM pre-training, without torch: raw dumps to Megatron MMIDIDX corpora.

Commands (``python -m data_tools --help``): ``extract-wiki``, ``extract-owt``, ``train-tokenizer``, ``build``,
``merge``, ``inspect``, ``verify``, ``demo``. Python API: :class:`data_tools.indexed.IndexedCorpus` (reader),
:class:`data_tools.indexed.IndexedCorpusWriter`, :func:`data_tools.indexed.resolve_prefixes`,
:func:`data_tools.tokenizer.load_tokenizer`. Errors a user can fix are :class:`data_tools.errors.UserError`.
"""
