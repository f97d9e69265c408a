"""``tpp cas ...``: rehash every blob of a CAS, and collect the blobs no history references."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from ._common import (
    EXIT_FAILED,
    CliError,
    State,
    emit_json,
    output_options,
    pass_state,
    progress_bar,
)

__all__ = ["cas"]


def _open(state: State, url: str | None) -> Any:
    if url is not None:
        state.cas_url = url
    blobs = state.cas()
    if blobs is None:
        raise CliError("no CAS given: pass --cas URL (or set TPP_CAS), e.g. --cas file:.tpp/cas")
    return blobs


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


@click.group(name="cas")
def cas() -> None:
    """Check and clean the content-addressable store that holds large payloads.

    \b
    Examples:
      tpp --cas file:.tpp/cas cas verify
      tpp --store sqlite:.tpp/store.db --cas file:.tpp/cas cas gc --dry-run
    """


@cas.command()
@click.argument("url", required=False, metavar="[CAS_URL]")
@output_options(store=False)
@pass_state
def verify(state: State, url: str | None) -> None:
    """Rehash every blob of the CAS (--cas, or CAS_URL) and report the damaged ones.

    Nothing is changed. Exit status 1 when any blob is damaged.

    \b
    Examples:
      tpp --cas file:.tpp/cas cas verify
      tpp cas verify file:/backups/cas --output json
    """
    import cas as cas_package

    blobs = _open(state, url)
    total = sum(1 for _ in blobs)
    with progress_bar(state, "rehashing blobs") as update:
        done = 0

        def step(_info: object) -> None:
            nonlocal done
            done += 1
            update(done, total)

        report = cas_package.verify(blobs, progress=step)
    if state.json:
        emit_json(
            {
                "cas": state.cas_url,
                "checked": report.checked,
                "bytes": report.bytes,
                "damaged": [{"digest": d.digest, "reason": d.reason} for d in report.damaged],
            }
        )
    else:
        state.console.print(
            f"{report.checked:,} blob(s), {_size(report.bytes)} rehashed: "
            + ("all intact" if report.ok else f"{len(report.damaged)} damaged"),
            markup=False,
        )
        if report.damaged:
            table = Table("digest", "what is wrong")
            for d in report.damaged:
                table.add_row(d.digest, d.reason)
            state.console.print(table)
    if not report.ok:
        raise click.exceptions.Exit(EXIT_FAILED)


@cas.command()
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    metavar="SECONDS",
    help="Keep unreferenced blobs put less than this long before the mark began.",
)
@click.option("--dry-run", is_flag=True, help="Report what would be deleted; delete nothing.")
@output_options()
@pass_state
def gc(state: State, grace: float, dry_run: bool) -> None:
    """Delete the blobs that no history in the store references.

    Marks every digest that any run of --store references, then deletes only
    unmarked blobs last put more than --grace seconds before the mark began, so
    it is safe while workers run. Referenced blobs that are missing are
    reported (exit status 1): that is lost data.

    \b
    Examples:
      tpp --store sqlite:.tpp/store.db --cas file:.tpp/cas cas gc
      tpp --store file:.tpp/files --cas file:.tpp/cas cas gc --grace 3600 --dry-run
    """
    import cas as cas_package

    blobs = _open(state, None)
    store = state.store()
    with progress_bar(state, "marking and sweeping"):
        report = cas_package.gc(store, blobs, grace=grace, dry_run=dry_run)
    if state.json:
        emit_json(
            {
                "dry_run": dry_run,
                "runs_scanned": report.runs_scanned,
                "marked": report.marked,
                "kept": report.kept,
                "deleted": report.deleted,
                "bytes_freed": report.bytes_freed,
                "missing": report.missing,
                "temp_files_removed": report.temp_files_removed,
            }
        )
    else:
        verb = "would delete" if dry_run else "deleted"
        state.console.print(
            f"{report.runs_scanned:,} run(s) scanned, {report.marked:,} blob(s) referenced, "
            f"{report.kept:,} kept; {verb} {len(report.deleted):,} "
            f"({_size(report.bytes_freed)})",
            markup=False,
        )
        for digest in report.missing:
            state.note(f"missing: {digest} is referenced by a history but not in the CAS")
    if report.missing:
        raise click.exceptions.Exit(EXIT_FAILED)
