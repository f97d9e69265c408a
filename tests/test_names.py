"""Workflow ids to file names (``stores._names``): injective, portable, inside the root."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stores._names import DIGEST_PREFIX, READABLE_MAX, id_of, name, shard
from tests.store_conformance import NASTY_IDS

#: Ids that would collide under a naive scheme (case folding, normalisation, escaping).
TRICKY = [
    *NASTY_IDS,
    "%",
    "%25",
    "^",
    "^a",
    "~",
    "w-",
    "h-",
    "w-x",
    "..\\..\\x",
    "a.b",
    "a%2eb",
    "a^b",
    "AB",
    "Ab",
    "aB",
    "ab",
    "\u00c5",  # Å
    "A\u030a",  # A + combining ring
    "\u212b",  # ANGSTROM SIGN
    "\uff0e",  # FULLWIDTH FULL STOP
    "\uff0e\uff0e",
    "\u2024",  # ONE DOT LEADER
    "\ud800",  # lone surrogates
    "\udfff",
    "\ud83d\ude00",  # a surrogate pair as two code points, not U+1F600 (also in the list)
    "\x00" * 3,
    "\t",
    "\r\n",
    "\u0130",  # İ, whose lower case is two code points
    "i\u0307",
    "\u03a3",  # Σ and its two lower cases
    "\u03c3",
    "\u03c2",
    "CON.txt",
    "LPT9",
    "x" * (READABLE_MAX - 1),
    "x" * READABLE_MAX,
    "x" * (READABLE_MAX + 1),
    "X" * 200,
    "x" * 10_000 + "\u00e9",
    "x" * 10_000 + "e\u0301",
]

_SAFE = re.compile(r"[a-z0-9_%^~-]+")
_WINDOWS_DEVICES = {"con", "prn", "aux", "nul"} | {
    f"{d}{i}" for d in ("com", "lpt") for i in "123456789"
}

any_text = st.text(
    st.one_of(st.characters(exclude_categories=()), st.characters(categories=["Cs"])),
    max_size=300,
)


def assert_portable(n: str) -> None:
    assert _SAFE.fullmatch(n), n
    assert n.isascii() and n == n.lower()
    assert len(n.encode()) <= 2 + READABLE_MAX < 255
    assert n not in (".", "..") and not n.startswith(".")
    assert n[-1] not in ". "
    assert n.split(".")[0].lower() not in _WINDOWS_DEVICES
    assert "/" not in n and "\\" not in n and "\x00" not in n


def test_tricky_ids_get_distinct_portable_names() -> None:
    assert len(set(TRICKY)) == len(TRICKY) >= 40
    names = [name(i) for i in TRICKY]
    for n in names:
        assert_portable(n)
    assert len(set(names)) == len(names)
    assert len({n.casefold() for n in names}) == len(names)  # case-insensitive file systems
    assert len({unicodedata.normalize("NFD", n) for n in names}) == len(names)


def test_readable_names_for_short_ids() -> None:
    assert name("order-7_b") == "w-order-7_b"
    assert name("Order.7") == "w-^order%2e7"
    assert name("") == "w-"
    assert name("../x") == "w-%2e%2e%2fx"
    assert name("CON") == "w-^c^o^n"
    assert name("\u00e9") == "w-%c3%a9"
    assert name("\ud800") == "w-%ed%a0%80"
    for wid in ["", "../x", "Order.7", "\ud800", "\u00e9" * 20]:
        assert id_of(name(wid)) == wid


def test_digest_names_for_long_ids() -> None:
    long = "invoice-" + "x" * 500
    n = name(long)
    assert n.startswith("h-invoice-xx") and "~" in n
    prefix, digest = n[2:].split("~")
    assert len(prefix) <= DIGEST_PREFIX and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert id_of(n) is None
    assert name(long + "y") != n
    # a cut never splits an escape: the readable prefix is whole codes
    n2 = name("\u00e9" * 100)
    assert re.fullmatch(r"h-(%[0-9a-f]{2})+~[0-9a-f]{64}", n2)


def test_shard_is_two_hex_digits() -> None:
    shards = {shard(i) for i in TRICKY}
    assert all(re.fullmatch(r"[0-9a-f]{2}", s) for s in shards)
    assert len(shards) > 20


@pytest.mark.parametrize("bad", [None, 1, b"x"])
def test_a_workflow_id_must_be_a_string(bad: object) -> None:
    with pytest.raises(TypeError):
        name(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("foreign", ["", "x", "w-A", "w-%2", "w-%2E", "w-^1", "w-\u00e9", "w-%c3"])
def test_foreign_names_decode_to_nothing(foreign: str) -> None:
    assert id_of(foreign) is None


@settings(max_examples=500, deadline=None)
@given(wid=any_text)
def test_names_are_portable_and_decode(wid: str) -> None:
    n = name(wid)
    assert_portable(n)
    if n.startswith("w-"):
        assert id_of(n) == wid


@settings(max_examples=500, deadline=None)
@given(a=any_text, b=any_text)
def test_names_are_injective(a: str, b: str) -> None:
    if a != b:
        assert name(a) != name(b)
        assert name(a).casefold() != name(b).casefold()
