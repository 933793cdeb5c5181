"""The validation sweep's cross-validated judge: near 1 on separable sets, near 0.5 on one distribution."""
import numpy as np

from leadline.bench.sweep import cv_auc


def test_cross_validated_judge_tells_separable_sets_and_not_identical_ones():
    rng = np.random.default_rng(1)
    group = np.repeat(np.arange(60), 3)  # 60 sequences, 3 cuts each
    real = rng.normal(size=(180, 4))
    assert cv_auc(real + [3, 0, 0, 0], real[::-1] * 1.0, group) > 0.95
    same = rng.normal(size=(180, 4))
    assert abs(cv_auc(same, real, group) - 0.5) < 0.1
