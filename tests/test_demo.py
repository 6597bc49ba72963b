"""The demo's time budget: on the cpu preset it trims the segmenters' iterations, and says so."""
from wsseg.config import default_config, load_config
from wsseg.demo import DEMO_SEGMENTER_ITERATIONS, _trim_segmenter_iterations


def test_the_cpu_preset_demo_trains_fewer_segmenter_iterations_and_the_report_says_how_many():
    config = load_config(preset="cpu")
    note = _trim_segmenter_iterations(config, "cpu")
    assert config["segmenter"]["iterations"] == DEMO_SEGMENTER_ITERATIONS["cpu"]
    assert DEMO_SEGMENTER_ITERATIONS["cpu"] < default_config("cpu")["segmenter"]["iterations"]
    assert f"{DEMO_SEGMENTER_ITERATIONS['cpu']} iterations" in note and "--full" in note


def test_iterations_the_user_set_and_other_presets_are_left_alone(tmp_path):
    config_file = tmp_path / "run.yaml"
    config_file.write_text("segmenter:\n  iterations: 1500\n")
    config = load_config(config_file, "cpu")
    assert _trim_segmenter_iterations(config, "cpu") == ""
    assert config["segmenter"]["iterations"] == 1500
    gpu = load_config(preset="gpu")
    assert _trim_segmenter_iterations(gpu, "gpu") == ""
    assert gpu["segmenter"]["iterations"] == default_config("gpu")["segmenter"]["iterations"]
