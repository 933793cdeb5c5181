"""The realness judge: a logistic regression telling generated windows from real ones, and its ROC AUC.

Why this judge: the features (`leadline.training.leadstats.FEATURES`, 16 numbers a window) are few and each has a
meaning, the training sets are small (a few hundred windows of a validation split), and a linear model on
standardised features with an L2 penalty cannot memorise them; its weights say what gives generated lines
away. Fitted by Newton's method (iteratively reweighted least squares), pure numpy, deterministic.

AUC is the Mann-Whitney statistic (ties count half): 0.5 when the judge cannot tell the sets apart, 1.0
when every generated window scores above every real one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Judge:
    """Standardisation and weights of a fitted logistic regression (label 1: generated)."""

    mean: np.ndarray
    scale: np.ndarray
    w: np.ndarray
    b: float

    def score(self, x: np.ndarray) -> np.ndarray:
        """The log-odds that each row of `x` is generated."""
        return ((np.asarray(x, np.float64) - self.mean) / self.scale) @ self.w + self.b


def fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> Judge:
    """Logistic regression of labels `y` (0/1) on rows `x`; `l2` penalises the weights (not the bias)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    mean = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-9] = 1.0  # a constant feature stays 0 after standardising
    z = np.c_[(x - mean) / scale, np.ones(len(x))]
    w = np.zeros(z.shape[1])
    penalty = np.r_[np.full(z.shape[1] - 1, l2), 0.0]
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -30, 30)))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return Judge(mean, scale, w[:-1], float(w[-1]))


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC of `scores` for labels `y` (1 positive): the chance a positive outscores a negative."""
    scores, y = np.asarray(scores, np.float64), np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = first + (counts - 1) / 2.0 + 1.0  # average rank of each group of ties (1-based)
    ranks[order] = np.repeat(mid, counts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def judge_auc(train_gen: np.ndarray, train_real: np.ndarray, test_gen: np.ndarray, test_real: np.ndarray,
              l2: float = 1.0) -> tuple[float, Judge]:
    """Fit on (train_gen vs train_real) feature rows, the AUC on (test_gen vs test_real)."""
    x = np.r_[train_gen, train_real]
    y = np.r_[np.ones(len(train_gen)), np.zeros(len(train_real))]
    j = fit(x, y, l2)
    xt = np.r_[test_gen, test_real]
    yt = np.r_[np.ones(len(test_gen)), np.zeros(len(test_real))]
    return auc(j.score(xt), yt), j
