"""``python -m benchmarks [--quick] [--results-dir DIR] [PART ...]``: run benchmark parts.

Each part is a module ``benchmarks.<name>`` with ``main(argv) -> int`` that takes
the common options (``--quick``, ``--repeat``, ``--results-dir``).  ``PARTS``
lists them in running order; a listed part whose module does not exist yet is
skipped, so new parts register by adding their module (and their name here).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

PARTS = ("replay", "stores", "e2e", "cas", "peers", "limits")


def available() -> list[str]:
    return [name for name in PARTS if importlib.util.find_spec(f"benchmarks.{name}") is not None]


def main(argv: list[str] | None = None) -> int:
    parts = available()
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=f"Run benchmark parts (available: {', '.join(parts)}).",
    )
    p.add_argument("parts", nargs="*", metavar="PART", help="parts to run (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    p.add_argument("--repeat", type=int, help="repetitions per measurement")
    p.add_argument("--results-dir", help="where the JSON results go")
    args = p.parse_args(argv)
    unknown = [name for name in args.parts if name not in parts]
    if unknown:
        p.error(f"unknown or unavailable part(s) {', '.join(unknown)}; available: {parts}")
    common: list[str] = []
    if args.quick:
        common.append("--quick")
    if args.repeat is not None:
        common += ["--repeat", str(args.repeat)]
    if args.results_dir is not None:
        common += ["--results-dir", args.results_dir]
    status = 0
    for name in args.parts or parts:
        print(f"== {name} ==", flush=True)
        module = importlib.import_module(f"benchmarks.{name}")
        status = max(status, int(module.main(common)))
        print(flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
