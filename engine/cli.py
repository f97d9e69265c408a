"""The ``tpp`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tpp", description="Temporal++ command line")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the Temporal++ version")
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"temporalpp {__version__}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
