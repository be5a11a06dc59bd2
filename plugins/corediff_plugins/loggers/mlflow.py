"""MLflow tracking (the ``mlflow`` or ``mlflow-skinny`` package), through ``MlflowClient``:
scalars as metrics, sample grids with ``log_image``, the resolved recipe as parameters
(flattened ``train.lr``) and as the artifact ``recipe.toml``, the tags as run tags.

By default a local file store in ``<run>/trackers/mlruns`` (``mlflow ui --backend-store-uri
runs/NAME/trackers/mlruns`` shows it; MLflow 3 keeps that backend in maintenance mode, so
this logger sets ``MLFLOW_ALLOW_FILE_STORE=true`` for it); ``tracking_uri`` names any other
store or server. A resumed corediff run reopens the same MLflow run by id.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from corediff.config import ComponentConfig
from corediff.interfaces import Logger
from corediff_plugins.loggers.flat import flatten, recipe_toml

#: MLflow's own limits on one batch and one parameter value.
BATCH, VALUE_CHARS = 100, 6000


class MLflowConfig(ComponentConfig):
    type: Literal["mlflow"] = "mlflow"
    tracking_uri: str | None = Field(
        None, min_length=1, description="MLflow tracking URI (None: a file store in "
        "<run>/trackers/mlruns; e.g. 'http://host:5000' or 'sqlite:///mlflow.db').")
    experiment: str = Field("corediff", min_length=1, max_length=500,
                            description="The MLflow experiment the run belongs to.")


class MLflowLogger(Logger):
    """One MLflow run per corediff run, reopened by id when the run is resumed."""

    Config = MLflowConfig
    packages = {"mlflow": "mlflow"}

    def start(self, recipe: Mapping[str, Any], *, tags: Mapping[str, str], step: int,
              resume: Mapping[str, Any] | None) -> dict[str, Any]:
        from mlflow.entities import Param, RunTag
        from mlflow.tracking import MlflowClient

        uri = self.config.tracking_uri
        if uri is None:
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (self.run_dir / "mlruns").resolve().as_uri()
        self.client = client = MlflowClient(uri)
        if resume:
            self.run_id = resume["run_id"]
            client.update_run(self.run_id, status="RUNNING")
            return {"tracking_uri": uri, "run_id": self.run_id}
        found = client.get_experiment_by_name(self.config.experiment)
        experiment = found.experiment_id if found is not None else client.create_experiment(
            self.config.experiment)
        name = str(recipe.get("run", {}).get("name", "run"))
        self.run_id = client.create_run(experiment, run_name=name, tags=dict(tags)).info.run_id
        params = [Param(key, str(value)[:VALUE_CHARS]) for key, value in flatten(recipe).items()]
        for first in range(0, len(params), BATCH):
            client.log_batch(self.run_id, params=params[first:first + BATCH])
        client.log_batch(self.run_id, tags=[RunTag("corediff.start_step", str(step))])
        client.log_text(self.run_id, recipe_toml(recipe), "recipe.toml")
        return {"tracking_uri": uri, "run_id": self.run_id}

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def log_image(self, name: str, image: Any, step: int) -> None:
        self.client.log_image(self.run_id, image, key=name, step=step)

    def close(self) -> None:
        if getattr(self, "run_id", None) is not None:
            self.client.set_terminated(self.run_id)
            self.run_id = None
