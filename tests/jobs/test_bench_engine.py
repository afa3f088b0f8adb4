"""bench_engine's paper-size mode refuses what it cannot measure, in one line, before any work."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_cuda_without_a_gpu_needs_the_smoke_test_flag(capsys):
    import bench_engine

    assert bench_engine.main(["--device", "cuda", "--paper-size"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("bench_engine: error: --device cuda: no CUDA device")
    assert "--smoke-test" in err


@pytest.mark.parametrize("args,message", [(["--steps", "0"], "--steps must be >= 1, got 0"),
                                          (["--loader-workers", "-1"], "--loader-workers must be >= 0, got -1")])
def test_bad_counts_are_one_line_errors(capsys, args, message):
    import bench_engine

    assert bench_engine.main(["--paper-size", "--smoke-test", *args]) == 2
    assert capsys.readouterr().err.strip() == f"bench_engine: error: {message}"
