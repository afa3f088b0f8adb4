#!/usr/bin/env bash
# Start a local Ray head if none is running, submit jobs/vared_kinetics.py with `ray job submit`
# (working dir = the repo without .venv, data and run outputs; the runtime env of
# cluster/runtime_env.yaml plus the git commit), stream its output, and print where to look
# afterwards. The head is left running for the next job (`make ray-stop` stops it).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
# Ray 2.60 heads require a token (written to ~/.ray/auth_token by `ray start`); the CLI
# clients only send it in token mode.
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
RAY_PORT=${RAY_PORT:-6379}
DASHBOARD_PORT=${DASHBOARD_PORT:-8265}
RUNS=${DYNVID_RUNS:-$REPO/runs}
MLFLOW_URI=${MLFLOW_TRACKING_URI:-sqlite:///$REPO/runs/mlflow.db}
mkdir -p "$RUNS"

if ray status --address "127.0.0.1:$RAY_PORT" >/dev/null 2>&1; then
  echo "[dynvid] using the Ray head already running at 127.0.0.1:$RAY_PORT"
else
  echo "[dynvid] starting a local Ray head (127.0.0.1:$RAY_PORT, dashboard :$DASHBOARD_PORT)"
  ray start --head --port "$RAY_PORT" --node-ip-address 127.0.0.1 \
    --dashboard-host 127.0.0.1 --dashboard-port "$DASHBOARD_PORT" \
    --include-dashboard true --disable-usage-stats >/dev/null
fi

# The job runs from Ray's copy of the working dir, which has no .git: record the commit (and
# whether tracked files differ from it) here and hand both to the job in its runtime env, so
# the registered model and the MLflow runs say which code trained them.
GIT_COMMIT=$(git rev-parse --verify --quiet HEAD 2>/dev/null || echo unknown)
if [ "$GIT_COMMIT" = unknown ]; then
  GIT_DIRTY=unknown
elif [ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  GIT_DIRTY=true
else
  GIT_DIRTY=false
fi
RUNTIME_ENV=$(python - "$GIT_COMMIT" "$GIT_DIRTY" <<'PY'
import json, sys
import yaml
env = yaml.safe_load(open("cluster/runtime_env.yaml"))
env.setdefault("env_vars", {}).update(DYNVID_GIT_COMMIT=sys.argv[1], DYNVID_GIT_DIRTY=sys.argv[2])
print(json.dumps(env))
PY
)
echo "[dynvid] submitting jobs/vared_kinetics.py at commit $GIT_COMMIT (dirty: $GIT_DIRTY)"

ray job submit --address "http://127.0.0.1:$DASHBOARD_PORT" \
  --runtime-env-json "$RUNTIME_ENV" \
  -- python jobs/vared_kinetics.py \
     --set "train.storage_path=$RUNS" --set "train.mlflow_tracking_uri=$MLFLOW_URI" "$@"

cat <<MSG

[dynvid] done. Where to look:
  Ray dashboard     http://127.0.0.1:$DASHBOARD_PORT  (the head stays up; 'make ray-stop' stops it)
  checkpoints       $RUNS
  MLflow store      $MLFLOW_URI
                    browse: .venv/bin/mlflow ui --backend-store-uri $MLFLOW_URI --port 5000
MSG
