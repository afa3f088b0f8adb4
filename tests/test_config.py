import pytest

from dynvid.config import ConfigError, ExperimentConfig, apply_overrides, from_dict, load_config, to_dict


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
    assert a.run_name().startswith("static_r2plus1d_18-w0.25_8x4x112_synthetic-actions")
    assert a.run_name() != ExperimentConfig().run_name()


def test_float_fields_accept_exponent_notation_without_a_dot():
    cfg = apply_overrides(ExperimentConfig(), ["optim.weight_decay=5e-4", "optim.lr=1E-3"])
    assert cfg.optim.weight_decay == 5e-4 and cfg.optim.lr == 1e-3
    with pytest.raises(ConfigError, match="expected a number"):
        apply_overrides(ExperimentConfig(), ["optim.lr=fast"])
