"""A stand-in for Voyage AI's embeddings API on 127.0.0.1: a real HTTP server
answering ``POST /v1/embeddings`` as Voyage AI does (the shape of its
responses and errors, https://docs.voyageai.com/reference/embeddings-api),
with deterministic vectors, so the official client is tested for real with
no network.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

KEY = "pa-test-key-0123456789"


def fake_vector(text: str, dim: int = 1024) -> np.ndarray:
    """A unit vector from the words of ``text`` (each word hashed into one
    dimension): texts sharing words are close, as with a real model."""
    vector = np.zeros(dim, dtype=np.float32)
    for word in re.findall(r"\w+", text.lower()):
        vector[int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little") % dim] += 1.0
    if not vector.any():
        vector[0] = 1.0
    return vector / np.linalg.norm(vector)


class FakeVoyage:
    """The server, in a thread, while the ``with`` block runs.

    Attributes:
        requests: every request's ``Authorization`` header and JSON body.
        failures: (status, body) answers served, one a request, before any
            embedding: a queue of errors.
        down: answer every request with this (status, body) while set.
        delay: seconds to wait before answering (a slow service).
    """

    def __init__(self, key: str = KEY, dim: int = 1024) -> None:
        self.key = key
        self.dim = dim
        self.requests: list[dict[str, Any]] = []
        self.failures: list[tuple[int, dict[str, Any]]] = []
        self.down: tuple[int, dict[str, Any]] | None = None
        self.delay = 0.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-voyage", daemon=True)

    @property
    def url(self) -> str:
        """The base URL to hand the client (``VOYAGE_BASE_URL``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def inputs(self, input_type: str) -> list[str]:
        """Every text sent with this ``input_type``."""
        return [t for r in self.requests if r["body"].get("input_type") == input_type for t in r["body"]["input"]]

    def __enter__(self) -> FakeVoyage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, authorization: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append({"authorization": authorization, "body": body})
        if self.delay:
            time.sleep(self.delay)
        if self.down is not None:
            return self.down
        if self.failures:
            return self.failures.pop(0)
        if authorization != f"Bearer {self.key}":
            return 401, {"detail": "Provided API key is invalid."}
        texts = body["input"]
        if len(texts) > 1000:
            return 400, {"detail": "The batch size limit is 1000."}
        data = []
        for index, text in enumerate(texts):
            vector = fake_vector(text, self.dim)
            encoded = base64.b64encode(vector.astype("<f4").tobytes()).decode()
            embedding = encoded if body.get("encoding_format") == "base64" else vector.tolist()
            data.append({"object": "embedding", "embedding": embedding, "index": index})
        tokens = sum(len(t.split()) for t in texts)
        return 200, {"object": "list", "data": data, "model": body["model"], "usage": {"total_tokens": tokens}}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                if self.path != "/v1/embeddings":
                    self._send(404, {"detail": "Not Found"})
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self._send(*fake.answer(self.headers.get("Authorization", ""), body))

            def _send(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        return Handler
