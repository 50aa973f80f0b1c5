"""The benchmark protocol's groups: every data set in one development group, the leave-one-group-out
summary choosing on two groups and reporting on the third."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bench.protocol import dataset_paths, group_of, group_table, leave_one_group_out


def test_groups_of_the_three_kinds_of_file_name() -> None:
    assert group_of("6_cardio") == "selection"
    assert group_of("33_skin") == "confirmation"
    assert group_of("CV_ResNet18_MVTec-AD_cable") == "embeddings"
    assert group_of("NLP_BERT_20news_3") == "embeddings"


def test_numbered_sets_sort_by_number_and_embeddings_by_name(tmp_path: Path) -> None:
    for stem in ("CV_b", "10_x", "2_y", "NLP_a", "16_http"):
        (tmp_path / f"{stem}.npz").touch()
    assert [p.stem for p in dataset_paths(tmp_path)] == ["2_y", "10_x", "CV_b", "NLP_a"]


def test_leave_one_group_out_chooses_on_the_other_groups() -> None:
    # Rule "a" wins selection and confirmation, "b" wins the embeddings only.
    means = {("a", "6_cardio"): 0.9, ("b", "6_cardio"): 0.7,
             ("a", "33_skin"): 0.8, ("b", "33_skin"): 0.6,
             ("a", "CV_x"): 0.5, ("b", "CV_x"): 0.9}
    frame = pd.DataFrame([{"score": rule, "dataset": ds, "seed": seed, "setting": "one-class",
                           "roc_auc": value + (0.01 if seed else -0.01)}
                          for (rule, ds), value in means.items() for seed in (0, 1)])
    table = group_table(frame, "score")
    assert table.loc["a", ("one-class", "selection")] == pytest.approx(0.9)  # seeds averaged
    summary = leave_one_group_out(table).set_index("held out")
    # Held out the embeddings, the other two groups choose "a", which scores 0.5 there.
    assert summary.loc["embeddings", "chosen on the others"] == "a"
    assert summary.loc["embeddings", "its mean there"] == 0.5
    assert summary.loc["embeddings", "best there"] == "b"
    # Held out selection, the others' mean is a: (0.8 + 0.5) / 2 = 0.65, b: 0.75: "b".
    assert summary.loc["selection", "chosen on the others"] == "b"
    assert summary.loc["selection", "its mean there"] == 0.7
