"""The README's promises: its learner example runs as printed, and its commands are the CI's."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

from helpers import fast_config

from somna.platform.config import load_config
from somna.platform.registry import LEARNERS
from somna.platform.runner import run

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python_block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_add_a_learner_example_runs_and_beats_finetune(tmp_path):
    code = _python_block_after("## Add a learner")
    assert len(code.strip().splitlines()) <= 45  # the class itself is under 30 lines
    if "ncm" not in LEARNERS:
        module = types.ModuleType("readme_ncm")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(code, "README.md", "exec"), module.__dict__)
    ncm = run(load_config("split-digits", ["executor=inline", "learner=ncm"]), tmp_path / "ncm")
    finetune = run(fast_config("executor=inline"), tmp_path / "finetune")
    assert ncm["acc"] > 0.8 > finetune["acc"] + 0.3
    assert ncm["bwt"] > -0.1


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    ci = (ROOT / ".ci" / "run").read_text()
    install = re.search(r"## Install and run the demo.*?```bash\n(.*?)\n```", README, re.S).group(1)
    tests = re.search(r"## Run the tests.*?```bash\n(.*?)\n```", README, re.S).group(1)
    assert install in ci and tests in ci


def test_readme_tables_are_the_generated_files():
    sys.path.insert(0, str(ROOT / "docs" / "scripts"))
    from sync_readme import content, includes

    blocks = includes(README)
    assert blocks, "README has no generated tables"
    for reference, body in blocks:
        assert body == content(reference), f"README copy of {reference} is stale: run docs/scripts/sync_readme.py"
