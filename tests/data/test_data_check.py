"""`wsseg data check`: counts that match the annotations, and every problem named by its file."""
import subprocess
import sys
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from PIL import Image

from wsseg.classes import VOC_CLASSES
from wsseg.cli import main
from wsseg.data import check_dataset

WSSEG = Path(sys.executable).parent / "wsseg"


def count_from_xml(root: Path) -> tuple[Counter, Counter]:
    """Images and objects per class name, read straight from the annotation files."""
    images, objects = Counter(), Counter()
    for xml in (root / "Annotations").glob("*.xml"):
        names = [element.findtext("name") for element in ElementTree.parse(xml).getroot().iter("object")]
        objects.update(names)
        images.update(set(names))
    return images, objects


def table_rows(output: str) -> dict[str, tuple[int, int]]:
    rows = {}
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] in VOC_CLASSES and fields[1].isdigit():
            rows[fields[0]] = (int(fields[1]), int(fields[2]))
    return rows


def test_synth_then_check_reports_split_sizes_and_class_counts_of_the_xml(tmp_path, capsys):
    root = tmp_path / "synth"
    assert main(["synth", str(root), "--train", "40", "--val", "10", "--seed", "3", "--size", "64"]) == 0
    capsys.readouterr()
    assert main(["data", "check", str(root)]) == 0
    output = capsys.readouterr().out
    assert "images: train 40, val 10" in output
    assert "problems: 0" in output
    images, objects = count_from_xml(root)
    assert table_rows(output) == {name: (images[name], objects[name]) for name in VOC_CLASSES[1:]}
    assert sum(images.values()) > 50, "several classes per image"


@pytest.fixture
def broken_voc(tmp_path) -> dict[str, Path]:
    """A synthetic dataset with one fault of each kind; returns the faulty file per fault."""
    root = tmp_path / "broken"
    main(["synth", str(root), "--train", "6", "--val", "2", "--seed", "1", "--size", "48"])
    faults = {
        "truncated": root / "JPEGImages" / "000000.jpg",
        "unknown class": root / "Annotations" / "000001.xml",
        "mask size": root / "SegmentationClass" / "000002.png",
        "stray values": root / "SegmentationClass" / "000003.png",
        "missing annotation": root / "Annotations" / "000004.xml",
        "missing image": root / "ImageSets" / "Segmentation" / "train.txt",
    }
    faults["truncated"].write_bytes(faults["truncated"].read_bytes()[:-300])
    xml = faults["unknown class"]
    xml.write_text(xml.read_text().replace("<name>", "<name>unicorn", 1))
    Image.new("P", (40, 48)).save(faults["mask size"])
    Image.fromarray(np.full((48, 48), 77, np.uint8)).save(faults["stray values"])
    faults["missing annotation"].unlink()
    with faults["missing image"].open("a") as split_list:
        split_list.write("424242\n")
    return {"root": root, **faults}


def test_check_names_every_faulty_file_and_exits_non_zero(broken_voc, capsys):
    assert main(["data", "check", str(broken_voc["root"])]) == 1
    output = capsys.readouterr().out
    assert "problems: 6" in output
    problems = output.split("problems: 6")[1]
    for fault, path in broken_voc.items():
        if fault != "root":
            assert str(path) in problems, f"{fault} not reported"
    assert "unicorn" in problems and "424242" in problems and "77" in problems and "40x48" in problems


def test_check_report_lists_one_problem_per_fault(broken_voc):
    report = check_dataset(broken_voc["root"], progress=False)
    assert not report.ok
    assert sorted(problem.path for problem in report.problems) == sorted(
        str(path) for fault, path in broken_voc.items() if fault != "root")


@pytest.mark.skipif(not WSSEG.exists(), reason="the wsseg script is not installed in this environment")
def test_installed_wsseg_command_fails_on_the_broken_dataset(broken_voc):
    result = subprocess.run([str(WSSEG), "data", "check", str(broken_voc["root"])],
                            check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    for fault in ("truncated", "unknown class", "mask size"):
        assert str(broken_voc[fault]) in result.stdout


def test_check_of_a_folder_that_is_no_dataset_is_a_user_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "JPEGImages" in capsys.readouterr().err
