"""Service settings, read from `AESERVE_*` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting of the server; its variable is `AESERVE_` + the upper-cased field name."""

    model_config = SettingsConfigDict(env_prefix="AESERVE_", extra="ignore")

    models_dir: Path = Field(Path("models"), description="The model repository.")
    default_model: str | None = Field(
        None, description="Model behind the un-prefixed routes; default: the first name in order.")
    provider: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA when onnxruntime-gpu sees a GPU, else CPU.")
    intra_op_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 = auto.")
    inter_op_threads: int = Field(1, ge=0, description="onnxruntime inter-op threads; 0 = auto.")
    max_rows: int = Field(100_000, gt=0, description="Most rows accepted in one request.")
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="Largest request body.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@lru_cache
def get_settings() -> Settings:
    return Settings()
