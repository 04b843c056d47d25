"""trainer.profile's summary maths (`bytessm.train.profiling`) on made-up kernel events, and
its config check; the end-to-end run is in test_distributed.py."""
from types import SimpleNamespace

import pytest
import torch

from bytessm.task import ConfigError
from bytessm.train.build import validate_trainer
from bytessm.train.profiling import busy_time_us, summarize

CUDA, CPU = torch.autograd.DeviceType.CUDA, torch.autograd.DeviceType.CPU


def event(name, start, end, device=CUDA, annotation=False):
    return SimpleNamespace(name=name, device_type=device, is_user_annotation=annotation,
                           time_range=SimpleNamespace(start=start, end=end))


def test_busy_time_counts_overlaps_once():
    assert busy_time_us([(0, 10), (5, 15), (20, 25), (21, 22)]) == 20
    assert busy_time_us([]) == 0


def test_summary_separates_busy_time_collectives_and_cpu_events():
    events = [event("scan_fwd_kernel", 0, 1000), event("scan_fwd_kernel", 3000, 4000),
              event("ncclDevKernel_AllReduce_Sum_f32_RING_LL", 500, 2500),   # overlaps compute
              event("aten::mm", 0, 9000, CPU),
              # GPU-timeline annotations: ranges, not work
              event("DistributedDataParallel.forward", 0, 9000, annotation=True),
              event("nccl:all_reduce", 500, 2500, annotation=True)]
    s = summarize(events, steps=2, wall_s=0.01)
    assert s["wall_ms_per_step"] == pytest.approx(5.0)
    assert s["device_busy_ms_per_step"] == pytest.approx(3.5 / 2)     # [0, 2.5) + [3, 4) ms
    assert s["kernel_ms_per_step"] == pytest.approx(4.0 / 2)
    assert s["collective_ms_per_step"] == pytest.approx(2.0 / 2)
    top = s["top_kernels"]
    assert [k["name"] for k in top] == ["scan_fwd_kernel", "ncclDevKernel_AllReduce_Sum_f32_RING_LL"]
    assert top[0]["calls_per_step"] == 1.0 and top[0]["ms_per_step"] == pytest.approx(1.0)


def test_profile_window_must_fit_the_run(make_cfg):
    cfg = make_cfg("trainer.max_steps=5", "trainer.profile.start=4", "trainer.profile.steps=3")
    with pytest.raises(ConfigError, match=r"trainer.profile: steps start=4 .. 6 must lie within "
                                          r"1 .. trainer.max_steps=5"):
        validate_trainer(cfg, 1)
    validate_trainer(make_cfg("trainer.max_steps=6", "trainer.profile.start=4",
                              "trainer.profile.steps=3"), 1)
