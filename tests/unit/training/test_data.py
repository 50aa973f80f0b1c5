import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aeserve.training.data import ColumnChoice, DataError, load_dataset


def write(path, text):
    path.write_text(text)
    return path


def test_csv_with_label_column(tmp_path):
    path = write(tmp_path / "d.csv", "a,b,y\n1,2,0\n3,4.5,1\n")
    data = load_dataset(path, "y")
    assert data.feature_names == ["a", "b"]
    assert data.X.tolist() == [[1.0, 2.0], [3.0, 4.5]]
    assert data.y.tolist() == [0, 1]
    assert data.source == "d.csv"


def test_csv_without_label_keeps_every_column(tmp_path):
    data = load_dataset(write(tmp_path / "d.csv", "a,b\n1,2\n3,4\n"))
    assert data.y is None and data.X.shape == (2, 2)


@pytest.mark.parametrize(
    ("text", "label", "message"),
    [
        ("a,b\n1,2\n1,x\n", None, "d.csv: column 'b' is not numeric: line 3 holds 'x'"),
        ("a,b\n1,2\n2,3\n5,\n", None,
         "d.csv: column 'b' has 1 missing values, the first at line 4"),
        ("a,b\n", None, "d.csv: the data has no rows"),
        ("a,y\n1,0\n2,2\n", "y", "only 0 .normal. and 1"),
        ("a,b\n1,2\n", "label", "label column 'label' not in"),
        ("y\n0\n1\n", "y", "no feature columns"),
    ],
)
def test_csv_problems_are_named(tmp_path, text, label, message):
    with pytest.raises(DataError, match=message):
        load_dataset(write(tmp_path / "d.csv", text), label)


def test_a_decimal_comma_among_thousands_of_rows_is_found_with_its_line(tmp_path):
    lines = ["TT4,T3"] + [f"{i}.5,{i}" for i in range(3771)]
    lines[2001] = '"12,5",7'
    with pytest.raises(DataError, match="column 'TT4' is not numeric: line 2002 holds '12,5'"):
        load_dataset(write(tmp_path / "d.csv", "\n".join(lines) + "\n"))


def test_na_tokens_are_values_unless_declared(tmp_path):
    path = write(tmp_path / "d.csv", "a,b\n1,2\n3,n/a\n")
    with pytest.raises(DataError, match="column 'b' is not numeric: line 3 holds 'n/a'"):
        load_dataset(path)
    with pytest.raises(DataError, match="column 'b' has 1 missing values, the first at line 3"):
        load_dataset(path, na_values=["", "n/a"])


@pytest.mark.parametrize("delimiter", [",", ";", "\t", "|"])
def test_the_delimiter_is_recognised(tmp_path, delimiter):
    path = write(tmp_path / "d.csv", delimiter.join(["a", "b", "c"]) + "\n"
                 + delimiter.join(["1", "2.5", "3"]) + "\n" + delimiter.join(["4", "5", "6"]))
    data = load_dataset(path)
    assert data.feature_names == ["a", "b", "c"]
    assert data.X.tolist() == [[1.0, 2.5, 3.0], [4.0, 5.0, 6.0]]


def test_a_given_delimiter_wins(tmp_path):
    path = write(tmp_path / "d.csv", "a;b\n1;2\n")
    assert load_dataset(path, delimiter=";").X.tolist() == [[1.0, 2.0]]
    with pytest.raises(DataError, match="column 'a;b' is not numeric: line 2 holds '1;2'"):
        load_dataset(path, delimiter="|")


def test_parquet_errors_name_the_row(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x1": [1.0, None, 3.0], "x2": ["1", "2", "z"]}), path)
    with pytest.raises(DataError, match=r"d\.parquet: column 'x1' has 1 missing values, the first "
                                        r"at row 2"):
        load_dataset(path)


def test_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x1": [1.0, 2.0], "x2": [3, 4], "is_anomaly": [0, 1]}), path)
    data = load_dataset(path, "is_anomaly")
    assert data.feature_names == ["x1", "x2"]
    assert data.X.tolist() == [[1.0, 3.0], [2.0, 4.0]]
    assert data.y.tolist() == [0, 1]


def test_npz_with_and_without_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.arange(6.0).reshape(3, 2), y=np.array([0, 0, 1]))
    data = load_dataset(path)
    assert data.feature_names == ["x0", "x1"] and data.y.tolist() == [0, 0, 1]
    np.savez(tmp_path / "u.npz", X=np.ones((2, 2)))
    assert load_dataset(tmp_path / "u.npz").y is None


def test_non_finite_values_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(DataError, match=r"d\.npz: non-finite value nan at row 1, column 'x1'"):
        load_dataset(path)


def test_unsupported_extension_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="unsupported data format"):
        load_dataset(write(tmp_path / "d.txt", "1"))
    with pytest.raises(DataError, match="not found"):
        load_dataset(tmp_path / "absent.csv")


def test_fingerprint_tracks_values_and_names(tmp_path):
    a = load_dataset(write(tmp_path / "a.csv", "a,b\n1,2\n"))
    b = load_dataset(write(tmp_path / "b.csv", "a,b\n1,2\n"))
    c = load_dataset(write(tmp_path / "c.csv", "a,c\n1,2\n"))
    d = load_dataset(write(tmp_path / "d.csv", "a,b\n1,3\n"))
    assert a.fingerprint() == b.fingerprint()
    assert len({a.fingerprint(), c.fingerprint(), d.fingerprint()}) == 3


def test_parquet_is_read_a_batch_at_a_time_into_float32(tmp_path, monkeypatch):
    from aeserve.training import data as data_module

    monkeypatch.setattr(data_module, "PARQUET_BATCH_ROWS", 2)  # five rows: three batches
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": [1.5, 2.0, 3.0, 4.0, 5.0], "b": [1, 2, 3, 4, 5],
                             "y": [0, 0, 1, 0, 1]}), path, row_group_size=3)
    data = load_dataset(path, label_column="y")
    assert data.X.dtype == np.float32
    np.testing.assert_array_equal(data.X, [[1.5, 1], [2, 2], [3, 3], [4, 4], [5, 5]])
    assert data.y.tolist() == [0, 0, 1, 0, 1]
    # A bad value in the third batch is named with its row in the file, not in the batch.
    pq.write_table(pa.table({"a": [1.0, 2.0, 3.0, 4.0, 1e39], "b": [1, 2, None, 4, None]}), path)
    with pytest.raises(DataError, match=r"value beyond float32's range \(about 3\.4e38\) 1e\+39 "
                                        r"at row 5, column 'a'"):
        load_dataset(path, choice=ColumnChoice(columns=("a",)))
    with pytest.raises(DataError, match=r"column 'b' has 2 missing values, the first at row 3"):
        load_dataset(path, choice=ColumnChoice(columns=("b",)))
