"""Per-series state: windows across requests, eviction and expiry, alarms per series."""

import numpy as np

from aeserve.artifact.alarms import AlarmPolicy
from aeserve.artifact.streams import SeriesStore, is_series_name
from aeserve.artifact.windows import flatten, series_order, window_rows


def store(size=3, width=2, **kw) -> SeriesStore:
    kw.setdefault("max_series", 10)
    kw.setdefault("idle_s", 60.0)
    return SeriesStore(size, width, AlarmPolicy(smoothing="none", k=1, n=1), **kw)


def feed(s: SeriesStore, series: str, readings: np.ndarray):
    """Cut one series' readings into windows and keep them, as a request does once scored."""
    (cut,) = s.cut([(series, readings)])
    s.take(series, cut)
    return cut


def test_readings_sent_a_few_at_a_time_make_the_batch_windows():
    X = np.arange(14, dtype=np.float32).reshape(7, 2)
    expected = flatten(X, window_rows(*series_order(None, None, 7), 3))
    s = store()
    got, ends = [], []
    for part, offset in ((X[:1], 0), (X[1:2], 1), (X[2:5], 2), (X[5:], 5)):
        w = feed(s, "a", part)
        got.append(w.windows)
        ends.extend((w.ends + offset).tolist())
    assert np.array_equal(np.concatenate(got), expected)
    assert ends == [2, 3, 4, 5, 6]  # the first two readings complete no window


def test_series_do_not_share_readings():
    s = store(size=2, width=1)
    assert feed(s, "a", np.array([[1.0]])).windows.shape == (0, 2)
    assert feed(s, "b", np.array([[5.0]])).windows.shape == (0, 2)
    assert feed(s, "a", np.array([[2.0]])).windows.tolist() == [[1.0, 2.0]]
    assert feed(s, "b", np.array([[6.0], [7.0]])).windows.tolist() == [[5.0, 6.0], [6.0, 7.0]]


def test_the_least_recently_seen_series_is_evicted_beyond_the_maximum():
    s = store(size=2, width=1, max_series=2)
    for name in ("a", "b", "a", "c"):  # c evicts b, the least recently seen
        feed(s, name, np.array([[1.0]]))
    assert list(s.series) == ["a", "c"] and s.counts.evicted == 1
    for i in range(1000):
        feed(s, f"s{i}", np.array([[1.0]]))
    assert len(s) == 2 and s.counts.evicted == 1001


def test_an_idle_series_expires_and_starts_over():
    now = [0.0]
    s = store(size=2, width=1, idle_s=10.0, clock=lambda: now[0])
    feed(s, "a", np.array([[1.0]]))
    now[0] = 5.0
    feed(s, "b", np.array([[1.0]]))
    now[0] = 12.0  # a idle 12 s, b 7 s
    assert feed(s, "a", np.array([[2.0]])).windows.shape == (0, 2)  # a new window
    assert s.counts.expired == 1 and list(s.series) == ["b", "a"]


def test_each_series_has_its_own_alarm():
    s = store()
    feed(s, "a", np.zeros((1, 2))), feed(s, "b", np.zeros((1, 2)))
    (cut,) = s.cut([("a", np.zeros((3, 2)))])  # two readings complete a's first windows
    answer = s.answer("a", cut, np.array([2.0, 2.0]), 1.0)
    assert answer["alarm"] == [False, True, True] and answer["events"] == [None, "start", None]
    assert s.in_alarm("a") and not s.in_alarm("b") and not s.in_alarm("unknown")
    assert s.counts.events == {"start": 1, "end": 0} and s.active_alarms == 1
    for i in range(10):  # "a" is evicted, in alarm
        feed(s, f"s{i}", np.zeros((1, 2)))
    assert "a" not in s.series and s.active_alarms == 0


def test_memory_stays_bounded_with_100000_series():
    import tracemalloc

    s = SeriesStore(8, 4, AlarmPolicy(), max_series=10_000, idle_s=3600.0)
    reading = np.ones((1, 4), dtype=np.float32)
    tracemalloc.start()
    try:
        for i in range(100_000):
            feed(s, f"sensor-{i}", reading)
            if i == 9_999:
                full, _ = tracemalloc.get_traced_memory()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(s) == 10_000 and s.counts.evicted == 90_000
    # 90,000 more series than it keeps, and not a series' worth more memory per 100 of them
    assert after < full * 1.05
    assert full / 10_000 < 2048  # bytes per series: 7 x 4 float32 readings and an alarm


