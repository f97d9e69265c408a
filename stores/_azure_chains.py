"""AzureBlobStore's index of runs: which runs each id has, and every run for ``list``.

Nothing here is stored apart from the histories: a run *is* its segment-0 blob
(``h/<sha3>/<id>/<ordinal>``), whose metadata holds its ``WorkflowStarted`` (when
it fits) and, once it closed, its status and close time.  So

* an id's runs, oldest first, are one List Blobs call on the id's directory;
* every run, for ``list`` and ``runs``, is one List Blobs call per 5,000 runs
  over ``h/``: the filters, the counts per status and the order come from
  metadata alone (a start too large for metadata is read once, then cached);
* what a run started with never changes, so it is cached by (id, ordinal).

A status in metadata is written right after the batch that closed the run; a
handle that died in between leaves RUNNING there, which the run's next reader
or its partition's holder repairs (``AzureBlobStore._repair_closed``), and
which a check that matters (id reuse) never trusts: it reads the history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Final

from engine._events import WorkflowStarted

from . import _azure_format as fmt
from ._azure_blobs import Blobs
from ._azure_runs import Log, Run
from ._summary import RunSummary

__all__ = ["Chains", "Entry"]

Key = tuple[str, str]
_KEEP: Final = 200_000  # runs whose start and ordinal a handle remembers


class Entry:
    """A run as a listing shows it: its ordinal, its start and its segment 0's metadata."""

    __slots__ = ("meta", "ordinal", "started")

    def __init__(self, ordinal: int, started: WorkflowStarted, meta: dict[str, str]) -> None:
        self.ordinal = ordinal
        self.started = started
        self.meta = meta

    def summary(self) -> RunSummary:
        """A summary good for status checks and listing (not for due times)."""
        s = RunSummary(self.started)
        s.status = fmt.meta_status(self.meta)
        close = self.meta.get("ct")
        s.close_time = datetime.fromisoformat(close) if close else None
        return s


class Chains:
    """Runs by id, from List Blobs; starts and ordinals cached (they never change)."""

    def __init__(
        self, blobs: Blobs, names: fmt.Names, log: Log, loaded: Callable[[Run], object]
    ) -> None:
        self.blobs = blobs
        self.names = names
        self.log = log
        self.loaded = loaded  # told of runs read whole to learn their start
        self.starts: dict[str, dict[int, WorkflowStarted]] = {}
        self.ordinals: dict[Key, int] = {}
        self._by_name: dict[str, WorkflowStarted] = {}

    def note(self, ordinal: int, started: WorkflowStarted) -> None:
        if len(self.ordinals) >= _KEEP:  # a cache: forget it all now and then, re-learn on demand
            self.starts.clear()
            self.ordinals.clear()
            self._by_name.clear()
        wid = started.workflow_id
        self.starts.setdefault(wid, {})[ordinal] = started
        self.ordinals[(wid, started.run_id)] = ordinal

    def known(self, workflow_id: str) -> bool:
        """Whether this handle has seen a run of the id."""
        return bool(self.starts.get(workflow_id))

    def chain(self, workflow_id: str) -> list[Entry]:
        """The id's runs, oldest first, from one List Blobs call."""
        prefix = self.names.id_dir(workflow_id)
        known = self.starts.setdefault(workflow_id, {})
        entries: list[Entry] = []
        for props in self.blobs.list(prefix):
            ordinal = fmt.Names.run_ordinal(props.name)
            if ordinal is None:
                continue
            meta = dict(props.metadata or {})
            started = known.get(ordinal) or fmt.started_from_meta(meta)
            if started is None:
                run = self.log.load(workflow_id, ordinal)
                if run is None:
                    continue
                self.loaded(run)
                started = run.started
            self.note(ordinal, started)
            entries.append(Entry(ordinal, started, meta))
        entries.sort(key=lambda e: e.ordinal)
        return entries

    def ordinal(self, workflow_id: str, run_id: str) -> int | None:
        ordinal = self.ordinals.get((workflow_id, run_id))
        if ordinal is None:
            for e in self.chain(workflow_id):
                if e.started.run_id == run_id:
                    return e.ordinal
        return ordinal

    def everything(self) -> Iterator[Entry]:
        """Every run (its segment 0), from List Blobs over all histories."""
        base = self.names.histories
        for props in list(self.blobs.list(base)):
            name = props.name
            ordinal = fmt.Names.run_ordinal(name)
            if ordinal is None or name.count("/", len(base)) != 2:
                continue
            meta = dict(props.metadata or {})
            started = fmt.started_from_meta(meta) or self._started_of(name)
            if started is not None:
                self.note(ordinal, started)
                yield Entry(ordinal, started, meta)

    def _started_of(self, name: str) -> WorkflowStarted | None:
        """The start of a run whose start is too large for metadata: its first frame."""
        started = self._by_name.get(name)
        if started is not None:
            return started
        got = self.blobs.read(name)
        if got is None:
            return None
        batches, _ = fmt.frames(got.data, 0, lambda: name)
        if not batches:
            return None  # being created: its start is not written yet
        [ev] = fmt.decode_events(batches[0].payload)
        if not isinstance(ev, WorkflowStarted):
            return None
        self._by_name[name] = ev
        return ev
