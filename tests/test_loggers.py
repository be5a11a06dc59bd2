"""Experiment trackers as a component kind (``[[log]]``): each first-party logger trains a
few steps of a tiny recipe, is resumed, and its logs are read back with the tracker's own
reader (TensorBoard's EventAccumulator, the wandb offline run files, MLflow's file store).
Tests of a tracker that is not installed skip; the refusal of a missing one is tested with
an in-process logger whose package does not exist."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any, Literal

import pytest

import corediff
from corediff.cli import main
from corediff.config import ComponentConfig
from corediff.engine.rundir import read_metrics
from corediff.errors import ConfigError
from corediff.interfaces import Logger

BASE = {
    "data": {"type": "digits", "image_size": 8},
    "model": {"type": "unet", "preset": "tiny", "num_res_blocks": 1,
              "attention_resolutions": []},
    "diffusion": {
        "schedule": {"type": "cosine", "steps": 20},
        "degradation": {"type": "gaussian"},
        "parameterization": {"type": "eps"},
        "loss_weighting": {"type": "simple"},
        "sampler": {"type": "ddim", "steps": 2},
        "prior": {"type": "normal"},
    },
    "train": {"batch_size": 8, "log_every": 2, "checkpoint_every": 4, "sample_every": 4,
              "warmup_steps": 1, "val_fraction": 0.1},
    "sample": {"n": 4, "batch_size": 4},
    "run": {"device": "cpu", "tags": {"study": "s1", "cell": "base"}},
}


def needs(module: str) -> Any:
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed")


def train(tmp_path: Path, log: list[dict[str, Any]], steps: int, *, resume: bool) -> Path:
    data = json.loads(json.dumps(BASE))
    data["log"] = log
    data["train"]["steps"] = steps
    corediff.train(corediff.parse_recipe(data), run_dir=tmp_path / "run", resume=resume)
    return tmp_path / "run"


def two_sessions(tmp_path: Path, log: list[dict[str, Any]]) -> Path:
    """8 steps, then resumed to 12: rows at 2, 4, ..., 12, grids and val loss at 4, 8, 12."""
    train(tmp_path, log, 8, resume=False)
    return train(tmp_path, log, 12, resume=True)


def csv_losses(root: Path) -> dict[int, float]:
    rows = read_metrics(root / "metrics.csv")
    return {int(r["step"]): float(r["loss"]) for r in rows}


# -- TensorBoard --------------------------------------------------------------------------
@needs("tensorboard")
def test_tensorboard_scalars_images_and_config_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    log = [{"type": "tensorboard"}]
    train(tmp_path, log, 8, resume=False)  # last checkpoint at step 8
    state = tmp_path / "run" / "trackers" / "state.json"
    folder = json.loads(state.read_text())["0:tensorboard"]["log_dir"]
    assert Path(folder).parent == tmp_path / "run" / "trackers" / "tensorboard"
    with SummaryWriter(folder) as killed:  # what a session killed after it had logged
        killed.add_scalar("train/loss", 123.0, 9)
        killed.add_scalar("train/loss", 123.0, 10)
    root = train(tmp_path, log, 12, resume=True)
    assert json.loads(state.read_text())["0:tensorboard"]["log_dir"] == folder
    events = EventAccumulator(folder,
                              size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == [2, 4, 6, 8, 10, 12]  # one run, the killed part purged
    losses = {e.step: e.value for e in scalars}
    assert losses == pytest.approx(csv_losses(root), rel=1e-6)
    for key in ("train/lr", "train/grad_norm", "train/images_per_s", "eval/val_loss"):
        assert key in tags["scalars"], tags
    assert [e.step for e in events.Scalars("eval/val_loss")] == [4, 8, 12]
    assert [e.step for e in events.Images("samples")] == [4, 8, 12]
    image = events.Images("samples")[0]
    assert image.width > 8 and image.height > 8 and image.encoded_image_string[:4] == b"\x89PNG"
    text = events.Tensors("config/recipe/text_summary")[0].tensor_proto.string_val[0].decode()
    assert 'type = "digits"' in text and "[diffusion.sampler]" in text


# -- Weights & Biases (offline) -------------------------------------------------------------
def wandb_records(path: Path) -> list[Any]:
    """The records of an offline ``run-<id>.wandb`` file: a LevelDB-style log (7-byte
    header, 32 KiB blocks, records of checksum, length, type) of protobuf ``Record``s."""
    from wandb.proto import wandb_internal_pb2

    data, records, pos, pending = path.read_bytes(), [], 7, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:  # block padding
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


@needs("wandb")
def test_wandb_offline_run_folder_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    root = two_sessions(tmp_path, [{"type": "wandb", "project": "corediff-test"}])
    run_id = json.loads((root / "trackers" / "state.json").read_text())["0:wandb"]["id"]
    folders = sorted((root / "trackers" / "wandb_dir" / "wandb").glob(f"offline-run-*-{run_id}*"))
    assert len(folders) == 2  # both sessions: the same run id
    history: dict[int, dict[str, str]] = {}
    runs = []
    for folder in folders:
        for record in wandb_records(folder / f"run-{run_id}.wandb"):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                items = {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
                history.setdefault(int(items["_step"]), {}).update(items)
            elif kind == "run":
                runs.append(record.run)
    assert {r.run_id for r in runs} == {run_id}
    first = runs[0]
    assert {"study=s1", "cell=base", "seed=0"} <= set(first.tags)
    config = {u.key: json.loads(u.value_json) for u in first.config.update}
    assert config["data"]["type"] == "digits" and config["train"]["batch_size"] == 8
    losses = {step: float(v["train/loss"]) for step, v in history.items() if "train/loss" in v}
    assert losses == pytest.approx(csv_losses(root), rel=1e-6)
    assert sorted(losses) == [2, 4, 6, 8, 10, 12]
    assert all("train/lr" in history[s] and "train/grad_norm" in history[s] for s in losses)
    assert sorted(s for s, v in history.items() if "eval/val_loss" in v) == [4, 8, 12]
    images = sorted(s for s, v in history.items() if "samples/_type" in v)
    assert images == [4, 8, 12]
    media = json.loads(history[4]["samples/path"])
    assert (folders[0] / "files" / media).read_bytes()[:4] == b"\x89PNG"


# -- MLflow (file store) ---------------------------------------------------------------------
@needs("mlflow")
def test_mlflow_file_store_read_back(tmp_path):
    from mlflow.tracking import MlflowClient

    root = two_sessions(tmp_path, [{"type": "mlflow", "experiment": "digits"}])
    assert main(["eval", str(root), "--n", "8"]) == 0  # corediff eval logs to the same run
    evaluated = json.loads((root / "eval.json").read_text())
    state = json.loads((root / "trackers" / "state.json").read_text())["0:mlflow"]
    client = MlflowClient(state["tracking_uri"])
    experiment = client.get_experiment_by_name("digits")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [state["run_id"]]  # resumed into the same run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["data.type"] == "digits" and run.data.params["train.lr"] == "0.0002"
    assert run.data.tags["study"] == "s1" and run.data.tags["cell"] == "base"
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "train/loss")}
    assert history == pytest.approx(csv_losses(root), rel=1e-6)
    for key in ("train/lr", "train/grad_norm", "train/images_per_s"):
        assert len(client.get_metric_history(run.info.run_id, key)) == 6
    assert [m.step for m in client.get_metric_history(run.info.run_id, "eval/val_loss")] == [
        4, 8, 12]
    metric_keys = set(run.data.metrics)
    assert "eval/step" not in metric_keys and "eval/n" not in metric_keys
    evaluated_keys = {f"eval/{k}/{m}" for k, v in evaluated.items()
                      if isinstance(v, dict) and k != "sampler"
                      for m, x in v.items() if isinstance(x, float)}
    assert evaluated_keys and evaluated_keys <= metric_keys, (evaluated_keys, metric_keys)
    key = sorted(evaluated_keys)[0]
    family, name = key.split("/")[1:]
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] == [
        (12, pytest.approx(evaluated[family][name]))]
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    assert sum(p.endswith(".png") and "step+4+" in p for p in images) == 1, images
    assert [a.path for a in client.list_artifacts(run.info.run_id)].count("recipe.toml") == 1


# -- the kind ----------------------------------------------------------------------------------
class AbsentConfig(ComponentConfig):
    type: Literal["absent_tracker"] = "absent_tracker"


class AbsentLogger(Logger):
    """A logger whose package is not installed anywhere."""

    Config = AbsentConfig
    packages = {"corediff_no_such_tracker": "corediff-no-such-tracker>=1"}

    def start(self, recipe, *, tags, step, resume):  # pragma: no cover - never started
        raise AssertionError

    def log_scalars(self, values, step):  # pragma: no cover
        raise AssertionError

    def log_image(self, name, image, step):  # pragma: no cover
        raise AssertionError


@pytest.fixture
def absent_logger():
    corediff.register("logger")(AbsentLogger)
    yield
    from corediff.registry import registry

    registry("logger").unregister("absent_tracker")


def test_a_missing_tracker_is_refused_at_validation_with_the_pip_command(
        absent_logger, tmp_path, capsys):
    data = {**BASE, "log": [{"type": "absent_tracker"}]}
    with pytest.raises(ConfigError) as caught:
        corediff.parse_recipe(data)
    assert ("logger 'absent_tracker' [log.0]: needs corediff-no-such-tracker>=1, which is not "
            "installed: pip install 'corediff-no-such-tracker>=1'") in str(caught.value)
    recipe = tmp_path / "r.toml"
    import tomli_w

    recipe.write_text(tomli_w.dumps(data))
    assert main(["recipe", "validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'corediff-no-such-tracker>=1'" in err and "Traceback" not in err


def test_log_tables_are_validated_per_item_and_omitted_when_absent():
    with pytest.raises(ConfigError, match=r"\[log\.1\] type: unknown logger 'tensorbord'\. "
                                          r"Did you mean 'tensorboard'\?"):
        corediff.parse_recipe({**BASE, "log": [{"type": "mlflow"}, {"type": "tensorbord"}]})
    with pytest.raises(ConfigError, match=r"\[log\.0\] projct: unknown key"):
        corediff.parse_recipe({**BASE, "log": [{"type": "wandb", "projct": "x"}]})
    from corediff.recipe import recipe_to_dict

    assert "log" not in recipe_to_dict(corediff.parse_recipe(BASE))  # fingerprints unchanged


@needs("mlflow")  # a recipe naming a tracker that is not installed is refused
def test_log_tables_are_written_with_their_defaults():
    from corediff.recipe import recipe_to_dict

    with_log = corediff.parse_recipe({**BASE, "log": [{"type": "mlflow"}]})
    assert recipe_to_dict(with_log)["log"] == [
        {"type": "mlflow", "experiment": "corediff"}]
    assert corediff.build(with_log) is not None  # loggers are not part of a Pipeline


def test_loggers_may_be_added_when_resuming():
    from corediff.engine.resume import check_resume
    from corediff.recipe import recipe_to_dict

    old = recipe_to_dict(corediff.parse_recipe(BASE))
    new = {**old, "log": [{"type": "tensorboard"}]}  # as a stored recipe holds it
    assert check_resume(old, new, force=False, where="x") == {
        "log": (None, [{"type": "tensorboard"}])}
