"""The real thing: python -m fedsim.run on Flower + Ray (each Ray start costs ~15 s, hence slow)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedsim import snapshots
from fedsim.federation import keys

from federations import federate
from processes import free_port, stop_group

pytestmark = pytest.mark.slow


def fedsim_run(*args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", keys.ENV_FAIL_LEARNER)}
    return subprocess.run([sys.executable, "-m", "fedsim.run", *args], capture_output=True, text=True,
                          timeout=timeout, env={**environ, **env})


def final_model(run_dir: Path, rnd: int) -> dict[str, torch.Tensor]:
    return load_file(snapshots.round_dir(run_dir, rnd) / snapshots.MODEL_FILE)


def test_failure_then_resume_on_ray_matches_an_uninterrupted_run(tmp_path, tiny_manifest):
    run, tb = tmp_path / "ray-run", tmp_path / "tb"
    failed = fedsim_run("--env", "tiny", "--cohort", str(tiny_manifest), "--out", str(run), "--tensorboard", str(tb),
                        **{keys.ENV_FAIL_LEARNER: "L2@2"})
    assert failed.returncode == 2, failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.strip().splitlines()[-1].startswith(
        "error: 1 learner(s) failed in round 2 (L2; first: L2: RuntimeError: injected failure")
    assert snapshots.complete_rounds(run) == [0, 1] and not snapshots.is_done(run)

    resumed = fedsim_run("--resume", str(run), "--tensorboard", str(tb))
    assert resumed.returncode == 0, resumed.stderr
    assert "community unseen MAE by round" in resumed.stdout and "round   1/" not in resumed.stdout
    assert snapshots.complete_rounds(run) == [0, 1, 2] and snapshots.is_done(run)
    assert (run / "learning_curve.png").is_file() and (run / "partitions.png").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb))
    events.Reload()  # both event files: the failed run's rounds 0 and 1, the resumed run's round 2
    on_disk = snapshots.read_metrics(run)
    assert [e.step for e in events.Scalars("mae/unseen")] == [0, 1, 2] == [m["round"] for m in on_disk]
    assert [e.value for e in events.Scalars("mae/unseen")] == pytest.approx([m["unseen_mae"] for m in on_disk])

    # Ray actors (1 thread each, any order) and the in-process LocalGrid give the same bits
    reference = federate(tmp_path / "local", tiny_manifest)
    for key, value in final_model(reference, 2).items():
        assert torch.equal(value, final_model(run, 2)[key]), key


@pytest.mark.skipif(shutil.which("ray", path=str(Path(sys.executable).parent)) is None, reason="no ray CLI")
def test_ray_address_of_a_running_head(tmp_path, tiny_manifest):
    port = free_port()
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths are length-limited
    ray = str(Path(sys.executable).parent / "ray")
    # `ray stop` would end every Ray process on the machine; this head is stopped by its own process group
    head = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats",
         "--temp-dir", temp_dir],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:  # the head is up once its GCS port accepts connections
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and head.poll() is None, "ray head did not start"
            time.sleep(0.5)
        result = fedsim_run("--env", "tiny", "--cohort", str(tiny_manifest), "--out", str(tmp_path / "run"),
                            "--rounds", "1", "--ray-address", f"127.0.0.1:{port}")
        assert result.returncode == 0, result.stderr
        assert f"on Ray (127.0.0.1:{port})" in result.stdout
        assert snapshots.complete_rounds(tmp_path / "run") == [0, 1]
    finally:
        stop_group(head, timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


_EMPTY_ACTOR_POOL = """
import sys
from fedsim.cli import exit_process, run_cli
from fedsim.federation.simulation import run_federation
exit_process(run_cli(lambda argv: run_federation(sys.argv[1], 3, cpus=1.0, gpus=0.5)))
"""


def test_a_crashed_simulation_ends_the_process_with_one_line(tmp_path, tiny_manifest):
    # GPUs requested where there are none: Ray starts no actor, Flower's ServerApp thread would
    # wait for replies for an hour (flower-notes §5); the launcher must report and exit instead
    run = federate(tmp_path / "run", tiny_manifest, rounds=1)  # rounds 0..1 on disk, 2 to go
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", _EMPTY_ACTOR_POOL, str(run)], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: the Flower/Ray simulation failed (ValueError: ActorPool is empty")
