"""The HTTP service over a real uvicorn server: results equal ``Recognizer.recognize``, batching, metrics."""

from __future__ import annotations

import base64
import json
import re
import threading
from typing import Any

import httpx
import pytest

from lprnet.recognizer import Recognizer


def expected(recognizer: Recognizer, images: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """What the service must answer: single-image ``recognize`` of each file, as CLI JSON fields."""
    out = []
    for name, data in images:
        r = recognizer.recognize([data], batch_size=1)[0]
        assert r.ok, r.error
        out.append({"path": name, "plate": r.plate, "confidence": r.confidence,
                    "chars": [(c["char"], c["confidence"]) for c in r.chars]})
    return out


def assert_same(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Same plates, same characters, same confidences up to float noise.

    The deploy model is batch-independent in exact arithmetic; on CPU, oneDNN picks other kernels
    for a batch of one than for larger batches, so logits differ in the last bits (confidences are
    also served rounded to 6 places).
    """
    assert [g["path"] for g in got] == [w["path"] for w in want]
    for g, w in zip(got, want):
        assert set(g) == {"path", "plate", "confidence", "chars"}, g
        assert g["plate"] == w["plate"]
        assert g["confidence"] == pytest.approx(w["confidence"], rel=1e-3, abs=2e-6)
        assert [c["char"] for c in g["chars"]] == [c for c, _ in w["chars"]]
        for gc, (_, wc) in zip(g["chars"], w["chars"]):
            assert gc["confidence"] == pytest.approx(wc, rel=1e-3, abs=2e-6)


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"{name} not in /metrics"
    return float(m.group(1))


def test_multipart_equals_recognize(client: httpx.Client, recognizer: Recognizer, images) -> None:
    want = expected(recognizer, images)
    assert len({w["plate"] for w in want}) > 1  # the test model does not answer one constant plate
    r = client.post("/v1/recognize", files=[("files", (n, d, "application/octet-stream")) for n, d in images])
    assert r.status_code == 200, r.text
    assert_same(r.json()["results"], want)


def test_settings_decode_and_provinces_reach_the_service(weights, images) -> None:
    """A service that loads its own model (no recognizer handed in) decodes as its settings say."""
    import lprnet
    from lprnet.serve.app import ServeSettings

    from .conftest import running_server

    local = lprnet.load(weights, provinces="皖")
    want = expected(local, images)
    assert want != expected(lprnet.load(weights), images)  # only 皖 may be read: readings change
    with running_server(ServeSettings(weights=weights, provinces="皖")) as base:
        r = httpx.post(f"{base}/v1/recognize", files=[("files", (n, d)) for n, d in images], timeout=30)
        assert httpx.get(f"{base}/healthz").json()["provinces"] == {"皖": 1.0}
    assert r.status_code == 200, r.text
    assert_same(r.json()["results"], want)


def test_json_base64_equals_recognize(client: httpx.Client, recognizer: Recognizer, images) -> None:
    items = [{"name": n, "data": base64.b64encode(d).decode()} for n, d in images[:3]]
    items[1]["data"] = "data:image/png;base64," + items[1]["data"]  # data URLs are accepted too
    r = client.post("/v1/recognize", json={"images": items})
    assert r.status_code == 200, r.text
    assert_same(r.json()["results"], expected(recognizer, images[:3]))
    # unnamed items are named by position
    r = client.post("/v1/recognize", json={"images": [{"data": items[0]["data"]}]})
    assert r.status_code == 200 and r.json()["results"][0]["path"] == "images[0]"
    # a Python client's json.dumps of a non-UTF-8 file name sends a lone surrogate: escaped, not a 500
    body = json.dumps({"images": [{"name": "cam1-\udcff.jpg", "data": items[0]["data"]}, items[2]]})
    r = client.post("/v1/recognize", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    got = r.json()["results"]
    assert [g["path"] for g in got] == ["cam1-\\udcff.jpg", items[2]["name"]]
    assert got[0]["plate"] == expected(recognizer, images[:1])[0]["plate"]


def test_json_items_that_are_not_base64_are_answered_in_place(client: httpx.Client, recognizer: Recognizer,
                                                               images) -> None:
    """One item whose data is not base64 gets its own error inside the 200 answer; the others are read. URL-safe
    and unpadded base64 (what many clients send) are read like the standard form."""
    first = images[0]
    padded = next(im for im in images if len(im[1]) % 3 and "_" in base64.urlsafe_b64encode(im[1]).decode())
    std = base64.b64encode(first[1]).decode()
    urlsafe = base64.urlsafe_b64encode(padded[1]).decode().rstrip("=")
    r = client.post("/v1/recognize", json={"images": [
        {"name": "a.png", "data": std}, {"name": "b.png", "data": "@@@="}, {"name": "c.png", "data": urlsafe}]})
    assert r.status_code == 200, r.text
    a, b, c = r.json()["results"]
    want = expected(recognizer, [first, padded])
    assert (a["plate"], c["plate"]) == (want[0]["plate"], want[1]["plate"])
    assert set(b) == {"path", "error"} and b["error"].startswith("b.png: images[1].data is not valid base64")
    assert any(ch in urlsafe for ch in "-_") and len(urlsafe) % 4  # the cases under test occurred


def test_concurrent_requests_are_batched(server: str, recognizer: Recognizer, images) -> None:
    want = {w["path"]: w for w in expected(recognizer, images)}
    before = httpx.get(f"{server}/metrics").text
    n = len(images)
    barrier = threading.Barrier(n)
    got: dict[str, Any] = {}
    errors: list[BaseException] = []

    def one(name: str, data: bytes) -> None:
        try:
            with httpx.Client(base_url=server, timeout=30) as c:
                c.get("/healthz")  # connect first, so that the posts start together
                barrier.wait(timeout=20)
                r = c.post("/v1/recognize", files={"files": (name, data)})
                assert r.status_code == 200, r.text
                got[name] = r.json()["results"]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=one, args=item) for item in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    for name, res in got.items():
        assert_same(res, [want[name]])
    after = httpx.get(f"{server}/metrics").text
    batches = metric(after, "lprnet_batch_size_count") - metric(before, "lprnet_batch_size_count")
    singles = (metric(after, 'lprnet_batch_size_bucket{le="1.0"}')
               - metric(before, 'lprnet_batch_size_bucket{le="1.0"}'))
    imgs = metric(after, "lprnet_batch_size_sum") - metric(before, "lprnet_batch_size_sum")
    assert imgs == n
    assert batches < n and singles < batches, (batches, singles)  # at least one batch held > 1 image
    assert metric(after, 'lprnet_requests_total{path="/v1/recognize",status="200"}') >= n


def test_healthz_metrics_openapi(client: httpx.Client) -> None:
    h = client.get("/healthz")
    assert h.status_code == 200
    assert h.json()["status"] == "ok" and h.json()["model_loaded"] is True and h.json()["backend"] == "torch"
    assert h.json()["decode"] == "plate" and h.json()["provinces"] is None
    head = client.head("/healthz")  # load balancers probe with HEAD: the GET's status, no body
    assert head.status_code == 200 and head.content == b""
    m = client.get("/metrics")
    assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
    for name in ("lprnet_requests_total", "lprnet_errors_total", "lprnet_images_total", "lprnet_batch_size_bucket",
                 "lprnet_request_duration_seconds_bucket"):
        assert name in m.text
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/recognize"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert {"/healthz", "/metrics"} <= set(spec["paths"])


def conforms(spec: dict[str, Any], schema: dict[str, Any], value: Any) -> bool:
    """Whether ``value`` fits an OpenAPI schema of the kinds FastAPI writes (refs, anyOf, objects, lists, scalars)."""
    if "$ref" in schema:
        return conforms(spec, spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]], value)
    if "anyOf" in schema:
        return any(conforms(spec, s, value) for s in schema["anyOf"])
    if "const" in schema and value != schema["const"]:
        return False
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return (isinstance(value, dict) and set(schema.get("required", [])) <= set(value)
                and all(conforms(spec, props[k], v) if k in props else isinstance(extra, dict)
                        and conforms(spec, extra, v) for k, v in value.items()))
    if kind == "array":
        return isinstance(value, list) and all(conforms(spec, schema["items"], v) for v in value)
    types = {"string": str, "integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
    return kind in types and isinstance(value, types[kind]) and (kind == "boolean" or not isinstance(value, bool))


def documented(spec: dict[str, Any], path: str, method: str, r: httpx.Response) -> dict[str, Any]:
    """The schema that ``/openapi.json`` declares for this answer (its status code and media type)."""
    responses = spec["paths"][path][method]["responses"]
    assert str(r.status_code) in responses, (path, r.status_code, sorted(responses))
    media = r.headers["content-type"].split(";", 1)[0]
    content = responses[str(r.status_code)]["content"]
    assert media in content, (path, r.status_code, media, sorted(content))
    return content[media]["schema"]


def test_openapi_describes_the_real_answers(client: httpx.Client, images) -> None:
    spec = client.get("/openapi.json").json()
    name, data = images[0]
    answers = [
        ("/v1/recognize", client.post("/v1/recognize", files=[("files", (name, data)), ("files", ("x.txt", b"x"))])),
        ("/v1/recognize", client.post("/v1/recognize", content=b"x", headers={"content-type": "text/plain"})),
        ("/v1/recognize", client.post("/v1/recognize", json={"images": []})),
        ("/v1/recognize", client.post("/v1/recognize", json={"images": [{"data": "eA=="}] * 17})),
        ("/healthz", client.get("/healthz")),
    ]
    assert [r.status_code for _, r in answers] == [200, 415, 422, 413, 200]
    for path, r in answers:
        method = "post" if path == "/v1/recognize" else "get"
        assert conforms(spec, documented(spec, path, method, r), r.json()), (path, r.status_code, r.json())
    recognize = spec["paths"]["/v1/recognize"]["post"]["responses"]
    assert {"200", "413", "415", "422", "503"} <= set(recognize)
    assert set(spec["paths"]["/healthz"]["get"]["responses"]) == {"200", "503"}
    assert not conforms(spec, {"$ref": "#/components/schemas/Health"}, {"status": "unavailable", "model_loaded": False})
    assert conforms(spec, spec["paths"]["/healthz"]["get"]["responses"]["503"]["content"]["application/json"]["schema"],
                    {"status": "unavailable", "model_loaded": False})
    metrics = client.get("/metrics")
    assert documented(spec, "/metrics", "get", metrics) == {"type": "string"}
    assert set(spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
