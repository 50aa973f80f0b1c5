#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in one command: swap onnxruntime for onnxruntime-gpu in the
# project's virtualenv, run the execution-provider tests (CUDA active, scores equal to CPU, strict
# mode), and compare CPU and CUDA throughput in process. Output: bench/results/gpu_check.md.
set -euo pipefail
cd "$(dirname "$0")/.."
make install
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
.venv/bin/python -m pip uninstall --quiet --yes onnxruntime
.venv/bin/python -m pip install --quiet -e '.[gpu]'
.venv/bin/python -c "import onnxruntime as o; print('providers:', o.get_available_providers())"
out=bench/results/gpu_check.md
{
  echo "# CUDA execution provider check"
  echo
  echo "GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1);" \
       "$(nproc) CPU cores. Reproduce: bench/gpu_check.sh"
  echo
  echo '```'
  .venv/bin/python -m pytest -q tests/gpu tests/integration/test_operations.py -k "cuda or provider" 2>&1 | tail -5
  echo '```'
  echo
  .venv/bin/python bench/provider_throughput.py
} | tee "$out"
# Leave the CPU build in place for the rest of the project's commands.
.venv/bin/python -m pip uninstall --quiet --yes onnxruntime-gpu
.venv/bin/python -m pip install --quiet --force-reinstall 'onnxruntime>=1.18'
