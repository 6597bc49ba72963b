"""The component image: its Dockerfile agrees with pyproject.toml and the Makefile, and carries no secrets.

No Docker engine runs here, so the image is not built; these checks read the Dockerfile instead.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from wsseg.image import DEFAULT_IMAGE, IMAGE_REPOSITORY

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "components" / "Dockerfile"
CREDENTIAL_NAME = re.compile(r"KEY|SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL", re.IGNORECASE)


def _instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip()]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pyproject_exact_pins() -> dict[str, str]:
    pins = {}
    for dependency in _pyproject()["project"]["dependencies"]:
        requirement = Requirement(dependency)
        exact = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        if exact:
            pins[_normalise(requirement.name)] = exact[0]
    return pins


def _dockerfile_pip_pins() -> dict[str, str]:
    runs = " ".join(arguments for instruction, arguments in _instructions() if instruction == "RUN")
    return {_normalise(name): version
            for name, version in re.findall(r"([A-Za-z0-9][A-Za-z0-9_.-]*)==([0-9][^\s\"';&|]*)", runs)}


def _dockerfile_args() -> dict[str, str]:
    return dict(arguments.split("=", 1) for instruction, arguments in _instructions()
                if instruction == "ARG" and "=" in arguments)


def _lock_pins() -> dict[str, str]:
    lock = (ROOT / "requirements.lock").read_text()
    return {_normalise(name): version
            for name, version in re.findall(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)==(\S+)", lock, re.MULTILINE)}


def test_every_version_pyproject_pins_reaches_the_image():
    """The image installs requirements.lock, and mmcv (outside the lock) by its own pin."""
    pinned, installed = _pyproject_exact_pins(), _lock_pins() | _dockerfile_pip_pins()

    assert pinned, "pyproject.toml pins nothing with =="
    assert {name: installed.get(name) for name in pinned} == pinned


def test_image_torch_satisfies_pyproject_on_a_cuda_devel_base():
    torch = Version(_dockerfile_args()["TORCH_VERSION"])
    torch_requirement = next(Requirement(d) for d in _pyproject()["project"]["dependencies"]
                             if Requirement(d).name == "torch")

    assert torch in torch_requirement.specifier
    # mmcv 2.1.0 compiles its CUDA ops in the image: the base must bring nvcc (a `devel` image).
    assert re.fullmatch(r"nvidia/cuda:[0-9.]+-(cudnn-)?devel-ubuntu[0-9.]+", _dockerfile_args()["BASE_IMAGE"])


def test_image_runs_as_a_numeric_non_root_user():
    users = [arguments.split(":")[0] for instruction, arguments in _instructions() if instruction == "USER"]

    assert users, "the Dockerfile sets no USER: the image would run as root"
    assert users[-1].isdigit() and users[-1] != "0"


def test_image_sets_no_credential_like_variables():
    names = []
    for instruction, arguments in _instructions():
        if instruction in ("ENV", "ARG"):
            names += re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", arguments)

    assert [name for name in names if CREDENTIAL_NAME.search(name)] == []


def test_build_context_sends_everything_the_dockerfile_copies():
    rules = [line for line in (ROOT / "components" / "Dockerfile.dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {source.rstrip("/") for instruction, arguments in _instructions() if instruction == "COPY"
              for source in arguments.split()[:-1] if not source.startswith("--")}

    assert rules[0] == "*", "the ignore file must start from an empty context and allow what the image needs"
    assert copied <= allowed


def test_default_image_is_tagged_with_the_package_version():
    assert DEFAULT_IMAGE == f"{IMAGE_REPOSITORY}:{_pyproject()['project']['version']}"


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")
@pytest.mark.parametrize("override", [None, "registry.example.com/team/wsseg:dev"])
def test_makefile_image_is_the_wsseg_image_setting(override):
    env = {k: v for k, v in os.environ.items() if k not in ("WSSEG_IMAGE", "IMAGE")}
    if override:
        env["WSSEG_IMAGE"] = override
    printed = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval", "print-image: ; @echo $(IMAGE)", "print-image"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True).stdout.strip()

    assert printed == (override or DEFAULT_IMAGE)
