"""The real server (uvicorn in a subprocess) on 127.0.0.1, called over HTTP."""

from __future__ import annotations

import io
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest

from aeserve.artifact.scores import p_values
from tests.helpers import far_rows, running_server


@pytest.fixture(scope="module")
def repository(tmp_path_factory, trained) -> Path:
    """The trained model, plus a second model whose only version is corrupt."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(trained.path.parent, root / "sensors")
    broken = root / "broken" / "1"
    shutil.copytree(trained.path, broken)
    (broken / "model.json").write_text(
        (broken / "model.json").read_text().replace('"name": "sensors"', '"name": "broken"'))
    with open(broken / "model.onnx", "ab") as handle:
        handle.write(b"tampered")
    return root


@pytest.fixture(scope="module")
def server(repository):
    with running_server(repository, AESERVE_DEFAULT_MODEL="sensors",
                        AESERVE_MAX_ROWS="500", AESERVE_MAX_BODY_BYTES="200000",
                        AESERVE_DECODE_PROCESS_MIN_BYTES="70000") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server, timeout=10) as c:
        yield c


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["default_model"] == "sensors"


def test_anomaly_score(client, normal_rows, trained):
    rows = np.vstack([normal_rows[:5], far_rows(normal_rows, 3)])
    response = client.post("/anomaly-score", json={"instances": rows.tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "sensors" and body["version"] == 1
    assert body["threshold"] == pytest.approx(trained.card.threshold)
    assert len(body["scores"]) == 8
    assert body["is_anomaly"] == [s > body["threshold"] for s in body["scores"]]
    assert body["is_anomaly"][5:] == [True, True, True]
    assert all(0 <= p <= 100 for p in body["percentiles"])
    assert body["percentiles"][5:] == [100.0, 100.0, 100.0]
    # where the percentiles saturate, the p-values still rank the anomalies by their scores
    assert body["p_values"] == pytest.approx(
        p_values(np.asarray(body["scores"]), trained.card.score_quantiles).tolist(), rel=1e-6)
    far = np.argsort(body["scores"][5:])
    assert np.all(np.diff(np.asarray(body["p_values"][5:])[far]) < 0)


def test_same_answer_on_every_route(client, normal_rows):
    payload = {"instances": normal_rows[:4].tolist()}
    answers = [client.post(path, json=payload).json()["scores"] for path in
               ("/anomaly-score", "/models/sensors/anomaly-score",
                "/models/sensors/versions/1/anomaly-score")]
    assert answers[0] == answers[1] == answers[2]


def test_encode_and_reconstruct(client, normal_rows, trained):
    payload = {"instances": normal_rows[:3].tolist()}
    embeddings = client.post("/encode", json=payload).json()["embeddings"]
    assert np.asarray(embeddings).shape == (3, 5 * 4)  # five members' codes of 4
    recon = np.asarray(client.post("/reconstruct", json=payload).json()["reconstructions"])
    assert recon.shape == (3, 6)
    scale = np.asarray(trained.card.preprocessing.scale)
    # a trained model reconstructs normal rows to well within one spread per feature
    assert np.abs((recon - normal_rows[:3]) / scale).max() < 1.0


def test_named_features_equal_positional(client, normal_rows):
    names = [f"f{i}" for i in range(6)]
    positional = client.post("/anomaly-score", json={"instances": normal_rows[:2].tolist()})
    named_rows = [dict(reversed(list(zip(names, row, strict=True)))) for row in
                  normal_rows[:2].tolist()]
    named = client.post("/anomaly-score", json={"instances": named_rows})
    assert named.json()["scores"] == positional.json()["scores"]


def test_binary_bodies_equal_json(client, normal_rows):
    rows = normal_rows[:4].astype("<f4")
    as_json = client.post("/anomaly-score", json={"instances": rows.tolist()}).json()
    raw = client.post("/anomaly-score", content=rows.tobytes(),
                      headers={"content-type": "application/octet-stream"}).json()
    buffer = io.BytesIO()
    np.save(buffer, rows)
    npy = client.post("/anomaly-score", content=buffer.getvalue(),
                      headers={"content-type": "application/x-npy"}).json()
    assert as_json["scores"] == raw["scores"] == npy["scores"]


def test_large_json_bodies_equal_binary(client, normal_rows):
    """Large JSON bodies (here over 70 kB) are parsed in the decoder process: the same scores
    as the binary body, and the same typed refusal."""
    rows = np.tile(normal_rows, (2, 1))[:450].astype("<f4")
    indented = orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY
    payload = orjson.dumps({"instances": rows.astype(np.float64)}, option=indented)
    assert 70_000 < len(payload) < 200_000
    as_json = client.post("/anomaly-score", content=payload,
                          headers={"content-type": "application/json"})
    raw = client.post("/anomaly-score", content=rows.tobytes(),
                      headers={"content-type": "application/octet-stream"})
    assert as_json.status_code == raw.status_code == 200
    assert as_json.json()["scores"] == raw.json()["scores"]
    bad = rows.astype(np.float64)
    bad[345, 2] = np.nan
    refused = client.post("/anomaly-score", content=orjson.dumps(
        {"instances": bad}, option=indented).replace(b"null", b"NaN"),
        headers={"content-type": "application/json"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "non_finite"
    assert refused.json()["error"]["row"] == 345


@pytest.mark.parametrize(
    ("path", "content", "content_type", "status", "code"),
    [
        ("/anomaly-score", b'{"instances": [[1, 2]]}', "application/json", 422, "wrong_width"),
        ("/anomaly-score", b'{"instances": [[1,2,3,4,5,6], [1]]}', "application/json", 422,
         "ragged_rows"),
        ("/anomaly-score", b'{"instances": [[1,2,3,4,5,NaN]]}', "application/json", 422,
         "non_finite"),
        ("/anomaly-score", b'{"instances": [[1,2,3,4,5,1e999]]}', "application/json", 422,
         "non_finite"),
        ("/encode", b'{"instances": [[1,2,3,4,5,"6"]]}', "application/json", 422, "non_numeric"),
        ("/encode", b'{"instances": []}', "application/json", 422, "empty_instances"),
        ("/encode", b'{"instances": [[1,2,3,4,5,6]]', "application/json", 400, "malformed_json"),
        ("/encode", b'{"instances": [[1,2,3,4,5,6]]}', "text/plain", 415,
         "unsupported_media_type"),
        ("/reconstruct", b'{"instances": [[1,2,3,4,5,6]]}', "application/x-www-form-urlencoded",
         415, "unsupported_media_type"),
        ("/models/nope/encode", b'{"instances": [[1]]}', "application/json", 404,
         "unknown_model"),
        ("/models/sensors/versions/9/encode", b'{"instances": [[1]]}', "application/json", 404,
         "unknown_version"),
        ("/models/sensors/versions/x/encode", b'{"instances": [[1]]}', "application/json", 404,
         "unknown_version"),
        ("/models/broken/encode", b'{"instances": [[1]]}', "application/json", 503,
         "model_not_ready"),
        ("/models/..%2F..%2Fetc/encode", b'{"instances": [[1]]}', "application/json", 404,
         "not_found"),
        ("/models/.hidden/encode", b'{"instances": [[1]]}', "application/json", 404,
         "unknown_model"),
    ],
)
def test_bad_requests_get_typed_errors(client, path, content, content_type, status, code):
    response = client.post(path, content=content, headers={"content-type": content_type})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]


def test_too_many_rows_and_too_large_bodies(client):
    rows = {"instances": [[0.0] * 6] * 501}
    response = client.post("/anomaly-score", json=rows)
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_many_rows"
    huge = b'{"instances": [' + b"[0,0,0,0,0,0]," * 20000 + b"[0,0,0,0,0,0]]}"
    response = client.post("/anomaly-score", content=huge,
                           headers={"content-type": "application/json"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "body_too_large"


def test_unknown_route_and_method(client):
    assert client.get("/nope").json()["error"]["code"] == "not_found"
    response = client.get("/anomaly-score")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_model_listing_reports_the_broken_version(client):
    listing = client.get("/models").json()
    assert listing["default_model"] == "sensors"
    models = {m["name"]: m for m in listing["models"]}
    assert models["sensors"]["active_version"] == 1 and models["sensors"]["default"]
    broken = models["broken"]
    assert broken["active_version"] is None
    assert broken["versions"][0]["state"] == "failed"
    assert "sha256" in broken["versions"][0]["error"]


def test_model_detail_has_card_and_providers(client, trained):
    detail = client.get("/models/sensors").json()
    assert detail["card"]["onnx_sha256"] == trained.card.onnx_sha256
    assert detail["card"]["feature_names"] == [f"f{i}" for i in range(6)]
    assert detail["providers"] == ["CPUExecutionProvider"]
    version = client.get("/models/sensors/versions/1").json()
    assert version["state"] == "ready" and version["card"]["version"] == 1
    assert client.get("/models/sensors/versions/3").status_code == 404
    assert client.get("/models/absent").json()["error"]["code"] == "unknown_model"


def test_openapi_documents_the_api(client):
    spec = client.get("/openapi.json").json()
    for path in ("/anomaly-score", "/encode", "/reconstruct", "/models/{name}/anomaly-score",
                 "/models/{name}/versions/{version}/anomaly-score", "/models", "/healthz"):
        assert path in spec["paths"], path
    body = spec["paths"]["/anomaly-score"]["post"]["requestBody"]["content"]
    assert {"application/json", "application/octet-stream", "application/x-npy"} <= set(body)
    # the feedback route reads its own bounded body, and still documents its schema
    feedback = spec["paths"]["/models/{name}/feedback"]["post"]["requestBody"]
    assert set(feedback["content"]["application/json"]["schema"]["required"]) == {"ids", "labels"}
    answers = spec["paths"]["/models/{name}/feedback"]["post"]["responses"]
    assert {"200", "404", "409", "413", "422", "503"} <= set(answers)
    # every reference resolves within the document (the V2 schemas' included)
    refs = set(re.findall(r'"\$ref":\s*"([^"]+)"', orjson.dumps(spec).decode()))
    assert "#/components/schemas/InferenceRequest" in refs
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"], ref


def test_server_with_only_broken_models_is_not_ready(tmp_path, repository):
    shutil.copytree(repository / "broken", tmp_path / "broken")
    with running_server(tmp_path) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        response = httpx.post(f"{url}/anomaly-score", json={"instances": [[0] * 6]})
        assert response.status_code == 503


def test_empty_repository_answers_unknown_model(tmp_path):
    with running_server(tmp_path) as url:
        response = httpx.post(f"{url}/anomaly-score", json={"instances": [[0]]})
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "unknown_model"


def test_binary_responses_on_request(client, normal_rows):
    rows = normal_rows[:5].astype("<f4")
    as_json = client.post("/anomaly-score", json={"instances": rows.tolist()}).json()
    raw = client.post("/anomaly-score", content=rows.tobytes(),
                      headers={"content-type": "application/octet-stream",
                               "accept": "application/octet-stream"})
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["x-shape"] == "5" and raw.headers["x-model"] == "sensors"
    assert float(raw.headers["x-threshold"]) == as_json["threshold"]
    assert np.array_equal(np.frombuffer(raw.content, "<f4"),
                          np.asarray(as_json["scores"], dtype=np.float32))
    npy = client.post("/anomaly-score", json={"instances": rows.tolist()},
                      headers={"accept": "application/x-npy"})
    table = np.load(io.BytesIO(npy.content))
    assert np.array_equal(table["score"], np.asarray(as_json["scores"], dtype=np.float32))
    assert table["is_anomaly"].tolist() == as_json["is_anomaly"]
    assert table["percentile"].tolist() == pytest.approx(as_json["percentiles"], abs=1e-3)
    assert table["p_value"].tolist() == as_json["p_values"]
    embeddings = client.post("/encode", json={"instances": rows.tolist()},
                             headers={"accept": "application/x-npy"})
    assert np.load(io.BytesIO(embeddings.content)).shape == (5, 5 * 4)
    recon = client.post("/reconstruct", content=rows.tobytes(),
                        headers={"content-type": "application/octet-stream",
                                 "accept": "application/octet-stream"})
    assert np.frombuffer(recon.content, "<f4").reshape(5, 6).shape == (5, 6)
    assert recon.headers["x-shape"] == "5,6"


def test_concurrent_requests_are_batched_and_answered_in_order(server, normal_rows):
    import asyncio

    async def burst():
        async with httpx.AsyncClient(base_url=server, timeout=20) as c:
            requests = [c.post("/anomaly-score", json={"instances": [row]})
                        for row in normal_rows[:64].tolist()]
            return await asyncio.gather(*requests)

    before = httpx.get(f"{server}/metrics").text
    answers = asyncio.run(burst())
    after = httpx.get(f"{server}/metrics").text
    alone = httpx.post(f"{server}/anomaly-score",
                       json={"instances": normal_rows[:64].tolist()}).json()["scores"]
    # equal up to float32 rounding: a merged run may use other matrix kernels than a lone one
    np.testing.assert_allclose([a.json()["scores"][0] for a in answers], alone, rtol=1e-5)

    def runs(text: str) -> float:
        for line in text.splitlines():
            if line.startswith('aeserve_batch_rows_count{model="sensors"'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    assert runs(after) - runs(before) < 64  # fewer graph runs than requests


def test_threshold_override_and_explanations(client, normal_rows, trained):
    rows = np.vstack([normal_rows[:2], far_rows(normal_rows, 1)])
    plain = client.post("/anomaly-score", json={"instances": rows.tolist()}).json()
    low = client.post("/anomaly-score?threshold=0", json={"instances": rows.tolist()}).json()
    assert low["threshold"] == 0.0 and low["is_anomaly"] == [True, True, True]
    assert low["scores"] == plain["scores"]
    assert plain["threshold"] == pytest.approx(trained.card.threshold)  # the card is unchanged

    explained = client.post("/anomaly-score?explain=true&top_k=2",
                            json={"instances": rows.tolist()}).json()
    assert len(explained["explanations"]) == 3
    for score, explanation in zip(explained["scores"], explained["explanations"], strict=True):
        errors = explanation["feature_errors"]
        assert len(errors) == 6
        assert np.mean(errors) == pytest.approx(score, rel=1e-4)  # the score is their mean
        top = explanation["top_features"]
        assert len(top) == 2 and top[0]["error"] >= top[1]["error"]
        assert top[1]["error"] == pytest.approx(sorted(errors)[-2], rel=1e-6)
        assert top[0]["feature"] == f"f{int(np.argmax(errors))}"
        assert top[0]["share"] == pytest.approx(max(errors) / sum(errors), abs=1e-4)
    assert "explanations" not in plain


@pytest.mark.parametrize("query", ["threshold=abc", "threshold=nan", "top_k=0", "explain=maybe",
                                   "colour=red"])
def test_bad_query_parameters(client, query):
    response = client.post(f"/anomaly-score?{query}", json={"instances": [[0.0] * 6]})
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_parameter"
