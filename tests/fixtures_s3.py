"""Real S3 servers for the store tests: moto's S3 HTTP server, one with IAM authentication switched on,
a proxy in front of moto that damages object downloads in transit, and one that records every request and can
drop the conditional-write headers, as a server that does not implement them would ignore them. No mocks: every
request crosses a socket and is signed and parsed as against MinIO, SeaweedFS or AWS."""
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

MOTO_SERVER = Path(sys.executable).with_name("moto_server")
SERVER_START_TIMEOUT_S = 60
TEST_ACCESS_KEY = "wsseg-test-access-key"
# Distinctive so a test can prove it never leaks into messages, reprs or URIs.
TEST_SECRET = "wsseg-test-secret-Zq81xK3"
TEST_REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def minio_client(endpoint_url: str, access_key=TEST_ACCESS_KEY, secret_key=TEST_SECRET):
    """A plain minio client, the way a test reaches the server behind the store's back."""
    from minio import Minio

    return Minio(urlsplit(endpoint_url).netloc, access_key, secret_key, secure=False, region=TEST_REGION)


def unique_bucket_name() -> str:
    return f"wsseg-test-{uuid.uuid4().hex[:16]}"


# moto_server as its console script starts it, but answering one request at a time (werkzeug's threaded=False).
# moto checks an If-Match or If-None-Match and then writes, with no lock between: on its threaded server, two
# conditional PUTs of one key can both pass the check, which AWS S3 and MinIO never allow. Served one at a time, each
# check and its write are one step, as on those servers; the tests of concurrent writers run against this one.
ONE_REQUEST_AT_A_TIME = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
run_simple(sys.argv[1], int(sys.argv[2]), DomainDispatcherApplication(create_backend_app), threaded=False,
           request_handler=MotoRequestHandler)
