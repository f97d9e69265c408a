"""stores.open(url): every scheme, durability options, and clear errors for bad URLs."""

from __future__ import annotations

import pathlib

import pytest

import stores
from stores.file import FileStore
from stores.sqlite import SQLiteStore


def test_open_each_scheme(tmp_path: pathlib.Path) -> None:
    assert isinstance(stores.open("memory:"), stores.MemoryStore)
    with stores.open(f"sqlite:{tmp_path / 'x.db'}?durability=none") as db:
        assert isinstance(db, SQLiteStore) and db.durability == "none"
    with stores.open(f"file:{tmp_path / 'files'}") as files:
        assert isinstance(files, FileStore) and files.durability == "fsync"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nowhere", "unknown store URL"),
        ("redis://x", "unknown store URL"),
        ("memory:extra", "takes no path"),
        ("file:", "needs a path"),
        ("sqlite:x.db?colour=blue", "unknown store URL option"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        stores.open(url)


def test_bad_durability(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        stores.open(f"sqlite:{tmp_path / 'x.db'}?durability=sometimes")
    with pytest.raises(TypeError):
        stores.open(42)  # type: ignore[arg-type]


def test_the_embedded_default(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import Client, Timer, Worker, workflow

    @workflow
    def nap():  # type: ignore[no-untyped-def]
        yield Timer(0)
        return "rested"

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TPP_STORE", raising=False)
    assert stores.default_url() == "sqlite:.tpp/store.db"
    with Client() as client, Worker(workflows=[nap]) as worker:
        wid = client.start(nap)
        worker.run_until_idle()
        assert client.result(wid) == "rested"
    assert (tmp_path / ".tpp" / "store.db").exists()
    monkeypatch.setenv("TPP_STORE", f"file:{tmp_path / 'elsewhere'}")
    with stores.open_default() as other:
        assert isinstance(other, FileStore)
