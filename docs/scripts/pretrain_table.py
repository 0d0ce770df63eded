"""The `somna pretrain` table: what each shipped pretrain preset costs and what its base can do.

    .venv/bin/python docs/scripts/pretrain_table.py [--presets world-micro world world-deltanet] [--out docs/pretrain_results.md]

A preset may also be a pretrain YAML file (docs/pretrain_experiments/); its row is named by the file's stem.

Each preset is read back from the user cache (pretrained first when it is not there: the same
entry `somna pretrain PRESET` and `learner.model.base=PRESET` use), and its summary.json becomes a
row: parameters, training tokens, minutes of the loop (wall clock, and CPU time of its process on
this shared machine), and exact match on 200 held-out items per skill: reading comprehension with
the passage about people it never saw (in_context_qa), the same questions without it
(closed_book_qa_unseen: nothing to recall), and questions about the world's own people, those
pretraining asked about (closed_book_qa_world) and those it only read passages about
(closed_book_qa_told). The loss curves are copied next to the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from somna.platform.pretraining import cached_base, load_pretrain_config
from somna.platform.provenance import provenance_line


DEFAULT_OUT = Path("docs/pretrain_results.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["world-micro", "world", "world-deltanet"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)  # pretraining runs on `threads: 1` (the presets), so that the provenance line names it
    rows, names = [], []
    for preset in args.presets:
        cfg = load_pretrain_config(preset)
        names.append(cfg.name)
        entry = cached_base(cfg)
        summary = json.loads((entry / "summary.json").read_text())
        shutil.copyfile(entry / "loss.png", args.out.parent / f"pretrain_loss_{cfg.name}.png")
        rows.append(
            f"| `{cfg.name}` | {summary['params']:,} | {cfg.model.num_layers} × d={cfg.model.dim} {cfg.model.short_term}, BPE {cfg.tokenizer.vocab_size} "
            f"| {summary['steps']:,} × {cfg.train.batch_size} | {summary['tokens']:,} | {summary['minutes']:.1f} ({summary['cpu_minutes']:.1f}) "
            f"| {summary['in_context_qa']:.3f} | {summary['closed_book_qa_unseen']:.3f} | {summary['closed_book_qa_world']:.3f} | {summary['closed_book_qa_told']:.3f} |"
        )
    table = "\n".join([
        "# `somna pretrain` presets",
        "",
        "<!-- pretrain_table:start -->",
        f"Produced by `docs/scripts/pretrain_table.py --presets {' '.join(args.presets)}{'' if args.out == DEFAULT_OUT else f' --out {args.out}'}`.",
        "Exact match on 200 held-out items each; minutes = the training loop's wall clock (its CPU time in parentheses).",
        "",
        "| preset | parameters | model | steps × batch | tokens | minutes (CPU) | in-context QA, unseen people | closed-book, same questions | closed-book, world people asked in pretraining | closed-book, world people only read about |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        provenance_line(),
        "<!-- pretrain_table:end -->",
        "",
        *(f"![pretraining loss of {name}](pretrain_loss_{name}.png)" for name in names),
    ])
    print(table)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
