"""`wsseg submit` and `wsseg schedule` against a loopback imitation of the KFP v2beta1 API.

A real KFP API server is not used: none runs here, as it needs a Kubernetes cluster with MySQL and Argo
Workflows behind it. The server below answers the endpoints that the real `kfp.Client` (kfp 2.17.0 with
its generated `kfp_server_api`) calls, records every request, and lets the tests check what the client
really sends: the uploaded spec, the run's parameters, the cron expression.
"""
# No `from __future__ import annotations` here: kfp reads the component's annotations as real types.
import email.parser
import email.policy
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from wsseg.cli import main

API = "/apis/v2beta1"


class FakeKfpApi:
    """State of the imitated server: pipelines, versions, experiments, runs, and the requests seen."""

    def __init__(self):
        self.requests: list[dict] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, list[dict]] = {}
        self.experiments: dict[str, dict] = {}
        self.lock = threading.Lock()

    def handle(self, request: dict) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(request)
            route = (request["method"], request["path"])
            if route == ("GET", f"{API}/healthz"):
                return 200, {"multi_user": False}
            if route == ("GET", f"{API}/pipelines"):
                return 200, {"pipelines": _matching(self.pipelines.values(), request)}
            if route == ("POST", f"{API}/pipelines"):
                return 200, self._create_pipeline(request["json"])
            if route == ("POST", f"{API}/pipelines/upload_version"):
                return 200, self._upload_version(request)
            if request["method"] == "GET" and request["path"].endswith("/versions"):
                pipeline_id = request["path"].split("/")[-2]
                return 200, {"pipeline_versions": _matching(self.versions.get(pipeline_id, []), request)}
            if route == ("GET", f"{API}/experiments"):
                return 200, {"experiments": _matching(self.experiments.values(), request)}
            if route == ("POST", f"{API}/experiments"):
                experiment = {**request["json"], "experiment_id": _new_id()}
                self.experiments[experiment["experiment_id"]] = experiment
                return 200, experiment
            if route == ("POST", f"{API}/runs"):
                return 200, {**request["json"], "run_id": _new_id(), "state": "PENDING"}
            if route == ("POST", f"{API}/recurringruns"):
                return 200, {**request["json"], "recurring_run_id": _new_id(), "status": "ENABLED"}
            return 404, {"error": f"no route {route}", "code": 5}

    def _create_pipeline(self, body: dict) -> dict:
        pipeline = {**body, "pipeline_id": _new_id()}
        self.pipelines[pipeline["pipeline_id"]] = pipeline
        self.versions[pipeline["pipeline_id"]] = []
        return pipeline

    def _upload_version(self, request: dict) -> dict:
        pipeline_id = request["query"]["pipelineid"]
        version = {"pipeline_id": pipeline_id, "pipeline_version_id": _new_id(),
                   "display_name": request["query"]["name"]}
        self.versions[pipeline_id].append(version)
        return version

    def calls(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]


def _matching(objects, request: dict) -> list[dict]:
    """Objects whose display_name equals the one in the request's `filter`, as the real server filters."""
    predicate = json.loads(request["query"]["filter"])["predicates"][0]
    # The server reads the filter as protobuf JSON, where an enum is its name or its number (kfp sends 1).
    assert predicate["key"] == "display_name" and predicate["operation"] in ("EQUALS", 1)
    return [o for o in objects if o["display_name"] == predicate["stringValue"]]


def _new_id() -> str:
    return str(uuid.uuid4())


