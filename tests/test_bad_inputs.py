"""The bad-input catalog: every way a user can get it wrong ends in one line, the right exit code, and files left as they were.

Each case runs one `somna` command in a fresh folder holding an unrelated
folder of notes and, when the case needs one, a finished run directory
(damaged the way the case says). It asserts the exit code (2: the input is
wrong; 1: the machine is; 0 for the few that succeed with one warning), a
single stderr line with no traceback, and that every file and folder present
before the command is still there, unchanged, with nothing new beside them
(outputs a case asks for go to `out/`). Most cases call `somna.platform.cli.main`
in this process; a few run a real `python -m somna.platform.cli` process.
Faults of the machine (a full disk, a read-only folder) are simulated with
monkeypatch, since the tests may run as root. Ray's own faults are in
tests/test_ray_isolation.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml
from helpers import fast_config
from safetensors.torch import load_file, save
from test_evals_rundir import B3, R3, write_run

from somna.platform.cli import main
from somna.platform.errors import EXIT_ENVIRONMENT, EXIT_INPUT
from somna.platform.runner import run

FAST = ("learner.hidden=[32]", "learner.epochs=1", "executor=inline", "logging.progress=false")
OUT = "out"  # the one folder a case may write into
Setup = Callable[[Path, pytest.MonkeyPatch], None]


@dataclass(frozen=True)
class Case:
    category: str
    name: str
    argv: tuple[str, ...]
    fragment: str  # what the one line must say
    code: int = EXIT_INPUT
    setup: tuple[Setup, ...] = ()
    process: bool = False  # a real `python -m somna.platform.cli` process
    env: dict[str, str] = field(default_factory=dict)  # for a process

    @property
    def id(self) -> str:
        return f"{self.category}:{self.name}"


# -- what a case starts from -----------------------------------------------------------------------
def finished_run(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A finished split-digits run at ./run (copied from the module's one real run)."""
    shutil.copytree(FINISHED["path"], workspace / "run")


def file(name: str, text: str | bytes) -> Setup:
    """Write `name` (relative to the workspace; `run/...` is inside the run directory)."""

    def write(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = workspace / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())

    return write


def removed(name: str) -> Setup:
    return lambda workspace, monkeypatch: (workspace / name).unlink()


