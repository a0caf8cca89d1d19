#!/usr/bin/env python3
"""Create a Label Studio project for click-to-segment with the m2n2 backend, in one command.

Given a running Label Studio, an API key and a folder of images, this script
  1. creates a project with the label config in examples/label_config.xml (or --label-config),
  2. uploads the images (task URLs become /data/upload/...; the backend fetches them with LABEL_STUDIO_URL and
     LABEL_STUDIO_API_KEY, so set those on the backend too),
  3. attaches the m2n2 backend as an interactive ML backend (Label Studio checks its /health and /setup now),
  4. prints the project's URL.

    python examples/connect_label_studio.py --url http://localhost:8080 --api-key $KEY \\
        --images ./my_images --backend-url http://localhost:9090

The API key is a Personal Access Token (Account & Settings → Personal Access Token; exchanged here for a short-lived
access token) or a legacy token (only accepted where the organization or LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN enables
legacy tokens). Exit codes: 0 done, 2 bad arguments or files, 1 Label Studio or the backend refused a step.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import requests

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_CONFIG = Path(__file__).resolve().parent / "label_config.xml"
TIMEOUT_S = 60.0
UPLOAD_BATCH = 20  # files per import request


class SetupError(Exception):
    """A step failed; the message says which step and why. ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def is_personal_access_token(api_key: str) -> bool:
    """Personal Access Tokens are JWTs (three dot-separated parts); legacy tokens are 40 hex digits."""
    return api_key.count(".") == 2


def auth_headers(url: str, api_key: str) -> Dict[str, str]:
    """The Authorization header for ``api_key``: a PAT is exchanged for an access token, a legacy token is sent as is."""
    if not is_personal_access_token(api_key):
        return {"Authorization": f"Token {api_key}"}
    response = _request("POST", f"{url}/api/token/refresh/", "exchange the Personal Access Token",
                        json={"refresh": api_key})
    return {"Authorization": f"Bearer {response.json()['access']}"}


def _request(method: str, address: str, step: str, **kwargs) -> requests.Response:
    """One HTTP call; any failure becomes a SetupError naming the step, the address and Label Studio's answer."""
    try:
        response = requests.request(method, address, timeout=TIMEOUT_S, **kwargs)
    except requests.RequestException as exc:
        raise SetupError(f"could not {step}: {method} {address} failed: {exc}") from None
    if response.status_code == 401:
        raise SetupError(f"could not {step}: Label Studio rejected the API key (HTTP 401: {response.text[:300]}). "
                         "Recent Label Studio versions refuse legacy tokens unless an admin enables them; "
                         "use a Personal Access Token.")
    if response.status_code >= 400:
        raise SetupError(f"could not {step}: {method} {address} answered HTTP {response.status_code}: "
                         f"{response.text[:1000]}")
    return response


def find_images(folder: Path) -> List[Path]:
    """The image files directly inside ``folder`` (by suffix), sorted by name."""
    if not folder.is_dir():
        raise SetupError(f"--images {folder}: not a directory", code=2)
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise SetupError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})", code=2)
    return images


def create_project(url: str, headers: Dict[str, str], title: str, label_config: str) -> int:
    response = _request("POST", f"{url}/api/projects", "create the project", headers=headers,
                        json={"title": title, "label_config": label_config})
    return int(response.json()["id"])


def upload_images(url: str, headers: Dict[str, str], project: int, images: Sequence[Path]) -> List[int]:
    """Upload the files as tasks of ``project``; returns the new task ids in upload order."""
    task_ids: List[int] = []
    for start in range(0, len(images), UPLOAD_BATCH):
        batch = images[start:start + UPLOAD_BATCH]
        handles = [open(p, "rb") for p in batch]
        try:
            files = [(p.name, (p.name, h)) for p, h in zip(batch, handles)]
            response = _request("POST", f"{url}/api/projects/{project}/import?return_task_ids=true",
                                f"upload {len(batch)} image(s)", headers=headers, files=files)
        finally:
            for h in handles:
                h.close()
        body = response.json()
        if body.get("task_count") != len(batch):
            raise SetupError(f"uploading {len(batch)} image(s) created {body.get('task_count')} task(s): {body}")
        task_ids.extend(int(t) for t in body["task_ids"])
    return task_ids


