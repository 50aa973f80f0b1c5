"""The CUDA execution provider, on a machine that has one (bench/gpu_check.sh runs these).

Skipped where onnxruntime offers no CUDA provider: the CPU-only checks of the same settings
(`AESERVE_PROVIDER=cuda` refusing to start) live in tests/integration/test_operations.py.
"""

from __future__ import annotations

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers import ROOT, server_process

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="onnxruntime has no CUDA provider here (install the gpu extra on a GPU machine)")


@pytest.mark.parametrize("provider", ["cuda", "auto"])
def test_cuda_is_active_and_scores_match_cpu(provider):
    from sklearn.datasets import load_breast_cancer

    rows = load_breast_cancer().data[:64].tolist()
    with server_process(ROOT / "models", AESERVE_PROVIDER="cpu") as cpu:
        expected = httpx.post(f"{cpu.url}/anomaly-score", json={"instances": rows}).json()
    with server_process(ROOT / "models", AESERVE_PROVIDER=provider) as gpu:
        detail = httpx.get(f"{gpu.url}/models/breast-cancer").json()
        got = httpx.post(f"{gpu.url}/anomaly-score", json={"instances": rows}).json()
        metrics = httpx.get(f"{gpu.url}/metrics").text
    assert detail["providers"][0] == "CUDAExecutionProvider"
    assert 'providers="CUDAExecutionProvider,CPUExecutionProvider"' in metrics
    np.testing.assert_allclose(got["scores"], expected["scores"], rtol=1e-3, atol=1e-5)
