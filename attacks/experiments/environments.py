"""A study's environments and a sweep's values as tasks of the attack executor (:mod:`attacks.execution`).

One task trains an environment (a centralized one: a federation is trained by the driver, its learners being Ray
actors of their own) and runs the study's steps on it (:mod:`attacks.experiments.study`: each skipped where its
output on disk is current), so that environments run side by side as Ray tasks, or one after another in process.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from attacks.execution import Done, SerialExecutor, current_executor
from attacks.experiments import study as steps
from attacks.experiments.study import AttackSettings, Say
from attacks.membership.calibration import FAMILY_REFERENCES
from fedsim.config import load_env

__all__ = ["Attacked", "EnvironmentTask", "run_environments"]

Bars = Callable[[], AbstractContextManager[Callable[[str, int, int], None] | None]]


def _quiet(_: str) -> None:
    """Where a Ray task's messages go: the driver says what each task finished."""


@dataclass(frozen=True)
class Attacked:
    """What one environment's task gives back: its results per family (None where the family did not run),
    and why the calibrated family skipped it ("" where it did not)."""

    membership: pd.DataFrame
    attribute: pd.DataFrame | None = None
    calibrated: pd.DataFrame | None = None
    calibrated_skipped: str = ""


@dataclass(frozen=True)
class EnvironmentTask:
    """Train one environment and attack it with ``families``: a task of the current executor
    (:mod:`attacks.execution`), so that a study's environments and a sweep's values run side by side as Ray tasks.
    A job is ``(env, run_dir, title)`` (a title, where not "", is ruled before the job's messages). ``say``, ``rule`` and ``bars`` (messages, the title's rule, and a factory
    of progress bars opened once training is done) are for a task run in the command's own process; a Ray task
    has none and runs quietly. Every step is skipped where its output on disk is current, as in the study."""

    settings: AttackSettings
    families: tuple[str, ...] = ("membership",)
    attribute_controls: bool = True
    references: int = FAMILY_REFERENCES
    cohort: Path | None = None
    device: str = "auto"
    local_models: bool = False
    say: Say | None = field(default=None, compare=False)
    rule: Say | None = field(default=None, compare=False)
    bars: Bars | None = field(default=None, compare=False)

    def __call__(self, job: tuple[str, Path, str]) -> Attacked:
        env, run_dir, title = job
        say, rule = self.say or _quiet, self.rule or _quiet
        if title:
            rule(title)
        steps.train_env(env, run_dir, self.cohort, rule, device=self.device, local_models=self.local_models)
        with (self.bars() if self.bars else contextlib.nullcontext(None)) as progress:
            membership = steps.attack_cached(run_dir, self.settings, say=say, progress=progress)
            attribute = (steps.attribute_cached(run_dir, controls=self.attribute_controls, say=say, progress=progress)
                         if "attribute" in self.families else None)
            why = steps.calibrated_skipped(run_dir) if "calibrated" in self.families else ""
            calibrated = None if why or "calibrated" not in self.families else steps.calibrated_cached(
                run_dir, references=self.references, repeats=self.settings.repeats, say=say, progress=progress)
        return Attacked(membership, attribute, calibrated, why)


def run_environments(task: EnvironmentTask, jobs: Sequence[tuple[str, Path, str]], *, rule: Say = _quiet,
                     done: Done | None = None) -> list[Attacked]:
    """``task`` over ``jobs`` with the current executor, results in job order. Off the serial executor, every
    federation is trained here first, one after another (``rule``: its title and training's messages): its
    learners are Ray actors of its own (``fedsim.run``), which a task holding a CPU of the same Ray could wait for
    forever; its attacks are then tasks like the rest."""
    executor = current_executor()
    # a Ray worker's working directory is its own: every path it gets is absolute
    jobs = [(str(Path(env).resolve()) if Path(env).suffix == ".toml" else env, Path(run_dir).resolve(), title)
            for env, run_dir, title in jobs]
    task = dataclasses.replace(task, cohort=None if task.cohort is None else Path(task.cohort).resolve())
    if not isinstance(executor, SerialExecutor):
        for env, run_dir, title in jobs:
            if load_env(env).partition.learners:
                if title:
                    rule(title)
                steps.train_env(env, run_dir, task.cohort, rule, device=task.device, local_models=task.local_models)
    return executor.map(task, jobs, done=done)
