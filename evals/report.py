"""One run's report: report.md + self-contained report.html + PNG figures, all from the run directory.

Every number is recomputed from accuracy_matrix.csv and metrics.jsonl (never
copied from summary.json), so a report can be regenerated after the metric
code changes, and a partial run is reported over the experiences it finished.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from somna.evals import metrics, plots
from somna.evals.document import Document, Table
from somna.evals.dreams import Dream, RunDreams, read_dreams, shorten
from somna.evals.rundir import BASELINE, Run, load_run, skill_rows

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
HEATMAP_PNG = "accuracy_matrix.png"
CURVES_PNG = "accuracy_curves.png"
DREAMS_SHOWN = 3  # best and worst dreams per experience in the report
LANGUAGE_METRICS = {"perplexity": "perplexity (lower is better)", "exact_match": "exact-match recall"}

METRIC_MEANINGS = {
    "acc": "mean_j R[T-1, j]: average accuracy after the last experience",
    "bwt": "mean_{j<T-1} (R[T-1, j] - R[j, j]): backward transfer (GEM)",
    "fwt": "mean_{j>0} (R[j-1, j] - b_j): forward transfer (GEM)",
    "forgetting": "max-previous convention (Chaudhry et al. 2018): mean_{j<T-1} max_{l<T-1} R[l, j] - R[T-1, j]",
    "forgetting_first": "first-after-learning convention (Avalanche): mean_{j<T-1} R[j, j] - R[T-1, j]",
    "plasticity": "mean_j R[j, j]: accuracy on each experience right after learning it",
    "avg_incremental_acc": "mean_i mean_{j<=i} R[i, j]: average incremental accuracy (iCaRL)",
    "intransigence": "mean_k (R_joint[k, k] - R[k, k]) against the joint run (Chaudhry et al. 2018)",
}


@dataclass
class Reevaluation:
    """Rows of the accuracy matrix scored again from checkpoints; `problems` names checkpoints that could not be."""

    rows: dict[int, np.ndarray] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def run_metrics(run: Run, joint: Run | None = None) -> dict[str, float]:
    """All metrics over the finished k x k block; fwt is nan without the `init` row, intransigence needs `joint`."""
    R = run.square()
    k = R.shape[0]
    if k == 0:
        return {}
    b = run.baseline[:k] if run.baseline is not None else None
    R_joint = joint.matrix[:k, :k] if joint is not None and joint.rows_done >= k else None
    summary = metrics.summarize(R, b if b is not None else np.zeros(k), R_joint)
    if b is None:
        summary["fwt"] = float("nan")
    return summary


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def write_report(
    run_dir: str | Path, *, joint_dir: str | Path | None = None, reevaluation: Reevaluation | None = None
) -> Path:
    """Write report.md, report.html and the PNGs into `run_dir`; returns the path of report.md."""
    run = load_run(run_dir)
    joint = load_run(joint_dir) if joint_dir is not None else None
    document = build_document(run, joint, reevaluation)
    markdown_path = run.path / REPORT_MD
    markdown_path.write_text(document.to_markdown(run.path))
    (run.path / REPORT_HTML).write_text(document.to_html())
    return markdown_path


def build_document(run: Run, joint: Run | None, reevaluation: Reevaluation | None) -> Document:
    T, k = run.num_experiences, run.rows_done
    document = Document(f"somna run {run.name}")
    document.bullets(
        [
            f"learner: {run.get('learner.name', '?')}",
            f"curriculum: {run.get('curriculum.name', '?')} ({run.get('scenario', '?')}-incremental, {T} experiences)",
            f"seed: {run.get('seed', '?')}",
            "status: complete" if run.complete else f"status: partial ({k} of {T} experiences finished; metrics over those {k})",
        ]
    )
    _add_metrics(document, run, joint)
    if k:
        _add_matrix(document, run)
        _add_per_experience(document, run)
        _add_language_metrics(document, run)
        _add_skills(document, run)
        _add_phase_metrics(document, run)
    if reevaluation is not None:
        _add_reevaluation(document, run, reevaluation)
    dreams = read_dreams(run.path)
    _add_dreams(document, dreams)
    problems = run.warnings + dreams.warnings + [p for c in run.checkpoints() if (p := c.problem())]
    if problems:
        document.heading("Warnings")
        document.bullets(problems)
    document.heading("Config")
    document.code(yaml.safe_dump(run.config, sort_keys=False), "yaml")
    return document


def _add_metrics(document: Document, run: Run, joint: Run | None) -> None:
    document.heading("Metrics")
    values = run_metrics(run, joint)
    if not values:
        document.text("No experience finished yet: nothing to score.")
        return
    rows = [[name, fmt(value), METRIC_MEANINGS[name]] for name, value in values.items()]
    document.table(Table(["metric", "value", "definition"], rows))
    if joint is None:
        document.text("intransigence needs a joint reference run (somna eval RUN_DIR --joint JOINT_RUN_DIR).")


def _add_matrix(document: Document, run: Run) -> None:
    document.heading("Accuracy matrix")
    document.text("R[i, j]: accuracy on experience j (columns) after training on experience i (rows); init = before training.")
    headers = ["row"] + [str(j) for j in range(run.num_experiences)]
    rows = [] if run.baseline is None else [["init"] + [fmt(v) for v in run.baseline]]
    rows += [[str(i)] + [fmt(v) for v in row] for i, row in enumerate(run.matrix)]
    document.table(Table(headers, rows, bold={(r + (run.baseline is not None), r + 1) for r in range(run.rows_done)}))
    heatmap = plots.accuracy_heatmap(run.matrix, run.baseline, run.path / HEATMAP_PNG, f"{run.name}: accuracy matrix")
    document.image(heatmap, "accuracy matrix heatmap")
    curves = plots.experience_curves(run.matrix, run.baseline, run.path / CURVES_PNG, f"{run.name}: accuracy per experience over time")
    document.image(curves, "accuracy per experience over time")


def _add_per_experience(document: Document, run: Run) -> None:
    k = run.rows_done
    b = run.baseline[:k] if run.baseline is not None else np.full(k, np.nan)
    document.heading("Per experience")
    rows = metrics.per_experience(run.square(), b)
    keys = list(rows[0])
    document.table(Table(keys, [[str(row["experience"])] + [fmt(row[key]) for key in keys[1:]] for row in rows]))


def _add_language_metrics(document: Document, run: Run) -> None:
    for key, label in LANGUAGE_METRICS.items():
        values = run.eval_metric(key)
        if values is None:
            continue
        document.heading(f"Per-experience {label}")
        headers = ["row"] + [str(j) for j in range(run.num_experiences)]
        document.table(Table(headers, [[str(i)] + [fmt(v) for v in row] for i, row in enumerate(values)]))
        curves = plots.experience_curves(values, None, run.path / f"{key}_curves.png", f"{run.name}: {label}", ylabel=key)
        document.image(curves, f"{label} per experience over time")


def _add_skills(document: Document, run: Run) -> None:
    """The base's own skills on its held-out probes, before the stream and after each experience, and their retention."""
    rows = skill_rows(run.events)
    if not rows:
        return
    skills = sorted({skill for values in rows.values() for skill in values})
    document.heading("Skills of the base")
    document.text(
        "Exact match on the base's held-out probes (in_context_qa: reading a passage about unseen people; "
        "closed_book_qa_world: recalling its pretraining world); skill retention = final / before the stream."
    )
    table = [["init" if i == BASELINE else str(i)] + [fmt(values.get(skill, math.nan)) for skill in skills] for i, values in sorted(rows.items())]
    retention = metrics.skill_retention(rows, BASELINE)
    table.append(["retention"] + [fmt(retention.get(f"skill_retention/{skill}", math.nan)) for skill in skills])
    document.table(Table(["row", *skills], table))
    if "skill_retention" in retention:
        document.text(f"skill_retention (mean over skills): {fmt(retention['skill_retention'])}")


