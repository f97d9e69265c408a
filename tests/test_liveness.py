"""Owner liveness locks: held while the process lives, free the moment it dies."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys

import pytest

from stores._liveness import Liveness

HOLDER = """
import pathlib, sys, time
from stores._liveness import Liveness
live = Liveness(pathlib.Path(sys.argv[1]))
live.hold(sys.argv[2])
print("holding", flush=True)
time.sleep(60)
"""


def test_a_killed_owner_is_dead_at_once(tmp_path: pathlib.Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path), "worker-a"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
        probe = Liveness(tmp_path)
        assert probe.alive("worker-a") and not probe.alive("worker-b")
        with pytest.raises(RuntimeError, match="already live"):
            probe.hold("worker-a")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert not probe.alive("worker-a")
        probe.hold("worker-a")  # the identity is free again
        assert probe.alive("worker-a")
        probe.close()
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_two_handles_in_one_process_exclude_each_other(tmp_path: pathlib.Path) -> None:
    a, b = Liveness(tmp_path), Liveness(tmp_path)
    a.hold("w")
    a.hold("w")  # idempotent
    assert b.alive("w")
    a.release("w")
    assert not b.alive("w")
    b.hold("odd id: ../\x00 \u00e9")
    assert a.alive("odd id: ../\x00 \u00e9")
    b.close()
    assert not a.alive("odd id: ../\x00 \u00e9")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
