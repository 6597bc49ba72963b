"""A run resumes only under the settings it started with, on a local directory and on a real S3 server."""
import pytest
import yaml

from wsseg.config import default_config, dump_config
from wsseg.errors import ConfigError
from wsseg.runtime.pipeline_io import open_run
from wsseg.runtime.run_config import RUN_CONFIG, keep_run_config
from wsseg.runtime.runner import run_ablation, run_pipeline
from wsseg.store import open_store
from wsseg.wsss.ablation import open_method_run
from wsseg.wsss.methods import method_config


@pytest.fixture(params=["local", "s3"])
def run(request, tmp_path):
    if request.param == "local":
        return open_store(tmp_path / "store").child("wsss")
    return open_store(request.getfixturevalue("s3_env")).child("wsss")


def config_with(section: str, key: str, value) -> dict:
    config = default_config("cpu-tiny")
    config[section][key] = value
    return config


def test_a_run_resumes_under_the_settings_it_started_with(run):
    text = dump_config(default_config("cpu-tiny"))
    keep_run_config(run, text)
    keep_run_config(run, text)
    assert run.get_bytes(RUN_CONFIG).decode() == text


def test_a_run_started_under_other_settings_is_refused_naming_them_and_keeps_its_config(run):
    started = config_with("classifier", "epochs", 3)
    keep_run_config(run, dump_config(started))
    with pytest.raises(ConfigError) as refusal:
        keep_run_config(run, dump_config(config_with("classifier", "epochs", 7)))
    assert "classifier.epochs: 3 → 7" in str(refusal.value)
    assert run.uri in str(refusal.value) and "--out" in str(refusal.value)
    assert yaml.safe_load(run.get_bytes(RUN_CONFIG)) == started


def test_a_setting_the_run_did_not_have_counts_as_changed(run):
    started = default_config("cpu-tiny")
    del started["crf"]["iterations"]
    keep_run_config(run, dump_config(started))
    with pytest.raises(ConfigError, match=r"crf\.iterations: \(absent\) → "):
        keep_run_config(run, dump_config(default_config("cpu-tiny")))


@pytest.mark.parametrize("section, key, value", [("evaluate", "flip", True), ("classifier", "device", "cuda"),
                                                 ("cams", "writer_threads", 5)])
def test_settings_that_decide_no_output_may_change_on_resume(run, section, key, value):
    keep_run_config(run, dump_config(default_config("cpu-tiny")))
    resumed = config_with(section, key, value)
    keep_run_config(run, dump_config(resumed))
    assert yaml.safe_load(run.get_bytes(RUN_CONFIG)) == resumed


def test_strict_may_change_on_resume(run):
    keep_run_config(run, dump_config(default_config("cpu-tiny")))
    keep_run_config(run, dump_config(dict(default_config("cpu-tiny"), strict=True)))
    assert yaml.safe_load(run.get_bytes(RUN_CONFIG))["strict"] is True


def test_a_local_run_under_other_settings_is_refused_before_any_task_starts(tmp_path):
    out = tmp_path / "out"
    store_uri = str(out / "store")
    open_run(store_uri, "wsss", dump_config(config_with("segmenter", "iterations", 40)))
    # No dataset exists at `data`: a run that got as far as a task would fail on that instead.
    with pytest.raises(ConfigError, match=r"segmenter\.iterations: 40 → 80"):
        run_pipeline("wsss", str(tmp_path / "no-data"), out, config_with("segmenter", "iterations", 80))


def test_an_ablation_refuses_a_method_whose_settings_changed_since_it_started(tmp_path):
    out = tmp_path / "out"
    config = default_config("cpu-tiny")
    as_an_older_version_stored_it = method_config(config, "ensemble")
    as_an_older_version_stored_it["classifier"]["ensemble_members"] = 2
    run_uri = open_run(str(out / "store"), "ablation", dump_config(config))
    open_method_run(run_uri, "cam", dump_config(config))
    keep_run_config(open_store(run_uri).child("ensemble"), dump_config(as_an_older_version_stored_it))
    with pytest.raises(ConfigError, match=r"ensemble/config\.yaml: .*classifier\.ensemble_members: 2 → "):
        run_ablation(str(tmp_path / "no-data"), out, config, ["cam", "ensemble"])


def test_a_changed_preset_is_named_before_the_settings_it_changed(run):
    keep_run_config(run, dump_config(default_config("cpu-tiny")))
    with pytest.raises(ConfigError, match=r"other settings \(preset: cpu-tiny → cpu; "):
        keep_run_config(run, dump_config(default_config("cpu")))


def test_a_stored_config_that_is_not_yaml_is_named_not_a_parser_traceback(run):
    run.put_bytes(RUN_CONFIG, b"classifier: [unclosed")
    with pytest.raises(ConfigError, match=r"wsss/config\.yaml: not valid YAML"):
        keep_run_config(run, dump_config(default_config("cpu-tiny")))
