"""onnxruntime sessions: provider choice, thread settings, and the contract check of a graph.

A CUDA provider that was asked for but is not active after the session is created is an error, not
a silent fallback: onnxruntime quietly drops providers it cannot initialise, so the check reads
`session.get_providers()`, not the list of providers the wheel was built with.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from aeserve.artifact.card import INPUT_NAME, OUTPUT_NAMES, ModelCard
from aeserve.artifact.errors import ModelLoadError, ProviderUnavailable

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

Provider = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class SessionConfig:
    """How one version's onnxruntime session runs. The server fills it from its settings, batch
    scoring and training with their own choices: the artifact knows no server settings."""

    provider: Provider = "auto"
    intra_op_threads: int = 1
    inter_op_threads: int = 1
    spinning: bool = False


#: One thread, provider chosen by what the machine has: a safe default for tools and tests.
DEFAULT_SESSION = SessionConfig()


def requested_providers(provider: str) -> list[str]:
    if provider == "cpu":
        return [CPU]
    if provider == "cuda":
        return [CUDA, CPU]
    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


class ModelSession:
    """One onnxruntime session for one model version, checked against its card."""

    def __init__(self, onnx_path: Path, card: ModelCard,
                 config: SessionConfig = DEFAULT_SESSION, *, graph: bytes | None = None,
                 external_data: dict[str, bytes] | None = None) -> None:
        """The session of the graph at `onnx_path`, or of `graph`, its bytes as checked, with
        its external-data files given as `external_data` (location -> contents): onnxruntime
        then copies the weights at creation instead of mapping the files, so a weights file
        rewritten in place later cannot change what this session serves."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = config.intra_op_threads
        options.inter_op_num_threads = config.inter_op_threads
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if config.spinning else "0")
        options.log_severity_level = 3
        try:
            if external_data:
                names = list(external_data)
                options.add_external_initializers_from_files_in_memory(
                    names, [external_data[n] for n in names],
                    [len(external_data[n]) for n in names])
            self._session = ort.InferenceSession(
                graph if graph is not None else str(onnx_path), options,
                providers=requested_providers(config.provider))
        except Exception as exc:  # onnxruntime raises its own exception types
            # Its messages hold the file's absolute path, which is no business of a client's.
            reason = str(exc).replace(str(onnx_path), onnx_path.name)
            raise ModelLoadError(f"onnxruntime cannot load the graph: {reason}") from exc
        self.providers: list[str] = self._session.get_providers()
        if config.provider == "cuda" and CUDA not in self.providers:
            raise ProviderUnavailable(
                f"CUDA was required, but the CUDA provider is not active (active: "
                f"{self.providers}; available: {ort.get_available_providers()})")
        #: Each output's shape for one row, as the card says: the smoke test checks the graph
        #: against it, and `run` shapes the empty outputs of zero rows by it.
        self._row_shapes: dict[str, tuple[int, ...]] = {
            "embedding": (card.architecture.embedding_dim,), "reconstruction": (card.input_dim,),
            "score": (), "feature_errors": (card.input_dim,)}
        self._check_signature(card.input_dim)
        self._smoke_test(card)

    def _check_signature(self, input_dim: int) -> None:
        inputs = self._session.get_inputs()
        if [i.name for i in inputs] != [INPUT_NAME]:
            raise ModelLoadError(f"graph inputs {[i.name for i in inputs]} != [{INPUT_NAME!r}]")
        if inputs[0].shape[1:] != [input_dim] or inputs[0].type != "tensor(float)":
            raise ModelLoadError(f"input x is {inputs[0].type} {inputs[0].shape}; the card "
                                 f"says float32 [N, {input_dim}]")
        names = {o.name for o in self._session.get_outputs()}
        missing = [name for name in OUTPUT_NAMES if name not in names]
        if missing:
            raise ModelLoadError(f"graph lacks outputs {missing}")

    def _smoke_test(self, card: ModelCard) -> None:
        """One inference on two rows at the training offset: shapes and finiteness."""
        rows = np.tile(np.asarray(card.preprocessing.offset, dtype=np.float32), (2, 1))
        try:
            out = self.run(rows, OUTPUT_NAMES)
        except Exception as exc:  # a graph that loads but cannot run: onnxruntime's own types
            raise ModelLoadError(f"test inference failed: {exc}") from exc
        for name, row_shape in self._row_shapes.items():
            shape = (2, *row_shape)
            if out[name].shape != shape:
                raise ModelLoadError(f"test inference: {name} has shape {out[name].shape}, "
                                     f"expected {shape}")
            if not np.isfinite(out[name]).all():
                raise ModelLoadError(f"test inference: {name} is not finite")

    def run(self, rows: np.ndarray, outputs: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
        """The named outputs for `rows` [N, d]. No rows give empty outputs without a run: a
        graph of several members convolves along the rows, which onnxruntime refuses to do
        over zero of them."""
        if len(rows) == 0:
            return {name: np.empty((0, *self._row_shapes[name]), dtype=np.float32)
                    for name in outputs}
        values = self._session.run(list(outputs), {INPUT_NAME: rows})
        return dict(zip(outputs, values, strict=True))
