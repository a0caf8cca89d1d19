"""Fetching and decoding task images: Label Studio URL kinds, credentials, size/time limits and SSRF protection.

Why not the SDK's ``get_local_path``: it has no timeout, reads the whole body into memory without a size cap, writes
every image to a disk cache, follows redirects without re-checking where they lead, and sends a Personal Access Token
(a JWT refresh token) as a bearer token instead of exchanging it. This module handles the same URL kinds:

- ``/data/upload/...`` (and ``upload/...``): ``LABEL_STUDIO_URL`` + path; on HTTP 4xx retried through the storage
  proxy ``/storage-data/uploaded/?filepath=upload/...`` (Label Studio with cloud-backed default storage).
- ``/data/local-files/?d=...`` and any other path starting with ``/``: ``LABEL_STUDIO_URL`` + path.
- ``s3://``, ``gs://``, ``azure-blob://``: ``LABEL_STUDIO_URL/tasks/<task id>/presign/?fileuri=<base64>``, which
  redirects to a presigned URL.
- ``http://`` / ``https://``: fetched as is.

Credentials (``LABEL_STUDIO_API_KEY``) are sent only to the Label Studio origin: a legacy token as
``Authorization: Token <key>``, a Personal Access Token is exchanged at ``/api/token/refresh/`` for a short-lived
access token sent as ``Authorization: Bearer <access>`` (re-exchanged shortly before it expires).

SSRF: every connection, including each redirect hop (followed here, at most ``M2N2_MAX_REDIRECTS``), resolves the
host and connects only to addresses it checked: the Label Studio host and ``M2N2_ALLOWED_HOSTS`` may be anything;
other hosts must resolve only to global unicast addresses unless ``M2N2_ALLOW_PRIVATE_NETWORKS=1``. The check runs
at connect time on the exact address connected to, so DNS rebinding between check and use is not possible.
Environment proxies (HTTP_PROXY ...) are not used.
"""
from __future__ import annotations

import base64
import ipaddress
import logging
import socket
import threading
import time
from typing import List, Optional, Tuple
from urllib.parse import quote, urljoin, urlparse

import jwt
import numpy as np
import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NameResolutionError, NewConnectionError, ReadTimeoutError
from urllib3.util import connection as urllib3_connection

from m2n2_core import __version__
from m2n2_core.image_io import ImageError, load_image

from .config import Settings
from .errors import MediaError, TaskError

log = logging.getLogger(__name__)

CLOUD_PREFIXES = ("s3:", "gs:", "azure-blob:")
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 1 << 16


class BlockedAddress(ValueError):
    """A host resolved to an address the SSRF policy refuses."""


def _kind(ip: ipaddress._BaseAddress) -> Optional[str]:
    """Why an address is refused, or None for a global unicast address."""
    for attr in ("is_unspecified", "is_loopback", "is_link_local", "is_multicast", "is_private", "is_reserved"):
        if getattr(ip, attr):
            return attr[3:].replace("_", "-")
    return None if ip.is_global else "non-global"


class AddressPolicy:
    """Decides which hosts and addresses image downloads may connect to (see the module docstring)."""

    def __init__(self, settings: Settings):
        self.allow_private = settings.allow_private_networks
        names, nets = set(), []
        for entry in settings.allowed_hosts:
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(entry)
        if settings.label_studio_url:
            names.add(urlparse(settings.label_studio_url).hostname.lower())
        self.trusted_names = frozenset(names)
        self.trusted_networks = tuple(nets)

    def addresses(self, host: str, port: int) -> List[Tuple[str, int]]:
        """Resolve ``host`` and return the (ip, port) pairs it may connect to; raises BlockedAddress otherwise."""
        name = host.strip("[]").rstrip(".").lower()
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        result = []
        for *_, sockaddr in infos:
            text = sockaddr[0].split("%", 1)[0]
            ip = ipaddress.ip_address(text)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if not (self.allow_private or name in self.trusted_names
                    or any(ip in net for net in self.trusted_networks)):
                why = _kind(ip)
                if why is not None:
                    raise BlockedAddress(
                        f"host {name!r} resolves to {ip} ({why} address); image URLs may only point at the Label "
                        "Studio host (LABEL_STUDIO_URL) or public addresses (set M2N2_ALLOWED_HOSTS or "
                        "M2N2_ALLOW_PRIVATE_NETWORKS=1 to allow it)")
            result.append((str(ip), sockaddr[1]))
        return list(dict.fromkeys(result))


