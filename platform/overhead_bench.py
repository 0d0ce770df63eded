"""`somna bench overhead`: the same split-digits run with the Ray executor and inline, side by side.

Reports end-to-end wall time of each (Ray's includes starting and stopping the
embedded cluster), their ratio, and where the difference goes, phase by phase,
from the runs' own metrics.jsonl timings.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from pathlib import Path

from somna.platform import runner
from somna.platform.config import load_config
from somna.platform.rundir import RunDirectory

PHASES = ("baseline_eval", "wake", "sleep", "eval")


def _phase_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds per phase; eval events repeat their row's wall time once per target, so count rows."""
    totals: dict[str, float] = defaultdict(float)
    seen_rows: set[tuple[str, int]] = set()
    for event in RunDirectory(run_dir).read_events():
        kind = event["event"]
        if kind not in PHASES:
            continue
        if kind in ("eval", "baseline_eval"):
            if (kind, event["experience"]) in seen_rows:
                continue
            seen_rows.add((kind, event["experience"]))
        totals[kind] += event.get("wall_s", 0.0)
    return totals


def _timed_run(overrides: list[str], run_dir: Path) -> tuple[float, dict[str, float], dict]:
    cfg = load_config("split-digits", [*overrides, "logging.progress=false"])
    started = time.perf_counter()
    summary = runner.run(cfg, run_dir)
    return time.perf_counter() - started, _phase_seconds(run_dir), summary


WORKLOADS = {
    "demo (finetune, 5 epochs)": [],
    "longer (replay, MLP 64-1024-1024-10, 30 epochs)": ["learner=replay", "learner.epochs=30", "learner.hidden=[1024,1024]"],
}


def _row(name: str, overrides: list[str], folder: Path) -> str:
    inline_s, inline_phases, inline_summary = _timed_run(["executor=inline", *overrides], folder / "inline")
    ray_s, ray_phases, ray_summary = _timed_run(["executor=ray", *overrides], folder / "ray")
    experiences = inline_summary["num_experiences"]
    per_experience = sum(ray_phases.get(p, 0.0) - inline_phases.get(p, 0.0) for p in ("wake", "sleep", "eval"))
    fixed = (ray_s - inline_s) - per_experience
    same = "yes" if inline_summary == ray_summary else "NO"
    return (
        f"| {name} | {inline_s:.1f} | {ray_s:.1f} | **{ray_s / inline_s:.2f}×** | {fixed:.1f} "
        f"| {per_experience / experiences:+.2f} | {same} |"
    )


def fixed_cost_breakdown() -> list[str]:
    """Time each start-up step of the Ray executor on its own: where the fixed cost goes."""
    import ray
    from omegaconf import OmegaConf

    from somna.platform import local_ray
    from somna.platform.builders import build_curriculum
    from somna.platform.executors import LearnerHost, connect_ray, evaluate_state

    cfg = load_config("split-digits", ["executor=ray", "logging.progress=false"])
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    curriculum = build_curriculum(cfg)
    steps: list[tuple[str, float]] = []

    def timed(label: str, action) -> object:
        started = time.perf_counter()
        result = action()
        steps.append((label, time.perf_counter() - started))
        return result

    started_ray = timed("start the embedded Ray (ray.init)", lambda: connect_ray(cfg))
    actor = ray.remote(LearnerHost).remote(cfg_dict)
    state = timed("learner actor: new process, imports, curriculum, learner", lambda: ray.get(actor.state_dict.remote()))
    evaluate = ray.remote(evaluate_state)
    refs = (ray.put(curriculum.info), ray.put(state), ray.put(curriculum[0]))
    timed("first evaluation task (cold worker: imports, rebuild)", lambda: ray.get(evaluate.remote(cfg_dict, *refs)))
    timed("next evaluation task (warm worker)", lambda: ray.get(evaluate.remote(cfg_dict, *refs)))
    timed("stop the actor and Ray (ray.shutdown)", lambda: (ray.kill(actor), started_ray and local_ray.shutdown()))
    return [f"| {label} | {seconds:.2f} |" for label, seconds in steps]


def run(quick: bool = False) -> str:
    workloads = {"demo (finetune, 2 epochs)": ["learner.epochs=2"]} if quick else WORKLOADS
    with tempfile.TemporaryDirectory() as folder:
        rows = [_row(name, overrides, Path(folder) / str(i)) for i, (name, overrides) in enumerate(workloads.items())]
    breakdown = fixed_cost_breakdown()
    return "\n".join(
        [
            "### Ray executor vs inline on split-digits (5 experiences, same process, one after the other)",
            "",
            "| workload | inline s | ray s | ray / inline | fixed Ray cost s | overhead per experience s | same metrics |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            "Fixed Ray cost = starting the embedded Ray, the learner actor and the evaluation workers (each a "
            "fresh Python importing torch and somna) and shutting them down; overhead per experience = the "
            "extra wake + sleep + evaluation time of the Ray run, from both runs' metrics.jsonl timings.",
            "",
            "Where the fixed cost goes (each step timed on its own, split-digits demo config):",
            "",
            "| start-up step | s |",
            "|---|---:|",
            *breakdown,
        ]
    )
