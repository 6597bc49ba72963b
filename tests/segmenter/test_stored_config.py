"""A segmenter stored before the layout by capability names its segmentor's module by its old path in its mmseg
config's `custom_imports`; loading it imports the module by its current name."""
import pytest
from mmseg.registry import MODELS

from wsseg.segmenter.inference import MOVED_MODULES, stored_config


@pytest.mark.parametrize(("old", "segmentor"), [("wsseg.segmenter.band", "BandSegmentor"),
                                                ("wsseg.segmenter.sec", "SECSegmentor"),
                                                ("wsseg.segmenter.wilson", "WILSONSegmentor")])
def test_a_config_naming_a_moved_module_loads_it_by_its_current_name(tmp_path, old, segmentor):
    path = tmp_path / "mmseg_config.py"
    path.write_text(f"custom_imports = dict(allow_failed_imports=False, imports=['{old}'])\n"
                    f"model = dict(type='{segmentor}')\n")

    config = stored_config(path)

    assert config.custom_imports.imports == [MOVED_MODULES[old]]
    assert MODELS.get(segmentor) is not None


def test_a_config_naming_current_modules_or_none_loads_as_it_is(tmp_path):
    current = tmp_path / "current.py"
    current.write_text("custom_imports = dict(allow_failed_imports=False, imports=['wsseg.semi.classmix', "
                       "'wsseg.semi.sampler'])\nmodel = dict(type='ClassMixSegmentor')\n")
    plain = tmp_path / "plain.py"
    plain.write_text("model = dict(type='EncoderDecoder')\n")

    assert stored_config(current).custom_imports.imports == ["wsseg.semi.classmix", "wsseg.semi.sampler"]
    assert "custom_imports" not in stored_config(plain)
    assert set(MOVED_MODULES.values()) >= {"wsseg.semi.classmix", "wsseg.semi.sampler"}
