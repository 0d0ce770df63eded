"""The `somna` command: subcommands come from small command modules listed here."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="somna", description="Continual-learning runs that alternate wake (test-time memory) and sleep (consolidation)."
    )
    from somna.platform.api import package_version

    parser.add_argument("--version", action="version", version=f"somna {package_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    logging.basicConfig(level=logging.WARNING, format="somna: %(message)s")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`run CFG --out D seed=1`), which argparse leaves over
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from somna.platform.config import ConfigError
    from somna.platform.registry import UnknownNameError

    try:
        return int(args.func(args) or 0)
    except (ConfigError, UnknownNameError) as error:
        print(f"somna: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("somna: interrupted; finished experiences are on disk (resume with `somna resume RUN_DIR`)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
