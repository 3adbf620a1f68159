"""Bad inputs over a real server: per-image errors inside a 200, request errors as 4xx naming the problem."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator

import httpx
import pytest

from lprnet.serve.app import ServeSettings


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


def test_only_bad_images_still_200(client: httpx.Client) -> None:
    r = client.post("/v1/recognize", json={"images": [{"name": "x.jpg", "data": base64.b64encode(b"xx").decode()}]})
    assert r.status_code == 200
    assert r.json() == {"results": [{"path": "x.jpg", "error": "x.jpg: not a readable image (corrupt, truncated "
                                                               "or unsupported format)"}]}


def _chunks(total: int, size: int = 64 * 1024, head: bytes = b"") -> Iterator[bytes]:
    yield head
    while total > 0:
        yield b"x" * min(size, total)
        total -= size


MULTIPART_HEAD = (b'--BOUNDARY\r\ncontent-disposition: form-data; name="files"; filename="big.jpg"\r\n'
                  b"content-type: image/jpeg\r\n\r\n")


@pytest.mark.parametrize("case", ["wrong-type", "no-type", "too-large", "too-large-chunked", "too-large-file",
                                  "too-large-chunked-multipart",
                                  "too-many-files", "too-many-json", "bad-base64", "no-files-field",
                                  "empty-images", "no-images-key", "bad-json", "item-without-data",
                                  "deeply-nested-json"])
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
        "bad-base64": (422, "images[1] ('second.jpg'): 'data' is not valid base64",
                       {"json": {"images": [{"name": "a", "data": b64}, {"name": "second.jpg", "data": "@@@="}]}}),
        "no-files-field": (422, "'files' field", {"files": {"upload": (name, data)}}),
        "empty-images": (422, "no images", {"json": {"images": []}}),
        "no-images-key": (422, "'images'", {"json": {"pictures": [b64]}}),
        "bad-json": (422, "not valid JSON", {"content": b"{\"images\": [", "headers": {"content-type":
                                                                                       "application/json"}}),
        "item-without-data": (422, "images[0]", {"json": {"images": [{"name": "a"}]}}),
        "deeply-nested-json": (422, "nested too deeply", {  # json.loads recurses: not a 500
            "content": b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "headers": {"content-type": "application/json"}}),
    }[case]
    r = client.post("/v1/recognize", **req)
    assert r.status_code == status, r.text
    assert msg in r.json()["detail"], r.json()
    healthy(client)
