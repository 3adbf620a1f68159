"""Bad inputs over a real server: per-image errors inside a 200, request errors as 4xx naming the problem."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from lprnet.serve.app import MAX_EXTRA_FIELDS, ServeSettings


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` RGB pixels, with a tiny IDAT (a decompression bomb's face)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def healthy(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_per_image_errors_inside_200(client: httpx.Client, images) -> None:
    good_name, good = images[0]
    jpeg = next(d for n, d in images if n.endswith(".jpg"))
    bad = {
        "notes.txt": (b"hello, not an image", "not a readable image"),
        "empty.jpg": (b"", "empty file"),
        "half.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "no-eoi.jpg": (jpeg[:-2], "truncated"),
        "bomb.png": (png_header(50_000, 50_000), "decompression bomb"),
        "big.png": (png_header(9_000, 8_000), "claims 9000x8000 pixels, more than the limit"),
    }
    files = [("files", (good_name, good))] + [("files", (n, d)) for n, (d, _) in bad.items()]
    r = client.post("/v1/recognize", files=files)
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    assert [x["path"] for x in res] == [good_name, *bad]
    assert set(res[0]) == {"path", "plate", "confidence", "chars"}
    for x, (name, (_, msg)) in zip(res[1:], bad.items()):
        assert set(x) == {"path", "error"}, x
        assert x["error"].startswith(f"{name}: ") and msg in x["error"], x
    m = client.get("/metrics").text
    assert 'lprnet_errors_total{kind="image"} ' in m and 'lprnet_errors_total{kind="image"} 0.0' not in m
    healthy(client)


def test_one_large_image_is_within_the_request_pixel_budget(client: httpx.Client, images) -> None:
    """The per-request pixel budget counts headers within --max-pixels: one 3500x3500 image beside a good one is
    read (its own error inside a 200), as is an oversized one, which --max-pixels refuses by itself."""
    files = [("files", ("big.png", png_header(3_500, 3_500))), ("files", ("bomb.png", png_header(50_000, 50_000))),
             ("files", images[0])]
    r = client.post("/v1/recognize", files=files)
    assert r.status_code == 200, r.text
    big, bomb, good = r.json()["results"]
    assert big["error"].startswith("big.png: not a readable image") and "decompression bomb" in bomb["error"]
    assert "plate" in good


def test_only_bad_images_still_200(client: httpx.Client) -> None:
    r = client.post("/v1/recognize", json={"images": [{"name": "x.jpg", "data": base64.b64encode(b"xx").decode()}]})
    assert r.status_code == 200
    err = r.json()["results"][0]["error"]
    assert r.json() == {"results": [{"path": "x.jpg", "error": err}]}
    assert err.startswith("x.jpg: not a readable image (corrupt, truncated or unsupported format")


def test_an_image_gets_the_cli_s_verdict(client: httpx.Client, images) -> None:
    """The service decodes as the CLI and the Python API do: a whole JPEG followed by other bytes (here bytes that
    look like a start-of-scan marker, which a service-only truncation check once refused) reads as the JPEG."""
    from lprnet.core.process import decode_image_bytes

    jpeg = next(d for n, d in images if n.endswith(".jpg"))
    tail = jpeg + b"\xff\xda\x00\x08 appended"
    assert np.array_equal(decode_image_bytes(tail), decode_image_bytes(jpeg))
    r = client.post("/v1/recognize", files=[("files", ("a.jpg", jpeg)), ("files", ("b.jpg", tail))])
    assert r.status_code == 200, r.text
    a, b = r.json()["results"]
    assert "error" not in b and (b["plate"], b["confidence"]) == (a["plate"], a["confidence"])


def _chunks(total: int, size: int = 64 * 1024, head: bytes = b"") -> Iterator[bytes]:
    yield head
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


MULTIPART_HEAD = (b'--BOUNDARY\r\ncontent-disposition: form-data; name="files"; filename="big.jpg"\r\n'
                  b"content-type: image/jpeg\r\n\r\n")


@pytest.mark.parametrize("case", ["wrong-type", "no-type", "too-large", "too-large-chunked", "too-large-file",
                                  "too-large-chunked-multipart",
                                  "too-many-files", "too-many-json", "no-files-field",
                                  "empty-images", "no-images-key", "bad-json", "item-without-data",
                                  "huge-integer", "deeply-nested-json", "no-boundary", "bad-multipart",
                                  "too-many-fields", "too-many-pixels", "truncated-multipart", "query-parameter"])
def test_request_errors(client: httpx.Client, settings: ServeSettings, images, case: str) -> None:
    max_body, max_images = settings.max_body_bytes, settings.max_images
    name, data = images[0]
    b64 = base64.b64encode(data).decode()
    big = max_body + max_body // 2
    status, msg, req = {
        "wrong-type": (415, "unsupported content type 'text/plain'",
                       {"content": data, "headers": {"content-type": "text/plain"}}),
        "no-type": (415, "unsupported content type '(none)'", {"content": data}),
        "too-large": (413, "request body too large", {"content": b"x" * big,
                                                      "headers": {"content-type": "application/json"}}),
        "too-large-chunked": (413, "request body too large", {"content": _chunks(big),
                                                              "headers": {"content-type": "application/json"}}),
        "too-large-chunked-multipart": (413, "request body too large", {
            "content": _chunks(big, head=MULTIPART_HEAD),
            "headers": {"content-type": "multipart/form-data; boundary=BOUNDARY"}}),
        "too-large-file": (413, "request body too large", {"files": {"files": ("huge.jpg", b"\xff" * big)}}),
        "too-many-files": (413, f"too many images: at most {max_images}",
                           {"files": [("files", (f"{i}.jpg", data)) for i in range(max_images + 1)]}),
        "too-many-json": (413, "too many images",
                          {"json": {"images": [{"name": "a", "data": b64}] * (max_images + 1)}}),
        "no-files-field": (422, "'files' field", {"files": {"upload": (name, data)}}),
        "empty-images": (422, "no images", {"json": {"images": []}}),
        "no-images-key": (422, "'images'", {"json": {"pictures": [b64]}}),
        "bad-json": (422, "not valid JSON", {"content": b"{\"images\": [", "headers": {"content-type":
                                                                                       "application/json"}}),
        "item-without-data": (422, "images[0]", {"json": {"images": [{"name": "a"}]}}),
        "huge-integer": (422, "not valid JSON", {  # past Python's int digit limit: a ValueError, not a 500
            "content": b'{"images": ' + b"9" * 5000 + b"}", "headers": {"content-type": "application/json"}}),
        "deeply-nested-json": (422, "nested too deeply", {  # json.loads recurses: not a 500
            "content": b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "headers": {"content-type": "application/json"}}),
        "no-boundary": (422, "malformed multipart body: Missing boundary", {  # Starlette's 400s, mapped
            "content": MULTIPART_HEAD + data, "headers": {"content-type": "multipart/form-data"}}),
        "bad-multipart": (422, "malformed multipart body", {
            "content": b"--BOUNDARY\r\ncontent-disposition: form-data\r\n\r\nx\r\n--BOUNDARY--\r\n",
            "headers": {"content-type": "multipart/form-data; boundary=BOUNDARY"}}),
        "too-many-fields": (413, "too many form fields", {"data": {f"f{i}": "x" for i in range(MAX_EXTRA_FIELDS + 1)},
                                                          "files": {"files": (name, data)}}),
        # three 3500x3500 headers (a few hundred bytes each), each within --max-pixels, 36.75 M pixels together
        "too-many-pixels": (413, f"claim 36750000 pixels in all, more than the limit of {settings.max_request_pixels}",
                            {"files": [("files", (f"{i}.png", png_header(3_500, 3_500))) for i in range(3)]}),
        # two whole parts, no closing --BOUNDARY--: the parser alone answered 200 with the first file's result only
        "truncated-multipart": (422, "ends before its closing boundary (--BOUNDARY--)", {
            "content": MULTIPART_HEAD + data + b"\r\n" + MULTIPART_HEAD.replace(b"big.jpg", b"b.jpg") + data + b"\r\n",
            "headers": {"content-type": "multipart/form-data; boundary=BOUNDARY"}}),
        "query-parameter": (422, "unknown query parameter(s) 'decode'", {"files": {"files": (name, data)},
                                                                        "params": {"decode": "greedy"}}),
    }[case]
    r = client.post("/v1/recognize", **req)
    assert r.status_code == status, r.text
    assert msg in r.json()["detail"], r.json()
    healthy(client)


def _metric(client: httpx.Client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_client_that_leaves_mid_upload_is_a_client_error(client: httpx.Client, server: str) -> None:
    """Half a body, then the connection closes: logged as 499 (a client error), not as a server failure."""
    import socket
    import time

    host, port = server.removeprefix("http://").split(":")
    before_server = _metric(client, 'lprnet_errors_total{kind="server"}')
    before_499 = _metric(client, 'lprnet_requests_total{path="/v1/recognize",status="499"}')
    for _ in range(3):
        with socket.create_connection((host, int(port))) as s:
            s.sendall(b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 5000\r\n\r\n{\"images\": [")
        time.sleep(0.2)
    deadline = time.time() + 10
    while _metric(client, 'lprnet_requests_total{path="/v1/recognize",status="499"}') < before_499 + 3:
        assert time.time() < deadline, client.get("/metrics").text
        time.sleep(0.1)
    assert _metric(client, 'lprnet_errors_total{kind="server"}') == before_server
    healthy(client)


@pytest.mark.parametrize("kw", [{"max_wait_ms": float("inf")}, {"max_wait_ms": 1e308}, {"max_wait_ms": float("nan")}])
def test_a_wait_no_request_could_live_through_is_refused(settings: ServeSettings, kw: dict) -> None:
    import dataclasses

    with pytest.raises(ValueError, match="max_wait_ms must be in"):
        dataclasses.replace(settings, **kw)


@pytest.mark.parametrize("args", [["--max-wait-ms", "inf"], ["--max-body-mb", "inf"], ["--log-level", "verbose"]])
def test_serve_refuses_unbounded_limits_at_startup(args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    import lprnet
    from lprnet.cli import app

    def no_server(*a: object, **k: object) -> None:  # a regression must fail here, not serve forever
        raise AssertionError("the server started")

    def no_load(*a: object, **k: object) -> None:  # refused before the model is loaded
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(uvicorn, "run", no_server)
    monkeypatch.setattr(lprnet, "load", no_load)
    monkeypatch.setattr(lprnet.recognizer, "load", no_load)
    r = CliRunner().invoke(app, ["serve", *args])
    assert r.exit_code == 2 and args[0] in r.output, r.output
