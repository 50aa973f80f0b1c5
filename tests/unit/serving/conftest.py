"""Serving unit tests run without torch: they use the shipped model in models/, never a
training run, and any `import torch` during a test fails it."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
