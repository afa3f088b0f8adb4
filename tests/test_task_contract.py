"""The declared Task contract (issue 21, first part): every method subclasses dynvid.task.Task,
the engine calls its hooks without probing for them, and the contract module depends on
neither the engine nor the methods."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.task import TASKS, get_task, presets
from dynvid.task import PolicyTask, Stage, Task

PLATFORM = Path(__file__).resolve().parents[1] / "platform" / "dynvid"


def _imports(path: Path) -> set[str]:
    """Every module a file imports (at any depth, function-local imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("method", sorted(TASKS))
def test_every_method_is_a_declared_task(method):
    task = get_task(method, apply_overrides(ExperimentConfig(), presets(method).get("embedded", [])))
    assert isinstance(task, Task) and task.name == method
    assert task.stages and all(isinstance(s, Stage) for s in task.stages)
    assert isinstance(task.inference_knobs, tuple)
    assert isinstance(task, PolicyTask) == (method == "lfs")  # the one method with a learned policy to train


def test_the_engine_calls_hooks_and_never_probes_for_them():
    probes = []
    for path in sorted((PLATFORM / "engine").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("hasattr", "getattr")
                    and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "task"):
                probes.append(f"{path.name}:{node.lineno}")
    assert probes == []


def test_the_contract_module_imports_neither_engine_nor_methods():
    assert not {m for m in _imports(PLATFORM / "task.py") if m.startswith(("dynvid.engine", "dynvid.methods"))}
    # the central config gathers each paper's section from its leaf config module, nothing else
    config = {m for m in _imports(PLATFORM / "config.py") if m.startswith(("dynvid.engine", "dynvid.methods"))}
    assert config == {f"dynvid.methods.{m}.config" for m in ("vared", "liteeval", "lfs", "ant", "resq")}


def test_the_engine_imports_nothing_from_the_methods():
    """The engine reaches a method only through the registry's text table (dynvid.task.METHODS)."""
    users = {str(p.relative_to(PLATFORM)): sorted(m for m in _imports(p) if m.startswith("dynvid.methods"))
             for p in sorted((PLATFORM / "engine").glob("*.py"))}
    assert {k: v for k, v in users.items() if v} == {}


def test_the_registry_resolves_names_lazily_and_refuses_what_is_not_a_task():
    import importlib
    import sys

    from dynvid import task as contract

    assert contract.method_names() == sorted(TASKS) and "vared" in TASKS
    with pytest.raises(ValueError, match="unknown method 'nope'; valid: ant, lfs, liteeval, resq, static, vared"):
        contract.task_class("nope")
    with pytest.raises(TypeError, match="is not a dynvid.task.Task"):
        contract.register_task("bad", int)
    saved = dict(contract.METHODS)
    try:
        contract.register_task("minimal", _Minimal)  # a method from outside the repository
        assert contract.task_class("minimal") is _Minimal and contract.presets("minimal") == {}
        contract.register_task("broken", "dynvid.config:ExperimentConfig")
        with pytest.raises(TypeError, match="'broken' resolves to dynvid.config:ExperimentConfig"):
            contract.task_class("broken")
    finally:
        contract.METHODS.clear()
        contract.METHODS.update(saved)
    assert presets("vared") == importlib.import_module("dynvid.methods.vared.presets").PRESETS
    assert "dynvid.methods.vared" in sys.modules  # imported on demand, by the lookup above


def test_methods_take_the_contract_from_the_neutral_module():
    users = [str(p.relative_to(PLATFORM)) for p in sorted((PLATFORM / "methods").rglob("*.py"))
             if "dynvid.engine.task" in _imports(p)]
    assert users == []


class _Minimal(Task):
    name = "minimal"
    stages = (Stage("only"),)


def test_optional_hooks_default_to_nothing_special():
    task, cfg = _Minimal(), ExperimentConfig()
    stage = task.stages[0]
    assert task.datasets(cfg, stage) is None and task.eval_dataset(cfg) is None
    assert task.prepare_stage(cfg, stage, None) == [] and task.report(cfg, [], "/nowhere") is None
    said = []
    assert task.end_epoch(torch.nn.Linear(1, 1), stage, said.append) == {} and said == []
    assert task.lr_multipliers(torch.nn.Linear(1, 1), stage) is None and task.ddp_kwargs is None
    assert task.backbone_label(cfg) == cfg.model.backbone
    assert task.example_input(cfg).shape == (2, 3, cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size)
    assert task.num_classes_from_state({"layer.bias": torch.zeros(4), "fc.bias": torch.zeros(7)}) == 7
    task.set_steps_per_epoch(12)
    assert task.steps_per_epoch == 12 and _Minimal().steps_per_epoch is None
    for hook, args in (("build_model", (cfg, 3)), ("training_step", (None, None, stage)),
                       ("evaluate", (None, [], stage))):
        with pytest.raises(NotImplementedError, match=f"_Minimal must define {hook}"):
            getattr(task, hook)(*args)


def test_a_task_without_a_report_leaves_no_report_folder(tmp_path):
    from dynvid.engine.trainer import FitResult, _method_report

    result = FitResult(run_name="r", storage_path=str(tmp_path))
    assert _method_report(_Minimal(), ExperimentConfig(), result, str(tmp_path)) is None
    assert list(tmp_path.iterdir()) == []


def test_the_results_table_and_the_evaluation_line_are_the_methods_own():
    """The engine knows no paper's metrics: a Task declares its table columns, its evaluation
    line and whether a final test follows the last epoch."""
    from dynvid.engine.trainer import FitResult, StageResult
    from dynvid.engine.worker import _summary

    cfgs = {m: apply_overrides(ExperimentConfig(), presets(m).get("embedded", [])) for m in TASKS}
    lfs = get_task("lfs", cfgs["lfs"])
    result = FitResult(run_name="r", storage_path="/x", columns=lfs.summary_columns)
    result.stages.append(StageResult("interleaved", "r-interleaved", {"epoch": 2, "val_AP50": 0.5, "val_AP": 0.25,
                                                                      "val_f0_fraction": 0.125, "val_gflops_avg": 1.0,
                                                                      "stage_time_s": 3.0}, None))
    header, _, row = result.table().splitlines()[:3]
    assert "mAP@0.5" in header and "f0 runs" in header and "clip-1" not in header
    assert "0.5000" in row and "0.125" in row
    assert "clip-1" in FitResult(run_name="r", storage_path="/x").table()  # a clip classifier's columns by default
    val = {"AP50": 0.5, "AP": 0.25, "f0_fraction": 0.125, "gflops_avg": 1.0, "num_samples": 4}
    assert _summary(val, lfs) == "AP50 0.5000 AP 0.2500 f0_fraction 0.12 GFLOPs 1.000"
    assert _summary({"clip_top1": 0.5, "gflops_avg": 0.2}, get_task("static", cfgs["static"])) == \
        "clip-1 0.5000 GFLOPs 0.200"
    for method in ("lfs", "ant", "resq", "liteeval"):  # their validation metrics are their own test
        assert get_task(method, cfgs[method]).test_dataset(cfgs[method]) is None, method


TINY_STATIC = ["model.width_mult=0.125", "data.clip_len=4", "data.crop_size=32", "data.train_short_side=36",
               "data.synthetic_height=36", "data.synthetic_width=48", "data.synthetic_train_videos=8",
               "data.synthetic_val_videos=4", "data.batch_size=2"]
EXTRA = {"resq": ["resq.qat_epochs=1", "resq.bits=W8A8->W4A4"]}  # its smoke preset skips the QAT stage


@pytest.mark.parametrize("method", sorted(TASKS))
def test_every_stage_of_every_method_trains_a_step_and_evaluates(method, tmp_path):
    """timm's test_models, for Tasks: each registered method's every stage builds its tiny model
    on the data the engine would give it (``stage_datasets``), starting from the previous
    stage's checkpoint as the worker does, takes one training step with gradients, and
    evaluates to a sample count, its measured cost and the quality metrics it declares."""
    import ray

    ray_before = ray.is_initialized()  # LiteEval's feature cache starts a local Ray (Ray Data)
    try:
        _train_and_evaluate_every_stage(method, tmp_path)
    finally:
        if not ray_before and ray.is_initialized():
            ray.shutdown()


def _train_and_evaluate_every_stage(method, tmp_path):
    from torch.utils.data import DataLoader

    from dynvid.config import to_dict
    from dynvid.engine.checkpoint import load_checkpoint, save_checkpoint
    from dynvid.engine.preflight import stage_datasets

    cfg = apply_overrides(ExperimentConfig(), presets(method).get("smoke", TINY_STATIC) + EXTRA.get(method, [])
                          + [f"train.storage_path={tmp_path / 'runs'}"])  # LiteEval writes its feature cache there
    task = get_task(method, cfg)
    declared = {key[len("val_"):] for _, key, _ in task.summary_columns if key.startswith("val_")}
    previous = None
    for i, stage in enumerate(task.stages):
        init_from = previous if stage.init_from_previous else None
        overrides = task.prepare_stage(cfg, stage, init_from)
        stage_cfg = apply_overrides(stage.config(cfg), overrides) if overrides else stage.config(cfg)
        torch.manual_seed(0)
        train, val, _ = stage_datasets(task, stage_cfg, stage)
        model = task.build_model(stage_cfg, train.num_classes, stage)
        if init_from:
            model.load_state_dict(load_checkpoint(init_from)["model"], strict=False)
        task.set_steps_per_epoch(1)
        model.train()
        batch = next(iter(DataLoader(train, batch_size=stage_cfg.data.batch_size,
                                     collate_fn=getattr(train, "collate_fn", None))))
        loss, logs = task.training_step(model, batch, stage)
        loss.backward()
        assert torch.isfinite(loss) and "loss" in logs, stage.name
        assert any(p.grad is not None for p in model.parameters()), stage.name
        metrics = task.evaluate(model, DataLoader(val, batch_size=stage_cfg.data.batch_size,
                                                  collate_fn=getattr(val, "collate_fn", None)), stage)
        assert metrics["num_samples"] > 0 and metrics["gflops_avg"] > 0, (stage.name, metrics)
        assert declared & set(metrics), (stage.name, sorted(metrics), sorted(declared))
        previous = str(tmp_path / f"stage{i}")
        save_checkpoint(previous, model, config=to_dict(stage_cfg),
                        metadata={"method": method, "stage": stage.name, "epoch": 0})
    if isinstance(task, PolicyTask):  # and what the engine's RLlib runner is handed, on the last stage's model
        _check_policy_spec(task, cfg, previous)


def _check_policy_spec(task: PolicyTask, cfg: ExperimentConfig, checkpoint: str) -> None:
    """The PolicySpec names a Q-network the engine can build from the spec's arguments, which
    reads the observations and answers the actions of the spec's own environment, and the DQN
    settings are ones the engine's dqn_config takes (built without starting Ray)."""
    from dynvid.engine.rl import dqn_config
    from dynvid.engine.rl_module import q_network_class, q_network_kwargs
    from dynvid.task import PolicySpec

    spec = task.policy_spec(cfg, checkpoint, checkpoint)
    assert isinstance(spec, PolicySpec) and spec.iterations >= 1 and spec.export_format
    env = spec.env(spec.env_config)
    cls = q_network_class(spec.q_network)
    net = cls(**q_network_kwargs(cls, spec.q_kwargs), num_actions=int(env.action_space.n))
    obs, _ = env.reset(seed=0)
    assert net.observation_shape == env.observation_space.shape == obs.shape, "the spec's network reads its env"
    assert net(torch.as_tensor(obs)[None]).shape == (1, env.action_space.n)
    config = dqn_config(spec.env, spec.env_config, q_network=spec.q_network, q_kwargs=spec.q_kwargs, **spec.dqn)
    assert config.env is spec.env and config.rl_module_spec.model_config["q_network"] == spec.q_network


def test_each_method_names_its_runs_by_its_own_network_and_input():
    """Run names are the key a rerun resumes by: the label of each method (``Task.run_label``)
    must stay what it was when config.py held the per-method branches."""
    cfg = apply_overrides(ExperimentConfig(), ["model.width_mult=0.25", "ant.width_mult=0.5", "ant.image_size=192",
                                               "resq.qat_epochs=2", "data.synthetic_height=160",
                                               "data.synthetic_width=160"])
    labels = {m: get_task(m, cfg).run_label(cfg) for m in ("static", "vared", "ant", "resq", "lfs")}
    assert labels["static"] == "static_r2plus1d_18-w0.25_8x4x112"
    assert labels["vared"] == "vared_r2plus1d_18-w0.25_8x4x112"
    assert labels["ant"] == "ant_effdet-d0-w0.5x192"
    assert labels["resq"] == f"resq_{cfg.resq.network}x160x160-qat2"
    c = cfg.lfs
    assert labels["lfs"] == f"lfs_mnv2-{c.f0_width:g}x{c.f0_size}-{c.f1_width:g}x{c.f1_size}"
    nontemporal = apply_overrides(cfg, ["ant.temporal=false"])
    assert get_task("ant", nontemporal).run_label(nontemporal).startswith("ant-nontemporal_effdet-d0")
    name = cfg.run_name("ant", digest="1a2b3c4d", label=labels["ant"])
    assert name == f"ant_effdet-d0-w0.5x192_synthetic-actions_e{cfg.optim.epochs}_s0_h1a2b3c4d"


def test_gumbel_softmax_is_a_shared_layer_not_liteevals():
    """ANT's gates sample with the Gumbel-softmax LiteEval's gate uses: one shared layer
    (dynvid.layers), and ANT no longer imports from LiteEval's package."""
    from dynvid import layers
    from dynvid.methods.liteeval import gumbel

    assert gumbel.gumbel_softmax is layers.gumbel_softmax
    ant = {m for p in (PLATFORM / "methods" / "ant").glob("*.py") for m in _imports(p)}
    assert not {m for m in ant if m.startswith("dynvid.methods.liteeval")}
    logits = torch.tensor([[0.0, 5.0, -5.0]], requires_grad=True)
    sample = layers.gumbel_softmax(logits, tau=0.5, generator=torch.Generator().manual_seed(0))
    assert sample.sum().item() == 1.0 and set(sample.detach().flatten().tolist()) <= {0.0, 1.0}
    (sample * torch.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert logits.grad.abs().sum() > 0  # straight-through: the soft sample's gradient


# ---- each paper in one folder (issue 21, layout) ------------------------------------------------

PAPERS = ("vared", "liteeval", "lfs", "ant", "resq")


@pytest.mark.parametrize("method", sorted(TASKS))
def test_each_method_folder_holds_its_task_and_its_package_imports_nothing_eagerly(method):
    folder = PLATFORM / "methods" / method
    assert (folder / "task.py").is_file() and (folder / "config.py").is_file() == (method in PAPERS)
    # the package's __init__ re-exports lazily: its only module-level import is the helper
    tree = ast.parse((folder / "__init__.py").read_text())
    top = [n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in tree.body
           if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert top == ["dynvid._lazy"]
    package = __import__(f"dynvid.methods.{method}", fromlist=["_"])
    for name in package.__all__:  # every re-export resolves, to the object its module defines
        where = package._EXPORTS[name]
        defining = __import__(f"dynvid.methods.{method}.{where}", fromlist=["_"])
        assert getattr(package, name) is getattr(defining, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(package, "nope")


@pytest.mark.parametrize("method", PAPERS)
def test_each_papers_config_section_is_its_folders_dataclass(method):
    section = getattr(ExperimentConfig(), method)
    assert type(section).__module__ == f"dynvid.methods.{method}.config"


def test_a_leaf_module_costs_that_module_alone():
    """Importing a paper's config or one of its layers imports no Task, no engine and no Ray
    (the circle that the eager ``__init__`` files made: config -> method -> Task -> config)."""
    import subprocess
    import sys

    code = ("import sys, dynvid.methods.vared.dynconv, dynvid.methods.resq.quantizers, dynvid.config\n"
            "print(sorted(m for m in sys.modules if m.endswith('.task') or m.startswith(('dynvid.engine', 'ray'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_detection_data_is_shared_not_lfss():
    """ANT reads its clips from dynvid.data.detection, and the loader's errors name no paper."""
    from dynvid.data.detection import build_detection_dataset
    from dynvid.data.errors import DatasetError

    ant = {m for p in (PLATFORM / "methods" / "ant").glob("*.py") for m in _imports(p)}
    assert not {m for m in ant if m.startswith("dynvid.methods.lfs")}
    with pytest.raises(DatasetError, match="the detection methods read 'synthetic:detection'"):
        build_detection_dataset("kinetics:/x", "val", size=32, clip_len=2, mode="val")


def test_ray_work_of_methods_runs_in_the_engine():
    """RLlib training (engine/rl.py) and Ray Data batch inference (engine/extract.py) are the
    engine's; a method supplies the environment, the networks and the per-item function, and
    no module under methods/ imports Ray."""
    users = sorted(str(p.relative_to(PLATFORM)) for p in (PLATFORM / "methods").rglob("*.py")
                   if any(m == "ray" or m.startswith("ray.") for m in _imports(p)))
    assert users == []


def test_the_engines_q_network_module_checks_the_arguments_it_is_given():
    from dynvid.engine.rl_module import q_network_class, q_network_kwargs

    cls = q_network_class("dynvid.methods.lfs.policy:QNetwork")
    assert q_network_kwargs(cls, {"q_network": "x", "state_channels": 4, "grid": 3, "double_q": True}) == \
        {"state_channels": 4, "grid": 3}  # RLlib's own keys pass through, unread
    with pytest.raises(ValueError, match=r"unknown model_config keys \['grd'\]"):
        q_network_kwargs(cls, {"state_channels": 4, "grid": 3, "grd": 3})
    with pytest.raises(ValueError, match="q_network must be 'module:Class'"):
        q_network_class("dynvid.methods.lfs.policy.QNetwork")


TRAINING_JOBS = ("vared_kinetics", "liteeval", "ant_detection", "lfs_interleaved", "resq_segmentation")


@pytest.mark.parametrize("job", TRAINING_JOBS)
def test_every_training_job_runs_on_the_shared_runner(job):
    """A training job is its arguments and its preset; the run, the printout and the --out JSON
    are dynvid.engine.jobs.run_training_job's, the same for all."""
    tree = ast.parse((PLATFORM.parents[1] / "jobs" / f"{job}.py").read_text())
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "run_training_job" in called and "fit" not in called


REASON = re.compile(r"#.*\b(imports? (Ray|RLlib|Optuna|torch)|import circle: \w+ -> |loaded when asked for)")


def test_every_function_local_import_says_why():
    """A dynvid import inside a function stays only with its reason on its line: a heavy
    import (Ray, torch for the CLI's start-up) or an import circle it would close. All others
    sit at the top of their module (issue 21: 207 function-local imports before, 40 after)."""
    unexplained = []
    for path in sorted([*PLATFORM.rglob("*.py"), *(PLATFORM.parents[1] / "jobs").glob("*.py")]):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("dynvid") \
                        and not REASON.search(lines[inner.end_lineno - 1]):
                    unexplained.append(f"{path.name}:{inner.lineno}")
    assert unexplained == []
