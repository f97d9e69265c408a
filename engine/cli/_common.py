"""What every ``tpp`` command shares: the context, options, errors, parsing and output.

Errors: a user mistake (bad JSON, an unknown workflow id or store URL, an app
that does not load) is one line on stderr and a non-zero exit status, never a
traceback; ``--traceback`` (or ``TPP_TRACEBACK=1``) shows the traceback of
anything unexpected.  Exit statuses: 0 done, 1 failed (an error, a failed
workflow, a divergence, damage), 2 usage, 3 not finished (still running, or a
timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import stores
from stores import Store

from .._apps import AppError
from .._errors import WorkflowError
from .._info import Status

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FINISHED",
    "CliError",
    "State",
    "TppGroup",
    "emit_json",
    "output_options",
    "parse_inputs",
    "parse_time",
    "pass_state",
    "progress_bar",
    "to_data",
]

EXIT_FAILED = 1
EXIT_NOT_FINISHED = 3

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A one-line error and an exit status (1 unless said otherwise)."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        # NB: click (8.2+) declares exit_code a ClassVar; this error's own status shadows it
        setattr(self, "exit_code", exit_code)  # noqa: B010


class State:
    """The ``tpp`` invocation's settings and the resources it opened (closed at exit)."""

    def __init__(self) -> None:
        self.store_url: str | None = None
        self.cas_url: str | None = None
        self.keys: str | None = None
        self.key_vault: str | None = None
        self.compression: str | None = None
        self._codec: Any = None
        self.output = "table"
        self.traceback = False
        self._stores: dict[str, Store] = {}
        self._cas: Any = None
        self._console: Console | None = None
        self._err: Console | None = None

    # ------------------------------------------------------------------ resources

    def url(self) -> str:
        """The store URL in use: ``--store``, else ``$TPP_STORE``, else the embedded default."""
        return self.store_url or stores.default_url()

    def store(self, url: str | None = None, *, create: bool = False) -> Store:
        """Open a store (``url``, else the one in use), once per URL per invocation.

        Without ``create``, a ``file:``/``sqlite:`` path that does not exist is an
        error (a typo must not make an empty store).
        """
        url = url or self.url()
        if url in self._stores:
            return self._stores[url]
        scheme, sep, rest = url.partition(":")
        path = rest.partition("?")[0]
        if sep and scheme in ("file", "sqlite") and path:
            where = pathlib.Path(path)
            if not where.exists():
                if not create:
                    hint = "" if self.store_url else " (give --store URL or set TPP_STORE)"
                    raise CliError(f"no store at {url}: {path} does not exist{hint}")
                try:
                    (where if scheme == "file" else where.parent).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise CliError(f"cannot create store {url}: {exc.strerror}: {path}") from None
        try:
            store = stores.open(url)
        except (ValueError, TypeError) as exc:
            raise CliError(str(exc)) from None
        except (WorkflowError, OSError) as exc:
            raise CliError(f"cannot open store {url}: {exc}") from None
        self._stores[url] = store
        return store

    def cas(self) -> Any:
        """The CAS named by ``--cas`` (``cas.open(url)``), or ``None`` when none was given."""
        if self.cas_url is None:
            return None
        if self._cas is None:
            import cas as cas_package

            opener = getattr(cas_package, "open", None)
            if opener is None:
                raise CliError(
                    f"this build cannot open a CAS (cas.open is missing): {self.cas_url}"
                )
            try:
                self._cas = opener(self.cas_url)
            except (ValueError, TypeError) as exc:
                raise CliError(str(exc)) from None
            except (WorkflowError, OSError) as exc:
                raise CliError(f"cannot open CAS {self.cas_url}: {exc}") from None
        return self._cas

    def codec(self) -> Any:
        """The payload codec: ``--keys``/``--key-vault``/``--compression``, as the workers use.

        ``None`` when none of them is given (the default codec, no encryption).
        """
        if self.keys is None and self.key_vault is None and self.compression is None:
            return None
        if self._codec is None:
            from .._keys import FileKeyVault
            from .._payloads import Keyring, PayloadCodec

            try:
                keys = Keyring.parse(self.keys) if self.keys else None
                vault = FileKeyVault(self.key_vault) if self.key_vault else None
                self._codec = PayloadCodec(
                    compression=self.compression,  # type: ignore[arg-type]
                    keys=keys,
                    data_keys=vault,
                )
            except ValueError as exc:
                raise CliError(f"bad payload codec options: {exc}") from None
            except WorkflowError as exc:
                raise CliError(f"cannot open the key vault {self.key_vault}: {exc}") from None
        return self._codec

    def close(self) -> None:
        for store in self._stores.values():
            with contextlib.suppress(Exception):
                store.close()
        self._stores.clear()
        closer = getattr(self._cas, "close", None)
        if callable(closer):
            with contextlib.suppress(Exception):
                closer()

    # ------------------------------------------------------------------ output

    @property
    def json(self) -> bool:
        return self.output == "json"

    @property
    def console(self) -> Console:
        """Rich output on stdout (wide and colourless when not a terminal)."""
        if self._console is None:
            self._console = _console(stderr=False)
        return self._console

    @property
    def err(self) -> Console:
        """Rich output on stderr (progress, notes)."""
        if self._err is None:
            self._err = _console(stderr=True)
        return self._err

    def note(self, text: str) -> None:
        """A line for the human on stderr (kept out of stdout, which scripts read)."""
        self.err.print(text, markup=False, highlight=False, soft_wrap=True)


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 160
    return console


