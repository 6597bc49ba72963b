"""The demo's time budget: on the cpu preset it trains the segmenters shorter and on smaller crops, and says
so."""
from wsseg.config import default_config, load_config
from wsseg.demo import DEMO_SEGMENTER, _fit_segmenters_to_budget


def test_the_cpu_preset_demo_trains_the_segmenters_shorter_on_smaller_crops_and_the_report_says_so():
    config = load_config(preset="cpu")
    note = _fit_segmenters_to_budget(config, "cpu")
    demo_crop, preset_crop = DEMO_SEGMENTER["cpu"]["crop_size"], default_config("cpu")["segmenter"]["crop_size"]
    assert config["segmenter"]["crop_size"] == demo_crop < preset_crop
    assert f"crop_size {demo_crop} (the cpu preset's: {preset_crop})" in note and "--full" in note
    demo_iterations, preset_iterations = DEMO_SEGMENTER["cpu"]["iterations"], default_config("cpu")["segmenter"][
        "iterations"]
    assert config["segmenter"]["iterations"] == demo_iterations < preset_iterations
    assert f"iterations {demo_iterations} (the cpu preset's: {preset_iterations})" in note


def test_settings_the_user_changed_and_other_presets_are_left_alone(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("segmenter:\n  crop_size: 96\n")
    config = load_config(config_file, "cpu")
    assert _fit_segmenters_to_budget(config, "cpu") == ""
    assert config["segmenter"]["crop_size"] == 96
    gpu = load_config(preset="gpu")
    assert _fit_segmenters_to_budget(gpu, "gpu") == ""
    assert gpu["segmenter"] == default_config("gpu")["segmenter"]
