"""The attack side's executor: reference models and shadow updates in process or as Ray tasks, the same
numbers either way, and an interrupted run resumes without redoing a finished task."""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from attacks.execution import RayExecutor, SerialExecutor, cached_map, current_executor, using_executor
from attacks.membership.calibrated import run_calibrated
from attacks.membership.references import ReferencePlan, ensure_references, reference_seed, train_model
from attacks.target import open_run
from fedsim import snapshots
from fedsim.data.cache import CohortArray
from fedsim.data.cohort import CohortSpec, write_cohort
from fedsim.errors import FedsimError

from attribute_runs import SEXED, planted_federation
from tiny_models import SHAPE


# --- in process: no Ray ---------------------------------------------------------------------------


def test_serial_is_the_default_and_reports_every_task_in_order():
    assert isinstance(current_executor(), SerialExecutor)
    seen = []
    assert SerialExecutor().map(lambda x: x * x, [1, 2, 3], done=lambda i, r: seen.append((i, r))) == [1, 4, 9]
    assert seen == [(0, 1), (1, 4), (2, 9)]


def test_a_cached_map_stopped_by_a_failure_resumes_without_redoing_a_finished_task(tmp_path):
    calls = []

    def square(x: int) -> list[float]:
        calls.append(x)
        if x == 2 and calls.count(2) == 1:  # the first run stops at its second task
            raise RuntimeError("interrupted")
        return [x * x / 3]

    progress = []
    keys = [f"task-{x}" for x in (1, 2, 3)]
    with pytest.raises(RuntimeError, match="interrupted"):
        cached_map(square, [1, 2, 3], keys=keys, folder=tmp_path, description="squares")
    assert calls == [1, 2] and [p.name for p in tmp_path.iterdir()] == ["task-1.json"]
    results = cached_map(square, [1, 2, 3], keys=keys, folder=tmp_path, description="squares",
                         progress=lambda *args: progress.append(args))
    assert calls == [1, 2, 2, 3]  # task 1 was read, not run again
    assert results == [[1 / 3], [4 / 3], [3.0]]  # floats come back exactly, cached or not
    assert progress == [("squares", 1, 3), ("squares", 2, 3), ("squares", 3, 3)]


def test_ray_options_are_checked_before_any_work():
    with pytest.raises(FedsimError, match="--cpus-per-task must be a positive number, got 0"):
        RayExecutor(cpus=0)
    with pytest.raises(FedsimError, match="--gpus-per-task must be a non-negative number"):
        RayExecutor(gpus=-1)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(FedsimError, match="torch sees no CUDA device here"):
            RayExecutor(address="local", gpus=0.5)


def test_an_address_where_no_ray_head_answers_is_one_line_at_once():
    from processes import free_port

    with pytest.raises(FedsimError, match=r"--ray-address 127.0.0.1:\d+: no Ray head answers there"):
        RayExecutor(address=f"127.0.0.1:{free_port()}", gpus=0)


def test_the_commands_executor_options(capsys):
    from attacks.cli.calibrated import main
    from commands import one_error_line

    assert one_error_line(capsys, main, ["runs/x", "--executor", "serial", "--gpus-per-task", "1"]).startswith(
        "error: --gpus-per-task places Ray tasks; drop it or use --executor ray")


