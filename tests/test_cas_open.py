"""cas.open(url): every scheme, durability, clear errors for bad URLs; the package surface."""

from __future__ import annotations

import doctest
import pathlib
import types

import pytest

import cas
import cas._ops
import cas._protocol
import cas.file
import cas.memory


def test_open_each_scheme(tmp_path: pathlib.Path) -> None:
    with cas.open("memory:") as memory:
        assert isinstance(memory, cas.MemoryCAS) and isinstance(memory, cas.CAS)
    with cas.open(f"file:{tmp_path / 'blobs'}") as files:
        assert isinstance(files, cas.FileCAS) and files.durability == "fsync"
        assert files.path == tmp_path / "blobs"
        digest = files.put(b"x")
    with cas.open(f"file:{tmp_path / 'blobs'}?durability=none") as again:
        assert isinstance(again, cas.FileCAS) and again.durability == "none"
        assert again.get(digest) == b"x"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nowhere", "unknown CAS URL"),
        ("redis://x", "unknown CAS URL"),
        ("sqlite:x.db", "unknown CAS URL"),
        ("memory:extra", "takes no path"),
        ("memory:?durability=none", "takes no path or options"),
        ("file:", "needs a path"),
        ("file:?durability=none", "needs a path"),
        ("file:x?colour=blue", r"unknown CAS URL option.*'colour'.*durability=fsync\|none"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        cas.open(url)
    if message == "unknown CAS URL":
        assert "expected memory:, file:PATH, azure://" in str(caught.value)


def test_bad_durability_and_types(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        cas.open(f"file:{tmp_path / 'x'}?durability=sometimes")
    assert not (tmp_path / "x").exists()
    with pytest.raises(TypeError, match="string"):
        cas.open(42)  # type: ignore[arg-type]


def test_all_is_sorted_and_complete() -> None:
    names = cas.__all__
    assert list(names) == sorted(names)
    for name in names:
        assert hasattr(cas, name), name
    public = {
        n
        for n, v in vars(cas).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    }
    assert public <= set(names) | {"annotations"}, public - set(names)


def test_blob_not_found_is_a_corruption_error() -> None:
    from engine import CorruptionError, WorkflowError

    assert issubclass(cas.BlobNotFoundError, CorruptionError)
    assert issubclass(cas.BlobNotFoundError, WorkflowError)


@pytest.mark.parametrize(
    "module", [cas, cas._protocol, cas._ops, cas.file, cas.memory], ids=lambda m: m.__name__
)
def test_docstring_examples_run(module: types.ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_every_module_and_public_name_is_documented() -> None:
    for module in (cas, cas._protocol, cas._ops, cas.file, cas.memory):
        assert module.__doc__, module.__name__
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if callable(obj):
                assert obj.__doc__, f"{module.__name__}.{name}"