def phase_metrics(events: list[dict], phase: str) -> dict[str, dict[int, dict[str, float]]]:
    """group -> experience -> metric -> value for a phase's events; a sleep metric `stage/key` is grouped by its stage."""
    groups: dict[str, dict[int, dict[str, float]]] = {}
    for event in events:
        if event["event"] != phase or not isinstance(event.get("metrics"), dict):
            continue
        for key, value in event["metrics"].items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            group, _, name = key.partition("/") if phase == "sleep" and "/" in key else (phase, "", key)
            groups.setdefault(group, {}).setdefault(event["experience"], {})[name] = float(value)
    return groups


def _add_phase_metrics(document: Document, run: Run) -> None:
    """Every number wake and each sleep stage logged (metrics.jsonl), per experience: a plugin stage's included."""
    stages = list(run.get("learner.sleep.stages", []) or [])
    for phase in ("wake", "sleep"):
        groups = phase_metrics(run.events, phase)
        for group in sorted(groups, key=lambda g: (stages.index(g) if g in stages else len(stages), g)):  # in the order they ran
            by_experience = groups[group]
            document.heading(f"{phase.capitalize()}: {group}" if group != phase else phase.capitalize())
            keys = list(dict.fromkeys(key for values in by_experience.values() for key in values))
            rows = [[str(i)] + [_number(values.get(key)) for key in keys] for i, values in sorted(by_experience.items())]
            document.table(Table(["experience", *keys], rows))