# --- on a local Ray of 2 CPUs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_executor():
    """A private local Ray of 2 CPUs for this module (≈ 10 s to start), and an executor of 1 CPU per task.
    This module's functions travel to the workers by value (the workers cannot import a test module)."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with warnings.catch_warnings():  # Ray's notice of a future default, once per process
        warnings.filterwarnings("ignore", message="Tip: In future versions of Ray", category=FutureWarning)
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
    yield RayExecutor(address="local", cpus=1, gpus=0)
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _where(_: int) -> tuple[int, int, str]:
    import torch

    from fedsim.device import resolve_device

    return os.getpid(), torch.get_num_threads(), str(resolve_device())


def _fan_out(n: int) -> tuple[int, str, list[tuple[int, int, str]]]:
    """A task that starts tasks of its own (as a sweep value trains its reference models)."""
    inner = current_executor()
    return os.getpid(), type(inner).__name__, inner.map(_where, list(range(n)))


@pytest.mark.slow
def test_ray_tasks_run_in_workers_with_their_resources(ray_executor):
    found = ray_executor.map(_where, [0, 1, 2])
    assert all(pid != os.getpid() and threads == 1 and device == "cpu" for pid, threads, device in found)
    # a task's own tasks are Ray tasks too, of the same resources (Ray lends them the waiting task's CPU: no deadlock
    # on 2 CPUs with 2 tasks waiting)
    for outer, kind, inner in ray_executor.map(_fan_out, [2, 2]):
        assert kind == "RayExecutor" and len(inner) == 2
        assert all(pid not in (outer, os.getpid()) and threads == 1 and device == "cpu" for pid, threads, device in inner)


@pytest.mark.slow
def test_calibrated_attacks_give_the_same_numbers_serially_and_as_ray_tasks(tiny_run, tmp_path, ray_executor):
    found = {}
    for name, executor in (("serial", SerialExecutor()), ("ray", ray_executor)):
        run = shutil.copytree(tiny_run, tmp_path / name, ignore=shutil.ignore_patterns("attacks"))
        with using_executor(executor):
            rows, scores, refs = run_calibrated(open_run(run), references=2, methods=["loss", "rmia"])
        assert refs.trained == [0, 1]  # each copy trains its own references
        found[name] = rows, scores, refs
    (rows, scores, refs), (ray_rows, ray_scores, ray_refs) = found["serial"], found["ray"]
    np.testing.assert_array_equal(refs.predictions, ray_refs.predictions)
    pd.testing.assert_frame_equal(pd.DataFrame(rows), pd.DataFrame(ray_rows), check_exact=True)
    pd.testing.assert_frame_equal(scores, ray_scores, check_exact=True)


@dataclass(frozen=True)
class _Flaky:
    """Trains as a reference does, except that reference 1 of seed 0 fails while the file ``fail`` exists."""

    cohort: CohortArray
    fail: Path

    def __call__(self, cfg, rows, seed, device):
        if seed == reference_seed(0, 1) and self.fail.exists():
            raise RuntimeError("reference 1 interrupted")
        return train_model(cfg, self.cohort, rows, epochs=1, seed=seed, device=device)


@pytest.mark.slow
def test_an_interrupted_ray_run_resumes_without_retraining_a_finished_reference(tiny_run, tmp_path, ray_executor):
    target = open_run(tiny_run)
    plan = ReferencePlan(snapshots.read_config(tiny_run), tuple(target.cohort.subject_ids[:24]), 1, 0)
    flaky = _Flaky(target.cohort, tmp_path / "FAIL")
    (tmp_path / "FAIL").touch()
    with using_executor(ray_executor), pytest.raises(RuntimeError, match="reference 1 interrupted"):
        ensure_references(plan, target.cohort, tmp_path, references=4, train=flaky)
    folder = tmp_path / "attacks" / "references" / plan.key()
    finished = sorted(p.parent.name for p in folder.glob("ref-*/meta.json"))
    assert finished == ["ref-00", "ref-02", "ref-03"]  # the other tasks ran to the end and are on disk
    stamps = {p: p.stat().st_mtime_ns for p in folder.glob("ref-*/*")}
    (tmp_path / "FAIL").unlink()
    progress = []
    with using_executor(ray_executor):
        refs = ensure_references(plan, target.cohort, tmp_path, references=4, train=flaky,
                                 progress=lambda *args: progress.append(args))
    assert refs.trained == [1]  # only the interrupted one trained again
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())
    assert progress == [(3, 4), (4, 4)]
    assert np.isfinite(refs.predictions).all() and refs.keep.sum(axis=0).tolist() == [2] * 24


@pytest.fixture(scope="module")
def sexed_federation(tmp_path_factory) -> Path:
    """Four learners holding 10 to 90 % women, one round, local models kept (as the attribute tests plant them)."""
    manifest = write_cohort(CohortSpec(96, SHAPE, seed=0, anatomy=SEXED, sites=2),
                            tmp_path_factory.mktemp("sexed") / "cohort")
    return planted_federation(tmp_path_factory.mktemp("federation") / "run", manifest, [0.1, 0.4, 0.6, 0.9])


@pytest.mark.slow
def test_property_inference_gives_the_same_numbers_serially_and_as_ray_tasks(sexed_federation, tmp_path, ray_executor):
    from attacks.attribute.properties import property_attack

    found = {}
    for name, executor in (("serial", SerialExecutor()), ("ray", ray_executor)):
        run = shutil.copytree(sexed_federation, tmp_path / name)
        with using_executor(executor):
            found[name] = property_attack(open_run(run), rnd=1, shadows=4)
        assert len(list((run / "attacks" / "tasks" / "shadows").glob("*.json"))) == 4
    pd.testing.assert_frame_equal(found["serial"], found["ray"], check_exact=True)


@pytest.mark.slow
def test_the_learners_replayed_references_are_the_same_as_ray_tasks(sexed_federation, tmp_path, ray_executor):
    from attacks.membership.learner_calibrated import learner_references

    found = {}
    for name, executor in (("serial", SerialExecutor()), ("ray", ray_executor)):
        run = shutil.copytree(sexed_federation, tmp_path / name)
        with using_executor(executor):
            found[name] = learner_references(open_run(run), "L1", rnd=1, references=4)
        assert found[name].trained == [0, 1, 2, 3]
    np.testing.assert_array_equal(found["serial"].predictions, found["ray"].predictions)
