"""edit_bench's wait for a `--retrain-only` run in progress: a live process's RUNNING file
blocks (until the time limit), a dead process's or another host's does not."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

import edit_bench


def test_wait_for_retrain(tmp_path):
    run = tmp_path / edit_bench.RUNNING
    edit_bench.wait_for_retrain(tmp_path, 0)  # no file: nothing to wait for
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    edit_bench.wait_for_retrain(tmp_path, 0)  # a stale file (dead process) is ignored
    run.write_text(json.dumps({"pid": os.getpid(), "host": "another-host"}))
    edit_bench.wait_for_retrain(tmp_path, 0)
    run.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    with pytest.raises(SystemExit, match="still training"):
        edit_bench.wait_for_retrain(tmp_path, 0)


def test_running_marker_names_this_process_and_is_removed_on_error(tmp_path):
    folder = tmp_path / "run"
    seen = []

    def train() -> None:
        with edit_bench.running_marker(folder):
            seen.append(json.loads((folder / edit_bench.RUNNING).read_text()))
            raise RuntimeError("training failed")

    with pytest.raises(RuntimeError, match="training failed"):
        train()
    assert seen == [{"pid": os.getpid(), "host": socket.gethostname()}]
    assert not (folder / edit_bench.RUNNING).exists()
