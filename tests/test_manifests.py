"""The kustomize folders under manifests/ build, and what they build is valid and consistent Kubernetes.

Each folder is built with the real `kubectl kustomize`. Every object is validated against the Kubernetes
OpenAPI schemas that kubernetes-validate ships, in strict mode (an unknown field is an error). PyTorchJob
belongs to the Kubeflow training operator, a CRD without a schema there: its structure is checked here and
its pod templates are validated as core PodTemplates. KServe's InferenceService is checked the same way: its
predictor is a core PodSpec with KServe's fields added, its `model` a core Container with the model's.
"""
from __future__ import annotations

import base64
import functools
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from wsseg.image import DEFAULT_IMAGE, IMAGE_REPOSITORY

MANIFESTS = Path(__file__).resolve().parents[1] / "manifests"
KUBERNETES_VERSION = "1.30.0"
PLACEHOLDER = "REPLACE_ME"
PYTORCHJOB_API = "kubeflow.org/v1"
PYTORCHJOB_REPLICA_TYPES = {"Master", "Worker"}
INFERENCE_SERVICE_API = "serving.kserve.io/v1beta1"
# What KServe adds to a core PodSpec in a predictor (ComponentExtensionSpec) and to a Container in its model.
KSERVE_COMPONENT_FIELDS = {"model", "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric",
                           "containerConcurrency", "timeout", "canaryTrafficPercent", "logger", "batcher"}
KSERVE_MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri"}
# Formats KServe's Triton runtime serves, and what `wsseg export` writes for each.
TRITON_FORMATS = {"pytorch": "torchscript", "onnx": "onnx"}
# manifests/local/ is the git-ignored place for overlays holding real credentials; it is not the project's.
KUSTOMIZATIONS = sorted(path.parent.relative_to(MANIFESTS) for path in MANIFESTS.glob("**/kustomization.yaml")
                        if path.relative_to(MANIFESTS).parts[0] != "local")
OVERLAYS = [folder for folder in KUSTOMIZATIONS if folder.parts[0] == "overlays"]
EXAMPLES = [folder for folder in KUSTOMIZATIONS if folder.parts[0] == "examples"]

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None,
                                reason="kubectl is not installed: `kubectl kustomize` builds the manifests")


@functools.cache
def build(folder: Path) -> tuple[dict, ...]:
    output = subprocess.run(["kubectl", "kustomize", str(MANIFESTS / folder)],
                            capture_output=True, text=True, check=False)
    assert output.returncode == 0, f"kubectl kustomize {folder} failed:\n{output.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(output.stdout) if doc)


def _find(objects, kind: str, name: str) -> dict | None:
    return next((o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name), None)


def _pod_templates(obj: dict) -> list[dict]:
    if obj["kind"] == "PyTorchJob":
        return [spec["template"] for spec in obj["spec"]["pytorchReplicaSpecs"].values()]
    if obj["kind"] == "Job" or obj["kind"] == "Deployment":
        return [obj["spec"]["template"]]
    if obj["kind"] == "InferenceService":
        return [_predictor_template(obj["spec"]["predictor"])]
    return []


def _predictor_template(predictor: dict) -> dict:
    """The pod KServe makes of a predictor: its PodSpec fields, its model as the container that serves it."""
    container = {key: value for key, value in predictor["model"].items() if key not in KSERVE_MODEL_FIELDS}
    spec = {key: value for key, value in predictor.items() if key not in KSERVE_COMPONENT_FIELDS}
    return {"spec": {**spec, "containers": [{"name": "kserve-container", **container}]}}


def _containers(obj: dict) -> list[dict]:
    return [container for template in _pod_templates(obj)
            for container in template["spec"].get("initContainers", []) + template["spec"]["containers"]]


def check_pytorchjob(job: dict) -> None:
    assert job["apiVersion"] == PYTORCHJOB_API
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert set(replicas) <= PYTORCHJOB_REPLICA_TYPES and "Master" in replicas, set(replicas)
    assert replicas["Master"].get("replicas", 1) == 1, "a PyTorchJob has exactly one Master"
    for replica_type, spec in replicas.items():
        assert spec.get("restartPolicy", "OnFailure") in ("Always", "OnFailure", "Never", "ExitCode")
        # The training operator injects the rendezvous settings into the container named `pytorch` only.
        assert "pytorch" in [c["name"] for c in spec["template"]["spec"]["containers"]], replica_type
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                      "metadata": {"name": f"{job['metadata']['name']}-{replica_type.lower()}"},
                                      "template": spec["template"]}, KUBERNETES_VERSION, strict=True)


def check_inference_service(service: dict) -> None:
    assert service["apiVersion"] == INFERENCE_SERVICE_API
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] in TRITON_FORMATS and model["runtime"] == "kserve-tritonserver"
    assert model["protocolVersion"] in ("v1", "v2", "grpc-v2")
    assert model["storageUri"].startswith("s3://")
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                  "metadata": {"name": f"{service['metadata']['name']}-predictor"},
                                  "template": _predictor_template(predictor)}, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=str)
def test_kustomization_builds_schema_valid_objects(folder):
    objects = build(folder)

    assert objects, f"{folder} builds nothing"
    for obj in objects:
        if obj["kind"] == "PyTorchJob":
            check_pytorchjob(obj)
        elif obj["kind"] == "InferenceService":
            check_inference_service(obj)
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_overlays_and_examples_exist():
    assert {str(folder) for folder in OVERLAYS} >= {"overlays/kubeflow", "overlays/standalone-minio"}
    assert any(obj["kind"] == "PyTorchJob" for folder in EXAMPLES for obj in build(folder))
    assert any(obj["kind"] == "InferenceService" for folder in EXAMPLES for obj in build(folder))


