"""Start compiled pipelines on a Kubeflow Pipelines server: one run now, or a recurring run.

A pipeline is uploaded once per distinct spec. Its versions are named after the SHA-256 of the compiled
YAML, so submitting an unchanged spec again reuses the version already on the server and a changed spec
adds a version to the same pipeline; runs always refer to an uploaded version, so the KFP UI shows which
spec each run ran.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from wsseg.errors import ConfigError, WssegError

log = logging.getLogger(__name__)

PIPELINES_DIR = Path("build/pipelines")
CRON_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
MAX_CONCURRENCY_RANGE = range(1, 11)  # what the KFP API server accepts for a recurring run


@dataclass(frozen=True)
class CompiledPipeline:
    path: Path
    name: str
    parameters: dict[str, str]  # name -> KFP parameter type (STRING, NUMBER_INTEGER, ...)
    version_name: str


def resolve_pipeline_path(pipeline: str, pipelines_dir: Path = PIPELINES_DIR) -> Path:
    """A path to a compiled IR YAML, or a pipeline name looked up as `<pipelines_dir>/<name>.yaml`."""
    path = Path(pipeline)
    if path.suffix not in (".yaml", ".yml"):
        path = pipelines_dir / f"{pipeline}.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: no compiled pipeline there; run `make compile` to write "
                          f"{pipelines_dir}/<name>.yaml, or pass the path of a compiled pipeline YAML")
    return path


def load_compiled_pipeline(pipeline: str, pipelines_dir: Path = PIPELINES_DIR) -> CompiledPipeline:
    path = resolve_pipeline_path(pipeline, pipelines_dir)
    content = path.read_bytes()
    try:
        spec = next(yaml.safe_load_all(content))
        name = spec["pipelineInfo"]["name"]
    except (yaml.YAMLError, StopIteration, KeyError, TypeError) as error:
        raise ConfigError(f"{path}: not a compiled KFP pipeline ({error}); run `make compile`") from error
    inputs = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    parameters = {key: declared.get("parameterType", "STRING") for key, declared in inputs.items()}
    digest = hashlib.sha256(content).hexdigest()
    return CompiledPipeline(path, name, parameters, version_name=f"sha256-{digest[:16]}")


def parse_params(pairs: list[str], pipeline: CompiledPipeline) -> dict:
    """`key=value` pairs into run parameters of the types the pipeline declares.

    Values of non-string parameters are read as YAML (`3`, `0.5`, `true`, `[1, 2]`); string parameters
    take the text as typed, so `config_yaml=preset: gpu` stays a string.
    """
    params = {}
    for pair in pairs:
        key, separator, raw = pair.partition("=")
        if not separator or not key:
            raise ConfigError(f"--param {pair!r}: expected KEY=VALUE")
        if key not in pipeline.parameters:
            raise ConfigError(f"--param {key}: pipeline {pipeline.name!r} ({pipeline.path}) has no such "
                              f"parameter; it takes: {', '.join(sorted(pipeline.parameters)) or 'none'}")
        params[key] = _typed_value(key, raw, pipeline.parameters[key])
    return params


_PARAMETER_TYPES = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": (int, float), "BOOLEAN": bool, "LIST": list,
                    "STRUCT": dict}


def _typed_value(key: str, raw: str, parameter_type: str):
    if parameter_type not in _PARAMETER_TYPES:
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    # YAML's `true` is also an int to Python; an integer parameter must not take it.
    is_bool_for_number = isinstance(value, bool) and parameter_type != "BOOLEAN"
    if not isinstance(value, _PARAMETER_TYPES[parameter_type]) or is_bool_for_number:
        raise ConfigError(f"--param {key}={raw}: the pipeline declares {key} as {parameter_type}")
    return float(value) if parameter_type == "NUMBER_DOUBLE" else value


def validate_cron(expression: str) -> str:
    fields = expression.split()
    if len(fields) != len(CRON_FIELDS):
        raise ConfigError(
            f"--cron {expression!r} has {len(fields)} fields; KFP's cron has {len(CRON_FIELDS)}, seconds first "
            f"({' '.join(CRON_FIELDS)}), e.g. '0 0 3 * * *' for 03:00 every day")
    return " ".join(fields)


@dataclass(frozen=True)
class Server:
    """Where to submit: the KFP API (and UI) address, an optional bearer token and profile namespace."""
    host: str
    token: str | None = None
    namespace: str | None = None

    def url(self, fragment: str) -> str:
        return f"{self.host.rstrip('/')}/#/{fragment}"


def submit_run(server: Server, pipeline: CompiledPipeline, params: dict, experiment: str,
               run_name: str | None = None) -> str:
    """Starts one run of `pipeline` and returns the run's URL in the KFP UI."""
    with _kfp_client(server) as client:
        pipeline_id, version_id = ensure_pipeline_version(client, pipeline, server.namespace)
        experiment_id = client.create_experiment(experiment, namespace=server.namespace).experiment_id
        run = client.run_pipeline(experiment_id, run_name or _timestamped(pipeline.name), params=params,
                                  pipeline_id=pipeline_id, version_id=version_id)
    return server.url(f"runs/details/{run.run_id}")


