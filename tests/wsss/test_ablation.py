"""The ablation: one DAG fanning out over methods (dsl.ParallelFor) under kfp.local, ending in one table."""
import json

import pytest
import yaml

from wsseg.cli import main
from wsseg.config import default_config, dump_config
from wsseg.errors import ConfigError
from wsseg.store import open_store
from wsseg.wsss.ablation import UPPER_BOUND, open_method_run, write_ablation_table


def fake_method_run(run, method, cam, masks, segmenter, step_seconds, relabelled=None):
    store = run.child(method)
    headline = {"cam_miou": cam, "pseudo_mask_miou": masks, "relabelled_mask_miou": relabelled,
                "segmenter_miou": segmenter}
    store.child("evaluate").put_bytes("metrics.json", json.dumps({"headline": headline}).encode())
    for step, seconds in step_seconds.items():
        store.child(step).put_bytes("step.json", json.dumps({"seconds": seconds}).encode())


def test_the_table_reads_each_methods_figures_and_sums_its_step_times(tmp_path):
    run = open_store(tmp_path)
    fake_method_run(run, "cam", 50.0, 60.0, 55.0, {"train-classifier": 60, "refine": 30, "evaluate": 30})
    fake_method_run(run, "has", 52.0, 66.0, 58.0, {"train-classifier": 120}, relabelled=68.0)
    fake_method_run(run, UPPER_BOUND, None, None, 70.0, {"train-segmenter": 90})
    table = write_ablation_table(str(tmp_path), ["has", "cam"])
    assert [row["method"] for row in table["methods"]] == ["has", "cam"]
    assert [row["minutes"] for row in table["methods"]] == [2.0, 2.0] and table["upper_bound_miou"] == 70.0
    markdown = run.child("ablation").get_bytes("table.md").decode()
    assert "| has | 52.00 | 66.00 | 68.00 | 58.00 | 70.00 | 82.86 | 2.00 |" in markdown
    assert "| cam | 50.00 | 60.00 | - | 55.00 | 70.00 | 78.57 | 2.00 |" in markdown
    assert "<table>" in run.child("ablation").get_bytes("report.html").decode()


def test_a_stopped_run_has_a_table_of_its_finished_methods_that_names_what_remains(tmp_path):
    run = open_store(tmp_path)
    fake_method_run(run, "cam", 50.0, 60.0, 55.0, {"train-classifier": 60, "evaluate": 30})
    run.child("seam").child("train-classifier").put_bytes("step.json", json.dumps({"seconds": 120}).encode())
    # mining stopped mid-way: its attempt's time so far counts in the minutes so far
    run.child("seam").child("mine-cams").put_bytes("step-attempt.json", json.dumps({"seconds": 60}).encode())
    table = write_ablation_table(str(tmp_path), ["cam", "seam"])
    assert [row["finished"] for row in table["methods"]] == [True, False]
    assert table["methods"][1]["minutes"] == 3.0 and table["upper_bound_miou"] is None
    assert table["unfinished"] == ["seam", "the upper bound"]
    markdown = run.child("ablation").get_bytes("table.md").decode()
    assert "| cam | 50.00 | 60.00 | - | 55.00 | - | - | 1.50 |" in markdown
    assert "| seam | - | - | - | - | - | - | 3.00 |" in markdown
    assert "Not finished yet: seam, the upper bound" in markdown


def test_a_method_run_at_several_seeds_gets_its_mean_and_range_over_the_finished_runs(tmp_path):
    run = open_store(tmp_path)
    fake_method_run(run, "cam@0", 50.0, 60.0, 55.0, {"train-classifier": 60})
    fake_method_run(run, "cam@1", 54.0, 66.0, 45.0, {"train-classifier": 180})
    fake_method_run(run, "has@0", 52.0, 66.0, 58.0, {"train-classifier": 120})
    run.child("has@1").child("train-classifier").put_bytes("step.json", json.dumps({"seconds": 30}).encode())
    fake_method_run(run, UPPER_BOUND, None, None, 100.0, {"train-segmenter": 90})
    table = write_ablation_table(str(tmp_path), ["cam@0", "cam@1", "has@0", "has@1"])
    [cam] = table["across_seeds"]   # has has one finished run: nothing to spread over
    assert cam["method"] == "cam" and cam["runs"] == ["cam@0", "cam@1"]
    assert cam["pseudo_mask_miou"] == {"mean": 63.0, "min": 60.0, "max": 66.0}
    assert cam["minutes"] == {"mean": 2.0, "min": 1.0, "max": 3.0} and cam["relabelled_mask_miou"] is None
    markdown = run.child("ablation").get_bytes("table.md").decode()
    assert ("| cam | 2 | 52.00 (50.00-54.00) | 63.00 (60.00-66.00) | - | 50.00 (45.00-55.00) | "
            "50.00 (45.00-55.00) | 2.00 (1.00-3.00) |") in markdown
    assert "| cam@1 | 54.00 | 66.00 | - | 45.00 | 100.00 | 45.00 | 3.00 |" in markdown