def test_the_served_model_is_what_wsseg_export_writes_read_with_the_service_accounts_s3_keys():
    from wsseg.serving.export import FORMATS, MODEL_NAME

    objects = next(build(folder) for folder in EXAMPLES
                   if any(obj["kind"] == "InferenceService" for obj in build(folder)))
    predictor = next(obj for obj in objects if obj["kind"] == "InferenceService")["spec"]["predictor"]
    assert TRITON_FORMATS[predictor["model"]["modelFormat"]["name"]] in FORMATS
    assert predictor["model"]["storageUri"].startswith("s3://wsseg/")
    assert f"{MODEL_NAME}/" in (MANIFESTS / "examples/kserve-segmenter/inferenceservice.yaml").read_text()
    account = _find(objects, "ServiceAccount", predictor["serviceAccountName"])
    assert account is not None
    for reference in account["secrets"]:
        secret = _find(objects, "Secret", reference["name"])
        assert secret is not None and set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert "serving.kserve.io/s3-endpoint" in secret["metadata"]["annotations"]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=str)
def test_secrets_hold_only_placeholders(folder):
    for secret in (o for o in build(folder) if o["kind"] == "Secret"):
        values = {**{k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()},
                  **secret.get("stringData", {})}
        assert values and set(values.values()) == {PLACEHOLDER}, secret["metadata"]["name"]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=str)
def test_credentials_reach_containers_only_from_secrets(folder):
    for obj in build(folder):
        for container in _containers(obj):
            literal = [e["name"] for e in container.get("env", []) if "value" in e and _is_credential(e["name"])]
            assert literal == [], f"{obj['kind']}/{obj['metadata']['name']}: literal credentials {literal}"


def _is_credential(name: str) -> bool:
    return any(word in name.upper() for word in ("KEY", "SECRET", "PASSWORD", "TOKEN"))


@pytest.mark.parametrize("folder", OVERLAYS, ids=str)
def test_pipeline_runner_may_launch_pytorchjobs_and_read_their_logs(folder):
    objects = build(folder)
    binding = next(o for o in objects if o["kind"] == "RoleBinding"
                   and any(s["kind"] == "ServiceAccount" and s["name"] == "pipeline-runner" for s in o["subjects"]))
    role = _find(objects, binding["roleRef"]["kind"], binding["roleRef"]["name"])

    assert role is not None and role["metadata"]["namespace"] == binding["metadata"]["namespace"]
    assert _allows(role, "kubeflow.org", "pytorchjobs") >= {"create", "get", "list", "watch", "delete"}
    assert "get" in _allows(role, "", "pods/log")


def _allows(role: dict, api_group: str, resource: str) -> set[str]:
    return {verb for rule in role["rules"] if api_group in rule["apiGroups"] and resource in rule["resources"]
            for verb in rule["verbs"]}


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=str)
def test_wsseg_containers_run_the_wsseg_image_setting(folder):
    images = {c["image"] for obj in build(folder) for c in _containers(obj)
              if c.get("image", "").startswith(IMAGE_REPOSITORY)}  # a KServe runtime picks its own image

    assert images <= {DEFAULT_IMAGE}


@pytest.mark.parametrize("folder", OVERLAYS + EXAMPLES, ids=str)
def test_references_resolve_to_objects_and_keys_that_exist(folder):
    # Examples run in a namespace where the kubeflow overlay was applied.
    objects = build(folder) + (build(Path("overlays/kubeflow")) if folder in EXAMPLES else ())
    for obj in objects:
        for template in _pod_templates(obj):
            for kind, name, key in _references(template["spec"]):
                target = _find(objects, kind, name)
                assert target is not None, f"{obj['metadata']['name']} refers to a missing {kind} {name}"
                if key:
                    assert key in {**target.get("data", {}), **target.get("stringData", {})}, f"{kind} {name}: {key}"
    launcher = _find(objects, "ConfigMap", "kfp-launcher")
    for secret_ref in _launcher_secret_refs(launcher):
        secret = _find(objects, "Secret", secret_ref["secretName"])
        assert secret is not None and {secret_ref["accessKeyKey"], secret_ref["secretKeyKey"]} <= {
            *secret.get("data", {}), *secret.get("stringData", {})}


def _references(pod_spec: dict):
    if "serviceAccountName" in pod_spec:
        yield "ServiceAccount", pod_spec["serviceAccountName"], None
    for volume in pod_spec.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            yield "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], None
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                yield "ConfigMap", source["configMapRef"]["name"], None
            if "secretRef" in source:
                yield "Secret", source["secretRef"]["name"], None
        for variable in container.get("env", []):
            for ref_kind, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = variable.get("valueFrom", {}).get(ref_kind)
                if ref:
                    yield kind, ref["name"], ref["key"]


def _launcher_secret_refs(launcher: dict | None) -> list[dict]:
    providers = yaml.safe_load((launcher or {}).get("data", {}).get("providers", "")) or {}
    return [config["default"]["credentials"]["secretRef"] for config in providers.values()
            if not config["default"]["credentials"].get("fromEnv")]