pass_state = click.make_pass_decorator(State, ensure=True)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(State).output = value.lower()


def _set_store(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(State).store_url = value


def output_options(*, store: bool = True) -> Callable[[F], F]:
    """``-o/--output`` (and ``--store``) accepted after a subcommand as well as before it."""

    def decorate(fn: F) -> F:
        fn = click.option(
            "-o",
            "--output",
            type=click.Choice(["table", "json"], case_sensitive=False),
            expose_value=False,
            callback=_set_output,
            help="Output format (also accepted before the command).",
        )(fn)
        if store:
            fn = click.option(
                "--store",
                metavar="URL",
                expose_value=False,
                callback=_set_store,
                help="Store URL (also accepted before the command).",
            )(fn)
        return fn

    return decorate


# ---------------------------------------------------------------------- errors


def _message(exc: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit status of an error that is the user's, or None."""
    if isinstance(exc, AppError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out", EXIT_NOT_FINISHED
    if isinstance(exc, WorkflowError):
        text = str(exc) or type(exc).__name__
        return f"{text}", EXIT_FAILED
    if isinstance(exc, KeyError):
        return str(exc.args[0] if exc.args else exc), EXIT_FAILED
    if isinstance(exc, ValueError | TypeError):
        return str(exc), EXIT_FAILED
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", EXIT_FAILED
    return None


class TppGroup(click.Group):
    """The root group: closes what the command opened, and turns errors into one line.

    ``-h`` works like ``--help`` under any root of this class (click caches a
    command's help option, so every root must agree on its names).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = dict(kwargs.pop("context_settings", None) or {})
        settings.setdefault("help_option_names", ["-h", "--help"])
        super().__init__(*args, context_settings=settings, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        state = ctx.ensure_object(State)
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # NB: click handles a closed pipe (``tpp ... | head``) quietly
        except Exception as exc:
            if state.traceback or os.environ.get("TPP_TRACEBACK"):
                raise
            known = _message(exc)
            if known is None:
                raise CliError(
                    f"internal error: {type(exc).__name__}: {exc} (run with --traceback for "
                    f"details)"
                ) from exc
            raise CliError(*known) from exc
        finally:
            state.close()


def fail(message: str, exit_code: int = EXIT_FAILED) -> NoReturn:
    """Stop with a one-line error."""
    raise CliError(message, exit_code)


# ---------------------------------------------------------------------- parsing


def parse_inputs(values: Sequence[str], option: str = "--input") -> list[Any]:
    """Each ``--input`` as a JSON value (one per positional argument)."""
    out = []
    for n, text in enumerate(values, 1):
        try:
            out.append(json.loads(text))
        except json.JSONDecodeError as exc:
            which = f"{option} #{n}" if len(values) > 1 else option
            raise click.BadParameter(
                f"{text!r} is not valid JSON ({exc.msg} at character {exc.pos}); strings need "
                f"quotes, e.g. --input '\"cust-1\"'",
                param_hint=which,
            ) from None
    return out


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str | None, option: str, now: datetime | None = None) -> datetime | None:
    """An ISO 8601 time (UTC unless it says otherwise), or a duration ago: ``90m``, ``2d``."""
    if text is None:
        return None
    m = _RELATIVE.fullmatch(text.strip())
    if m:
        now = now or datetime.now(UTC)
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is neither an ISO 8601 time (2026-11-26T10:00) nor a duration ago "
            f"(30s, 90m, 2h, 7d, 1w)",
            param_hint=option,
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def status_choice() -> click.Choice[str]:
    return click.Choice([s.value.lower() for s in Status], case_sensitive=False)


# ---------------------------------------------------------------------- output


def to_data(value: Any) -> Any:
    """``value`` as JSON-ready builtins (Structs, enums, datetimes, dataclasses)."""
    return msgspec.to_builtins(value, str_keys=True, enc_hook=_enc_hook)


def _enc_hook(value: Any) -> Any:
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise NotImplementedError(f"cannot encode {type(value).__name__}")


def emit_json(value: Any) -> None:
    """Write ``value`` to stdout as indented JSON."""
    data = msgspec.json.encode(to_data(value))
    click.echo(msgspec.json.format(data, indent=2).decode())


def format_time(when: datetime | None) -> str:
    """UTC, to the millisecond: ``2026-11-26T10:12:35.123Z``."""
    if when is None:
        return ""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_duration(delta: timedelta) -> str:
    """A timedelta compactly: ``14d``, ``1h30m``, ``2.5s``, ``0s``."""
    total = delta.total_seconds()
    sign = "-" if total < 0 else ""
    total = abs(total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{int(days)}d" if days else "", f"{int(hours)}h" if hours else ""]
    parts.append(f"{int(minutes)}m" if minutes else "")
    parts.append(f"{seconds:g}s" if seconds else "")
    return sign + ("".join(parts) or "0s")


def format_seconds(seconds: float | None) -> str:
    """A duration for people: ``850 µs``, ``12 ms``, ``1.5 s``, ``3.2 min``, ``2.0 h``, ``4 d``."""
    if seconds is None:
        return ""
    if seconds == 0:
        return "0 s"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


@contextlib.contextmanager
def progress_bar(state: State, what: str) -> Iterator[Callable[[int, int], None]]:
    """A rich progress bar on stderr (shown on a terminal only); yields ``update(done, total)``."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=state.err,
        transient=True,
        disable=not state.err.is_terminal,
    )
    task = progress.add_task(what, total=None)

    def update(done: int, total: int) -> None:
        progress.update(task, completed=done, total=total)

    with progress:
        yield update