class _Handler(BaseHTTPRequestHandler):
    api: FakeKfpApi

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def _answer(self):
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = {"method": self.command, "path": url.path,
                   "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                   "headers": {k.lower(): v for k, v in self.headers.items()}, "json": None, "files": {}}
        content_type = self.headers.get("Content-Type", "")
        if content_type.startswith("application/json") and body:
            request["json"] = json.loads(body)
        elif content_type.startswith("multipart/form-data"):
            request["files"] = _multipart_files(content_type, body)
        try:
            status, answer = self.api.handle(request)
        except (AssertionError, KeyError, ValueError) as error:  # a 500 the client reports, not a hang
            status, answer = 500, {"error": f"fake server: {error!r}"}
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def _multipart_files(content_type: str, body: bytes) -> dict[str, bytes]:
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


@pytest.fixture
def kfp_server():
    api = FakeKfpApi()
    handler = type("Handler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    api.url = f"http://127.0.0.1:{server.server_port}"
    yield api
    server.shutdown()
    server.server_close()


def _compile_tiny_pipeline(path, default_note: str = "hello"):
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.11-slim")
    def echo(epochs: int, learning_rate: float, augment: bool, note: str) -> str:
        return f"{epochs} {learning_rate} {augment} {note}"

    @dsl.pipeline(name="tiny")
    def tiny(epochs: int = 1, learning_rate: float = 0.1, augment: bool = False, note: str = default_note):
        echo(epochs=epochs, learning_rate=learning_rate, augment=augment, note=note)

    compiler.Compiler().compile(tiny, package_path=str(path))
    return path


@pytest.fixture
def tiny_pipeline(tmp_path):
    return _compile_tiny_pipeline(tmp_path / "tiny.yaml")


def _wsseg(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err


def test_submit_uploads_the_compiled_spec_and_starts_a_run_with_typed_parameters(kfp_server, tiny_pipeline, capsys):
    code, out, _ = _wsseg(capsys, "submit", str(tiny_pipeline), "--host", kfp_server.url,
                          "--param", "epochs=3", "--param", "learning_rate=0.5", "--param", "augment=true",
                          "--param", "note=preset: gpu", "--experiment", "nightly")

    assert code == 0
    [create] = kfp_server.calls("POST", f"{API}/pipelines")
    assert create["json"]["display_name"] == "tiny"
    [upload] = kfp_server.calls("POST", f"{API}/pipelines/upload_version")
    assert upload["files"]["uploadfile"] == tiny_pipeline.read_bytes()
    assert upload["query"]["name"].startswith("sha256-")
    [experiment] = kfp_server.calls("POST", f"{API}/experiments")
    assert experiment["json"]["display_name"] == "nightly"
    [run] = kfp_server.calls("POST", f"{API}/runs")
    body = run["json"]
    assert body["runtime_config"]["parameters"] == {"epochs": 3, "learning_rate": 0.5, "augment": True,
                                                    "note": "preset: gpu"}
    pipeline_id = next(iter(kfp_server.pipelines))
    assert body["pipeline_version_reference"] == {
        "pipeline_id": pipeline_id, "pipeline_version_id": kfp_server.versions[pipeline_id][0]["pipeline_version_id"]}
    assert body["experiment_id"] == next(iter(kfp_server.experiments))
    assert out.startswith(f"{kfp_server.url}/#/runs/details/")
    assert len(out.splitlines()) == 1


def test_second_submit_of_the_same_spec_reuses_the_uploaded_version(kfp_server, tiny_pipeline, capsys):
    for _ in range(2):
        assert _wsseg(capsys, "submit", str(tiny_pipeline), "--host", kfp_server.url)[0] == 0

    assert len(kfp_server.calls("POST", f"{API}/pipelines")) == 1
    assert len(kfp_server.calls("POST", f"{API}/pipelines/upload_version")) == 1
    assert len(kfp_server.calls("POST", f"{API}/experiments")) == 1
    first, second = (r["json"]["pipeline_version_reference"] for r in kfp_server.calls("POST", f"{API}/runs"))
    assert first == second


def test_changed_spec_becomes_a_new_version_of_the_same_pipeline(kfp_server, tiny_pipeline, tmp_path, capsys):
    changed = _compile_tiny_pipeline(tmp_path / "tiny-changed.yaml", default_note="changed")
    for path in (tiny_pipeline, changed):
        assert _wsseg(capsys, "submit", str(path), "--host", kfp_server.url)[0] == 0

    assert len(kfp_server.calls("POST", f"{API}/pipelines")) == 1
    uploads = kfp_server.calls("POST", f"{API}/pipelines/upload_version")
    assert [u["files"]["uploadfile"] for u in uploads] == [tiny_pipeline.read_bytes(), changed.read_bytes()]
    assert uploads[0]["query"]["name"] != uploads[1]["query"]["name"]


def test_schedule_creates_a_recurring_run_on_the_cron(kfp_server, tiny_pipeline, capsys):
    code, out, _ = _wsseg(capsys, "schedule", str(tiny_pipeline), "--host", kfp_server.url,
                          "--cron", "0 0 3 * * *", "--max-concurrency", "2", "--param", "epochs=5")

    assert code == 0
    [recurring] = kfp_server.calls("POST", f"{API}/recurringruns")
    body = recurring["json"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(body["max_concurrency"]) == 2
    assert body["no_catchup"] is True
    assert body["mode"] == "ENABLE"
    assert body["runtime_config"]["parameters"] == {"epochs": 5}
    assert out.startswith(f"{kfp_server.url}/#/recurringrun/details/")


def test_five_field_cron_is_refused_before_contacting_the_server(kfp_server, tiny_pipeline, capsys):
    code, _, err = _wsseg(capsys, "schedule", str(tiny_pipeline), "--host", kfp_server.url, "--cron", "0 3 * * *")

    assert code == 2
    assert "5 fields" in err and "6" in err and "seconds first" in err
    assert kfp_server.requests == []


def test_missing_pipeline_file_is_named_with_the_fix(kfp_server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = _wsseg(capsys, "submit", "wsss", "--host", kfp_server.url)

    assert code == 2
    assert "build/pipelines/wsss.yaml" in err and "make compile" in err
    assert kfp_server.requests == []


def test_unknown_parameter_is_refused_with_the_pipeline_parameters(kfp_server, tiny_pipeline, capsys):
    code, _, err = _wsseg(capsys, "submit", str(tiny_pipeline), "--host", kfp_server.url, "--param", "epoch=3")

    assert code == 2
    assert "epoch" in err and "augment, epochs, learning_rate, note" in err
    assert kfp_server.requests == []


@pytest.mark.parametrize("param", ["epochs=three", "epochs=true", "augment=3", "learning_rate=fast"])
def test_parameter_of_the_wrong_type_is_refused(kfp_server, tiny_pipeline, capsys, param):
    code, _, err = _wsseg(capsys, "submit", str(tiny_pipeline), "--host", kfp_server.url, "--param", param)

    assert code == 2
    assert f"--param {param}: the pipeline declares" in err
    assert kfp_server.requests == []


def test_token_is_sent_as_a_bearer_token(kfp_server, tiny_pipeline, capsys):
    assert _wsseg(capsys, "submit", str(tiny_pipeline), "--host", kfp_server.url, "--token", "t0ken")[0] == 0

    assert {r["headers"].get("authorization") for r in kfp_server.requests} == {"Bearer t0ken"}


def test_server_errors_are_reported_without_a_traceback(kfp_server, tiny_pipeline, capsys):
    healthy = kfp_server.handle
    kfp_server.handle = lambda request: (healthy(request) if request["path"].endswith("/healthz")
                                         else (403, {"error": "namespace denied", "code": 7}))
    code, _, err = _wsseg(capsys, "submit", str(tiny_pipeline), "--host", kfp_server.url)

    assert code == 2
    assert "403" in err and "namespace denied" in err and "Traceback" not in err


def test_schedule_incremental_creates_the_recurring_update_run(kfp_server, tmp_path, capsys):
    from kfp import compiler

    from pipelines import PIPELINES

    compiled = tmp_path / "incremental.yaml"
    compiler.Compiler().compile(PIPELINES["incremental"], str(compiled))
    code, out, _ = _wsseg(capsys, "schedule", str(compiled), "--host", kfp_server.url, "--cron", "0 0 3 * * *",
                          "--param", "data=s3://wsseg/voc-val", "--param", "registry=s3://wsseg/registry",
                          "--param", "inbox=s3://wsseg/inbox", "--param", "store_uri=s3://wsseg/runs")

    assert code == 0 and out.startswith(f"{kfp_server.url}/#/recurringrun/details/")
    [upload] = kfp_server.calls("POST", f"{API}/pipelines/upload_version")
    assert upload["files"]["uploadfile"] == compiled.read_bytes()
    [recurring] = kfp_server.calls("POST", f"{API}/recurringruns")
    body = recurring["json"]
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    # One run at a time: the registry has no compare-and-swap (wsseg.incremental.registry).
    assert int(body["max_concurrency"]) == 1 and body["no_catchup"] is True
    assert body["runtime_config"]["parameters"] == {"data": "s3://wsseg/voc-val", "registry": "s3://wsseg/registry",
                                                    "inbox": "s3://wsseg/inbox", "store_uri": "s3://wsseg/runs"}
