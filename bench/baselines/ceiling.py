"""The framework ceiling: a FastAPI endpoint that reads the body and returns a constant.

No decoding, no model: what FastAPI + uvicorn cost per request on this machine, the upper bound
for any FastAPI service.
"""

from fastapi import FastAPI, Request, Response

app = FastAPI()
ANSWER = b'{"scores":[0.5],"threshold":1.0,"is_anomaly":[false],"percentiles":[50.0]}'


@app.post("/anomaly-score")
async def anomaly_score(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")
