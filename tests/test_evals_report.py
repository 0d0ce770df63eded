"""report.md / report.html from synthetic and real run directories; `somna eval`, re-evaluation, headless Chromium."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from test_evals_rundir import B3, R3, write_run

from somna.evals.report import HEATMAP_PNG, run_metrics, write_report
from somna.evals.rundir import load_run

CHROMIUM = Path("/usr/bin/chromium")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JOINT3 = np.array([[0.92, 0.0, 0.0], [0.9, 0.97, 0.0], [0.9, 0.9, 0.90]])


def test_report_from_synthetic_run(tmp_path):
    path = write_run(tmp_path / "run", R3, B3)
    joint = write_run(tmp_path / "joint", JOINT3, B3, learner="joint")
    report = write_report(path, joint_dir=joint)
    markdown = report.read_text()
    # hand-computed in test_evals_metrics: forgetting 0.35 vs forgetting_first 0.325, intransigence 0.14/3
    assert "| forgetting | 0.350 | max-previous convention" in markdown
    assert "| forgetting_first | 0.325 | first-after-learning convention (Avalanche)" in markdown
    assert "| intransigence | 0.047 |" in markdown
    assert "| 1 | 0.950 | **0.950** | 0.200 |" in markdown  # matrix row with the diagonal in bold
    assert "![accuracy matrix heatmap](accuracy_matrix.png)" in markdown
    assert "```yaml\ncurriculum:\n  name: split-digits" in markdown
    for png in ("accuracy_matrix.png", "accuracy_curves.png"):
        assert (path / png).read_bytes().startswith(PNG_MAGIC)
    html = (path / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    assert base64.b64decode(images[0].split(",", 1)[1]) == (path / HEATMAP_PNG).read_bytes()


def test_partial_run_report_and_language_metrics(tmp_path):
    exact_match = np.clip(R3 - 0.1, 0, 1)
    path = write_run(tmp_path / "run", R3, B3, rows_done=2, extra_eval={"perplexity": 5 - 4 * R3, "exact_match": exact_match})
    markdown = write_report(path).read_text()
    assert "status: partial (2 of 3 experiences finished; metrics over those 2)" in markdown
    assert f"| acc | {np.mean(R3[1, :2]):.3f} |" in markdown  # the 2x2 block after 2 experiences
    assert "## Per-experience perplexity (lower is better)" in markdown
    assert "## Per-experience exact-match recall" in markdown
    assert (path / "perplexity_curves.png").is_file() and (path / "exact_match_curves.png").is_file()


def test_run_metrics_without_baseline_leave_fwt_nan(tmp_path):
    path = write_run(tmp_path / "run", R3, B3)
    lines = (path / "accuracy_matrix.csv").read_text().splitlines()
    (path / "accuracy_matrix.csv").write_text("\n".join(line for line in lines if not line.startswith("init")) + "\n")
    values = run_metrics(load_run(path))
    assert np.isnan(values["fwt"]) and values["acc"] == pytest.approx(2.0 / 3)


def _tiny_real_run(run_dir: Path) -> None:
    from somna.platform.config import load_config
    from somna.platform.runner import run

    overrides = ["executor=inline", "learner.epochs=1", "learner.hidden=[16]", "curriculum.num_experiences=2", "logging.progress=false"]
    run(load_config("split-digits", overrides), run_dir)


def test_somna_eval_reevaluates_and_names_a_corrupt_checkpoint(tmp_path, capsys):
    from somna.platform.cli import main

    run_dir = tmp_path / "tiny"
    _tiny_real_run(run_dir)
    corrupt = run_dir / "checkpoints" / "exp-0000.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    assert main(["eval", str(run_dir), "--reevaluate"]) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {corrupt}: sha256 mismatch" in err and "row 0 not re-evaluated" in err
    markdown = (run_dir / "report.md").read_text()
    stored = load_run(run_dir).matrix[1]
    recomputed_row = f"| 1 | {' '.join(f'{v:.3f}' for v in stored)} | 0.0000 |"  # the loop's numbers, exactly
    assert recomputed_row in markdown
    assert "Checkpoints that could not be re-evaluated" in markdown and str(corrupt) in markdown


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)")
def test_report_html_renders_in_headless_chromium(tmp_path):
    path = write_run(tmp_path / "run", R3, B3)
    write_report(path)
    screenshot = tmp_path / "report.png"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
        "--hide-scrollbars", "--window-size=1200,1800", f"--screenshot={screenshot}", (path / "report.html").as_uri(),
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    pixels = imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (1800, 1200)
    colors = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colors) > 200  # text, table borders and the viridis heatmap, not a blank page
    viridis_yellow = (pixels[..., 0] > 0.8) & (pixels[..., 1] > 0.8) & (pixels[..., 2] < 0.3)
    assert viridis_yellow.sum() > 500  # the heatmap's high-accuracy cells made it onto the page