def test_an_unseeded_run_counts_among_its_methods_seeds_and_a_lone_run_has_no_spread(tmp_path):
    run = open_store(tmp_path)
    fake_method_run(run, "cam", 50.0, 60.0, 55.0, {"train-classifier": 60})
    fake_method_run(run, "cam@1", 54.0, 66.0, 45.0, {"train-classifier": 180})
    table = write_ablation_table(str(tmp_path), ["cam", "cam@1"])
    assert table["across_seeds"][0]["runs"] == ["cam", "cam@1"]
    table = write_ablation_table(str(tmp_path), ["cam"])
    assert table["across_seeds"] == []
    assert "mean (lowest-highest)" not in run.child("ablation").get_bytes("table.md").decode()


def test_ablation_table_lists_the_methods_a_run_began_from_its_out_folder(tmp_path, capsys):
    run = open_store(tmp_path / "store").child("ablation")
    for method in ("has", "cam"):
        open_method_run(run.uri, method, dump_config(default_config("cpu-tiny")))
    fake_method_run(run, "has", 52.0, 66.0, 58.0, {"train-classifier": 120})
    fake_method_run(run, UPPER_BOUND, None, None, 70.0, {"train-segmenter": 90})
    run.child(UPPER_BOUND).put_bytes("config.yaml", b"preset: cpu-tiny\n")
    assert main(["ablation-table", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" | ")[0] for line in lines[2:4]] == ["| cam", "| has"]
    assert "| has | 52.00 | 66.00 | - | 58.00 | 70.00 | 82.86 | 2.00 |" in lines
    assert lines[-1].endswith("Not finished yet: cam (minutes so far).")


@pytest.mark.parametrize("options, message", [
    (["--methods", "cam,foo"], "argument --methods: unknown method 'foo'"),
    (["--methods", "cam@1", "--seeds", "0,1"], "method 'cam@1' names its seed and --seeds gives seeds too"),
    (["--seeds", "0,0"], "argument --seeds: '0,0' names a seed twice")])
def test_a_wrong_method_or_seed_list_is_a_usage_error_that_says_what_is_wrong(tmp_path, tiny_voc, capsys, options,
                                                                              message):
    try:
        status = main(["run", "ablation", "--data", str(tiny_voc), "--out", str(tmp_path), *options])
    except SystemExit as usage_error:   # argparse's own exit, for options it rejects while parsing
        status = usage_error.code
    assert status == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "store").exists()


def test_ablation_table_of_a_folder_without_a_run_names_where_it_looked(tmp_path, capsys):
    assert main(["ablation-table", "--out", str(tmp_path), "--run-name", "mine"]) == 2
    assert f"{tmp_path.resolve()}/store/mine: no ablation run has begun a method here" in capsys.readouterr().err


def test_a_step_run_again_adds_its_time_to_the_earlier_attempts_so_the_table_keeps_the_methods_minutes(tmp_path,
                                                                                                      tiny_voc):
    from kfp.dsl import Dataset

    from wsseg.runtime.pipeline_io import run_step

    run = open_store(tmp_path / "run")
    fake_method_run(run, "cam", 50.0, 60.0, 55.0, {"propagate": 600.0})  # a first attempt took 10 minutes
    masks = Dataset(name="masks", uri=str(tmp_path / "masks"), metadata={"store": str(tmp_path / "refine")})
    output = Dataset(name="walked", uri=str(tmp_path / "walked"), metadata={})
    run_step("propagate", str(tiny_voc), run.child("cam").uri, dump_config(default_config("cpu-tiny")),
             {"cams": masks, "masks": masks, "affinity": None}, output)
    record = json.loads(run.child("cam").child("propagate").get_bytes("step.json"))
    assert 600.0 <= record["seconds"] < 660.0 and record["summary"]["affinity"] == "disabled"
    assert write_ablation_table(run.uri, ["cam"])["methods"][0]["minutes"] == 10.0


def test_a_method_run_stores_the_runs_config_with_the_methods_settings(tmp_path):
    uri, config_text = open_method_run(str(tmp_path), "acol", dump_config(default_config("cpu-tiny")))
    stored = yaml.safe_load(open_store(uri).get_bytes("config.yaml"))
    assert uri.endswith("/acol") and stored == yaml.safe_load(config_text)
    assert stored["classifier"]["model"]["type"] == "ACoLClassifier"
    with pytest.raises(ConfigError, match="unknown method"):
        open_method_run(str(tmp_path), "nope", dump_config(default_config("cpu-tiny")))


@pytest.mark.slow
def test_the_ablation_dag_runs_every_method_and_the_upper_bound_into_one_table(tiny_voc, tmp_path):
    from wsseg.runtime.runner import run_ablation

    table = run_ablation(str(tiny_voc), tmp_path, default_config("cpu-tiny"), ["cam", "has+mixup@1"])
    assert [row["method"] for row in table["methods"]] == ["cam", "has+mixup@1"]
    for row in table["methods"]:
        for name in ("cam_miou", "pseudo_mask_miou", "segmenter_miou"):
            assert 0 <= row[name] <= 100
        assert row["minutes"] > 0
    assert 0 <= table["upper_bound_miou"] <= 100
    run = open_store(str(tmp_path / "store")).child("ablation")
    combined = yaml.safe_load(run.child("has+mixup@1").get_bytes("config.yaml"))
    assert combined["classifier"]["hide_and_seek"]["enabled"] and combined["classifier"]["mixup"]["enabled"]
    assert combined["seed"] == 1
    assert yaml.safe_load(run.child("cam").get_bytes("config.yaml"))["seed"] == 0
    assert "| has+mixup@1 |" in run.child("ablation").get_bytes("table.md").decode()
