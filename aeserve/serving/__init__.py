"""The server: FastAPI + onnxruntime over the model store. Never imports torch."""
