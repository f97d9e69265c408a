"""AzureBlobStore's state and its cache of runs, shared by the parts of ``stores.azure``.

``AzureBlobStore`` is assembled from ``StoreBase`` (what a handle holds: its
blobs, its partitions, its index of runs and its cache of ``Run`` copies),
``Starts`` (``stores._azure_starts``: creating runs under the id-reuse
policies) and ``Appends`` (``stores._azure_appends``: appending batches and
what follows one).  A ``Run`` copy is trusted without a request only while
this handle holds its partition; otherwise reading it costs one GET.
"""

from __future__ import annotations

from collections import OrderedDict

from engine._errors import WorkflowNotFoundError

from . import _azure_format as fmt
from ._azure_blobs import Blobs
from ._azure_chains import Chains
from ._azure_partitions import Partitions
from ._azure_runs import Log, Run

__all__ = ["Key", "StoreBase"]

Key = tuple[str, str]


class StoreBase:
    """What every part of an ``AzureBlobStore`` handle uses (set up by its ``__init__``)."""

    _where: str
    _prefix: str
    _blobs: Blobs
    _names: fmt.Names
    _log: Log
    _parts: Partitions
    _index: Chains
    _cache_runs: int
    _runs: OrderedDict[Key, Run]
    _repairs: dict[Key, Run]  # closed runs whose effects are still owed

    def _cached(self, key: Key) -> Run | None:
        return self._runs.get(key)

    def _remember(self, run: Run) -> Run:
        key = run.key
        self._runs[key] = run
        self._runs.move_to_end(key)
        self._index.note(run.ordinal, run.started)
        if len(self._runs) > self._cache_runs:
            for old in list(self._runs)[: len(self._runs) - self._cache_runs]:
                r = self._runs[old]
                if r.owner is None and not self._parts.trusted(r) and old not in self._repairs:
                    del self._runs[old]
        return run

    def _fresh(self, workflow_id: str, run_id: str, ordinal: int | None = None) -> Run | None:
        """The run as it is now (one GET for a known running run), or None if it does not exist."""
        run = self._runs.get((workflow_id, run_id))
        if run is not None:
            if run.summary.running:
                self._log.refresh(run)
            return run
        if ordinal is None:
            ordinal = self._index.ordinal(workflow_id, run_id)
            if ordinal is None:
                return None
        run = self._log.load(workflow_id, ordinal)
        if run is None or run.run_id != run_id:
            return None
        return self._remember(run)

    def _get(self, workflow_id: str, run_id: str | None, *, fresh: bool = True) -> Run:
        """A run (the id's latest when ``run_id`` is None); ``WorkflowNotFoundError`` if none."""
        if not isinstance(workflow_id, str):
            raise TypeError(f"a workflow id must be a string, got {workflow_id!r}")
        if run_id is None:
            latest = self._latest(workflow_id, fresh)
            if latest is not None:
                return latest
            chain = self._index.chain(workflow_id)
            if not chain:
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            run_id = chain[-1].started.run_id
        run = self._runs.get((workflow_id, run_id))
        if run is not None:
            if fresh and run.summary.running and not self._parts.trusted(run):
                self._log.refresh(run)
            self._runs.move_to_end(run.key)
            return run
        ordinal = self._index.ordinal(workflow_id, run_id)
        loaded = None if ordinal is None else self._log.load(workflow_id, ordinal)
        if loaded is None or loaded.run_id != run_id:
            if not self._index.known(workflow_id) and not self._index.chain(workflow_id):
                raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
            raise WorkflowNotFoundError(f"workflow {workflow_id!r} has no run {run_id!r}")
        return self._remember(loaded)

    def _latest(self, workflow_id: str, fresh: bool) -> Run | None:
        """The id's latest run, if it is the newest this handle knows and is still running.

        NB: an id's next run is created only once its last one is closed, so a run
        that a fresh read (or the partition's holder) shows running is the latest:
        no List Blobs call for the id's runs.
        """
        known = self._index.starts.get(workflow_id)
        if not known:
            return None
        run = self._runs.get((workflow_id, known[max(known)].run_id))
        if run is None or not run.summary.running:
            return None
        if fresh and not self._parts.trusted(run):
            self._log.refresh(run)
            if not run.summary.running:
                return None
        self._runs.move_to_end(run.key)
        return run