"""


def _start_moto_server(one_request_at_a_time: bool = False):
    if not MOTO_SERVER.exists():
        pytest.skip(f"{MOTO_SERVER} not found; install the test extras (moto[server])")
    port = free_port()
    if one_request_at_a_time:
        command = [sys.executable, "-c", ONE_REQUEST_AT_A_TIME, "127.0.0.1", str(port)]
    else:
        command = [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
            return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"moto_server did not answer on {url} within {SERVER_START_TIMEOUT_S}s")


def _stop(process) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL of a moto S3 server that accepts any credentials."""
    process, url = _start_moto_server()
    yield url
    _stop(process)


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point the environment at `s3_server`, create a fresh bucket, and yield `s3://<bucket>/run`."""
    return _fresh_bucket(s3_server, monkeypatch)


@pytest.fixture(scope="session")
def s3_atomic_server():
    """Endpoint URL of a moto S3 server whose conditional writes are atomic (`ONE_REQUEST_AT_A_TIME`)."""
    process, url = _start_moto_server(one_request_at_a_time=True)
    yield url
    _stop(process)


@pytest.fixture
def s3_atomic_env(s3_atomic_server, monkeypatch):
    """As `s3_env`, on `s3_atomic_server`."""
    return _fresh_bucket(s3_atomic_server, monkeypatch)


def _fresh_bucket(server: str, monkeypatch) -> str:
    set_s3_env(monkeypatch, server)
    bucket = unique_bucket_name()
    minio_client(server).make_bucket(bucket)
    return f"s3://{bucket}/run"


def set_s3_env(monkeypatch, endpoint_url: str, access_key=TEST_ACCESS_KEY, secret_key=TEST_SECRET) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key)
    monkeypatch.setenv("AWS_REGION", TEST_REGION)
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "WSSEG_S3_SECURE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def s3_auth_server():
    """A moto server that checks signatures against its IAM users (moto's IAM-auth mode).

    Yields (endpoint URL, bucket, access key id, secret key) of one user allowed `s3:*` on a bucket.
    """
    process, url = _start_moto_server()
    user = _create_iam_user(url)
    bucket = unique_bucket_name()
    minio_client(url).make_bucket(bucket)
    # From here on moto authenticates every request, as MinIO and AWS do.
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request, timeout=10).close()
    yield url, bucket, user["AccessKeyId"], user["SecretAccessKey"]
    _stop(process)


def _create_iam_user(url: str) -> dict:
    import boto3

    iam = boto3.client(
        "iam", endpoint_url=url, region_name=TEST_REGION,
        aws_access_key_id=TEST_ACCESS_KEY, aws_secret_access_key=TEST_SECRET,
    )
    iam.create_user(UserName="wsseg")
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName="wsseg", PolicyName="s3-all", PolicyDocument=json.dumps(policy))
    return iam.create_access_key(UserName="wsseg")["AccessKey"]


class DamagingProxy(ThreadingHTTPServer):
    """Forwards requests to an S3 server; object downloads (GET without a query) come back damaged.

    `damage` is "flip" (last byte inverted, length kept) or "truncate" (half the body, then hang up).
    """

    daemon_threads = True

    def __init__(self, upstream_url: str, damage: str):
        self.upstream = urlsplit(upstream_url).netloc
        self.damage = damage
        super().__init__(("127.0.0.1", 0), _DamagingHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _DamagingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        self._forward()

    def do_GET(self):
        self._forward()

    def log_message(self, format, *args):
        pass

    def _forward(self):
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        upstream.request(self.command, self.path, headers=dict(self.headers))
        response = upstream.getresponse()
        body = response.read()
        upstream.close()
        is_object_download = self.command == "GET" and "?" not in self.path and response.status == 200
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding"):
                self.send_header(name, value)
        self.end_headers()
        if is_object_download and body:
            body = self._damaged(body)
        self.wfile.write(body)
        if is_object_download and self.server.damage == "truncate":
            self.close_connection = True

    def _damaged(self, body: bytes) -> bytes:
        if self.server.damage == "truncate":
            return body[: len(body) // 2]
        return body[:-1] + bytes([body[-1] ^ 0xFF])


@pytest.fixture
def damaging_proxy(s3_server):
    """Start a `DamagingProxy` in front of `s3_server`: call with the damage to do, get the proxy."""
    proxies = []

    def start(damage: str) -> DamagingProxy:
        proxy = DamagingProxy(s3_server, damage)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.shutdown()
        proxy.server_close()


CONDITION_HEADERS = ("If-None-Match", "If-Match")


class RecordingProxy(ThreadingHTTPServer):
    """Forwards every request to an S3 server and records its method, path and headers; with `drop_conditions`,
    it strips If-None-Match and If-Match first, so moto behind it answers as a server that ignores them."""

    daemon_threads = True

    def __init__(self, upstream_url: str, drop_conditions: bool):
        self.upstream = urlsplit(upstream_url).netloc
        self.drop_conditions = drop_conditions
        self.requests: list[tuple[str, str, dict]] = []
        super().__init__(("127.0.0.1", 0), _RecordingHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def puts_with(self, header: str) -> list[str]:
        """The paths of the PUTs that carried `header`, as the upstream server received them."""
        return [path for method, path, headers in self.requests if method == "PUT" and header in headers]


class _RecordingHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name: value for name, value in self.headers.items()
                   if not (self.server.drop_conditions and name in CONDITION_HEADERS)}
        self.server.requests.append((self.command, self.path, headers))
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        response = upstream.getresponse()
        payload = response.read()
        upstream.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("connection", "transfer-encoding", "content-length"):
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        else:
            self.send_header("Content-Length", response.getheader("Content-Length", "0"))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


@pytest.fixture
def recording_proxy(s3_server):
    """Start a `RecordingProxy` in front of `s3_server`: call with drop_conditions=True/False, get the proxy."""
    proxies = []

    def start(drop_conditions: bool) -> RecordingProxy:
        proxy = RecordingProxy(s3_server, drop_conditions)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.shutdown()
        proxy.server_close()
