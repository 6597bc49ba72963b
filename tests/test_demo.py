"""The demo's time budget: on the cpu preset it trains the segmenters shorter and on smaller crops and one classifier
for the preset's ensemble, and says so."""
import pytest

from wsseg.config import default_config, load_config
from wsseg.demo import DEMO_BUDGET, fit_to_budget


@pytest.mark.parametrize(("section", "key"), [("segmenter", "crop_size"), ("segmenter", "iterations"),
                                              ("classifier", "ensemble_members")])
def test_the_cpu_preset_demo_runs_cheaper_settings_and_the_report_says_so(section, key):
    config = load_config(preset="cpu")
    note = fit_to_budget(config, "cpu")
    demo_value, preset_value = DEMO_BUDGET["cpu"][section][key], default_config("cpu")[section][key]
    assert config[section][key] == demo_value < preset_value
    assert f"{section}.{key} {demo_value} (the cpu preset's: {preset_value})" in note and "--full" in note


def test_settings_the_user_changed_and_other_presets_are_left_alone(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("segmenter:\n  crop_size: 96\n")
    config = load_config(config_file, "cpu")
    note = fit_to_budget(config, "cpu")
    assert config["segmenter"]["crop_size"] == 96
    assert config["segmenter"]["iterations"] == default_config("cpu")["segmenter"]["iterations"]
    assert "segmenter." not in note and "classifier.ensemble_members 1" in note
    gpu = load_config(preset="gpu")
    assert fit_to_budget(gpu, "gpu") == ""
    assert gpu == default_config("gpu")