def _number(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4g}"


def _add_reevaluation(document: Document, run: Run, reevaluation: Reevaluation) -> None:
    document.heading("Re-evaluation from checkpoints")
    rows = []
    for i, recomputed in sorted(reevaluation.rows.items()):
        stored = run.matrix[i] if i < run.rows_done else None
        difference = fmt(float(np.abs(stored - recomputed).max()), 4) if stored is not None else "n/a (row not stored)"
        rows.append([str(i), " ".join(fmt(v) for v in recomputed), difference])
    document.table(Table(["after experience", "recomputed row", "max abs(stored - recomputed)"], rows))
    if reevaluation.problems:
        document.text("Checkpoints that could not be re-evaluated:")
        document.bullets(reevaluation.problems)


def _add_dreams(document: Document, dreams: RunDreams) -> None:
    """Per experience, the best and worst rewarded dreams (ordering: evals/dreams.py), so a reader sees what sleep rehearsed."""
    if not dreams.experiences:
        return
    document.heading("Dreams")
    document.text(
        f"Per experience, the {DREAMS_SHOWN} best and {DREAMS_SHOWN} worst of the kept dreams (those given a LoRA trial), "
        "ranked by reward, then improvement of tau, then gradient score; the full texts are in artifacts/exp-NNNN/dreams.jsonl. "
        "Grounded: a QA dream whose answer is words of the passage it was dreamed from."
    )
    headers = ["rank", "round", "reward", "improvement", "gradient score", "dream"]
    for experience in dreams.experiences:
        counts = experience.counts()
        document.text(
            f"Experience {experience.experience}: {counts['generated']} generated ({counts['grounded']} grounded), {counts['kept']} kept, "
            f"{counts['rewarded']} rewarded ({counts['rewarded_grounded']} grounded)."
        )
        best, worst = experience.best_and_worst(DREAMS_SHOWN)
        rows = [[f"best {i + 1}", *_dream_cells(d)] for i, d in enumerate(best)]
        rows += [[f"worst {i + 1}", *_dream_cells(d)] for i, d in enumerate(worst)]
        if rows:
            document.table(Table(headers, rows, free_text={len(headers) - 1}))


def _dream_cells(dream: Dream) -> list[str]:
    return [str(dream.round), fmt(dream.reward, 0), fmt(dream.improvement, 4), fmt(dream.score, 4), shorten(dream.text)]
