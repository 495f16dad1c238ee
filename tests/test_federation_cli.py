"""python -m fedsim.run: bad input ends in one ``error: …`` line (exit 2), never a traceback.

All of these fail before Ray starts, so they take milliseconds.
"""

from __future__ import annotations

import pytest
import torch

import commands
from fedsim import snapshots
from fedsim.cli import run_cli
from fedsim.config import load_env
from fedsim.run import main


def one_error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    return commands.one_error_line(capsys, main, argv)


def test_resume_of_a_directory_that_is_not_a_run(tmp_path, capsys):
    line = one_error_line(capsys, ["--resume", str(tmp_path)])
    assert "is not a fedsim run directory (no config.toml)" in line


def test_zero_rounds(capsys):
    assert "--rounds must be at least 1, got 0" in one_error_line(capsys, ["--env", "tiny", "--rounds", "0"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpus_without_cuda(capsys):
    line = one_error_line(capsys, ["--env", "tiny", "--gpus-per-learner", "0.5"])
    assert "asks for GPUs but torch sees no CUDA device" in line


def test_resume_takes_no_environment(tmp_path, capsys):
    assert "drop --env" in one_error_line(capsys, ["--resume", str(tmp_path), "--env", "tiny"])


def test_a_missing_cohort_leaves_no_run_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "manifest 'missing.csv' not found" in one_error_line(capsys, ["--env", "tiny", "--cohort", "missing.csv"])
    assert "not found" in one_error_line(capsys, ["--env", "tiny", "--cohort", "missing.csv", "--out", "given"])
    assert not list(tmp_path.glob("runs/*")) and not (tmp_path / "given").exists()


def test_centralized_environment_is_refused(capsys):
    assert "train it with fedsim centralized" in one_error_line(capsys, ["--env", "tiny-centralized"])


def test_unknown_environment_and_missing_env(capsys):
    assert "unknown environment 'nope'" in one_error_line(capsys, ["--env", "nope"])
    assert "give --env NAME" in one_error_line(capsys, [])


def test_negative_cpus(capsys):
    assert "--cpus-per-learner must be a positive number" in one_error_line(
        capsys, ["--env", "tiny", "--cpus-per-learner", "0"])


def test_resume_of_a_centralized_run(tmp_path, capsys):
    snapshots.write_config(tmp_path, load_env("tiny-centralized").to_dict())
    assert "not a federated run" in one_error_line(capsys, ["--resume", str(tmp_path)])


def test_resume_of_a_finished_run(tmp_path, tiny_manifest, capsys):
    from federations import federate

    threads = torch.get_num_threads()
    run = federate(tmp_path / "run", tiny_manifest)
    torch.set_num_threads(threads)
    snapshots.mark_done(run, {})
    capsys.readouterr()  # Flower's own log of that run
    assert "finished all 2 rounds; pass --rounds N > 2 to extend it" in one_error_line(capsys, ["--resume", str(run)])


def test_snapshot_local_flag_is_recorded_in_the_run_config(tmp_path, tiny_manifest, capsys):
    out = tmp_path / "run"
    assert run_cli(main, ["--env", "tiny", "--cohort", str(tiny_manifest), "--out", str(out), "--snapshot-local",
                          "--prepare-only"]) == 0
    assert snapshots.read_config(out)["federation"]["snapshot_local"] is True
    assert load_env("tiny").federation.snapshot_local is False  # the environment file itself says false
    assert "drop --snapshot-local" in one_error_line(capsys, ["--resume", str(out), "--snapshot-local"])
