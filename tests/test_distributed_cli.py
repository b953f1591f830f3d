"""``crossent train --distributed`` under torchrun: the model, the faults, the resume.

Each torchrun job is a subprocess bounded by a timeout, so that nothing can hang CI. The
reference of every model is the single-process ``crossent train`` on the same file with the
same options (run in this process), itself checked against scikit-learn's
``LogisticRegression`` for ``--test-size 0``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file
from sklearn.linear_model import LogisticRegression

import crossent
from crossent.cli import main
from crossent.model_io import load_model

SRC = str(Path(crossent.__file__).resolve().parents[1])
JOB_LIMIT = 60  # seconds any torchrun job may take before the test fails
OPTIONS = ["--tol", "1e-10", "--l2", "0.5"]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    """Well-conditioned data (3 separated classes, 5 independent features), in a .npz and
    a CSV with the same rows."""
    folder = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 301)  # 301: the ranks' blocks differ in size
    X = 1.5 * rng.normal(size=(3, 5))[y] + rng.normal(size=(301, 5))  # (301, 5)
    np.savez(folder / "blobs.npz", X=X, y=y)
    lines = ["a,b,c,d,e,label"] + [
        ",".join(map(repr, map(float, x))) + f",{k}" for x, k in zip(X, y, strict=True)
    ]
    (folder / "blobs.csv").write_text("\n".join(lines) + "\n")
    return folder, X, y


def torchrun(args, *, ranks=2, env=None, limit=JOB_LIMIT):
    """Run ``torchrun --nproc-per-node ranks -m crossent train --distributed args``."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port: jobs of parallel test runs do not meet
        f"--nproc-per-node={ranks}",
        "-m",
        "crossent",
        "train",
        "--distributed",
        *map(str, args),
    ]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        **(env or {}),
    }
    started = time.monotonic()
    job = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=limit)
    return job, time.monotonic() - started


def faulty_torchrun(args, fault, tmp_path):
    """:func:`torchrun` with rank ``fault`` (``"RANK:ITER[:hang]"``) failing; returns the job
    and the seconds from the fault to the job's end (start-up, which depends on the
    machine's load, left out)."""
    stamp = tmp_path / "fault-time"
    job, _ = torchrun(
        args, env={"CROSSENT_TEST_FAULT": fault, "CROSSENT_TEST_FAULT_STAMP": str(stamp)}
    )
    return job, time.time() - float(stamp.read_text())


