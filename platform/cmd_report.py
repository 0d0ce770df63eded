"""`somna eval RUN_DIR [--reevaluate]` and `somna compare RUN_DIR... | GLOB [--by KEY] [--out DIR]`.

The evals room (matplotlib, scipy) is imported when a command runs, not when
the CLI starts, so `somna run` does not pay for it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from somna.evals.report import Reevaluation
    from somna.evals.rundir import Run


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="recompute a run's metrics and write report.md/report.html with plots")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--reevaluate", action="store_true", help="score every checkpoint again and compare with the stored matrix")
    parser.add_argument("--joint", type=Path, metavar="JOINT_RUN_DIR", help="the joint learner's run on the same stream, for intransigence")
    parser.set_defaults(func=_eval)

    parser = subparsers.add_parser("compare", help="aggregate runs over seeds (mean ± 95%% CI) into tables and a bar plot")
    parser.add_argument("runs", nargs="+", help="run directories, folders of runs (a sweep's --out) or glob patterns")
    parser.add_argument("--by", default="learner", help="comma-separated dotted config keys to group by (default: learner)")
    parser.add_argument("--out", type=Path, help="where compare.md/.csv/.png go (default: the runs' common parent)")
    parser.set_defaults(func=_compare)


def _eval(args: argparse.Namespace) -> int:
    from somna.evals.document import Table, markdown_table
    from somna.evals.report import fmt, run_metrics, write_report
    from somna.evals.rundir import load_run

    run = load_run(args.run_dir)
    for problem in run.warnings:
        print(f"somna: warning: {problem}", file=sys.stderr)
    reevaluation = reevaluate(run) if args.reevaluate else None
    if reevaluation is None:
        for checkpoint in run.checkpoints():
            if problem := checkpoint.problem():
                print(f"somna: warning: checkpoint {problem}", file=sys.stderr)
    joint = load_run(args.joint) if args.joint else None
    report = write_report(run.path, joint_dir=joint.path if joint else None, reevaluation=reevaluation)
    values = run_metrics(run, joint)
    print(markdown_table(Table(list(values), [[fmt(v) for v in values.values()]])))
    print(f"report: {report} and {report.with_suffix('.html')}")
    return 0


def reevaluate(run: Run) -> Reevaluation:
    """Rebuild the learner from config.yaml and score each checkpoint on every experience, as the loop does.

    Uses the loop's own evaluation function (fresh learner from the state dict,
    the same eval seed), so a faithful run directory gives differences of 0.
    A checkpoint that is missing, corrupt or not the learner's is named in a warning and skipped.
    """
    import numpy as np
    from omegaconf import OmegaConf

    from somna.evals.report import Reevaluation
    from somna.evals.rundir import CONFIG_FILE, CheckpointError
    from somna.platform.config import load_config
    from somna.platform.executors import evaluate_state
    from somna.platform.runner import CheckpointMismatch, build_curriculum, check_state_fits

    cfg = load_config(str(run.path / CONFIG_FILE), [])
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    curriculum = build_curriculum(cfg)
    result = Reevaluation()
    on_disk = {checkpoint.index: checkpoint for checkpoint in run.checkpoints()}
    for index in sorted(set(on_disk) | set(range(run.rows_done))):
        checkpoint = on_disk.get(index)
        try:
            if checkpoint is None:
                raise CheckpointError(f"{run.path / 'checkpoints'}/exp-{index:04d}.safetensors: missing")
            state = checkpoint.load()
            check_state_fits(cfg, curriculum.info, state, checkpoint.tensors)
        except (CheckpointError, CheckpointMismatch) as error:
            print(f"somna: warning: checkpoint {error}; row {index} not re-evaluated", file=sys.stderr)
            result.problems.append(str(error))
            continue
        scores = [evaluate_state(cfg_dict, curriculum.info, state, experience)[0]["accuracy"] for experience in curriculum]
        result.rows[index] = np.array(scores)
    return result


def _compare(args: argparse.Namespace) -> int:
    from somna.evals.compare import compare, comparison_table
    from somna.evals.document import markdown_table
    from somna.platform.config import ConfigError

    by = [key.strip() for key in args.by.split(",") if key.strip()]
    if not by:
        raise ConfigError(f"--by {args.by!r} names no config key; give one or more, e.g. --by learner,learner.buffer")
    try:
        comparison, paths = compare(args.runs, by=by, out_dir=args.out)
    except ValueError as error:  # no runs found, nothing comparable: a usage error (exit 2)
        raise ConfigError(str(error)) from None
    for skipped in comparison.skipped:
        print(f"somna: warning: skipped {skipped}", file=sys.stderr)
    print(markdown_table(comparison_table(comparison)))
    print(f"written: {paths['md']}, {paths['csv']}, {paths['png']}")
    return 0