def edited_config(key: str, value: object) -> Setup:
    """run/config.yaml with one dotted key changed, as a user would edit it."""

    def edit(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        path = workspace / "run" / "config.yaml"
        config = yaml.safe_load(path.read_text())
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
        path.write_text(yaml.safe_dump(config))

    return edit


def rewritten_checkpoint(change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> Setup:
    """The last checkpoint's tensors changed, with a matching sha256 (so only its contents are wrong)."""

    def rewrite(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        tensors = workspace / "run" / "checkpoints" / "exp-0004.safetensors"
        data = save(change(load_file(tensors)))
        tensors.write_bytes(data)
        meta = tensors.with_suffix(".json")
        meta.write_text(json.dumps(json.loads(meta.read_text()) | {"sha256": hashlib.sha256(data).hexdigest()}))

    return rewrite


def renamed_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"other.{name}": tensor for name, tensor in state.items()}


def reshaped_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(3, *tensor.shape) for name, tensor in state.items()}


def synthetic_run(name: str, **options: object) -> Setup:
    """A 3-experience run directory written directly (tests/test_evals_rundir.py), for compare."""
    return lambda workspace, monkeypatch: write_run(workspace / name, R3, B3, **options)


def failing_writes(code: int) -> Setup:
    """Every atomic file write of the run directory fails with this errno (a full disk, a read-only folder)."""

    def fail(path: Path, data: bytes) -> None:
        raise OSError(code, os.strerror(code), str(path))

    return lambda workspace, monkeypatch: monkeypatch.setattr("somna.platform.rundir.atomic_write", fail)


def unwritable_folders(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("somna.platform.launch.os.access", lambda path, mode: False)


RUN = (finished_run,)
NOT_A_DATASET = file("empty-dataset/.keep", "")
TAGGED_YAML = "seed: !!python/object/apply:os.system [echo owned]\n"
BROKEN_YAML = "seed: 1\nlearner: [1, 2\n"

CASES = [
    # -- config: keys, names, values, YAML ---------------------------------------------------------
    Case("config", "unknown-learner", ("run", "split-digits", "learner=nope"), "unknown learner 'nope'; choose one of:"),
    Case("config", "unknown-learner-process", ("run", "split-digits", "learner=nope"), "unknown learner 'nope'", process=True),
    Case("config", "unknown-key", ("run", "split-digits", "lerner=replay"), "unknown key 'lerner'; valid keys here:"),
    Case("config", "unknown-learner-key", ("run", "split-digits", "learner=replay", "learner.bufer=3"), "valid keys here: batch_size, buffer"),
    Case("config", "unknown-curriculum", ("run", "split-digits", "curriculum=nope"), "unknown curriculum 'nope'"),
    Case("config", "unknown-preset", ("run", "no-such-preset"), "unknown preset or curriculum 'no-such-preset'"),
    Case("config", "missing-file", ("run", "missing.yaml"), "config file not found: missing.yaml"),
    Case("config", "yaml-syntax", ("run", "bad.yaml"), "bad.yaml is not valid YAML (line 3, column 1", setup=(file("bad.yaml", BROKEN_YAML),)),
    Case("config", "yaml-syntax-process", ("run", "bad.yaml"), "bad.yaml is not valid YAML (line 3", setup=(file("bad.yaml", BROKEN_YAML),), process=True),
    Case("config", "yaml-python-tag", ("run", "tagged.yaml"), "could not determine a constructor", setup=(file("tagged.yaml", TAGGED_YAML),)),
    Case("config", "yaml-not-a-mapping", ("run", "list.yaml"), "must be a YAML mapping", setup=(file("list.yaml", "- 1\n- 2\n"),)),
    Case("config", "yaml-group-not-a-mapping", ("run", "group.yaml"), "preset learner must be a mapping",
         setup=(file("group.yaml", "curriculum: {name: split-digits}\nlearner: replay\n"),)),
    Case("config", "override-without-value", ("run", "split-digits", "novalue"), "override 'novalue' must look like key=value"),
    Case("config", "override-unclosed-list", ("run", "split-digits", "learner.hidden=[32"), "bad override 'learner.hidden=[32'"),
    Case("config", "wrong-type", ("run", "split-digits", "learner.epochs=x"), "bad value for 'learner.epochs'"),
    Case("config", "lr-inf", ("run", "split-digits", "learner.lr=inf"), "'learner.lr': must be a finite number, got inf"),
    Case("config", "lr-nan", ("run", "split-digits", "learner.lr=nan"), "'learner.lr': must be a finite number, got nan"),
    Case("config", "lr-zero", ("run", "split-digits", "learner.lr=0"), "'learner.lr': a learning rate must be > 0"),
    Case("config", "lr-negative", ("run", "split-digits", "learner=replay", "learner.lr=-0.1"), "a learning rate must be > 0"),
    Case("config", "seed-negative", ("run", "split-digits", "seed=-1"), "'seed': must be between 0 and 4294967295, got -1"),
    Case("config", "seed-too-large", ("run", "split-digits", "seed=4294967296"), "'seed': must be between 0 and"),
    Case("config", "scenario", ("run", "split-digits", "scenario=domain"), "split-digits supports class, task"),
    Case("config", "executor", ("run", "split-digits", "executor=spark"), "choose one of ray, inline"),
    Case("config", "wake-cpus", ("run", "split-digits", "resources.wake.num_cpus=0"), "'resources.wake.num_cpus': must be > 0"),
    Case("config", "threads", ("run", "split-digits", "resources.threads=0"), "'resources.threads': must be > 0"),
    Case("config", "ray-cpus", ("run", "split-digits", "ray.num_cpus=0"), "'ray.num_cpus': must be >= 1"),
    Case("config", "ray-cpus-too-few", ("run", "split-digits", "ray.num_cpus=1"), "need 2 CPUs at once, got 1"),
    Case("config", "dashboard-host", ("run", "split-digits", "ray.dashboard=true", "ray.dashboard_host=0.0.0.0"),
         "the embedded Ray serves on 127.0.0.1 only"),
    Case("config", "actor-restarts", ("run", "split-digits", "max_actor_restarts=-1"), "'max_actor_restarts': must be >= 0"),
    Case("config", "epochs", ("run", "split-digits", "learner.epochs=-1"), "learner.epochs must be >= 1"),
    Case("config", "batch-size", ("run", "split-digits", "learner.batch_size=0"), "learner.batch_size must be >= 1"),
    Case("config", "optimizer", ("run", "split-digits", "learner.optimizer=nope"), "'learner.optimizer': choose one of adam"),
    Case("config", "hidden-zero", ("run", "split-digits", "learner.hidden=[0]"), "hidden layer sizes must be >= 1"),
    Case("config", "hidden-too-wide", ("run", "split-digits", "learner.hidden=[1000000000000]"), "GiB of memory available"),
    Case("config", "buffer-too-large", ("run", "split-digits", "learner=replay", "learner.buffer=1000000000000"),
         "learner 'replay' needs"),
    Case("config", "buffer-negative", ("run", "split-digits", "learner=replay", "learner.buffer=-1"), "learner.buffer must be >= 0"),
    Case("config", "too-many-experiences", ("run", "permuted-digits", "curriculum.num_experiences=1000000000"),
         "'curriculum.num_experiences': at most 1000"),
    Case("config", "no-experiences", ("run", "permuted-digits", "curriculum.num_experiences=0"), "num_experiences must be >= 1"),
    Case("config", "experiences-not-dividing", ("run", "split-digits", "curriculum.num_experiences=3"), "must divide 10"),
    Case("config", "sleep-workers-inline", ("run", "split-digits", "resources.sleep.workers=1", "executor=inline"), "needs executor=ray"),
    Case("config", "sleep-workers-negative", ("run", "split-digits", "resources.sleep.workers=-1"), "must be >= 0"),
    Case("config", "config-command", ("config", "split-digits", "lerner=x"), "unknown key 'lerner'"),
    Case("config", "sweep-axis", ("sweep", "split-digits", "learner=nope,replay", "--out", OUT), "unknown learner 'nope'"),
    Case("config", "sweep-argument", ("sweep", "split-digits", "novalue", "--out", OUT), "expected key=value or key=a,b,c"),
    Case("config", "pretrain-unknown-preset", ("pretrain", "wrld"), "unknown pretrain preset 'wrld'; presets: world, world-deltanet, world-micro"),
    Case("config", "pretrain-unknown-key", ("pretrain", "world-micro", "train.stepz=3", "--out", OUT), "unknown key 'train.stepz'"),
    Case("config", "pretrain-out-not-empty", ("pretrain", "world-micro", "--out", "notes"), "--out notes already exists and is not empty"),
    Case("config", "fast-memory-unknown", ("run", "fact-stream-micro", "learner.fast_memory=weights"), "bad value for 'learner.fast_memory': Invalid value 'weights', expected one of [cms, context, kernel]"),
    Case("config", "base-missing-path", ("run", "fact-stream-micro", "learner.model.base=./no-such-base"), "./no-such-base does not exist"),
    Case("config", "base-not-on-hub-offline", ("run", "fact-stream-micro", "learner.model.base=someone/model"), "cannot load 'someone/model'"),
    Case("config", "base-damaged", ("run", "fact-stream-micro", "learner.model.base=base"), "skills.json missing or changed since `somna pretrain`",
         setup=(file("base/skills.json", "{}"), file("base/manifest.json", "{}"))),
    Case("config", "sweep-variants-file", ("sweep", "split-digits", "--variants", "none.yaml", "--out", OUT), "variants file not found"),
    # -- sleep stages: names, options, the hooks a learner has ----------------------------------------
    Case("stages", "unknown-stage", ("run", "split-digits", "learner.sleep.stages=[nap]"), "unknown sleep stage 'nap'"),
    Case("stages", "option-typo", ("run", "split-digits-sleep", "learner.sleep.options.dreaming.stepz=3"),
         "unknown option(s) stepz; valid: generator_steps, steps"),
    Case("stages", "option-wrong-type", ("run", "split-digits-sleep", "learner.sleep.options.dreaming.steps=many"),
         "bad value for 'learner.sleep.options.dreaming.steps'"),
    Case("stages", "option-not-finite", ("run", "split-digits-sleep", "learner.sleep.options.knowledge-seeding.lr=inf"),
         "'learner.sleep.options.knowledge-seeding.lr': must be a finite number"),
    Case("stages", "option-negative-count", ("run", "fact-stream-micro", "learner.sleep.options.knowledge-seeding.rehearse_questions=-1"),
         "learner.sleep.options.knowledge-seeding.rehearse_questions must be >= 0, got -1"),
    Case("stages", "router-loss-without-expansion", ("run", "fact-stream-micro", "learner.sleep.options.knowledge-seeding.route_weight=1.0", "learner.sleep.stages=[knowledge-seeding]"),
         "route_weight trains a new expert's router: it needs expansion in learner.sleep.stages"),
    Case("stages", "router-rows-unknown", ("run", "fact-stream-micro", "learner.sleep.options.knowledge-seeding.route_on=answers"),
         "learner.sleep.options.knowledge-seeding.route_on must be one of all, questions, got 'answers'"),
    Case("stages", "options-of-absent-stage", ("run", "split-digits", "learner.sleep.options.dreaming.steps=3"),
         "options for stages not in learner.sleep.stages: dreaming"),
    Case("stages", "learner-lacks-hooks", ("run", "split-digits", "learner.sleep.stages=[dreaming]"),
         "sleep stage 'dreaming' needs learner.network"),
    Case("stages", "expansion-lacks-hooks", ("run", "split-digits", "learner=replay", "learner.sleep.stages=[expansion]"),
         "which ReplayLearner does not have"),
    Case("stages", "workers-not-data-parallel", ("run", "split-digits", "resources.sleep.workers=1"), "cannot sleep on Ray Train workers"),
    # -- data: what the curriculum reads ----------------------------------------------------------------
    Case("data", "test-fraction", ("run", "split-digits", "curriculum.test_fraction=1.5"), "test_size"),
    Case("data", "hf-dataset-not-a-dataset", ("run", "fact-stream", "curriculum.hf_dataset=empty-dataset"),
         "is neither a `Dataset` directory nor a `DatasetDict` directory", setup=(NOT_A_DATASET,)),
    Case("data", "hf-dataset-offline", ("run", "fact-stream", "curriculum.hf_dataset=someone/facts"),
         "cannot load the data of curriculum 'fact-stream': network unreachable", code=EXIT_ENVIRONMENT,
         process=True, env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}),
    # -- run directory: what --out names ------------------------------------------------------------------
    Case("rundir", "exists", ("run", "split-digits", *FAST, "--out", "run"), "run directory run already exists", setup=RUN),
    Case("rundir", "resume-with-another-config", ("run", "split-digits", *FAST, "seed=5", "--out", "run", "--resume"),
         "its config.yaml differs from the given config", setup=RUN),
    Case("rundir", "overwrite-not-a-run", ("run", "split-digits", "--out", "notes", "--overwrite"), "it is not a somna run directory"),
    Case("rundir", "overwrite-current-directory", ("run", "split-digits", "--out", ".", "--overwrite"), "it is the current directory"),
    Case("rundir", "overwrite-parent", ("run", "split-digits", "--out", "..", "--overwrite"), "or one of its parents"),
    Case("rundir", "overwrite-and-resume", ("run", "split-digits", "--overwrite", "--resume"), "not allowed with argument"),
    Case("rundir", "out-inside-a-file", ("run", "split-digits", "--out", "notes/thesis.tex/run"), "notes/thesis.tex is a file, not a folder"),
    # -- environment: the machine, simulated ------------------------------------------------------------------
    Case("environment", "read-only-out", ("run", "split-digits", *FAST, "--out", "new-run"), "is not writable",
         code=EXIT_ENVIRONMENT, setup=(unwritable_folders,)),
    Case("environment", "disk-full-at-start", ("run", "split-digits", *FAST, "--out", "new-run"),
         "cannot write run directory new-run (new-run/config.yaml): no space left on device; free some space, then run it again",
         code=EXIT_ENVIRONMENT, setup=(failing_writes(errno.ENOSPC),)),
    Case("environment", "permission-denied", ("run", "split-digits", *FAST, "--out", "new-run"), "permission denied; choose a location",
         code=EXIT_ENVIRONMENT, setup=(failing_writes(errno.EACCES),)),
    Case("environment", "read-only-file-system", ("run", "split-digits", *FAST, "--out", "new-run"), "read-only file system",
         code=EXIT_ENVIRONMENT, setup=(failing_writes(errno.EROFS),)),
    Case("environment", "resume-disk-full", ("resume", "run"), "no space left on device; free some space, then continue with `somna resume run`",
         code=EXIT_ENVIRONMENT, setup=(*RUN, failing_writes(errno.ENOSPC))),
    Case("environment", "compare-out-is-a-file", ("compare", "a", "--out", "notes/thesis.tex"), "somna compare (notes/thesis.tex)",
         code=EXIT_ENVIRONMENT, setup=(synthetic_run("a"),)),
    # -- resume and eval: a run directory someone changed -----------------------------------------------------
    Case("resume", "nothing-there", ("resume", "nowhere"), "cannot resume nowhere: no config.yaml there"),
    Case("resume", "no-config", ("resume", "run"), "cannot resume run: no config.yaml there", setup=(*RUN, removed("run/config.yaml"))),
    Case("resume", "broken-yaml", ("resume", "run"), "run/config.yaml is not valid YAML (line 3, column 1",
         setup=(*RUN, file("run/config.yaml", BROKEN_YAML))),
    Case("resume", "python-tag", ("resume", "run"), "could not determine a constructor for the tag",
         setup=(*RUN, file("run/config.yaml", TAGGED_YAML))),
    Case("resume", "not-a-mapping", ("resume", "run"), "must be a YAML mapping", setup=(*RUN, file("run/config.yaml", "[1, 2]\n"))),
    Case("resume", "empty-config", ("resume", "run"), "no curriculum given", setup=(*RUN, file("run/config.yaml", ""))),
    Case("resume", "edited-seed", ("resume", "run"), "its config.yaml was edited after the run started", setup=(*RUN, edited_config("seed", 3))),
    Case("resume", "edited-lr", ("resume", "run"), "was edited after the run started", setup=(*RUN, edited_config("learner.lr", 0.5))),
    Case("resume", "edited-lr-process", ("resume", "run"), "was edited after the run started",
         setup=(*RUN, edited_config("learner.lr", 0.5)), process=True),
    Case("resume", "edited-to-invalid", ("resume", "run"), "'learner.lr': must be a finite number",
         setup=(*RUN, edited_config("learner.lr", float("inf")))),
    Case("resume", "checkpoint-of-another-learner", ("resume", "run"), "exp-0004.safetensors: does not fit learner 'finetune'",
         setup=(*RUN, rewritten_checkpoint(renamed_tensors))),
    Case("resume", "checkpoint-wrong-shapes", ("resume", "run"), "does not fit learner 'finetune' (Error(s) in loading state_dict",
         setup=(*RUN, rewritten_checkpoint(reshaped_tensors))),
    Case("resume", "uri-with-nothing", ("resume", "file:///nonexistent/somna-run"), "cannot resume file:///nonexistent/somna-run: nothing there"),
    Case("eval", "not-a-run", ("eval", "notes"), "run directory 'notes' has no config.yaml"),
    Case("eval", "a-file", ("eval", "notes/thesis.tex"), "has no config.yaml"),
    Case("eval", "broken-yaml", ("eval", "run"), "run/config.yaml is not valid YAML (line 3, column 1",
         setup=(*RUN, file("run/config.yaml", BROKEN_YAML))),
    Case("eval", "python-tag", ("eval", "run"), "could not determine a constructor", setup=(*RUN, file("run/config.yaml", TAGGED_YAML))),
    Case("eval", "not-a-mapping", ("eval", "run"), "must be a YAML mapping of config keys, got list", setup=(*RUN, file("run/config.yaml", "[1]\n"))),
    Case("eval", "binary-config", ("eval", "run"), "run/config.yaml is not text", setup=(*RUN, file("run/config.yaml", b"\xff\xfe\x00garbage"))),
    Case("eval", "joint-not-a-run", ("eval", "run", "--joint", "notes"), "run directory 'notes' has no config.yaml", setup=RUN),
    Case("eval", "reevaluate-unknown-learner", ("eval", "run", "--reevaluate"), "unknown learner 'gone'",
         setup=(*RUN, edited_config("learner.name", "gone"))),
    # -- compare: what it reads and how it groups ---------------------------------------------------------------
    Case("compare", "matches-nothing", ("compare", "nothing-*"), "pattern 'nothing-*' matches nothing"),
    Case("compare", "matches-nothing-process", ("compare", "nothing-*"), "matches nothing", process=True),
    Case("compare", "a-file", ("compare", "notes/thesis.tex"), "is not a run directory, a folder of runs or a glob"),
    Case("compare", "only-partial", ("compare", "p", "--out", OUT), "no complete run to compare (p: partial (1 of 3 experiences))",
         setup=(synthetic_run("p", rows_done=1),)),
    Case("compare", "empty-by", ("compare", "a", "--by", ",", "--out", OUT), "--by ',' names no config key", setup=(synthetic_run("a"),)),
    Case("compare", "garbage-summary", ("compare", "a", "b", "--out", OUT), "skipped b: no readable summary.json", code=0,
         setup=(synthetic_run("a"), synthetic_run("b"), file("b/summary.json", b"\x00\xffnot json"))),
    Case("compare", "broken-config", ("compare", "a", "b", "--out", OUT), "skipped b/config.yaml is not valid YAML (line 3", code=0,
         setup=(synthetic_run("a"), synthetic_run("b"), file("b/config.yaml", BROKEN_YAML))),
    Case("compare", "no-matrix", ("compare", "a", "b", "--out", OUT), "skipped b: no accuracy matrix", code=0,
         setup=(synthetic_run("a"), file("b/config.yaml", "seed: 0\n"))),
    # -- the command line itself ----------------------------------------------------------------------------------
    Case("cli", "no-command", (), "the following arguments are required: COMMAND"),
    Case("cli", "unknown-command", ("fly",), "invalid choice: 'fly'"),
    Case("cli", "run-without-config", ("run",), "the following arguments are required: config"),
    Case("cli", "unknown-option", ("run", "split-digits", "--bogus"), "unrecognized arguments: --bogus"),
    Case("cli", "unknown-benchmark", ("bench", "nope"), "invalid choice: 'nope'"),
]

FINISHED: dict[str, Path] = {}


@pytest.fixture(scope="module", autouse=True)
def one_finished_run(tmp_path_factory):
    """The real run every `run`-based case copies (about a second inline)."""
    FINISHED["path"] = tmp_path_factory.mktemp("finished") / "run"
    run(fast_config("executor=inline"), FINISHED["path"])


def snapshot(root: Path) -> dict[str, str]:
    """Every file (by sha256) and folder under `root`, except the outputs folder."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
        for path in sorted(root.rglob("*"))
        if path.relative_to(root).parts[0] != OUT
    }


def run_command(case: Case, workspace: Path, capsys: pytest.CaptureFixture) -> tuple[int, str]:
    if case.process:
        result = subprocess.run([sys.executable, "-m", "somna.platform.cli", *case.argv], cwd=workspace,
                                env=os.environ | case.env, capture_output=True, text=True, timeout=300)
        return result.returncode, result.stderr
    try:
        code = main(list(case.argv))
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    return code, capsys.readouterr().err


def test_the_catalog_covers_every_category_with_60_cases():
    assert len(CASES) >= 60 and len({case.id for case in CASES}) == len(CASES)
    assert {case.category for case in CASES} == {"config", "stages", "data", "rundir", "environment", "resume", "eval", "compare", "cli"}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_bad_input_is_one_line_and_leaves_files_alone(case, tmp_path, monkeypatch, capsys):
    workspace = tmp_path / "workspace"
    (workspace / "notes").mkdir(parents=True)
    (workspace / "notes" / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(workspace)
    for step in case.setup:
        step(workspace, monkeypatch)
    before = snapshot(workspace)
    code, stderr = run_command(case, workspace, capsys)
    lines = stderr.strip().splitlines()
    assert code == case.code, stderr
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("somna") and (" warning: " if case.code == 0 else " error: ") in lines[0], lines[0]
    assert case.fragment in lines[0], lines[0]
    assert snapshot(workspace) == before