def single(args):
    """The single-process command in this process: (exit status, stdout)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        status = main(["train", *map(str, args)])
    return status, stdout.getvalue()


def errors(stderr):
    """The command's own lines on stderr (not torchrun's logs)."""
    return [line for line in stderr.splitlines() if line.startswith(("crossent:", "rank "))]


def assert_same_model(path, reference, rtol=1e-6):
    arrays, meta = load_model(path)
    expected, expected_meta = load_model(reference)
    assert arrays.keys() == expected.keys()
    for key, value in expected.items():
        scale = np.abs(value).max()
        np.testing.assert_allclose(arrays[key], value, rtol=0, atol=rtol * scale, err_msg=key)
    assert meta["classes"] == expected_meta["classes"]


def test_two_ranks_give_the_single_process_model(blobs, tmp_path):
    folder, _, _ = blobs
    data = folder / "blobs.npz"
    status, _ = single(["--data", data, *OPTIONS, "--out", tmp_path / "one", "--quiet"])
    assert status == 0
    job, _ = torchrun(["--data", data, *OPTIONS, "--out", tmp_path / "two", "--json"])
    assert job.returncode == 0, job.stderr
    summary = json.loads(job.stdout)  # rank 0 alone prints: one JSON document
    assert errors(job.stderr) == []
    assert (summary["n_train"], summary["n_test"], summary["n_samples"]) == (225, 76, 301)
    assert_same_model(
        tmp_path / "two" / "model.safetensors", tmp_path / "one" / "model.safetensors"
    )
    _, one_meta = load_model(tmp_path / "one" / "model.safetensors")
    for key in ("objective", "train_accuracy", "test_accuracy", "test_cross_entropy"):
        np.testing.assert_allclose(summary[key], one_meta["training"][key], rtol=1e-6, err_msg=key)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "model.safetensors",
        "report.html",
    ]


def test_a_glob_of_sparse_files_gives_the_model_of_their_rows_together(blobs, tmp_path):
    """3 svmlight files (sparse rows) on 2 ranks, rank 1 reading two: the single process
    reads them all, in order, and fits the same model."""
    _, X, y = blobs
    X = np.where(np.abs(X) < 0.7, 0.0, X)  # (301, 5), about half zeros
    for k, rows in enumerate([slice(0, 90), slice(90, 200), slice(200, None)]):
        assert np.all(np.any(X[rows] != 0, axis=0))  # every file holds every column
        dump_svmlight_file(X[rows], y[rows], str(tmp_path / f"part-{k}.svm"), zero_based=True)
    data = tmp_path / "part-*.svm"
    status, _ = single(["--data", data, *OPTIONS, "--out", tmp_path / "one", "--quiet"])
    assert status == 0
    job, _ = torchrun(["--data", data, *OPTIONS, "--out", tmp_path / "two", "--quiet"])
    assert job.returncode == 0, job.stderr
    two, one = tmp_path / "two", tmp_path / "one"
    assert_same_model(two / "model.safetensors", one / "model.safetensors")


def test_test_size_0_on_three_ranks_trains_on_every_row(blobs, tmp_path):
    """CSV rows read by range on 3 ranks, no test rows; the reference is scikit-learn's
    LogisticRegression(C = 1/λ) on the standardised rows (the same L_total)."""
    folder, X, y = blobs
    data = folder / "blobs.csv"
    job, _ = torchrun(
        ["--data", data, *OPTIONS, "--test-size", "0", "--out", tmp_path, "--json"], ranks=3
    )
    assert job.returncode == 0, job.stderr
    summary = json.loads(job.stdout)
    assert (summary["n_train"], summary["n_test"], summary["test"]) == (301, 0, None)
    arrays, _ = load_model(tmp_path / "model.safetensors")
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    ref = LogisticRegression(C=1 / 0.5, tol=1e-12, max_iter=10_000).fit(Z, y)
    np.testing.assert_allclose(arrays["coef"], ref.coef_, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(summary["train"]["accuracy"], ref.score(Z, y))


def test_a_rank_that_dies_stops_the_job_and_resume_finishes_it(blobs, tmp_path, capsys):
    folder, _, _ = blobs
    data = folder / "blobs.npz"
    out = tmp_path / "job"
    options = ["--data", data, *OPTIONS, "--out", out, "--checkpoint-every", "2"]
    job, took = faulty_torchrun([*options, "--timeout", "10"], "1:5", tmp_path)
    assert job.returncode != 0
    assert took < 10 + 10  # the timeout, then the diagnosis (a few heartbeats)
    assert "crossent: error: rank 0: lost rank 1 (its process stopped) at iteration 5" in (
        job.stderr
    )
    assert not (out / "model.safetensors").exists() and not (out / "report.html").exists()
    assert (out / "checkpoint.safetensors").exists()  # iteration 4, saved by rank 0

    status, _ = single(["--resume", "--out", out])  # its data hash is of 2 ranks' rows
    assert status == 1
    assert "made by a run of 2 rank(s), this run has 1" in capsys.readouterr().err

    resumed, _ = torchrun(["--resume", "--out", out, "--json"])
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed_from_iteration"] == 4
    status, text = single(["--data", data, *OPTIONS, "--out", tmp_path / "whole", "--json"])
    assert status == 0
    np.testing.assert_allclose(summary["objective"], json.loads(text)["objective"], rtol=1e-6)


def test_a_rank_that_hangs_is_named_within_the_timeout(blobs, tmp_path, tmp_path_factory):
    folder, _, _ = blobs
    args = ["--data", folder / "blobs.npz", *OPTIONS, "--out", tmp_path, "--timeout", "2"]
    job, took = faulty_torchrun(args, "1:3:hang", tmp_path_factory.mktemp("stamp"))
    assert job.returncode != 0 and took < 2 + 10  # the timeout, then the diagnosis
    assert "crossent: error: rank 0: lost rank 1 (stuck at iteration 2) at iteration 3" in (
        job.stderr
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("second", "message"),
    [
        (
            "a,b,c,label\n1,2,3,0\n4,5,6,1\n",
            r"part-1\.csv \(rank 1\) has 3 features, [^ ]*part-0\.csv \(rank 0\) has 2 features",
        ),
        (
            "a,b,label\n1,2,0\n4,5,1\n6,7,7\n",
            r"part-1\.csv \(rank 1\) has class 7, which no other rank's data has",
        ),
    ],
    ids=["columns", "class"],
)
def test_shards_that_disagree_give_one_line_on_every_rank(tmp_path, second, message):
    (tmp_path / "part-0.csv").write_text("a,b,label\n1,2,0\n3,4,1\n5,6,0\n")
    (tmp_path / "part-1.csv").write_text(second)
    args = ["--data", tmp_path / "part-*.csv", "--out", tmp_path / "out", "--timeout", "10"]
    job, took = torchrun(args)
    assert job.returncode != 0 and took < 10 + 20
    # one line per rank (the ranks share stderr: their lines may run into each other)
    assert job.stderr.count("crossent: error: the ranks' data disagree: ") == 2, job.stderr
    assert len(re.findall(message, job.stderr)) == 2, job.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--distributed"], {}, "--distributed needs the environment torchrun sets"),
        (["--timeout", "5"], {}, "--timeout applies only with --distributed"),
        (["--distributed", "--solver", "adam"], {}, "--distributed needs a full-batch solver"),
    ],
)
def test_usage_faults_are_one_line(args, env, message, capsys, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert main(["train", *args]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_test_size_0_in_one_process_trains_on_every_row(blobs, tmp_path, capsys):
    folder, X, y = blobs
    args = ["--data", folder / "blobs.npz", *OPTIONS, "--test-size", "0", "--out", tmp_path]
    status, text = single([*args, "--json"])
    assert status == 0
    summary = json.loads(text)
    assert (summary["n_train"], summary["n_test"], summary["test"]) == (301, 0, None)
    arrays, meta = load_model(tmp_path / "model.safetensors")
    assert meta["training"]["test_accuracy"] is None
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    ref = LogisticRegression(C=1 / 0.5, tol=1e-12, max_iter=10_000).fit(Z, y)
    np.testing.assert_allclose(arrays["coef"], ref.coef_, rtol=1e-5, atol=1e-6)
    status, text = single([*args, "--out", tmp_path / "text"])
    assert status == 0 and "(--test-size 0: every sample trains)" in text
    assert "(no test rows)" in text and "per class (train)" in text


def test_a_one_rank_group_reduces_and_turns_lockstep_faults_into_one_line(monkeypatch):
    """In this process: torchrun's environment for one rank, then the crossent.distributed
    fault that ranks left lockstep, which the command reports as one line."""
    import signal
    import socket

    import torch.distributed as dist

    from crossent._cli._common import CommandError
    from crossent._cli._distributed import process_group

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {"RANK": 0, "WORLD_SIZE": 1, "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("MASTER_PORT", str(port))
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(CommandError, match=r"^rank 0: distributed fit: the ranks left"):
            with process_group(5) as group:
                assert (group.rank, group.world, group.writer) == (0, 1, True)
                np.testing.assert_array_equal(group.allreduce(np.array([1.5, -2.0])), [1.5, -2.0])
                assert group.agree("shard") == ["shard"]
                raise RuntimeError("distributed fit: the ranks left lockstep")
    finally:  # the command leaves the group by exiting; a test process must leave it here
        dist.destroy_process_group()
        signal.signal(signal.SIGTERM, previous)
