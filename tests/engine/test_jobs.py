"""The arguments every training benchmark shares (``dynvid.engine.jobs``): what its JSON
records of them, and the order in which its config applies them."""

from dynvid.engine.jobs import bench_config, bench_parser, bench_run_config


def test_bench_run_config_records_the_budget_and_the_overrides_as_given():
    args = bench_parser("t").parse_args(["--smoke-test", "--set", "optim.epochs=3", "--set", "train.seed=7"])
    recorded = bench_run_config(args)
    assert recorded == {"smoke_test": True, "overrides": ["optim.epochs=3", "train.seed=7"]}
    recorded["overrides"].append("x=1")  # the JSON's copy, not the parser's list
    assert args.overrides == ["optim.epochs=3", "train.seed=7"]
    assert bench_run_config(bench_parser("t").parse_args([])) == {"smoke_test": False, "overrides": []}


def test_bench_config_applies_the_overrides_after_the_smoke_budget(tmp_path):
    args = bench_parser("t").parse_args(["--smoke-test", "--set", "optim.epochs=3"])
    cfg = bench_config([], ["optim.epochs=1", "train.seed=5"], args, str(tmp_path))
    assert (cfg.optim.epochs, cfg.train.seed, cfg.train.storage_path) == (3, 5, str(tmp_path))
    full = bench_config([], ["optim.epochs=1"], bench_parser("t").parse_args([]), str(tmp_path))
    assert full.optim.epochs != 1  # the smoke budget only under --smoke-test
