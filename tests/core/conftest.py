import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from bytessm.cli import _configs_dir

TINY = ["model=tiny", "model.d_model=16", "model.n_layer=2", "trainer.progress=false",
        "trainer.warmup_steps=2", "trainer.eval_batches=2", "task.eval_size=16",
        "trainer.batch_size=4", "trainer.seq_len=32"]


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the `train` config with overrides, as `bytessm train` would."""
    def make(*overrides, out="run"):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(_configs_dir()), version_base="1.3"):
            return compose("train", overrides=[*TINY, f"trainer.out_dir={tmp_path / out}",
                                               *overrides])
    return make
