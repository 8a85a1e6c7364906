"""``speculate calibrate``: thresholds that send the asked share of prompts to the cloud."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from speculate.cli import main
from speculate.cli.calibrate import load, threshold_for
from speculate.settings import Settings

DATA = Path(__file__).resolve().parent.parent / "speculate" / "bench" / "data"


@pytest.mark.parametrize("share", [0.0, 0.1, 0.3, 0.5, 0.9, 1.0])
def test_thresholds_split_the_scores_at_the_share(share: float) -> None:
    scores = [s.score for s in load(DATA / "routing_prompts.jsonl")]
    threshold = threshold_for(scores, share)
    above = sum(score >= threshold for score in scores) / len(scores)
    assert abs(above - share) <= 1.5 / len(scores) + 0.02  # ties may cost a prompt or so


def test_calibrate_writes_a_new_config_the_server_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(
            [
                json.dumps({"prompt": "hi"}),
                json.dumps({"prompt": "Explain why, step by step."}),
                json.dumps(
                    {
                        "messages": [{"role": "user", "content": "Prove it: x^2 = 4"}],
                        "label": "cloud",
                    }
                ),
            ]
        )
    )
    target = tmp_path / "calibrated.yaml"
    argv = ["calibrate", str(prompts), "--cloud-share", "0.34", "--write", str(target)]
    assert main(argv) == 0
    assert "edge_max" in capsys.readouterr().out
    router = yaml.safe_load(target.read_text())["router"]
    settings = Settings.load(target)
    assert settings.router.edge_max == router["edge_max"]
    assert main(argv) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def test_bad_prompt_files_get_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n[1, 2]\n')
    assert main(["calibrate", str(bad), "--cloud-share", "0.3"]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert main(["calibrate", str(DATA / "routing_prompts.jsonl"), "--cloud-share", "1.5"]) == 2
