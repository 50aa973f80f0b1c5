"""Thread defaults: each worker leaves a core to its event loop, and never asks for none."""

import pytest

from aeserve.serving import settings as settings_module
from aeserve.serving.settings import Settings, intra_op_threads


@pytest.mark.parametrize(("cores", "workers", "expected"), [
    (1, 1, 1), (2, 1, 1), (16, 1, 15), (16, 4, 3), (8, 8, 1), (4, 8, 1)])
def test_default_threads_leave_a_core_per_worker(monkeypatch, cores, workers, expected):
    monkeypatch.setattr(settings_module.os, "cpu_count", lambda: cores)
    assert intra_op_threads(Settings(workers=workers)) == expected


def test_an_explicit_thread_count_wins(monkeypatch):
    monkeypatch.setattr(settings_module.os, "cpu_count", lambda: 16)
    assert intra_op_threads(Settings(intra_op_threads=6, workers=2)) == 6
