"""`somna learners | curricula | kernels | stages | presets`: what is available, one line each."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from somna.platform.catalog import load_builtins
from somna.platform.registry import CURRICULA, KERNELS, LEARNERS, SLEEP_STAGES, ModalityRegistry, Registry, first_doc_line

LISTINGS: dict[str, Registry] = {
    "learners": LEARNERS,
    "curricula": CURRICULA,
    "kernels": KERNELS,
    "stages": SLEEP_STAGES,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, registry in LISTINGS.items():
        parser = subparsers.add_parser(name, help=f"list the registered {registry.kind} names")
        parser.set_defaults(func=lambda args, registry=registry: _list(registry))
    subparsers.add_parser("presets", help="list the shipped config presets").set_defaults(func=_list_presets)


def _list(registry: Registry) -> int:
    load_builtins()
    table = Table(show_header=True, header_style="bold")
    table.add_column(registry.kind)
    if isinstance(registry, ModalityRegistry):
        table.add_column("modality")
    table.add_column("description")
    for name, description in registry.describe().items():
        if isinstance(registry, ModalityRegistry):  # one row per implementation, with its own description
            for modality in registry.modalities(name):
                table.add_row(name, modality, first_doc_line(registry.get(name)[modality]))
        else:
            table.add_row(name, description)
    Console().print(table)
    for plugin, message in registry.plugin_errors.items():
        Console(stderr=True).print(f"[yellow]plugin {plugin!r} failed to load: {message}[/yellow]")
    return 0


def _list_presets(args: argparse.Namespace) -> int:
    from somna.platform.config import preset_names

    for name in preset_names():
        print(name)
    return 0