def test_a_lone_window_is_run_twice_over_and_more_as_they_are():
    from aeserve.artifact.streams import runnable

    one = np.array([[1.0, 2.0]], dtype=np.float32)
    assert runnable(one).tolist() == [[1.0, 2.0], [1.0, 2.0]]
    two = np.zeros((2, 2), dtype=np.float32)
    assert runnable(two) is two


def test_counts_advance_reports_only_what_happened_since():
    from aeserve.artifact.streams import StoreCounts

    reported, now = StoreCounts(), StoreCounts(evicted=3, events={"start": 2, "end": 0})
    assert reported.advance(now) == [("event", "start", 2), ("dropped", "evicted", 3)]
    now.events["end"], now.expired = 1, 4
    assert reported.advance(now) == [("event", "end", 1), ("dropped", "expired", 4)]
    assert reported.advance(now) == []


def test_a_series_is_named_by_a_short_string_or_an_integer():
    from aeserve.artifact.streams import is_series_name

    assert is_series_name("pump-7") and is_series_name(7) and is_series_name("x" * 256)
    for bad in ("", "x" * 257, True, 1.5, None, ["a"], 10 ** 256):
        assert not is_series_name(bad), bad


def test_cutting_changes_nothing_until_the_readings_are_taken():
    """Readings whose scoring failed (a refused request) leave no trace: the next request
    continues from the readings before them."""
    s = store(size=2, width=1)
    feed(s, "a", np.array([[1.0]]))
    s.cut([("a", np.array([[1e30]])), ("new", np.array([[5.0]]))])  # scored, then refused
    assert list(s.series) == ["a"]
    assert feed(s, "a", np.array([[2.0]])).windows.tolist() == [[1.0, 2.0]]


def test_a_series_sent_twice_in_one_request_continues_its_own_readings():
    s = store(size=3, width=1)
    first, second = s.cut([("a", np.array([[1.0], [2.0]])), ("a", np.array([[3.0], [4.0]]))])
    assert first.windows.shape == (0, 3) and first.ends.tolist() == []
    assert second.windows.tolist() == [[1.0, 2.0, 3.0], [2.0, 3.0, 4.0]]
    assert second.ends.tolist() == [0, 1]
    s.answer("a", first, np.empty(0), 1.0)
    s.answer("a", second, np.zeros(2), 1.0)
    assert feed(s, "a", np.array([[5.0]])).windows.tolist() == [[3.0, 4.0, 5.0]]


def test_more_series_in_one_batch_than_are_kept_lose_no_readings_of_their_own():
    """A batch of A, B, C with two series kept: C's arrival evicts A after A's readings were
    answered, and the next readings of B still complete B's window."""
    s = store(size=2, width=1, max_series=2)
    cuts = s.cut([("a", np.array([[1.0]])), ("b", np.array([[2.0]])), ("c", np.array([[3.0]]))])
    for name, cut in zip("abc", cuts, strict=True):
        s.answer(name, cut, np.empty(0), 1.0)
    assert list(s.series) == ["b", "c"] and s.counts.evicted == 1
    assert feed(s, "b", np.array([[4.0]])).windows.tolist() == [[2.0, 4.0]]


def test_an_answer_says_each_readings_score_and_alarm():
    s = store(size=2, width=1)
    (cut,) = s.cut([("a", np.array([[1.0], [2.0], [3.0]]))])
    answer = s.answer("a", cut, np.array([2.0, 0.5]), 1.0)
    assert answer["scores"] == [None, 2.0, 0.5]
    assert answer["is_anomaly"] == [None, True, False]
    assert answer["alarm"] == [False, True, False]
    assert answer["events"] == [None, "start", "end"]


def test_a_forgotten_series_starts_over_and_is_counted():
    s = store(size=2, width=1)
    (cut,) = s.cut([("a", np.array([[1.0], [2.0]]))])
    s.answer("a", cut, np.array([5.0]), 1.0)  # in alarm
    assert s.active_alarms == 1
    s.forget("a")
    s.forget("never-seen")
    assert len(s) == 0 and s.active_alarms == 0 and s.counts.overflow == 1
    assert feed(s, "a", np.array([[3.0]])).windows.shape == (0, 2)


def test_a_series_name_must_encode_as_utf8():
    assert is_series_name("pump-7") and is_series_name(7) and is_series_name("p\u00fcmpe")
    assert not is_series_name("pump-\ud800")
