"""fedsim's notebook API: train returns the run the command would write, reports rounds through
callbacks and TensorBoard, prints nothing, and importing fedsim changes no global state."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fedsim
from fedsim import snapshots
from fedsim.errors import FedsimError
from fedsim.progress import counted, report_round
from fedsim.tracking import scalar_tags


def test_counted_reports_every_step():
    seen = []
    assert list(counted("abc", 3, "letters", lambda *a: seen.append(a))) == ["a", "b", "c"]
    assert seen == [("letters", 0, 3), ("letters", 1, 3), ("letters", 2, 3), ("letters", 3, 3)]
    assert list(counted(range(2), 2, "quiet", None)) == [0, 1]


def test_scalar_tags_group_errors_and_drop_counts():
    tags = scalar_tags({"round": 3, "unseen_mae": 4.5, "unseen_rmse": 5.0, "unseen_n": 12, "L1_train_mae": 2.0,
                        "L1_epsilon": 1.5, "epsilon": 0.7, "seconds": 9.0, "failed": ["L2"], "dp": True})
    assert tags == {"mae/unseen": 4.5, "rmse/unseen": 5.0, "mae/L1_train": 2.0, "epsilon/L1": 1.5,
                    "epsilon": 0.7, "seconds": 9.0}


def test_train_centralized_returns_the_run_and_reports_every_epoch(tmp_path: Path, tiny_manifest: Path, capfd):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seen = []
    run = fedsim.train("tiny-centralized", tmp_path / "run", cohort=tiny_manifest, rounds=2,
                       on_round=seen.append, tensorboard=tmp_path / "tb")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing printed: the caller asked for callbacks
    assert isinstance(run, fedsim.RunDir) and run.path == tmp_path / "run" and run.rounds == [0, 1, 2]
    on_disk = snapshots.read_metrics(run.path)
    assert seen == on_disk and list(run.metrics["round"]) == [0, 1, 2]
    assert run.summary == snapshots.read_done(run.path) and run.config["name"] == "tiny-centralized"
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("mae/unseen")]
    assert logged == [(m["round"], pytest.approx(m["unseen_mae"])) for m in on_disk]
    assert {"mae/train", "mae/val", "rmse/unseen", "seconds"} <= set(events.Tags()["scalars"])
    assert fedsim.open_run(run).summary == run.summary  # a RunDir is path-like


def test_train_and_open_run_refuse_bad_input(tmp_path: Path, tiny_manifest: Path):
    with pytest.raises(FedsimError, match="centralized"):
        fedsim.train("tiny-centralized", tmp_path / "a", cohort=tiny_manifest, snapshot_local=True)
    with pytest.raises(FedsimError, match="at least 1"):
        fedsim.train("tiny", tmp_path / "b", rounds=0)
    with pytest.raises(FedsimError, match="unknown environment"):
        fedsim.train("no-such-env")
    with pytest.raises(FedsimError, match="not a fedsim run"):
        fedsim.open_run(tmp_path)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_failing_on_round_is_raised_after_training_not_lost():
    from fedsim.progress import on_rounds

    calls = []

    def bad(metrics):
        calls.append(metrics["round"])
        raise KeyError("unseen_mea")

    with pytest.raises(KeyError, match="unseen_mea"):
        with on_rounds(bad):
            report_round("round 1", {"round": 1})
            report_round("round 2", {"round": 2})  # training goes on; the callback is not called again
    assert calls == [1]


def test_tensorboard_missing_fails_before_any_work(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.raises(FedsimError, match=r"pip install -e \"\.\[tensorboard\]\""):
        fedsim.train("tiny-centralized", tmp_path / "run", tensorboard=tmp_path / "tb")
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()


def test_on_round_only_while_training():
    seen = []
    from fedsim.progress import on_rounds

    with on_rounds(seen.append):
        report_round("round 1", {"round": 1})
    report_round("round 2", {"round": 2})
    assert seen == [{"round": 1}]


def test_importing_fedsim_and_attacks_changes_no_global_state():
    """What fedsim itself changes: its dependencies (torch, pandas, flwr…) add warning filters of their
    own on import, so they are imported first; Opacus is not, because it configures the root logger."""
    probe = textwrap.dedent("""
        import json, logging, warnings
        import matplotlib, matplotlib.figure, torch, sympy, pandas, sklearn, scipy, nibabel, nilearn, flwr, ray, rich, jinja2
        before = (matplotlib.rcParams._get_backend_or_none(), list(warnings.filters),
                  logging.getLogger().handlers[:], logging.getLogger().level)
        import fedsim, attacks, fedsim.plots, fedsim.centralized, fedsim.run, fedsim.data.cohort
        import attacks.reporting.figures, attacks.cli.run
        fedsim.train, attacks.audit  # the lazy API loads too
        from fedsim.defenses.dp_sgd import epsilon
        epsilon([(1.0, 0.1, 10)], 1e-5)  # Opacus, once used
        after = (matplotlib.rcParams._get_backend_or_none(), list(warnings.filters),
                 logging.getLogger().handlers[:], logging.getLogger().level)
        print(json.dumps([repr(b) == repr(a) for b, a in zip(before, after)]))
    """)
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "MPLBACKEND": ""})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [True, True, True, True], "backend, warnings, root handlers, root level"
