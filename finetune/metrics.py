"""Classification and regression scores, all from scikit-learn / scipy (GLUE's choices)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

CLASSIFY_METRICS = ("accuracy", "f1", "macro_f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman", "mse")


def classification_scores(preds: np.ndarray, golds: np.ndarray, num_labels: int) -> dict[str, float]:
    """Accuracy, F1 (binary: of label id 1, GLUE's MRPC/QQP convention; else macro), macro F1 and MCC.

    Args:
        preds: predicted label ids, shape [N].
        golds: gold label ids, shape [N].
        num_labels: size of the label set.
    Returns:
        ``{"accuracy", "f1", "macro_f1", "mcc"}`` as floats.
    """
    preds, golds = np.asarray(preds), np.asarray(golds)
    labels = list(range(num_labels))
    macro = f1_score(golds, preds, labels=labels, average="macro", zero_division=0)
    f1 = f1_score(golds, preds, pos_label=1, average="binary", zero_division=0) if num_labels == 2 else macro
    return {
        "accuracy": float(accuracy_score(golds, preds)),
        "f1": float(f1),
        "macro_f1": float(macro),
        "mcc": float(matthews_corrcoef(golds, preds)) if len(golds) > 1 else 0.0,
    }


def regression_scores(preds: np.ndarray, golds: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation (STS-B) and mean squared error.

    Args:
        preds: predicted values, shape [N].
        golds: gold values, shape [N].
    Returns:
        ``{"pearson", "spearman", "mse"}``; correlations are 0 when either side is constant.
    """
    from scipy.stats import pearsonr, spearmanr

    preds, golds = np.asarray(preds, dtype=np.float64), np.asarray(golds, dtype=np.float64)
    constant = len(preds) < 2 or np.ptp(preds) == 0 or np.ptp(golds) == 0
    return {
        "pearson": 0.0 if constant else float(pearsonr(preds, golds)[0]),
        "spearman": 0.0 if constant else float(spearmanr(preds, golds)[0]),
        "mse": float(np.mean((preds - golds) ** 2)),
    }


def majority_baseline(golds: np.ndarray) -> float:
    """Accuracy of always predicting the most frequent gold label."""
    golds = np.asarray(golds)
    return float(np.bincount(golds).max() / len(golds)) if len(golds) else 0.0
