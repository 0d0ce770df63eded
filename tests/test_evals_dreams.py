"""Dreams in the run report: best/worst ranking on hand-built dreams.jsonl, torn lines, Markdown/HTML escaping."""

from __future__ import annotations

import json
from pathlib import Path

from test_evals_rundir import B3, R3, write_run

from somna.evals.dreams import DREAMS_FILE, Dream, ExperienceDreams, distinct_texts, read_dreams, shorten
from somna.evals.rundir import ARTIFACTS_DIR
from somna.evals.report import write_report

# (name, kept, reward, improvement, gradient score); ranked by hand: A > B > C (B, C tie on reward and
# improvement, B has the larger score) > D > E; F has the largest score but was never kept, so never ranked.
EXPERIENCE_0 = [
    ("dream A", True, 1.0, 0.30, 2.0),
    ("dream B", True, 1.0, 0.10, 5.0),
    ("dream C", True, 1.0, 0.10, 1.0),
    ("dream D", True, 0.0, -0.05, 3.0),
    ("dream E", True, 0.0, -0.20, 4.0),
    ("dream F", False, 0.0, 0.0, 9.0),
]
TRICKY = "<b>bold</b> | *star* _under_\nsecond line"


def write_dreams(run: Path, experience: int, dreams: list[tuple[str, bool, float, float, float]], tail: str = "") -> None:
    folder = run / "artifacts" / f"exp-{experience:04d}"
    folder.mkdir(parents=True)
    rows = [
        {"experience": experience, "round": 0, "passage": "p", "dream": text, "score": score, "kept": kept, "reward": reward, "improvement": improvement}
        for text, kept, reward, improvement, score in dreams
    ]
    (folder / "dreams.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + tail)


def dreamed_run(tmp_path: Path) -> Path:
    run = write_run(tmp_path / "run", R3, B3, learner="sleep")
    write_dreams(run, 0, EXPERIENCE_0)
    write_dreams(run, 1, [(TRICKY, True, 1.0, 0.02, 0.5), ("plain dream", True, 0.0, -0.01, 0.7)], tail='{"experience": 1, "dre')
    (run / "artifacts" / "exp-0002").mkdir()  # a sleep without dreaming: no file, no warning
    return run


def test_best_and_worst_by_reward_then_improvement_then_score(tmp_path):
    dreams = read_dreams(dreamed_run(tmp_path))
    assert [e.experience for e in dreams.experiences] == [0, 1]
    first = dreams.experiences[0]
    assert first.counts() == {"generated": 6, "grounded": 0, "kept": 5, "rewarded": 3, "rewarded_grounded": 0}
    best, worst = first.best_and_worst(2)
    assert [d.text for d in best] == ["dream A", "dream B"]
    assert [d.text for d in worst] == ["dream E", "dream D"]
    best, worst = first.best_and_worst(3)  # only 5 ranked: worst takes what best left, worst first
    assert [d.text for d in best] == ["dream A", "dream B", "dream C"]
    assert [d.text for d in worst] == ["dream E", "dream D"]
    best, worst = dreams.experiences[1].best_and_worst(3)  # 2 ranked: split in halves, none shown twice
    assert [d.text for d in best] == [TRICKY] and [d.text for d in worst] == ["plain dream"]


def test_torn_line_skipped_and_warned(tmp_path):
    dreams = read_dreams(dreamed_run(tmp_path))
    assert dreams.experiences[1].counts() == {"generated": 2, "grounded": 0, "kept": 2, "rewarded": 1, "rewarded_grounded": 0}
    assert len(dreams.warnings) == 1 and "exp-0001/dreams.jsonl:3: unreadable dream line skipped" in dreams.warnings[0]


def test_report_shows_dreams_escaped(tmp_path):
    run = dreamed_run(tmp_path)
    markdown = write_report(run).read_text()
    assert "## Dreams" in markdown
    assert "Experience 0: 6 generated (0 grounded), 5 kept, 3 rewarded (0 grounded)." in markdown
    assert "| best 1 | 0 | 1 | 0.3000 | 2.0000 | dream A |" in markdown
    assert "| worst 1 | 0 | 0 | -0.2000 | 4.0000 | dream E |" in markdown
    assert "dream F" not in markdown
    assert "| worst 1 | 0 | 0 | -0.0100 | 0.7000 | plain dream |" in markdown
    assert r"\<b\>bold\</b\> \| \*star\* \_under\_ second line" in markdown  # one line, Markdown syntax escaped
    assert "unreadable dream line skipped" in markdown.split("## Warnings")[1]
    html = (run / "report.html").read_text()
    assert "<h2>Dreams</h2>" in html and "<td>dream A</td>" in html
    assert "&lt;b&gt;bold&lt;/b&gt; | *star* _under_ second line" in html and "<b>bold</b>" not in html


def test_no_dreams_no_section(tmp_path):
    run = write_run(tmp_path / "run", R3, B3)
    markdown = write_report(run).read_text()
    assert "Dreams" not in markdown and "Dreams" not in (run / "report.html").read_text()
    assert "## Warnings" not in markdown


def test_shorten_flattens_and_truncates():
    assert shorten("a\n  b\tc") == "a b c"
    assert shorten("x" * 200, limit=10) == "x" * 9 + "…"


def test_consolidated_dreams_are_the_last_rounds_rewarded_and_repeats_count_once():
    def dream(text: str, round_: int, kept: bool, reward: float) -> Dream:
        return Dream(0, round_, "p", text, 0.0, kept, reward, 0.0)
    sleep = ExperienceDreams(0, [
        dream("Q: a? A: x", 0, True, 1.0),  # rewarded, but in an earlier round
        dream("Q: b? A: y", 1, True, 1.0),
        dream("q: B?  a: Y.", 1, True, 1.0),  # the same dream, case and punctuation aside
        dream("Q: c? A: z", 1, True, 0.0),  # not rewarded
        dream("Q: d? A: w", 1, False, 0.0),  # never tried
    ])
    consolidated = sleep.consolidated()
    assert [d.text for d in consolidated] == ["Q: b? A: y", "q: B?  a: Y."]
    assert distinct_texts(consolidated) == 1 and ExperienceDreams(1, []).consolidated() == []


def test_consolidated_dreams_are_the_recorded_ones_when_the_file_records_them(tmp_path):
    """A stage that fits fresh dreams (`consolidate=every-passage`) marks them; neither round nor reward decides."""
    rows = [
        {"experience": 0, "round": 1, "passage": "p", "dream": "Q: b? A: y", "kept": True, "reward": 1.0, "consolidated": False},
        {"experience": 0, "round": 2, "passage": "p", "dream": "Q: e? A: v", "kept": False, "reward": 0.0, "consolidated": True},
    ]
    folder = tmp_path / ARTIFACTS_DIR / "exp-0000"
    folder.mkdir(parents=True)
    (folder / DREAMS_FILE).write_text("".join(json.dumps(row) + "\n" for row in rows))
    (sleep,) = read_dreams(tmp_path).experiences
    assert [d.text for d in sleep.consolidated()] == ["Q: e? A: v"]
