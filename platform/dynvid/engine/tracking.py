"""MLflow tracking from the Ray Train worker of rank 0 (Ray's Train/MLflow interop pattern).

One MLflow run per stage, named like the Ray Train run (deterministic from the config),
with the full config logged as flattened params and every epoch's metrics as steps. Other
ranks get a tracker that does nothing. A resumed stage continues the MLflow run of the
same name instead of opening a second one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Tracker", "flatten"]


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class Tracker:
    """MLflow run of one stage; a no-op when ``uri`` is None or ``enabled`` is False."""

    def __init__(self, uri: str | None, experiment: str, run_name: str, params: dict, enabled: bool = True):
        self.active = bool(uri) and enabled
        self.run_id: str | None = None
        if not self.active:
            return
        import mlflow

        self._mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        existing = mlflow.search_runs(filter_string=f"attributes.run_name = '{run_name}'", max_results=1,
                                      output_format="list")
        if existing:
            run = mlflow.start_run(run_id=existing[0].info.run_id)
        else:
            run = mlflow.start_run(run_name=run_name)
            mlflow.log_params({k: ("None" if v is None else v) for k, v in flatten(params).items()})
        self.run_id = run.info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.active:
            self._mlflow.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def finish(self, status: str = "FINISHED") -> None:
        if self.active:
            self._mlflow.end_run(status=status)
            self.active = False