def schedule_run(server: Server, pipeline: CompiledPipeline, params: dict, experiment: str, cron: str,
                 max_concurrency: int = 1, name: str | None = None) -> str:
    """Creates a recurring run of `pipeline` on KFP's 6-field `cron`; returns its URL in the KFP UI."""
    cron = validate_cron(cron)
    if max_concurrency not in MAX_CONCURRENCY_RANGE:
        raise ConfigError(f"--max-concurrency {max_concurrency}: KFP allows 1 to {MAX_CONCURRENCY_RANGE[-1]}")
    with _kfp_client(server) as client:
        pipeline_id, version_id = ensure_pipeline_version(client, pipeline, server.namespace)
        experiment_id = client.create_experiment(experiment, namespace=server.namespace).experiment_id
        # no_catchup: a training pipeline paused for a week should run once when resumed, not seven times.
        recurring_run = client.create_recurring_run(
            experiment_id, name or f"{pipeline.name} {cron}", cron_expression=cron,
            max_concurrency=max_concurrency, no_catchup=True, params=params,
            pipeline_id=pipeline_id, version_id=version_id)
    return server.url(f"recurringrun/details/{recurring_run.recurring_run_id}")


def ensure_pipeline_version(client, pipeline: CompiledPipeline, namespace: str | None) -> tuple[str, str]:
    """The server's (pipeline id, version id) for this spec, uploading only what the server lacks."""
    pipeline_id = _find_pipeline_id(client, pipeline.name, namespace)
    if pipeline_id is None:
        body = client.api_models.V2beta1Pipeline(display_name=pipeline.name, namespace=namespace)
        pipeline_id = client.pipelines.pipeline_service_create_pipeline(pipeline=body).pipeline_id
        log.info("created pipeline %s (%s)", pipeline.name, pipeline_id)
    version_id = _find_version_id(client, pipeline_id, pipeline.version_name)
    if version_id is None:
        version = client.upload_pipeline_version(str(pipeline.path), pipeline.version_name, pipeline_id=pipeline_id)
        version_id = version.pipeline_version_id
        log.info("uploaded %s as version %s of pipeline %s", pipeline.path, pipeline.version_name, pipeline.name)
    else:
        log.info("reusing version %s of pipeline %s: the spec is unchanged", pipeline.version_name, pipeline.name)
    return pipeline_id, version_id


def _find_pipeline_id(client, name: str, namespace: str | None) -> str | None:
    found = client.list_pipelines(filter=_display_name_filter(name), namespace=namespace).pipelines or []
    return found[0].pipeline_id if found else None


def _find_version_id(client, pipeline_id: str, version_name: str) -> str | None:
    found = client.list_pipeline_versions(pipeline_id, filter=_display_name_filter(version_name))
    versions = found.pipeline_versions or []
    return versions[0].pipeline_version_id if versions else None


def _display_name_filter(name: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": name}]})


def _timestamped(name: str) -> str:
    return f"{name} {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}"


@contextlib.contextmanager
def _kfp_client(server: Server):
    """A `kfp.Client`, with its prints and warnings kept off our output and its errors made user-facing."""
    import kfp
    import kfp_server_api
    import urllib3

    try:
        # kfp.Client prints UI links for every object it touches; this command prints the one that matters.
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield kfp.Client(host=server.host, existing_token=server.token)
    except kfp_server_api.ApiException as error:
        raise WssegError(f"Kubeflow Pipelines at {server.host} answered {error.status} {error.reason}: "
                         f"{(error.body or '').strip()[:500]}") from error
    except (urllib3.exceptions.HTTPError, TimeoutError) as error:
        raise WssegError(f"cannot reach Kubeflow Pipelines at {server.host}: {error}") from error
