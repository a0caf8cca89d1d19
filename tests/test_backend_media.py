"""Task image fetching: URL kinds, credentials, limits, and SSRF protection (loopback servers only)."""
import socket
import time

import jwt
import numpy as np
import pytest

from backend.errors import MediaError, TaskError
from backend.media import MediaFetcher
from backend_fixtures import LoopbackServer, encode, fast_settings, scene


@pytest.fixture
def server():
    srv = LoopbackServer()
    yield srv
    srv.close()


@pytest.fixture
def other():
    srv = LoopbackServer()
    yield srv
    srv.close()


def fetcher(**changes) -> MediaFetcher:
    return MediaFetcher(fast_settings(**changes))


# ---- URL kinds ---------------------------------------------------------------------------------------------------
def test_candidates_for_each_url_kind():
    f = fetcher(label_studio_url="http://ls:8080")
    assert f.candidates("/data/upload/3/a b.png") == [
        "http://ls:8080/data/upload/3/a b.png", "http://ls:8080/storage-data/uploaded/?filepath=upload/3/a%20b.png"]
    assert f.candidates("upload/3/a.png")[0] == "http://ls:8080/data/upload/3/a.png"
    assert f.candidates("/data/local-files/?d=images/1.jpg") == ["http://ls:8080/data/local-files/?d=images/1.jpg"]
    assert f.candidates("s3://bucket/key.jpg", 17) == ["http://ls:8080/tasks/17/presign/?fileuri=czM6Ly9idWNrZXQva2V5LmpwZw=="]
    assert f.candidates(" https://example.com/x.png ") == ["https://example.com/x.png"]


@pytest.mark.parametrize("url, task_id, message", [
    ("gs://b/k.png", None, "needs the task id"),
    ("ftp://example.com/a.png", 1, "unsupported image URL"),
    ("data:image/png;base64,AAAA", 1, "unsupported image URL"),
    ("", 1, "non-empty string"),
    (42, 1, "non-empty string"),
])
def test_unusable_urls(url, task_id, message):
    with pytest.raises(TaskError, match=message):
        fetcher(label_studio_url="http://ls:8080").candidates(url, task_id)


def test_relative_url_without_label_studio_url_says_what_to_set():
    with pytest.raises(TaskError, match="set LABEL_STUDIO_URL"):
        fetcher().candidates("/data/upload/1/a.png")


def test_upload_falls_back_to_the_storage_proxy(server):
    server.add("/storage-data/uploaded/?filepath=upload/1/a.png", b"image-bytes")
    assert fetcher(label_studio_url=server.url).fetch("/data/upload/1/a.png") == b"image-bytes"
    with pytest.raises(MediaError) as info:
        fetcher(label_studio_url=server.url).fetch("/data/upload/1/missing.png")
    assert info.value.status == 502 and "HTTP 404" in info.value.message and len(info.value.details["tried"]) == 2


# ---- credentials -------------------------------------------------------------------------------------------------
def test_legacy_token_goes_only_to_label_studio(server, other):
    target = other.add("/img.png", b"cloud-bytes")
    server.add("/tasks/5/presign/?fileuri=czM6Ly9iL2sucG5n", status=303, headers={"Location": target})
    f = fetcher(label_studio_url=server.url, label_studio_api_key="legacy123", allow_private_networks=True)
    assert f.fetch("s3://b/k.png", 5) == b"cloud-bytes"
    assert server.requests[0][2]["Authorization"] == "Token legacy123"
    assert "Authorization" not in other.requests[0][2]


def _jwt(kind: str, lifetime: float) -> str:
    return jwt.encode({"token_type": kind, "exp": int(time.time() + lifetime)}, "s" * 32, algorithm="HS256")


def test_personal_access_token_is_exchanged_once(server):
    access = _jwt("access", 300)
    server.json("/api/token/refresh/", {"access": access})
    server.add("/data/local-files/?d=a.png", b"local")
    f = fetcher(label_studio_url=server.url, label_studio_api_key=_jwt("refresh", 3600))
    assert f.fetch("/data/local-files/?d=a.png") == b"local"
    assert f.fetch("/data/local-files/?d=a.png") == b"local"
    paths = [(m, p) for m, p, *_ in server.requests]
    assert paths.count(("POST", "/api/token/refresh/")) == 1
    assert server.requests[-1][2]["Authorization"] == f"Bearer {access}"


def test_access_token_near_expiry_is_exchanged_again(server):
    server.json("/api/token/refresh/", {"access": _jwt("access", 10)})   # inside the 30 s safety margin
    server.add("/data/local-files/?d=a.png", b"local")
    f = fetcher(label_studio_url=server.url, label_studio_api_key=_jwt("refresh", 3600))
    f.fetch("/data/local-files/?d=a.png")
    f.fetch("/data/local-files/?d=a.png")
    assert [p for _, p, *_ in server.requests].count("/api/token/refresh/") == 2


def test_refused_personal_access_token_is_reported(server):
    server.json("/api/token/refresh/", {"detail": "Token is invalid"}, status=401)
    f = fetcher(label_studio_url=server.url, label_studio_api_key=_jwt("refresh", 3600))
    with pytest.raises(MediaError, match="refused the Personal Access Token") as info:
        f.fetch("/data/local-files/?d=a.png")
    assert info.value.status == 502


