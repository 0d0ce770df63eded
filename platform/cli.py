"""The `somna` command: subcommands come from small command modules listed here.

Every failure ends in one line on stderr and an exit code (see platform/errors.py);
`--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn

COMMAND_MODULES = (
    "somna.platform.cmd_run",
    "somna.platform.cmd_config",
    "somna.platform.cmd_list",
    "somna.platform.cmd_bench",
    "somna.platform.cmd_report",
    "somna.platform.cmd_sweep",
    "somna.platform.cmd_pretrain",
)

EXIT_USAGE = 2
DEBUG_HELP = "print the full traceback of an error"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at --help instead of the whole usage text."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="somna", description="Continual-learning runs that alternate wake (test-time memory) and sleep (consolidation)."
    )
    from somna.platform.api import package_version

    parser.add_argument("--version", action="version", version=f"somna {package_version()}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    for subparser in subparsers.choices.values():  # `somna run X --debug` as well as `somna --debug run X`
        subparser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def parse_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`run CFG --out D seed=1`), which argparse leaves over
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    logging.basicConfig(level=logging.WARNING, format="somna: %(message)s")
    args = parse_arguments(build_parser(), argv)
    from somna.platform.errors import EXIT_INTERRUPTED, report_failure

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("somna: interrupted; finished experiences are on disk (resume with `somna resume RUN_DIR`)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # the one place every failure is reported: one line and an exit code
        return report_failure(error, args.command, debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