class _GuardedConnectionMixin:
    """urllib3 connection that connects only to addresses the policy approved (checked at connect time)."""

    policy: AddressPolicy

    def _new_conn(self) -> socket.socket:
        try:
            addresses = self.policy.addresses(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        error: Optional[OSError] = None
        for ip, port in addresses:
            try:
                return urllib3_connection.create_connection(
                    (ip, port), self.timeout, source_address=self.source_address, socket_options=self.socket_options)
            except socket.timeout as exc:
                raise ConnectTimeoutError(self, f"connection to {self.host} timed out") from exc
            except OSError as exc:
                error = exc
        raise NewConnectionError(self, f"failed to connect to {self.host}: {error}")


class _GuardedAdapter(HTTPAdapter):
    def __init__(self, policy: AddressPolicy):
        self._policy = policy
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        attrs = {"policy": self._policy}
        http = type("GuardedHTTPConnection", (_GuardedConnectionMixin, HTTPConnection), attrs)
        https = type("GuardedHTTPSConnection", (_GuardedConnectionMixin, HTTPSConnection), attrs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https}),
        }


def guarded_session(policy: AddressPolicy) -> requests.Session:
    """A requests session whose every connection passes ``policy`` and which ignores proxy environment variables."""
    session = requests.Session()
    session.trust_env = False
    adapter = _GuardedAdapter(policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class LabelStudioAuth:
    """The Authorization header for the Label Studio origin (legacy token or exchanged Personal Access Token)."""

    def __init__(self, settings: Settings, session: requests.Session):
        self.url = settings.label_studio_url
        self.key = settings.label_studio_api_key
        self.timeout = settings.fetch_timeout
        self.verify = settings.verify_ssl
        self._session = session
        self._lock = threading.Lock()
        self._access: Optional[str] = None
        self._access_expires = 0.0
        claims = _jwt_claims(self.key)
        self.kind = "none" if not self.key else "legacy" if claims is None else claims.get("token_type", "access")

    def header(self) -> Optional[str]:
        if self.kind == "none":
            return None
        if self.kind == "legacy":
            return f"Token {self.key}"
        if self.kind != "refresh":
            return f"Bearer {self.key}"
        with self._lock:
            if self._access is None or time.time() > self._access_expires - 30:
                self._exchange()
            return f"Bearer {self._access}"

    def _exchange(self) -> None:
        endpoint = f"{self.url}/api/token/refresh/"
        try:
            response = self._session.post(endpoint, json={"refresh": self.key}, timeout=self.timeout,
                                          verify=self.verify, allow_redirects=False)
        except (requests.RequestException, BlockedAddress) as exc:
            raise MediaError(f"could not exchange LABEL_STUDIO_API_KEY (a Personal Access Token) at {endpoint}: "
                             f"{exc}", url=endpoint, status=502) from None
        access = None
        if response.status_code == 200:
            try:
                access = response.json().get("access")
            except ValueError:
                pass
        if not isinstance(access, str):
            raise MediaError(f"Label Studio refused the Personal Access Token in LABEL_STUDIO_API_KEY at {endpoint} "
                             f"(HTTP {response.status_code}); create a new token in Account & Settings",
                             url=endpoint, status=502)
        claims = _jwt_claims(access) or {}
        self._access = access
        self._access_expires = float(claims.get("exp", time.time() + 300))


def _jwt_claims(token: str) -> Optional[dict]:
    if not token:
        return None
    try:
        return jwt.decode(token, options={"verify_signature": False, "verify_exp": False})
    except jwt.InvalidTokenError:
        return None


class MediaFetcher:
    """Downloads task images within the configured limits and decodes them to H×W×3 uint8 RGB."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.policy = AddressPolicy(settings)
        self.session = guarded_session(self.policy)
        self.auth = LabelStudioAuth(settings, self.session)
        self._ls_origin = _origin(settings.label_studio_url) if settings.label_studio_url else None

    # ---- URL kinds -------------------------------------------------------------------------------------------
    def candidates(self, url: object, task_id: object = None) -> List[str]:
        """The absolute URL(s) to try for a task's image URL, in order. Raises TaskError for unusable values."""
        if not isinstance(url, str) or not url.strip():
            raise TaskError(f"the task's image URL must be a non-empty string, got {url!r}")
        url = url.strip()
        if url.startswith(("upload/", "/upload/")):
            url = "/data/" + url.lstrip("/")
        if url.startswith(CLOUD_PREFIXES):
            if isinstance(task_id, bool) or not isinstance(task_id, (int, str)) or str(task_id) == "":
                raise TaskError(f"the cloud storage URL {url} needs the task id to be presigned, but the task has none")
            fileuri = base64.urlsafe_b64encode(url.encode()).decode()
            return [f"{self._label_studio(url)}/tasks/{quote(str(task_id), safe='')}/presign/?fileuri={fileuri}"]
        if url.startswith("/"):
            base = self._label_studio(url)
            if url.startswith("/data/upload/"):
                filepath = url[len("/data/"):]
                return [base + url, f"{base}/storage-data/uploaded/?filepath={quote(filepath, safe='/')}"]
            return [base + url]
        scheme = urlparse(url).scheme.lower()
        if scheme in ("http", "https"):
            return [url]
        raise TaskError(f"unsupported image URL {url[:200]!r}: use http(s), a Label Studio path (/data/...) or "
                        "s3://, gs://, azure-blob:// with cloud storage connected in Label Studio")

    def _label_studio(self, url: str) -> str:
        if not self.settings.label_studio_url:
            raise TaskError(f"the image URL {url} is relative to Label Studio: set LABEL_STUDIO_URL (the Label "
                            "Studio address as seen from this backend) and LABEL_STUDIO_API_KEY")
        return self.settings.label_studio_url

    # ---- download --------------------------------------------------------------------------------------------
    def fetch(self, url: str, task_id: object = None) -> bytes:
        """The image bytes of a task URL. Raises TaskError/MediaError naming the URL and the cause.

        When a URL kind has a fallback (uploads), an HTTP 4xx from the first address moves on to the next one.
        """
        targets = self.candidates(url, task_id)
        for target, fallback in zip(targets, targets[1:]):
            try:
                return self._download(target, url)
            except MediaError as exc:
                if not 400 <= exc.details.get("upstream_status", 0) < 500:
                    raise
                log.info("%s failed (%s); trying %s", target, exc.message, fallback)
        try:
            return self._download(targets[-1], url)
        except MediaError as exc:
            if len(targets) > 1:
                exc.details["tried"] = targets
            raise

    def _download(self, target: str, task_url: str) -> bytes:
        s = self.settings
        deadline = time.monotonic() + s.fetch_timeout
        current = target
        for _ in range(s.max_redirects + 1):
            parsed = urlparse(current)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise MediaError(f"fetching {task_url}: redirected to unsupported URL {current[:200]!r}",
                                 url=task_url, status=502)
            headers = {"User-Agent": f"m2n2-label-studio-backend/{__version__}", "Accept": "image/*,*/*;q=0.5"}
            if self._ls_origin is not None and _origin(current) == self._ls_origin:
                token = self.auth.header()
                if token:
                    headers["Authorization"] = token
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                response = self.session.get(current, headers=headers, stream=True, allow_redirects=False,
                                            timeout=(remaining, remaining), verify=s.verify_ssl)
            except BlockedAddress as exc:
                raise MediaError(f"refused to fetch {_shown(current, task_url)}: {exc}", url=task_url) from None
            except requests.Timeout:
                raise MediaError(f"timed out after {s.fetch_timeout:g} s fetching {_shown(current, task_url)} "
                                 "(M2N2_FETCH_TIMEOUT)", url=task_url, status=504) from None
            except requests.RequestException as exc:
                raise MediaError(f"could not fetch {_shown(current, task_url)}: {_reason(exc)}",
                                 url=task_url, status=502) from None
            with response:
                if response.status_code in _REDIRECTS and response.headers.get("Location"):
                    current = urljoin(current, response.headers["Location"])
                    continue
                if response.status_code >= 400:
                    raise MediaError(f"fetching {_shown(current, task_url)} failed: HTTP {response.status_code} "
                                     f"{response.reason or ''}".rstrip() + _hint(response.status_code, headers),
                                     url=task_url, status=502, upstream_status=response.status_code)
                return self._read_body(response, current, task_url, deadline)
        raise MediaError(f"fetching {task_url}: more than {s.max_redirects} redirects (M2N2_MAX_REDIRECTS)",
                         url=task_url, status=502)

    def _read_body(self, response: requests.Response, current: str, task_url: str, deadline: float) -> bytes:
        limit = self.settings.max_download_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise MediaError(f"{_shown(current, task_url)} is {int(declared)} bytes, more than the limit of {limit} "
                             "(M2N2_MAX_DOWNLOAD_BYTES)", url=task_url)
        body = bytearray()
        try:
            while True:
                chunk = response.raw.read1(_CHUNK, decode_content=True)  # returns as soon as data arrives
                if not chunk:
                    break
                body += chunk
                if len(body) > limit:
                    raise MediaError(f"{_shown(current, task_url)} is larger than the limit of {limit} bytes "
                                     "(M2N2_MAX_DOWNLOAD_BYTES)", url=task_url)
                if time.monotonic() > deadline:
                    raise ReadTimeoutError(None, current, "deadline")
        except (ReadTimeoutError, socket.timeout):
            raise MediaError(f"timed out after {self.settings.fetch_timeout:g} s downloading "
                             f"{_shown(current, task_url)} (M2N2_FETCH_TIMEOUT)", url=task_url, status=504) from None
        except (HTTPError, OSError) as exc:
            raise MediaError(f"the download of {_shown(current, task_url)} broke off: {_reason(exc)}",
                             url=task_url, status=502) from None
        return bytes(body)

    # ---- decode ----------------------------------------------------------------------------------------------
    def decode(self, data: bytes, url: str) -> np.ndarray:
        """Decoded H×W×3 uint8 RGB (EXIF orientation applied). Raises MediaError (422) naming the URL."""
        try:
            return load_image(data, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            raise MediaError(f"{url}: {exc}", url=url) from None


def _origin(url: str) -> Tuple[str, str, int]:
    p = urlparse(url)
    return p.scheme.lower(), (p.hostname or "").lower(), p.port or (443 if p.scheme.lower() == "https" else 80)


def _shown(current: str, task_url: str) -> str:
    return current if current == task_url else f"{current} (task URL {task_url})"


def _reason(exc: BaseException) -> str:
    """A readable cause of a requests/urllib3 exception (without the connection-pool wrapping)."""
    inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else exc
    inner = getattr(inner, "reason", None) or inner  # MaxRetryError → the underlying error
    if isinstance(inner, NameResolutionError):
        return f"cannot resolve host {inner._host!r} ({inner._reason})"
    text = str(inner)
    if "(host=" in text and "): " in text:
        text = text.split("): ", 1)[1]
    return text[:300]


def _hint(status: int, headers: dict) -> str:
    if status in (401, 403):
        if "Authorization" in headers:
            return " (check that LABEL_STUDIO_API_KEY is valid for this Label Studio)"
        return " (no credentials were sent: set LABEL_STUDIO_URL to this host and LABEL_STUDIO_API_KEY)"
    if status == 404:
        return " (the file does not exist on the server)"
    return ""
