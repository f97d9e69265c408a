"""FileStore: the conformance suite at every durability level, torn writes, hostile ids."""

from __future__ import annotations

import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stores import RunRef, Store
from stores.file import FileStore
from tests.store_conformance import MakeStore, StoreConformance


def _log_of(root: pathlib.Path, run: RunRef) -> pathlib.Path:
    from stores import _names

    d = root / "runs" / _names.shard(run.workflow_id) / _names.name(run.workflow_id)
    for log in sorted(d.glob("*.log")):
        if run.run_id.encode() in log.read_bytes().split(b"\n", 1)[0]:
            return log
    raise AssertionError(f"no log for {run}")


def _last_batch_start(data: bytes) -> int:
    lines = data.splitlines(keepends=True)
    last = lines[-1].split(b" ")[1]
    offset = len(data)
    for line in reversed(lines):
        if line.split(b" ")[1] != last:
            break
        offset -= len(line)
    return offset


def _own_any_string_test() -> object:
    """A fresh wrapper of the suite's hypothesis test, for one subclass.

    NB: hypothesis fails its ``differing_executors`` health check when one
    ``@given`` method runs for two test classes in a session (the suite's
    ``test_any_string_is_a_workflow_id`` does as soon as two backends run); each
    FileStore class gets its own wrapper until the suite suppresses the check.
    """
    inner = StoreConformance.test_any_string_is_a_workflow_id.hypothesis.inner_test  # type: ignore[attr-defined]
    return settings(
        max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )(given(ids=st.lists(st.text(), min_size=1, max_size=4, unique=True))(inner))


class _FileConformance(StoreConformance):
    reopen = True
    shared = True
    crashes = True
    durability = "none"

    @pytest.fixture
    def make_store(self, tmp_path: pathlib.Path) -> MakeStore:
        self.root = tmp_path / "store"
        return lambda: FileStore(self.root, durability=self.durability)

    def kill_owner(self, store: Store, owner: str, *, lease: float) -> None:
        assert isinstance(store, FileStore)
        store._let_owner_die(owner)

    def tear_last_batch(self, store: Store, run: RunRef) -> None:
        log = _log_of(self.root, run)
        data = log.read_bytes()
        start = _last_batch_start(data)
        log.write_bytes(data[: start + (len(data) - start) // 2])


class TestFileStoreNone(_FileConformance):
    durability = "none"
    test_any_string_is_a_workflow_id = _own_any_string_test()


class TestFileStoreFlush(_FileConformance):
    durability = "flush"
    test_any_string_is_a_workflow_id = _own_any_string_test()
