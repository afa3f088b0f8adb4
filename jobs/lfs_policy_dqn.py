"""Looking Fast and Slow, policy job: the adaptive interleaving policy trained with RLlib DQN.

    ray job submit --working-dir . -- python jobs/lfs_policy_dqn.py [--detector CKPT] [--gamma 0.2 ...]
                                                                   [--config FILE] [--set key=value ...]

Algorithm 1 of Liu et al. (Sec. 3.4): the frozen interleaved detector runs in a gymnasium
environment on RLlib's env runners (observation Eq. 1: the LSTM state, its change and the
20-step action history; reward Eq. 2: the detection-loss gap to the best extractor plus γ
when f1 runs, or with ``--set lfs.reward=absolute`` the loss itself; ``--set
lfs.reward_horizon=8`` scores each extractor over its frame and the 7 after it), and RLlib's Double
DQN with experience replay trains the Q-network of Fig. 4. The trained module is exported
to a plain torch file and evaluated inside the detector without RLlib: mAP@0.5 and fraction
of f0 runs on every validation frame, next to the fixed policies (τ ∈ ``lfs.taus``) and
against them at the same fraction of f0 runs (Fig. 7). Each γ is one MLflow run; the table
and the exported policies are logged.

``--detector`` takes a checkpoint of ``jobs/lfs_interleaved.py`` (folder or s3:// URI);
without it the job first runs that job's training with the same config (a finished run is
found and reused, not retrained; so is a policy the storage already holds for the same
experiment: ``engine.rl.train_policy``). Use a policy in evaluation with ``--set lfs.policy=FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from dynvid.config import ExperimentConfig
from dynvid.engine.jobs import exit_on_bad_input
from dynvid.methods.lfs.presets import job_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", help="YAML config file (sections: data, model, optim, train, lfs)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set lfs.dqn_iterations=40 (repeatable)")
    p.add_argument("--data", metavar="SPEC", help="dataset: coco-vid:/path (default: the embedded synthetic scenes)")
    p.add_argument("--detector", metavar="CKPT", help="detector checkpoint (default: train or reuse it first)")
    p.add_argument("--gamma", type=float, nargs="+", help="speed rewards γ of Eq. 2, one policy each "
                   "(default: lfs.gamma)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: sqlite:///runs/mlflow.db)")
    p.add_argument("--smoke-test", action="store_true", help="tiny budget: checks the job end to end")
    p.add_argument("--out", help="write the results as JSON to this file")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> ExperimentConfig:
    overrides = args.overrides + ([f"train.mlflow_tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])
    return job_config(args.data, args.smoke_test, args.config, overrides)


def run(cfg: ExperimentConfig, detector: str | None, gammas: list[float], say=print) -> dict:
    """Train one policy per γ on ``detector`` (trained first when None); returns the rows."""
    from dynvid.engine.preflight import check_inputs, resolve_local_paths  # imports torch
    from dynvid.engine.trainer import fit  # imports Ray, torch
    from dynvid.engine.rl import train_policies  # imports torch
    from dynvid.methods.lfs.report import curve_table  # imports torch

    if detector is None:  # fit checks the input before Ray starts
        cfg = resolve_local_paths(cfg)[0]  # absolute: RLlib's env runners read the dataset in other folders
        result = fit(cfg, method="lfs", register=False)
        detector = result.stages[-1].checkpoint_path
    else:
        cfg, detector = check_inputs(cfg, "lfs", detector)
    out = train_policies(cfg, "lfs", detector, "lfs.gamma", gammas, os.path.abspath(cfg.train.storage_path),
                         progress=say)
    fixed, learned = out["shared"]["fixed"], out["shared"]["learned"]  # table rows, by policy name
    table = curve_table({**fixed, **learned})
    say(f"\n[dynvid] Looking Fast and Slow policies (every val frame)\n{table}")
    for m in out["rows"]:
        verdict = "≥" if m["AP50_gain_vs_fixed"] >= 0 else "<"
        say(f"[dynvid] γ={m['gamma']:g}: learned {m['val_AP50']:.4f} {verdict} fixed {m['fixed_AP50_at_f0']:.4f} "
            f"at {m['val_f0_fraction']:.3f} f0 runs; policy {m['policy']}")
    return {"detector": detector, "fixed": fixed, "learned": out["rows"], "table": table}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # bad input (config, dataset, storage, tracking) is found before Ray starts: one line, exit 2
    return exit_on_bad_input("lfs_policy_dqn", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    out = run(cfg, args.detector, args.gamma or [cfg.lfs.gamma])
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
