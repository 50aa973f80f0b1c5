"""What most users write first: FastAPI, a pydantic `list[list[float]]` body, onnxruntime.

The model path comes from BENCH_MODEL (an exported model.onnx).
"""

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
session = ort.InferenceSession(os.environ["BENCH_MODEL"], providers=["CPUExecutionProvider"])


class Instances(BaseModel):
    instances: list[list[float]]


@app.post("/anomaly-score")
def anomaly_score(body: Instances) -> dict:
    rows = np.asarray(body.instances, dtype=np.float32)
    scores = session.run(["score"], {"x": rows})[0]
    return {"scores": scores.tolist()}
