"""A loopback imitation of the Kubernetes API for PyTorchJobs, and a kubeconfig that points the real
`kubernetes` client at it.

No real cluster is used: none runs here, and a PyTorchJob needs the Kubeflow Training Operator and GPU nodes
behind the API server. The server answers the two endpoints the client calls (POST to create, GET to poll).
"""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

__all__ = ["NAMESPACE", "FakeKubernetesApi", "kubernetes_api", "kubeconfig"]

NAMESPACE = "kubeflow-user"
JOBS = f"/apis/kubeflow.org/v1/namespaces/{NAMESPACE}/pytorchjobs"


class FakeKubernetesApi(ThreadingHTTPServer):
    """Stores the created job; each GET reports the next status from `statuses` (the last one repeats)."""

    def __init__(self, statuses: list[dict], create_status: int = 201):
        super().__init__(("127.0.0.1", 0), KubernetesHandler)
        self.statuses, self.create_status = statuses, create_status
        self.created: list[dict] = []
        self.gets = 0
        # Called with each created job before the API answers: a test plays the operator's pods here.
        self.on_create = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class KubernetesHandler(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != JOBS:
            return self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.created.append(body)
        if self.server.on_create:
            self.server.on_create(body)
        self._answer(self.server.create_status, body)

    def do_GET(self):
        name = self.server.created[-1]["metadata"]["name"] if self.server.created else None
        if self.path != f"{JOBS}/{name}":
            return self._answer(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        status = self.server.statuses[min(self.server.gets, len(self.server.statuses) - 1)]
        self.server.gets += 1
        self._answer(200, dict(self.server.created[-1], status=status))

    def _answer(self, code: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass


@pytest.fixture
def kubernetes_api(request):
    server = FakeKubernetesApi(*request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def kubeconfig(kubernetes_api, tmp_path, monkeypatch):
    """KUBECONFIG naming `kubernetes_api`, as `kubectl` and the kubernetes client read it outside a pod."""
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "loopback",
        "clusters": [{"name": "loopback", "cluster": {"server": kubernetes_api.url}}],
        "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "loopback", "context": {"cluster": "loopback", "user": "tester",
                                                      "namespace": NAMESPACE}}]}))
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path