def attach_backend(url: str, headers: Dict[str, str], project: int, backend_url: str, title: str,
                   basic_auth: Optional[Sequence[str]] = None) -> int:
    """Connect the ML backend as interactive (the UI only sends clicks to interactive backends); returns its id."""
    body = {"project": project, "url": backend_url, "title": title, "is_interactive": True}
    if basic_auth:
        body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
    response = _request("POST", f"{url}/api/ml", f"attach the ML backend at {backend_url} (Label Studio checks its "
                        "/health and /setup; in Docker, name the backend as Label Studio's container sees it)",
                        headers=headers, json=body)
    return int(response.json()["id"])


def connect(url: str, api_key: str, images_dir: Path, backend_url: str, title: str, label_config: str,
            backend_title: str = "m2n2", basic_auth: Optional[Sequence[str]] = None) -> dict:
    """Run the whole setup; returns the ids and the project's URL."""
    url = url.rstrip("/")
    images = find_images(images_dir)
    headers = auth_headers(url, api_key)
    project = create_project(url, headers, title, label_config)
    task_ids = upload_images(url, headers, project, images)
    try:
        ml_backend = attach_backend(url, headers, project, backend_url.rstrip("/"), backend_title, basic_auth)
    except SetupError as exc:
        raise SetupError(f"{exc}\n(project {project} was created with {len(task_ids)} task(s); attach the backend "
                         f"later under Settings → Model, or delete the project: {url}/projects/{project})") from None
    return {"project": project, "tasks": task_ids, "ml_backend": ml_backend,
            "project_url": f"{url}/projects/{project}/data"}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"),
                        help="Label Studio address (default: $LABEL_STUDIO_URL)")
    parser.add_argument("--api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                        help="Personal Access Token or legacy token (default: $LABEL_STUDIO_API_KEY)")
    parser.add_argument("--images", required=True, type=Path, help="folder of images to upload")
    parser.add_argument("--backend-url", default="http://localhost:9090",
                        help="the m2n2 backend as Label Studio reaches it (default: %(default)s)")
    parser.add_argument("--title", default="M2N2 click-to-segment", help="project title (default: %(default)s)")
    parser.add_argument("--label-config", type=Path, default=DEFAULT_CONFIG,
                        help="label config XML (default: examples/label_config.xml)")
    parser.add_argument("--backend-basic-auth", metavar="USER:PASS",
                        help="if the backend runs with BASIC_AUTH_USER/BASIC_AUTH_PASS")
    parser.add_argument("--json", action="store_true", help="print the ids as JSON instead of a sentence")
    args = parser.parse_args(argv)
    if not args.url:
        parser.error("--url is required (or set LABEL_STUDIO_URL)")
    if not args.api_key:
        parser.error("--api-key is required (or set LABEL_STUDIO_API_KEY)")
    if args.backend_basic_auth is not None and ":" not in args.backend_basic_auth:
        parser.error("--backend-basic-auth must be USER:PASS")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        try:
            label_config = args.label_config.read_text(encoding="utf-8")
        except OSError as exc:
            raise SetupError(f"--label-config {args.label_config}: {exc.strerror}", code=2) from None
        basic_auth = args.backend_basic_auth.split(":", 1) if args.backend_basic_auth else None
        result = connect(args.url, args.api_key, args.images, args.backend_url, args.title, label_config,
                         basic_auth=basic_auth)
    except SetupError as exc:
        print(f"connect_label_studio: {exc}", file=sys.stderr)
        return exc.code
    if args.json:
        print(json.dumps(result))
    else:
        print(f"Created project {result['project']} with {len(result['tasks'])} task(s), ML backend "
              f"{result['ml_backend']} attached. Open {result['project_url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
