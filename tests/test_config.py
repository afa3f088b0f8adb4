import pytest

from dynvid.config import (
    NOT_IN_RUN_IDENTITY,
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    check_ranges,
    from_dict,
    identity_config,
    load_config,
    set_arguments,
    short_digest,
    to_dict,
)


def test_defaults_round_trip():
    cfg = ExperimentConfig()
    assert from_dict(ExperimentConfig, to_dict(cfg)) == cfg


def test_overrides_typed():
    cfg = apply_overrides(ExperimentConfig(), ["data.batch_size=4", "optim.lr=0.5", "train.use_gpu=true",
                                               "data.target_fps=30", "train.name=123", "optim.grad_clip=null"])
    assert cfg.data.batch_size == 4 and cfg.optim.lr == 0.5 and cfg.train.use_gpu is True
    assert cfg.data.target_fps == 30.0 and isinstance(cfg.data.target_fps, float)
    assert cfg.train.name == "123"
    assert cfg.optim.grad_clip is None


def test_set_arguments_reach_a_job_parser_in_order():
    from dynvid.engine.jobs import bench_parser  # the jobs' shared parser (imports the engine)

    items = ["data.batch_size=4", "train.name=a b", "lfs.taus=[1, 4]", "data.batch_size=8"]
    args = bench_parser("test").parse_args(["--smoke-test", *set_arguments(items)])
    assert args.overrides == items and args.smoke_test
    assert apply_overrides(ExperimentConfig(), args.overrides).data.batch_size == 8  # the later one wins


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'batchsize'; valid keys: .*batch_size"):
        apply_overrides(ExperimentConfig(), ["data.batchsize=4"])
    with pytest.raises(ConfigError, match=r"'dat' is not a section"):
        apply_overrides(ExperimentConfig(), ["dat.batch_size=4"])
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(ExperimentConfig(), ["data.batch_size"])


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match=r"data\.batch_size: expected an integer, got 'four'"):
        apply_overrides(ExperimentConfig(), ["data.batch_size=four"])
    with pytest.raises(ConfigError, match=r"train\.use_gpu: expected true/false"):
        from_dict(ExperimentConfig, {"train": {"use_gpu": "yes"}})


def test_yaml_layering(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  clip_len: 16\noptim:\n  epochs: 3\n")
    base = apply_overrides(ExperimentConfig(), ["data.stride=8"])
    cfg = load_config(ExperimentConfig, f, ["optim.epochs=5"], base=base)
    assert (cfg.data.clip_len, cfg.data.stride, cfg.optim.epochs) == (16, 8, 5)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  clip_len: 16\n  nope: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml\.data: unknown key 'nope'"):
        load_config(ExperimentConfig, bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: [1,\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: invalid YAML"):
        load_config(ExperimentConfig, broken)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(ExperimentConfig, tmp_path / "missing.yaml")


def test_run_name_is_deterministic_and_encodes_the_run():
    a = apply_overrides(ExperimentConfig(), ["model.width_mult=0.25"])
    assert a.run_name() == apply_overrides(ExperimentConfig(), ["model.width_mult=0.25"]).run_name()
    assert a.run_name().startswith("static_r2plus1d_18-w0.25_8x4x112_synthetic-actions_e10_s0_h")
    assert a.run_name() != ExperimentConfig().run_name()


def test_run_name_ends_with_a_hash_of_everything_that_changes_the_run():
    base = ExperimentConfig()
    assert apply_overrides(base, ["optim.lr=0.2"]).run_name() != base.run_name()  # not in the readable part
    assert apply_overrides(base, ["train.log_every=1", "train.storage_path=/elsewhere"]).run_name() == base.run_name()
    assert base.run_name("static", digest="1a2b3c4d").endswith("_s0_h1a2b3c4d")
    assert apply_overrides(base, ["train.name=mine"]).run_name("static", digest="1a2b3c4d") == "mine"
    for spec in ("kinetics:/data/k400/", "s3://bucket/k400/", "kinetics:s3://bucket/k400"):
        assert "_k400_e10" in apply_overrides(base, [f"data.dataset={spec}"]).run_name()


def test_identity_config_leaves_out_what_does_not_change_the_run():
    data = identity_config(ExperimentConfig())
    for key in NOT_IN_RUN_IDENTITY:
        section, name = key.split(".")
        assert name not in data[section], key
    assert data["optim"]["lr"] == 0.1 and data["data"]["dataset"] == "synthetic:actions"
    assert short_digest({"a": 1, "b": [1, 2]}) == short_digest({"b": (1, 2), "a": 1})


@pytest.mark.parametrize("override,message", [
    ("data.max_bad_fraction=1.5", "data.max_bad_fraction must be in [0, 1], got 1.5"),
    ("data.batch_size=0", "data.batch_size must be >= 1, got 0"),
    ("optim.epochs=0", "optim.epochs must be >= 1, got 0"),
    ("optim.lr=0", "optim.lr must be > 0, got 0.0"),
    ("optim.label_smoothing=1", "optim.label_smoothing must be in [0, 1), got 1.0"),
    ("data.ingest=spark", "data.ingest must be one of torch, ray_data, got 'spark'"),
    ("train.checkpoint_score_order=best", "train.checkpoint_score_order must be one of max, min"),
])
def test_check_ranges_names_the_key_rule_and_value(override, message):
    with pytest.raises(ConfigError) as err:
        check_ranges(apply_overrides(ExperimentConfig(), [override]))
    assert message in str(err.value)


def test_defaults_and_optional_unset_values_are_in_range():
    check_ranges(ExperimentConfig())  # grad_clip, target_fps, threads, test_videos: None is not checked
    check_ranges(apply_overrides(ExperimentConfig(), ["data.max_bad_fraction=1", "train.max_failures=-1"]))


def test_float_fields_accept_exponent_notation_without_a_dot():
    cfg = apply_overrides(ExperimentConfig(), ["optim.weight_decay=5e-4", "optim.lr=1E-3"])
    assert cfg.optim.weight_decay == 5e-4 and cfg.optim.lr == 1e-3
    with pytest.raises(ConfigError, match="expected a number"):
        apply_overrides(ExperimentConfig(), ["optim.lr=fast"])


def test_resource_settings_leave_the_run_identity_alone():
    """A rerun that only moves work to other hardware resumes the same run."""
    from dynvid.config import identity_config

    base = ExperimentConfig()
    for setting in ("lfs.dqn_learner_gpus=1", "train.cpus_per_worker=2", "data.loader_workers=3"):
        assert identity_config(apply_overrides(base, [setting])) == identity_config(base), setting
