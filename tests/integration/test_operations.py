"""Production-server behaviour over real HTTP: hot reload, V2 protocol, metrics, auth, lifecycle."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import orjson
import pytest

from tests.helpers import ROOT, add_version, free_port, server_process, wait_for

KEY = "s3cret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def repo(tmp_path, trained):
    add_version(tmp_path, trained.path, "sensors", 1)
    return tmp_path


@pytest.fixture
def server(repo):
    with server_process(repo, AESERVE_API_KEY=KEY, AESERVE_POLL_INTERVAL_S="0.2") as running:
        yield running


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=10) as c:
        yield c


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def publish(repo, trained, version: int, tamper: bool = False) -> None:
    """Write a version beside the repository, then rename it in, as `aeserve train` does."""
    staging = add_version(repo / "staging", trained.path, "sensors", version, tamper=tamper)
    os.rename(staging, repo / "sensors" / str(version))


def test_reload_adds_a_version_and_refuses_a_corrupt_one(repo, trained, client, normal_rows):
    payload = {"instances": normal_rows[:3].tolist()}
    assert client.post("/anomaly-score", json=payload).json()["version"] == 1

    publish(repo, trained, 2)
    wait_for(lambda: client.get("/models/sensors").json()["active_version"] == 2)
    assert client.post("/anomaly-score", json=payload).json()["version"] == 2

    publish(repo, trained, 3, tamper=True)
    versions = wait_for(lambda: {v["version"]: v for v in
                                 client.get("/models/sensors").json()["versions"]}.get(3)
                        and {v["version"]: v for v in
                             client.get("/models/sensors").json()["versions"]})
    assert versions[3]["state"] == "failed" and "sha256" in versions[3]["error"]
    assert versions[2]["state"] == "ready"
    assert client.post("/anomaly-score", json=payload).json()["version"] == 2
    text = client.get("/metrics").text
    assert metric(text, "aeserve_model_load_failures_total", model="sensors", version="3") == 1

    shutil.rmtree(repo / "sensors" / "3")
    shutil.rmtree(repo / "sensors" / "2")
    wait_for(lambda: client.get("/models/sensors").json()["active_version"] == 1)


def test_admin_reload_on_demand(repo, trained, normal_rows):
    with server_process(repo, AESERVE_API_KEY=KEY, AESERVE_POLL_INTERVAL_S="0") as server:
        publish(repo, trained, 2)
        time.sleep(0.3)
        assert httpx.get(f"{server.url}/models/sensors", headers=AUTH).json()[
            "active_version"] == 1  # no polling
        assert httpx.post(f"{server.url}/admin/reload").status_code == 401
        reloaded = httpx.post(f"{server.url}/admin/reload", headers=AUTH)
        assert reloaded.status_code == 200
        assert reloaded.json()["models"][0]["active_version"] == 2


def test_admin_routes_refuse_without_a_configured_key(repo):
    with server_process(repo) as server:
        for path in ("/admin/reload", "/v2/repository/index",
                     "/v2/repository/models/sensors/unload"):
            response = httpx.post(f"{server.url}{path}")
            assert response.status_code == 403, path
        assert "AESERVE_API_KEY" in httpx.post(f"{server.url}/admin/reload").json()["error"][
            "message"]
        # without a key configured, the rest of the API is open
        assert httpx.get(f"{server.url}/models").status_code == 200


def test_api_key(server):
    protected = ["/models", "/metrics", "/v2/models/sensors", "/openapi.json", "/v2"]
    for path in protected:
        assert httpx.get(f"{server.url}{path}").status_code == 401, path
    refused = httpx.get(f"{server.url}/models", headers={"X-API-Key": "wrong"})
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["www-authenticate"].startswith("Bearer")
    v2_refusal = httpx.get(f"{server.url}/v2/models/sensors").json()
    assert set(v2_refusal) == {"error"} and "API key" in v2_refusal["error"]
    assert httpx.get(f"{server.url}/models", headers={"X-API-Key": KEY}).status_code == 200
    assert httpx.get(f"{server.url}/models", headers=AUTH).status_code == 200
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{server.url}{path}").status_code == 200, path


def test_v2_with_the_triton_client(server, normal_rows):
    import tritonclient.http as triton

    # the client adds its own headers to the dict it is given: hand it a copy each time

    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live(headers=dict(AUTH)) and client.is_server_ready(headers=dict(AUTH))
    assert client.is_model_ready("sensors", headers=dict(AUTH))
    meta = client.get_model_metadata("sensors", headers=dict(AUTH))
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 6]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("embedding", "FP32"), ("reconstruction", "FP32"), ("score", "FP32"),
        ("feature_errors", "FP32"), ("is_anomaly", "BOOL"), ("percentile", "FP32"),
        ("p_value", "FP64")]
    assert client.get_server_metadata(headers=dict(AUTH))["extensions"] == [
        "model_repository", "binary_tensor_data"]

    rows = normal_rows[:7].astype(np.float32)
    x = triton.InferInput("x", list(rows.shape), "FP32")
    x.set_data_from_numpy(rows, binary_data=False)
    outputs = [triton.InferRequestedOutput(name, binary_data=False)
               for name in ("score", "embedding")]
    result = client.infer("sensors", [x], outputs=outputs, headers=dict(AUTH), request_id="r-1")
    expected = httpx.post(f"{server.url}/anomaly-score", headers=dict(AUTH),
                          json={"instances": rows.tolist()}).json()
    np.testing.assert_array_equal(result.as_numpy("score"),
                                  np.asarray(expected["scores"], dtype=np.float32))
    assert result.as_numpy("embedding").shape == (7, 5 * 4)  # five members' codes of 4
    assert result.get_response()["id"] == "r-1"
    assert result.get_response()["model_version"] == "1"

    # the binary tensor extension, both ways (the client's default)
    x_binary = triton.InferInput("x", list(rows.shape), "FP32")
    x_binary.set_data_from_numpy(rows, binary_data=True)
    binary = client.infer("sensors", [x_binary], headers=dict(AUTH), outputs=[
        triton.InferRequestedOutput(name, binary_data=True) for name in
        ("score", "reconstruction")])
    np.testing.assert_array_equal(binary.as_numpy("score"), result.as_numpy("score"))
    assert binary.as_numpy("reconstruction").shape == (7, 6)
    assert "data" not in binary.get_response()["outputs"][0]


def test_v2_json_fp64_versions_and_errors(client, normal_rows):
    rows = normal_rows[:3]
    request = {"inputs": [{"name": "x", "shape": [3, 6], "datatype": "FP64",
                           "data": rows.ravel().tolist()}], "outputs": [{"name": "score"}]}
    answer = client.post("/v2/models/sensors/versions/1/infer", json=request).json()
    assert answer["outputs"][0]["shape"] == [3]
    assert answer["parameters"]["threshold"] > 0
    nested = dict(request, inputs=[dict(request["inputs"][0], data=rows.tolist())])
    assert client.post("/v2/models/sensors/infer", json=nested).json()["outputs"][0]["data"] \
        == answer["outputs"][0]["data"]
    assert len(client.post("/v2/models/sensors/infer", json={
        "inputs": request["inputs"]}).json()["outputs"]) == 4

    def error(body, path="/v2/models/sensors/infer"):
        response = client.post(path, json=body) if not isinstance(body, bytes) else \
            client.post(path, content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500
        assert set(response.json()) == {"error"} and isinstance(response.json()["error"], str)
        return response.json()["error"]

    assert "FP32 or FP64" in error({"inputs": [dict(request["inputs"][0], datatype="INT8")]})
    assert "[N, 6]" in error({"inputs": [dict(request["inputs"][0], shape=[3, 5])]})
    assert "needs 18" in error({"inputs": [dict(request["inputs"][0], data=[1.0, 2.0])]})
    assert "named 'x'" in error({"inputs": [dict(request["inputs"][0], name="input")]})
    assert "unknown outputs" in error(dict(request, outputs=[{"name": "logits"}]))
    assert "not valid JSON" in error(b"{")
    assert "unknown model" in error(request, "/v2/models/nope/infer")
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get("/v2/models/sensors/versions/1/ready").json()["ready"] is True


def test_v2_answers_what_a_score_means_as_anomaly_score_does(client, normal_rows):
    from tests.helpers import far_rows

    rows = np.vstack([normal_rows[:5], far_rows(normal_rows, 2)])
    wanted = ["is_anomaly", "percentile", "p_value"]
    request = {"inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64",
                           "data": rows.ravel().tolist()}],
               "outputs": [{"name": name} for name in wanted]}
    core = client.post("/anomaly-score", json={"instances": rows.tolist()}).json()
    answer = client.post("/v2/models/sensors/infer", json=request).json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert [o["name"] for o in answer["outputs"]] == wanted  # the score is not asked for
    assert outputs["is_anomaly"]["datatype"] == "BOOL" and outputs["is_anomaly"]["shape"] == [7]
    assert outputs["is_anomaly"]["data"] == core["is_anomaly"]
    assert core["is_anomaly"][5:] == [True, True] and not any(core["is_anomaly"][:5])
    np.testing.assert_allclose(outputs["percentile"]["data"], core["percentiles"], rtol=1e-6)
    assert outputs["p_value"]["datatype"] == "FP64"
    assert outputs["p_value"]["data"] == core["p_values"]
    assert answer["parameters"] == {"threshold": core["threshold"], "anomalies": 2}

    # The request's own threshold, as /anomaly-score?threshold= takes it: between the scores.
    threshold = float(np.sort(core["scores"])[2]) + 1e-6
    mine = client.post("/v2/models/sensors/infer", json=dict(
        request, parameters={"threshold": threshold})).json()
    theirs = client.post(f"/anomaly-score?threshold={threshold!r}",
                         json={"instances": rows.tolist()}).json()
    assert mine["outputs"][0]["data"] == theirs["is_anomaly"]
    assert sum(theirs["is_anomaly"]) == 4
    assert mine["parameters"] == {"threshold": threshold, "anomalies": 4}

    # Binary: one byte per verdict.
    binary = client.post("/v2/models/sensors/infer", json=dict(
        request, outputs=[{"name": "is_anomaly"}], parameters={"binary_data_output": True}))
    header = int(binary.headers["inference-header-content-length"])
    assert np.frombuffer(binary.content[header:], dtype=bool).tolist() == core["is_anomaly"]

    for bad in ("high", True, [1.0]):
        refused = client.post("/v2/models/sensors/infer", json=dict(
            request, parameters={"threshold": bad}))
        assert refused.status_code == 422 and "threshold" in refused.json()["error"]

    # A threshold with no score among the outputs changes nothing, and is no error.
    codes = client.post("/v2/models/sensors/infer", json=dict(
        request, outputs=[{"name": "embedding"}], parameters={"threshold": threshold}))
    assert codes.status_code == 200, codes.text
    assert codes.json()["parameters"] == {"threshold": threshold}


def test_a_threshold_in_config_json_applies_at_the_next_scan(client, repo, normal_rows):
    from tests.helpers import far_rows

    rows = np.vstack([normal_rows[:20], far_rows(normal_rows, 2)])
    before = client.post("/anomaly-score", json={"instances": rows.tolist()}).json()
    card_threshold = before["threshold"]
    assert client.get("/models/sensors").json()["threshold"] == {
        "value": card_threshold, "rule": "quantile:0.99", "source": "card",
        "card_value": card_threshold}
    # Between the scores: the 5th highest of the 22 rows is flagged, and those above it.
    threshold = float(np.sort(before["scores"])[-5]) - 1e-6
    (repo / "sensors" / "config.json").write_text(
        json.dumps({"thresholds": {"1": {"value": threshold}}}))
    assert wait_for(lambda: client.get("/models/sensors").json()["threshold"]["source"]
                    == "config.json", timeout=10)
    shown = client.get("/models/sensors").json()
    assert shown["threshold"]["value"] == threshold
    assert shown["card"]["threshold"] == card_threshold  # the exported card, unchanged
    after = client.post("/anomaly-score", json={"instances": rows.tolist()}).json()
    assert after["threshold"] == threshold and sum(after["is_anomaly"]) == 5
    assert after["scores"] == before["scores"]
    v2 = client.post("/v2/models/sensors/infer", json={
        "inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64",
                    "data": rows.ravel().tolist()}], "outputs": [{"name": "is_anomaly"}]})
    assert v2.json()["outputs"][0]["data"] == after["is_anomaly"]
    assert v2.json()["parameters"]["threshold"] == threshold
    (repo / "sensors" / "config.json").unlink()
    assert wait_for(lambda: client.get("/models/sensors").json()["threshold"]["source"]
                    == "card", timeout=10)
    assert client.post("/anomaly-score", json={"instances": rows.tolist()}).json() == before


def test_v2_large_json_bodies_answer_as_small_ones(client, normal_rows):
    """Above AESERVE_DECODE_PROCESS_MIN_BYTES (1 MB) a flat V2 tensor is split in the decoder
    process, a nested one parsed in a codec thread; both answer as the rows do one by one."""
    rows = np.tile(normal_rows, (30, 1))[:12_000]  # 72,000 values: over 1 MB of JSON
    flat = {"id": "big", "inputs": [{"name": "x", "shape": list(rows.shape), "datatype": "FP64",
                                     "data": rows.ravel().tolist()}],
            "outputs": [{"name": "score"}, {"name": "embedding"}]}
    nested = dict(flat, inputs=[dict(flat["inputs"][0], data=rows.tolist())])
    assert len(orjson.dumps(flat)) > 1024 * 1024
    big = client.post("/v2/models/sensors/infer", json=flat).json()
    assert big["id"] == "big" and big["outputs"][0]["shape"] == [12_000]
    assert client.post("/v2/models/sensors/infer", json=nested).json()["outputs"] == \
        big["outputs"]
    small = dict(flat, inputs=[dict(flat["inputs"][0], shape=[5, 6],
                                    data=rows[:5].ravel().tolist())])
    assert client.post("/v2/models/sensors/infer", json=small).json()["outputs"][0]["data"] == \
        big["outputs"][0]["data"][:5]


def test_v2_repository_extension(client, normal_rows):
    index = client.post("/v2/repository/index").json()
    assert index == [{"name": "sensors", "version": "1", "state": "READY", "reason": ""}]
    assert client.post("/v2/repository/models/sensors/unload").json() == {}
    assert client.get("/v2/models/sensors/ready").status_code == 404
    assert client.post("/v2/repository/index", json={"ready": True}).json() == []
    assert client.post("/v2/repository/models/sensors/load").json() == {}
    assert client.get("/v2/models/sensors/ready").status_code == 200
    missing = client.post("/v2/repository/models/..%2F..%2Fetc/load")
    assert missing.status_code == 404
    missing = client.post("/v2/repository/models/etc/load")
    assert missing.status_code == 404 and "no model folder" in missing.json()["error"]


def test_metrics_move_with_traffic(client, normal_rows):
    from tests.helpers import far_rows

    rows = np.vstack([normal_rows[:6], far_rows(normal_rows, 2)])
    before = client.get("/metrics").text
    for _ in range(2):
        assert client.post("/models/sensors/anomaly-score",
                           json={"instances": rows.tolist()}).status_code == 200
    client.post("/encode", json={"instances": [[1, 2]]})  # a 422
    after = client.get("/metrics").text
    labels = {"model": "sensors", "version": "1"}

    def moved(name, **extra):
        return metric(after, name, **labels, **extra) - metric(before, name, **labels, **extra)

    assert moved("aeserve_requests_total", endpoint="anomaly-score", status="200") == 2
    assert moved("aeserve_rows_total", endpoint="anomaly-score") == 16
    assert moved("aeserve_scored_rows_total") == 16
    assert moved("aeserve_anomalies_total") >= 4
    assert moved("aeserve_batch_rows_count") == 2
    assert moved("aeserve_queue_seconds_count") == 2
    assert metric(after, "aeserve_requests_total", endpoint="encode", status="422",
                  model="sensors") == 1
    assert metric(after, "aeserve_score_threshold_ratio_count", model="sensors") >= 16
    assert metric(after, "aeserve_model_info", model="sensors", version="1",
                  providers="CPUExecutionProvider") == 1


def test_request_ids_and_json_logs(server, client, normal_rows):
    response = client.get("/models", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    generated = client.get("/models").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert client.get("/models").headers["x-request-id"] != generated
    assert client.get("/models", headers={"X-Request-ID": "bad id;x"}).headers[
        "x-request-id"] != "bad id;x"
    before = time.perf_counter()
    scored = client.post("/anomaly-score", json={"instances": normal_rows[:2].tolist()},
                         headers={"X-Request-ID": "trace-43"})
    round_trip_ms = 1000 * (time.perf_counter() - before)
    assert scored.headers["x-request-id"] == "trace-43"
    refused = client.post("/anomaly-score", json={"instances": [[1.0]]},
                          headers={"X-Request-ID": "trace-44"})
    assert refused.status_code == 422 and refused.headers["x-request-id"] == "trace-44"

    def logged():
        entries = [json.loads(line) for line in server.log_lines() if line.startswith("{")]
        found = {e.get("request_id"): e for e in entries if e.get("logger") == "aeserve.access"}
        return found if {"trace-42", "trace-43", "trace-44"} <= set(found) else None

    entries = wait_for(logged)
    assert entries["trace-42"]["path"] == "/models" and entries["trace-42"]["status"] == 200
    assert "duration_ms" in entries["trace-42"]
    # The server's own time for a request lies within the client's round trip around it.
    assert 0 < entries["trace-43"]["duration_ms"] <= round_trip_ms
    assert (entries["trace-43"]["endpoint"], entries["trace-43"]["model"],
            entries["trace-43"]["rows"], entries["trace-43"]["status"]) == (
        "anomaly-score", "sensors", 2, 200)
    assert entries["trace-44"]["status"] == 422


def test_cors_is_off_unless_configured(repo):
    preflight = {"Origin": "http://dashboard.test", "Access-Control-Request-Method": "POST"}
    with server_process(repo) as server:
        response = httpx.options(f"{server.url}/anomaly-score", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    with server_process(repo, AESERVE_CORS_ORIGINS='["http://dashboard.test"]') as server:
        response = httpx.options(f"{server.url}/anomaly-score", headers=preflight)
        assert response.headers["access-control-allow-origin"] == "http://dashboard.test"


def test_cuda_provider_refuses_to_start_without_cuda(repo):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is present; bench/gpu_check.sh covers this case")
    env = {**os.environ, "AESERVE_MODELS_DIR": str(repo), "AESERVE_PROVIDER": "cuda"}
    result = subprocess.run([sys.executable, "-m", "aeserve.cli", "serve", "--port",
                             str(free_port())], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "CUDA provider is not active" in result.stdout + result.stderr


def test_sigterm_drains_an_in_flight_request(repo, normal_rows):
    with server_process(repo, AESERVE_DRAIN_SECONDS="1.0") as server:
        port = int(server.url.rsplit(":", 1)[1])
        body = json.dumps({"instances": normal_rows[:2].tolist()}).encode()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /anomaly-score HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(0.3)  # the request is in flight: headers read, body incomplete
        server.process.send_signal(signal.SIGTERM)
        draining = wait_for(lambda: httpx.get(f"{server.url}/readyz").status_code == 503
                            and httpx.get(f"{server.url}/readyz"), timeout=0.9)
        assert draining.json()["status"] == "draining"
        sock.sendall(body[10:])
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        sock.close()
        assert reply.startswith(b"HTTP/1.1 200")
        assert b'"scores"' in reply
        assert server.process.wait(timeout=15) == 0  # a clean shutdown, not death by SIGTERM
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/healthz", timeout=1)


def test_two_workers_share_their_metrics(repo, normal_rows):
    with server_process(repo, AESERVE_WORKERS="2", AESERVE_POLL_INTERVAL_S="0") as server:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            for _ in range(20):  # new connections: the kernel spreads them over both workers
                assert httpx.post(f"{server.url}/anomaly-score",
                                  json={"instances": normal_rows[:3].tolist()}).status_code == 200
            text = c.get("/metrics").text
        pids = set(re.findall(r"Started server process \[(\d+)\]",
                              "\n".join(server.log_lines())))
    assert metric(text, "aeserve_requests_total", model="sensors", version="1",
                  endpoint="anomaly-score", status="200") == 20
    assert metric(text, "aeserve_scored_rows_total", model="sensors", version="1") == 60
    assert len(pids) == 2
