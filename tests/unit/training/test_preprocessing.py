import numpy as np
import pytest

from aeserve.training.preprocessing import fit_scaler


def test_standard_scaling_by_hand():
    X = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    scaler = fit_scaler(X, "standard")
    # column 0: mean 3, population std sqrt(8/3); column 1 is constant: offset 10, scale 10
    assert scaler.offset.tolist() == [3.0, 10.0]
    assert scaler.scale.tolist() == pytest.approx([np.sqrt(8 / 3), 10.0])
    Z = scaler.transform(X)
    assert Z[:, 1].tolist() == [0.0, 0.0, 0.0]
    assert np.allclose(scaler.inverse_transform(Z), X)


def test_constant_feature_does_not_explode_scores():
    X = np.column_stack([np.linspace(0, 1, 50), np.full(50, 7.0)])
    scaler = fit_scaler(X, "standard")
    moved = scaler.transform(np.array([[0.5, 8.0]]))
    assert moved[0, 1] == pytest.approx(1 / 7)  # one seventh of its value off, not 1e15
    tiny = fit_scaler(np.column_stack([np.arange(5.0), np.full(5, 0.25)]), "standard")
    assert tiny.scale[1] == 1.0  # below 1 in magnitude: unit scale


def test_nearly_constant_large_feature_counts_as_constant():
    X = np.column_stack([np.full(10, 1e6) + np.arange(10) * 1e-6, np.arange(10.0)])
    assert fit_scaler(X, "standard").scale[0] == pytest.approx(1e6)


def test_minmax_maps_training_rows_to_unit_interval():
    X = np.array([[2.0, -1.0], [4.0, 1.0], [3.0, 0.0]])
    scaler = fit_scaler(X, "minmax")
    assert scaler.offset.tolist() == [2.0, -1.0]
    assert scaler.scale.tolist() == [2.0, 2.0]
    Z = scaler.transform(X)
    assert Z.min() == 0.0 and Z.max() == 1.0
    assert Z[2].tolist() == [0.5, 0.5]


def test_unknown_kind_refused():
    with pytest.raises(ValueError, match="unknown scaling"):
        fit_scaler(np.ones((3, 2)), "quantile")


def test_robust_scaling_by_hand():
    X = np.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
    scaler = fit_scaler(X, "robust")
    # median 3; 75th and 25th percentiles 4 and 2: IQR 2, divided by 1.349
    assert scaler.offset.tolist() == [3.0]
    assert scaler.scale.tolist() == pytest.approx([2 / 1.349])
