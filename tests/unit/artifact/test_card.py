"""The model card schema: what it accepts, what it refuses, and that it round-trips."""

import json

import pytest
from pydantic import ValidationError

from aeserve.artifact.card import ModelCard


def card_dict(**overrides) -> dict:
    base = {
        "name": "demo",
        "version": 1,
        "created_at": "2026-01-01T00:00:00Z",
        "architecture": {"variant": "ae", "hidden_sizes": [2], "activation": "sigmoid",
                         "decoder_activation": "identity", "embedding_dim": 2},
        "input_dim": 3,
        "feature_names": ["a", "b", "c"],
        "preprocessing": {"kind": "standard", "offset": [0, 0, 0], "scale": [1, 2, 3]},
        "threshold": 1.5,
        "threshold_rule": "quantile:0.99",
        "score_quantiles": [i / 100 for i in range(101)],
        "training": {"epochs_run": 3, "best_epoch": 2, "train_loss": 0.5, "val_loss": 0.6,
                     "seed": 0, "learning_rate": 0.01, "batch_size": 64, "rows_train": 8,
                     "rows_validation": 2, "data_fingerprint": "f" * 64, "data_source": "d.csv",
                     "fit_s": 0.5, "duration_s": 1.0, "command": "aeserve train",
                     "torch_version": "2.13.0"},
        "onnx_opset": 17,
        "onnx_sha256": "a" * 64,
        "parity_max_abs_error": 1e-6,
        "parity_rows": 1000,
    }
    base.update(overrides)
    return base


def test_valid_card_round_trips():
    card = ModelCard.model_validate(card_dict())
    again = ModelCard.model_validate_json(card.to_json())
    assert again == card
    assert json.loads(card.to_json())["schema_version"] == 2


def test_a_version_1_card_still_reads_and_a_reference_is_checked():
    assert ModelCard.model_validate(card_dict(schema_version=1)).reference is None
    bins = {"edges": [0.0, 1.0], "shares": [0.25, 0.5, 0.25]}
    reference = {"rows": 100, "features": [bins] * 3, "score": bins}
    card = ModelCard.model_validate(card_dict(reference=reference))
    assert ModelCard.model_validate_json(card.to_json()).reference.features[1].shares == [
        0.25, 0.5, 0.25]
    for bad, words in [({**reference, "features": [bins] * 2}, "one entry per feature"),
                       ({**reference, "score": {"edges": [1.0, 0.0], "shares": [0.2, 0.6, 0.2]}},
                        "non-decreasing"),
                       ({**reference, "score": {"edges": [0.0], "shares": [0.5, 0.6]}},
                        "add up to 1"),
                       ({**reference, "score": {"edges": [0.0], "shares": [1.0]}},
                        "one share more")]:
        with pytest.raises(ValueError, match=words):
            ModelCard.model_validate(card_dict(reference=bad))


def test_a_cauchy_score_card_round_trips_with_its_scales():
    card = ModelCard.model_validate(card_dict(score={"kind": "residual_cauchy",
                                                     "residual_scale": [0.5, 1.0, 2.0]}))
    assert ModelCard.model_validate_json(card.to_json()).score.residual_scale == [0.5, 1.0, 2.0]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"schema_version": 4}, "schema_version"),
        ({"schema_version": 3}, "only there"),
        ({"name": "../etc"}, "not a valid path component"),
        ({"name": "demo\n"}, "not a valid path component"),
        ({"threshold": float("nan")}, "finite"),
        ({"threshold": float("inf")}, "finite"),
        ({"score_quantiles": [i / 100 for i in range(100)] + [float("inf")]}, "finite"),
        ({"feature_names": ["a", "b"]}, "2 names for input_dim 3"),
        ({"feature_names": ["a", "a", "b"]}, "unique"),
        ({"score_quantiles": [0.0] * 100}, "101 values"),
        ({"score_quantiles": [1.0] + [0.0] * 100}, "non-decreasing"),
        ({"onnx_sha256": "xyz"}, "onnx_sha256"),
        ({"preprocessing": {"kind": "standard", "offset": [0, 0, 0], "scale": [1, 0, 1]}},
         "positive"),
        ({"surprise": True}, "Extra inputs"),
        ({"version": 0}, "version"),
        ({"score": {"kind": "residual_cauchy"}}, "residual_scale is given"),
        ({"score": {"kind": "mse_scaled", "residual_scale": [1, 1, 1]}}, "only with it"),
        ({"score": {"kind": "residual_cauchy", "residual_scale": [1, 0, 1]}}, "positive finite"),
        ({"score": {"kind": "residual_cauchy", "residual_scale": [1, 1]}},
         "residual_scale length"),
    ],
)
def test_invalid_cards_are_refused(overrides, message):
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(card_dict(**overrides))


def windowed_card_dict(**overrides) -> dict:
    """A card for windows of 3 readings of one feature, 'a'."""
    return card_dict(**{"schema_version": 3, "window": {"size": 3, "features": ["a"],
                                                        "series_column": "machine"},
                        "feature_names": ["a[t-2]", "a[t-1]", "a[t]"], **overrides})


def test_a_windowed_card_round_trips_as_schema_version_3():
    card = ModelCard.model_validate(windowed_card_dict())
    assert card.window.size == 3 and card.window.stride == 1
    assert ModelCard.model_validate_json(card.to_json()) == card


@pytest.mark.parametrize(("overrides", "message"), [
    ({"schema_version": 2}, "only there"),
    ({"feature_names": ["a[t]", "a[t-1]", "a[t-2]"]}, "oldest first"),
    ({"window": {"size": 1, "features": ["a", "b", "c"]}}, "greater than or equal to 2"),
])
def test_a_windowed_card_must_say_its_window_consistently(overrides, message):
    with pytest.raises(ValidationError, match=message):
        ModelCard.model_validate(windowed_card_dict(**overrides))


def test_a_card_says_what_one_reading_holds_windowed_or_not():
    row = ModelCard.model_validate(card_dict())
    assert row.window_size == 1 and row.reading_features == ["a", "b", "c"]
    windowed = ModelCard.model_validate(windowed_card_dict())
    assert windowed.window_size == 3 and windowed.reading_features == ["a"]
