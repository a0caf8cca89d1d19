"""Shared helpers for the backend tests: a loopback HTTP server, test images, Label Studio payloads, settings."""
from __future__ import annotations

import http.server
import io
import json
import socketserver
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from backend.config import Settings

LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Object" background="#FF0000"/>
    <Label value="Other" background="#00FF00"/>
  </BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true">
    <Label value="Object" smart="true" background="#FF0000"/>
    <Label value="Other" smart="true" background="#00FF00"/>
  </KeyPointLabels>
</View>"""


def fast_settings(**changes) -> Settings:
    """Fast settings: weight-free attention at r=16, short timeouts, no background warm-up unless asked."""
    base = dict(attention="affinity", attention_resolution=16, fetch_timeout=2.0, warmup_threads=0, load_wait=30.0)
    base.update(changes)
    return Settings(**base)


# ---- images ----------------------------------------------------------------------------------------------------------
def scene(width: int = 64, height: int = 48) -> np.ndarray:
    """A dark background with a bright off-centre square: an image with an obvious object."""
    img = np.full((height, width, 3), 30, np.uint8)
    img[height // 4: height // 4 + height // 2, width // 5: width // 5 + width // 2] = (220, 200, 40)
    return img


def encode(array_or_image, fmt: str = "PNG", **save_kw) -> bytes:
    img = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save_kw)
    return buf.getvalue()


# ---- Label Studio payloads -------------------------------------------------------------------------------------------
def keypoint(x: float, y: float, label: str = "Object", positive: Optional[bool] = True,
             size: Optional[Tuple[int, int]] = (64, 48), rid: str = "k1", **extra) -> Dict:
    region = {"type": "keypointlabels", "from_name": "tag2", "to_name": "image", "id": rid, "image_rotation": 0,
              "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": [label]}}
    if size is not None:
        region["original_width"], region["original_height"] = size
    if positive is not None:
        region["is_positive"] = positive
    region.update(extra)
    return region


def predict_body(url: str, regions: Optional[List[Dict]] = None, task_id: int = 1,
                 label_config: str = LABEL_CONFIG) -> Dict:
    context = None if regions is None else {"result": regions}
    return {"tasks": [{"id": task_id, "data": {"image": url}}], "project": "1.1700000000",
            "label_config": label_config, "params": {"login": None, "password": None, "context": context}}


# ---- loopback server ---------------------------------------------------------------------------------------------
@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: Dict[str, str] = field(default_factory=dict)
    delay: float = 0.0            #: seconds to sleep before answering
    drip: float = 0.0             #: seconds between 16-byte pieces of the body
    length: bool = True           #: False: no Content-Length, the body ends when the connection closes


class LoopbackServer:
    """An HTTP server on 127.0.0.1 serving ``routes`` (path incl. query → Route); records requests it received."""

    def __init__(self) -> None:
        self.routes: Dict[str, Route] = {}
        self.requests: List[Tuple[str, str, Dict[str, str], bytes]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                owner.requests.append((self.command, self.path, dict(self.headers), self.rfile.read(length)))
                route = owner.routes.get(self.path, Route(b"not found", 404))
                try:
                    time.sleep(route.delay)
                    self.send_response(route.status)
                    for k, v in route.headers.items():
                        self.send_header(k, v)
                    if route.length and "Content-Length" not in route.headers:
                        self.send_header("Content-Length", str(len(route.body)))
                    self.end_headers()
                    if route.drip:
                        for i in range(0, len(route.body), 16):
                            self.wfile.write(route.body[i:i + 16])
                            self.wfile.flush()
                            time.sleep(route.drip)
                    else:
                        self.wfile.write(route.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = _serve

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, path: str, body: bytes = b"", **kw) -> str:
        self.routes[path] = Route(body, **kw)
        return self.url + path

    def json(self, path: str, payload, status: int = 200) -> str:
        return self.add(path, json.dumps(payload).encode(), status=status, headers={"Content-Type": "application/json"})

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

