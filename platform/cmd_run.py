"""`somna run CONFIG [key=value ...]` and `somna resume RUN_DIR`."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from somna.platform.config import RunConfig, load_config
from somna.platform.config_help import schema_help
from somna.platform.launch import Launch, execute, prepare, prepare_resume
from somna.platform.runner import RunProgress

SUMMARY_KEYS = ("acc", "bwt", "fwt", "forgetting")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run a lifelong-learning experiment", epilog=config_keys_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="preset name (`somna presets`), curriculum name (`somna curricula`) or path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. learner=replay learner.buffer=500 seed=3")
    parser.add_argument("--out", help="run directory, a path or a URI such as s3://bucket/run "
                        "(default: <storage_path>/<curriculum>-<learner>-s<seed>)")
    parser.add_argument("--address", help="join a Ray cluster: auto or ray://host:port (same as ray.address=...)")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="delete an existing run directory first")
    existing.add_argument("--resume", action="store_true", help="continue an existing run directory with this config")
    parser.set_defaults(func=_run)

    parser = subparsers.add_parser("resume", help="continue a run directory after a crash (same config, same metrics)")
    parser.add_argument("run_dir", help="the run directory (path or URI)")
    parser.add_argument("--address", help="join a Ray cluster: auto or ray://host:port")
    parser.set_defaults(func=_resume)


def config_keys_epilog() -> str:
    """The run-wide config keys with their help; the curriculum's and learner's are in `somna config CONFIG`."""
    keys = "\n".join(f"  {key:<22} {text}" for key, text in schema_help(RunConfig).items() if key.count(".") < 2)
    return (
        f"config keys (override with key=value; lists as 'learner.sleep.stages=[a,b]'):\n{keys}\n\n"
        "`somna config CONFIG [key=value ...]` prints every key of a config, the curriculum's and the learner's "
        "included, with its value and help."
    )


def _run(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    launch = prepare(load_config(args.config, overrides), args.out, overwrite=args.overwrite, resume=args.resume)
    return _execute(launch)


def _resume(args: argparse.Namespace) -> int:
    return _execute(prepare_resume(args.run_dir, [f"ray.address={args.address}"] if args.address else []))


def _execute(launch: Launch) -> int:
    cfg = launch.cfg
    header = (f"[bold]somna[/bold] {cfg.curriculum.name} · learner={cfg.learner.name} · scenario={cfg.scenario} "
              f"· seed={cfg.seed} · executor={cfg.executor} → {launch.location}")
    summary = execute(launch, RichProgress(Console(stderr=True), header, bar=cfg.logging.progress))
    Console().print(summary_table(summary))
    Console().print(f"run directory: {launch.location}")
    return 0


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"{summary['curriculum']} · {summary['learner']} · {summary['scenario']}-IL · seed {summary['seed']}")
    for key in SUMMARY_KEYS:
        table.add_column(key.upper(), justify="right")
    table.add_row(*(f"{summary[key]:+.4f}" if key != "acc" else f"{summary[key]:.4f}" for key in SUMMARY_KEYS))
    return table


class RichProgress(RunProgress):
    """The run's header line once the loop really starts (after every check passed), then a progress bar over
    experiences that names the phase being run (`bar=False`: the header only)."""

    def __init__(self, console: Console, header: str, bar: bool = True):
        self.console, self.header = console, header
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, transient=False, disable=not bar,
        )
        self.task: Any = None

    def start(self, total: int, done: int) -> None:
        self.console.print(self.header)
        self.progress.start()
        self.task = self.progress.add_task("starting", total=total, completed=done)

    def phase(self, experience: int, phase: str) -> None:
        self.progress.update(self.task, description=f"experience {experience}: {phase}")

    def advance(self) -> None:
        self.progress.advance(self.task)

    def stop(self) -> None:
        self.progress.update(self.task, description="done")
        self.progress.stop()


__all__ = ["register", "summary_table"]
