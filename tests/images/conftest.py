import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from bytessm.cli import _configs_dir

SMALL = ["model=vim_cpu", "model.d_model=16", "model.n_layer=2", "trainer.seed=3"]


@pytest.fixture
def images_cfg(tmp_path):
    """The `train` config with task=images composed as `bytessm train` would, plus overrides."""
    def make(*overrides, small: bool = True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(_configs_dir()), version_base="1.3"):
            return compose("train", overrides=["task=images", *(SMALL if small else []),
                                               f"trainer.out_dir={tmp_path / 'run'}", *overrides])
    return make