def test_401_without_key_explains_the_missing_credentials(server):
    server.add("/data/local-files/?d=a.png", b"no", status=401)
    with pytest.raises(MediaError, match="no credentials were sent"):
        fetcher(label_studio_url=server.url).fetch("/data/local-files/?d=a.png")


# ---- limits ------------------------------------------------------------------------------------------------------
def test_timeout_names_url_and_limit(server):
    url = server.add("/slow.png", b"x", delay=2.0)
    with pytest.raises(MediaError) as info:
        fetcher(allow_private_networks=True, fetch_timeout=0.3).fetch(url)
    assert info.value.status == 504 and url in info.value.message and "M2N2_FETCH_TIMEOUT" in info.value.message


def test_slow_drip_body_hits_the_total_deadline(server):
    url = server.add("/drip.png", b"x" * 2000, drip=0.05)
    with pytest.raises(MediaError, match="timed out") as info:
        fetcher(allow_private_networks=True, fetch_timeout=0.5).fetch(url)
    assert info.value.status == 504


@pytest.mark.parametrize("declared", [True, False])
def test_download_size_limit(server, declared):
    url = server.add("/big.png", b"x" * 5000, length=declared)
    with pytest.raises(MediaError, match="M2N2_MAX_DOWNLOAD_BYTES") as info:
        fetcher(allow_private_networks=True, max_download_bytes=1000).fetch(url)
    assert info.value.status == 422


def test_redirect_limit(server):
    url = server.add("/loop", status=302, headers={"Location": "/loop"})
    with pytest.raises(MediaError, match="more than 2 redirects"):
        fetcher(allow_private_networks=True, max_redirects=2).fetch(url)


def test_http_error_names_url_and_status(server):
    url = server.url + "/missing.png"
    with pytest.raises(MediaError) as info:
        fetcher(allow_private_networks=True).fetch(url)
    assert info.value.status == 502 and info.value.url == url and "HTTP 404" in info.value.message


def test_unreachable_host(server):
    port = server.port
    server.close()
    with pytest.raises(MediaError, match="could not fetch") as info:
        fetcher(allow_private_networks=True).fetch(f"http://127.0.0.1:{port}/a.png")
    assert info.value.status == 502


def test_decode_errors_name_the_url():
    f = fetcher(max_image_pixels=100)
    with pytest.raises(MediaError, match="http://h/a.png") as info:
        f.decode(b"not an image", "http://h/a.png")
    assert info.value.status == 422
    with pytest.raises(MediaError, match="more than the limit"):
        f.decode(encode(scene(20, 20)), "http://h/b.png")
    assert f.decode(encode(scene(10, 10)), "http://h/c.png").shape == (10, 10, 3)


# ---- SSRF --------------------------------------------------------------------------------------------------------
def test_loopback_refused_by_default(server):
    url = server.add("/a.png", b"x")
    with pytest.raises(MediaError, match=r"loopback address.*M2N2_ALLOW_PRIVATE_NETWORKS") as info:
        fetcher().fetch(url)
    assert info.value.status == 422 and server.requests == []


@pytest.mark.parametrize("changes", [{"allow_private_networks": True}, {"allowed_hosts": ("127.0.0.1",)},
                                     {"allowed_hosts": ("127.0.0.0/8",)}, {"label_studio_url": "LS"}])
def test_loopback_allowed_when_configured(server, changes):
    url = server.add("/a.png", b"x")
    if changes.get("label_studio_url") == "LS":
        changes = {"label_studio_url": server.url}
    assert fetcher(**changes).fetch(url) == b"x"


def test_redirect_to_a_private_address_is_refused(server):
    server.add("/redirect", status=302, headers={"Location": f"http://localhost:{server.port}/a.png"})
    server.add("/a.png", b"x")
    with pytest.raises(MediaError, match="host 'localhost' resolves to") as info:
        fetcher(label_studio_url=server.url).fetch(server.url + "/redirect")
    assert info.value.status == 422 and [p for _, p, *_ in server.requests] == ["/redirect"]


@pytest.mark.parametrize("addresses, refused", [
    (["10.1.2.3"], "private"), (["93.184.216.34", "169.254.169.254"], "link-local"),
    (["::ffff:127.0.0.1"], "loopback"), (["fd00::1"], "private"), (["100.64.0.1"], "non-global"),
])
def test_every_resolved_address_is_checked(monkeypatch, addresses, refused):
    def fake_getaddrinfo(host, port, *args, **kwargs):
        fam = lambda a: socket.AF_INET6 if ":" in a else socket.AF_INET  # noqa: E731
        return [(fam(a), socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    with pytest.raises(MediaError, match=f"images.example.com.*{refused}"):
        fetcher().fetch("http://images.example.com/a.png")


def test_decoded_image_is_rgb(server):
    url = server.add("/a.png", encode(scene(8, 6)))
    f = fetcher(label_studio_url=server.url)
    image = f.decode(f.fetch(url), url)
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
