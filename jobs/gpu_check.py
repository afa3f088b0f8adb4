"""GPU check: every method's job, the dynamic-inference speed tables and the engine against a
plain PyTorch loop, on CUDA with AMP, as one table and one JSON file (issue 20).

    python jobs/gpu_check.py [--out FILE.json] [--dry-run] [--only NAME ...] [--job-timeout S]
    make gpu-check ARGS="--out runs/gpu_check.json"
    bash .gpu/env.sh python3 jobs/gpu_check.py --out /tmp/gpu_check.json   # a CUDA box without Ray/MLflow

What runs, each as a subprocess with its own time limit (wall time, exit status, the tail of
stderr on failure):

1. the five training jobs in ``--smoke-test`` mode with ``train.use_gpu=true train.amp=true``,
   tracking off (``train.mlflow_tracking_uri=null``: a GPU image may have no MLflow) and
   storage in a temporary folder; ``resq_segmentation`` with ``resq.qat_epochs=1``. Each job's
   ``--out`` JSON gives the train clips/s of its last epoch per stage (the engine's
   ``throughput_clips_per_s``);
2. the speed tables a method's benchmark can measure on CUDA: ``bench_vared --device cuda
   --speed-only`` (static vs forced VA-RED² choices, fp32/fp16, batch 1/16). The other
   benchmarks time the CPU only (ANT's and LFS's single-core latency, LiteEval's 2-thread
   timing) or count BOPs instead of timing (ResQ): listed as "not measured on CUDA";
3. ``bench_engine --device cuda --paper-size``: full-width R(2+1)D-18, 16×112², batch 32, AMP,
   a plain PyTorch loop against the engine with one GPU worker on the same loader pipeline;
   target engine / plain ≥ 0.90.

The jobs and the engine comparison share one Ray instance that this command starts for them
(private temporary folder, never a cluster of someone else on the machine) and stops at the
end; a selection of speed tables only (``--only bench_vared``) starts none.

Without CUDA (``torch.cuda.is_available()`` false), or with ``--dry-run``, it says so and runs
a CPU dry run of the same code paths: the same job commands with ``train.use_gpu=false`` (AMP
stays asked for; the engine declines it on the CPU) and smaller budgets, ``bench_vared --device
cuda --smoke-test --speed-only`` and ``bench_engine --device cuda --paper-size --smoke-test``
(both dry runs of their CUDA code on the CPU at tiny sizes), with ``CUDA_VISIBLE_DEVICES`` empty.
Its numbers mean nothing. Exit status 0 when every check completed (targets missed are reported,
not failures), 1 otherwise. The JSON (``{"benchmark", "config", "results", "targets"}``) is
rewritten after each check, so a run that is cut off leaves what it finished; each check's
output is kept in ``<out>.logs/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from dynvid.config import set_arguments
from dynvid.tables import format_table

ROOT = Path(__file__).resolve().parents[1]
JOBS_DIR = ROOT / "jobs"
GPU = ["train.use_gpu=true", "train.amp=true"]
RAY_START_TIMEOUT_S = 180
CPU = ["train.use_gpu=false", "train.amp=true"]


@dataclass
class Check:
    """One subprocess of the check: ``jobs/<script>`` with ``args`` (GPU) or ``dry_args``."""

    name: str
    kind: str
    """``job`` (a training job in smoke mode), ``speed`` (a benchmark's speed tables) or ``engine``."""
    script: str
    args: list[str]
    dry_args: list[str]
    timeout_s: float
    sets: list[str] = field(default_factory=list)
    """``--set`` overrides of a job on the GPU and in the dry run."""
    dry_sets: list[str] = field(default_factory=list)
    """Extra ``--set`` overrides of the dry run only (smaller budgets)."""


CHECKS = [
    Check("vared_kinetics", "job", "vared_kinetics.py", ["--smoke-test"], ["--smoke-test"], 420,
          dry_sets=["data.synthetic_train_videos=16", "data.synthetic_val_videos=8", "train.test_videos=2",
                    "data.num_test_clips=1"]),
    Check("resq_segmentation", "job", "resq_segmentation.py", ["--smoke-test"], ["--smoke-test"], 420,
          sets=["resq.qat_epochs=1"]),
    Check("ant_detection", "job", "ant_detection.py", ["--smoke-test"], ["--smoke-test"], 420),
    Check("lfs_interleaved", "job", "lfs_interleaved.py", ["--smoke-test"], ["--smoke-test"], 420),
    Check("liteeval", "job", "liteeval.py", ["--smoke-test"], ["--smoke-test"], 420,
          dry_sets=["liteeval.coarse_hidden=16", "liteeval.fine_hidden=32", "data.synthetic_train_videos=16",
                    "data.synthetic_val_videos=6"]),
    Check("bench_vared", "speed", "bench_vared.py", ["--device", "cuda", "--speed-only"],
          ["--device", "cuda", "--smoke-test", "--speed-only"], 300),
    Check("bench_engine", "engine", "bench_engine.py", ["--device", "cuda", "--paper-size", "--steps", "40"],
          ["--device", "cuda", "--paper-size", "--smoke-test"], 420),
]

#: Benchmarks with no CUDA speed table, and why (listed in the table, never faked).
NOT_ON_CUDA = {
    "bench_resq": "counts BOPs, does not time: fake quantization computes every pixel in float",
    "bench_ant": "times amortized single-core CPU latency (torch.set_num_threads(1)); no --device",
    "bench_lfs": "times per-frame CPU latency, sync vs async detector threads; no --device",
    "bench_liteeval": "times videos/s on 2 CPU threads after training all stages; no --device",
}

# Started by this command, stopped by closing its stdin: one Ray instance for every check that needs one.
_RAY_HOLDER = """
import os, sys
from dynvid.engine.trainer import local_ray_options
options = local_ray_options()
os.environ.update(options["runtime_env"]["env_vars"])  # the raylet's workers (every job's) inherit it
import ray
kwargs = {} if sys.argv[2] == "auto" else {"num_gpus": int(sys.argv[2])}
ray.init(address="local", _temp_dir=sys.argv[1], log_to_driver=False, **options, **kwargs)
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()
ray.shutdown()
"""


# ---- running ----------------------------------------------------------------------------------

def command(check: Check, dry_run: bool, storage: Path, out: Path) -> list[str]:
    """The subprocess command line of ``check``."""
    cmd = [sys.executable, str(JOBS_DIR / check.script), *(check.dry_args if dry_run else check.args), "--out", str(out)]
    if check.kind == "job":
        sets = (CPU if dry_run else GPU) + ["train.mlflow_tracking_uri=null", f"train.storage_path={storage}"]
        cmd += set_arguments(sets + check.sets + (check.dry_sets if dry_run else []))
    return cmd


def start_ray(temp_dir: Path, env: dict, dry_run: bool) -> tuple[subprocess.Popen, str]:
    """A Ray instance in its own temporary folder, held by a child process; its GCS address."""
    holder = subprocess.Popen([sys.executable, "-c", _RAY_HOLDER, str(temp_dir), "0" if dry_run else "auto"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(holder.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=RAY_START_TIMEOUT_S)
    address = lines[0].strip() if lines else ""
    if not address:
        holder.kill()
        holder.wait()
        why = "it exited" if lines else f"no address within {RAY_START_TIMEOUT_S} s"
        raise RuntimeError(f"could not start Ray for the checks ({why}; exit status {holder.returncode})")
    return holder, address


def stop_ray(holder: subprocess.Popen) -> None:
    try:
        holder.stdin.close()  # the holder shuts Ray down and exits
        holder.wait(timeout=60)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()


def run_check(check: Check, cmd: list[str], env: dict, log_dir: Path, timeout_s: float) -> dict:
    """Run one check in its own process group; its row of the results."""
    stdout, stderr = log_dir / f"{check.name}.out", log_dir / f"{check.name}.err"
    print(f"[gpu-check] {check.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with open(stdout, "w") as so, open(stderr, "w") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, cwd=ROOT, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc, timed_out = proc.returncode, True
        except BaseException:  # Ctrl-C reaches this process only (the job has its own session): stop the job too
            _kill_group(proc)
            raise
    wall = time.perf_counter() - t0
    status = "timeout" if timed_out else ("ok" if rc == 0 else "failed")
    row = {"name": check.name, "kind": check.kind, "status": status, "rc": rc, "wall_s": round(wall, 1),
           "command": cmd[1:], "log": [str(stdout), str(stderr)]}
    if status != "ok":
        row["stderr_tail"] = _tail(stderr)
    print(f"[gpu-check] {check.name}: {status} (rc {rc}, {wall:.0f} s)", flush=True)
    return row


def _kill_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# ---- reading each check's JSON ----------------------------------------------------------------

def job_speed(result: dict) -> dict:
    """Train clips/s of the last epoch of each stage, from a job's ``--out`` JSON."""
    return {stage: m["throughput_clips_per_s"] for stage, m in (result.get("stages") or {}).items()
            if isinstance(m, dict) and "throughput_clips_per_s" in m}


def vared_speed(report: dict) -> list[dict]:
    """Per dtype and batch of bench_vared's forced-choice table: static clips/s and each
    choice's speed-up and fraction of its GFLOPs ratio."""
    rows = []
    for table in report["results"]["speed"]["forced"]["tables"]:
        r = table["rows"]
        rows.append({"dtype": table["dtype"], "batch": table["batch"],
                     "static_clips_per_s": r["all"]["static_clips_per_s"],
                     "choices": {k: {"clips_per_s": v["dynamic_clips_per_s"], "speedup": v["speedup"],
                                     "speed_fraction": v["speed_fraction"]} for k, v in r.items()}})
    return rows


def summarize(row: dict, result: dict | None) -> None:
    """Add what ``result`` (the check's ``--out`` JSON) says about speed to ``row``."""
    if result is None:
        return
    if row["kind"] == "job":
        row["train_clips_per_s"] = job_speed(result)
    elif row["kind"] == "speed":
        row["speed"] = vared_speed(result)
        row["targets"] = result["targets"]
    elif row["kind"] == "engine":
        r = result["results"]
        row["engine"] = {"plain_loop_clips_per_s": r["plain_loop_clips_per_s"],
                         "engine_clips_per_s": r["engine_1_worker_clips_per_s"],
                         "engine_over_plain_loop": r["engine_over_plain_loop"],
                         "resident_batch_clips_per_s": r["resident_batch_clips_per_s"],
                         "engine_data_wait_fraction": r["engine_1_worker"].get("data_wait_fraction"),
                         "config": result["config"]}
        row["targets"] = result["targets"]


def speed_cell(row: dict) -> str:
    """The table's last column for one check."""
    if "train_clips_per_s" in row:
        return ", ".join(f"{s} {v:.1f}" for s, v in row["train_clips_per_s"].items()) or "-"
    if "speed" in row:
        parts = []
        for t in row["speed"]:
            c = t["choices"]
            parts.append(f"{t['dtype']} b{t['batch']}: static {t['static_clips_per_s']:.1f}, "
                         + " ".join(f"{k} x{v['speedup']:.2f}" for k, v in c.items()))
        return "; ".join(parts)
    if "engine" in row:
        e = row["engine"]
        return (f"plain {e['plain_loop_clips_per_s']:.1f}, engine {e['engine_clips_per_s']:.1f} "
                f"(ratio {e['engine_over_plain_loop']:.2f}, target >= 0.90), resident batch "
                f"{e['resident_batch_clips_per_s']:.1f}")
    return row.get("reason", "-")


def table(rows: list[dict]) -> str:
    lines = [[r["name"], r["status"], "-" if r.get("wall_s") is None else f"{r['wall_s']:.0f}", speed_cell(r)]
             for r in rows]
    return format_table(["check", "status", "wall s", "clips/s (job: train, per stage) / speed"], lines)


def targets(rows: list[dict]) -> list[dict]:
    """Each check completed (a job ``<name>_completes``), then the benchmarks' own targets."""
    out = []
    for r in rows:
        if r["status"] in ("ok", "failed", "timeout"):
            done = 1.0 if r["status"] == "ok" else 0.0
            out.append({"name": f"{r['name']}_completes", "value": done, "target": 1.0, "direction": "max",
                        "met": done >= 1.0})
        out += [{**t, "name": f"{r['name']}/{t['name']}"} for t in r.get("targets", [])]
    return out


def report(rows: list[dict], config: dict) -> dict:
    return {"benchmark": "gpu_check", "config": config, "results": {"checks": rows}, "targets": targets(rows)}


# ---- entry point ------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", help="write the JSON result here (rewritten after each check; logs in <out>.logs/)")
    p.add_argument("--dry-run", action="store_true", help="the CPU dry run even where CUDA is available")
    names = [c.name for c in CHECKS]
    p.add_argument("--only", nargs="+", choices=names, metavar="NAME",
                   help=f"run only these checks (to split the check across commands): {', '.join(names)}")
    p.add_argument("--job-timeout", type=float, metavar="S", help="time limit of each check in seconds "
                   "(default: 420 per job and for bench_engine, 300 for bench_vared)")
    args = p.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    dry_run = args.dry_run or not cuda
    if not cuda:
        print("[gpu-check] CUDA is unavailable here (torch.cuda.is_available() is false): CPU dry run of the "
              "same code paths; its numbers mean nothing", flush=True)
    elif dry_run:
        print("[gpu-check] --dry-run: CPU dry run of the same code paths (CUDA hidden from the checks)", flush=True)
    checks = [c for c in CHECKS if not args.only or c.name in args.only]
    config = {"dry_run": dry_run, "cuda_available": cuda, "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if cuda else None, "cuda": torch.version.cuda,
              "python": sys.version.split()[0], "cpus": os.cpu_count(), "checks": [c.name for c in checks]}

    out = Path(args.out).resolve() if args.out else None
    work = Path(tempfile.mkdtemp(prefix="dynvid-gpu-check-"))
    ray_tmp = Path(tempfile.mkdtemp(prefix="dvgc", dir="/tmp"))  # short: Ray's socket paths have a length limit
    log_dir = Path(f"{out}.logs") if out else Path(tempfile.mkdtemp(prefix="dynvid-gpu-check-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_TMPDIR": str(ray_tmp)}
    env.pop("RAY_ADDRESS", None)
    # a new local instance turns Ray's token authentication on and reads ~/.ray/auth_token
    # (made if missing) in its own process only: the jobs joining it must be told as well
    env.setdefault("RAY_AUTH_MODE", "token")
    if dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""
    rows: list[dict] = []
    holder = None
    try:
        if any(c.kind != "speed" for c in checks):  # the speed tables run in their own process, no Ray
            holder, address = start_ray(ray_tmp, env, dry_run)
            env["RAY_ADDRESS"] = address
            print(f"[gpu-check] Ray for the checks at {address}", flush=True)
        for check in checks:
            result_path = work / f"{check.name}.json"
            cmd = command(check, dry_run, work / "runs" / check.name, result_path)
            row = run_check(check, cmd, env, log_dir, args.job_timeout or check.timeout_s)
            if row["status"] == "ok":
                try:
                    summarize(row, json.loads(result_path.read_text()))
                except (OSError, ValueError, KeyError, TypeError) as exc:
                    row.update(status="failed", stderr_tail=f"its --out JSON could not be read: {exc!r}")
            rows.append(row)
            if out:
                out.write_text(json.dumps(report(rows, config), indent=2, default=str))
    finally:
        if holder is not None:
            stop_ray(holder)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    if not args.only:
        rows += [{"name": name, "kind": "speed", "status": "not measured on CUDA", "wall_s": None, "reason": why}
                 for name, why in NOT_ON_CUDA.items()]
    final = report(rows, config)
    if out:
        out.write_text(json.dumps(final, indent=2, default=str))

    title = "GPU check" + (" — DRY RUN on the CPU (not a measurement)" if dry_run else
                           f" on {config['gpu']} (torch {config['torch']}, CUDA {config['cuda']})")
    print(f"\n{title}\n{table(rows)}")
    for r in rows:
        if r["status"] in ("failed", "timeout"):
            print(f"\n[gpu-check] {r['name']} {r['status']} (rc {r['rc']}); end of its stderr ({r['log'][1]}):\n"
                  f"{r.get('stderr_tail', '')}")
    print("\nTargets" + (" (DRY RUN: not a measurement)" if dry_run else "") + ":")
    for t in final["targets"]:
        print(f"  {t['name']}: {t['value']:.4g} (target {'>=' if t['direction'] == 'max' else '<='} "
              f"{t['target']}) -> {'met' if t['met'] else 'MISSED'}")
    failed = [r["name"] for r in rows if r["status"] in ("failed", "timeout")]
    if not out and not failed:
        shutil.rmtree(log_dir, ignore_errors=True)  # kept (and named above) when a check failed
    print(f"\n[gpu-check] {len(rows) - len(failed) - len(NOT_ON_CUDA if not args.only else [])} checks completed"
          + (f", FAILED: {', '.join(failed)}" if failed else "") + (f"; JSON {out}" if out else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
