"""What a progress bar says: the counts people follow, readings as they are, rates per second."""

import time

from lmmap.cli._progress import RichProgress
from lmmap.progress import Step


def test_counters_with_a_total_replace_the_bar_unit_and_readings_show_as_they_are():
    start = time.perf_counter() - 2.0  # two seconds in: rates are shown
    scoring = RichProgress._detail(Step("m", 1000, 5000, "tokens", {"texts": 30, "texts_total": 150}), start)
    assert scoring.startswith("30/150 texts · ") and "texts/s" in scoring and "tokens/s" in scoring
    assert "1,000" not in scoring  # the tokens behind the ETA are a rate, not a count
    training = RichProgress._detail(Step("train", 30, 60, "steps", {"tokens": 61440, "loss": 5.98}), start)
    assert training.startswith("30/60 steps · loss 5.98 · ") and "tokens/s" in training
    plain = RichProgress._detail(Step("trials", 4, 10, "trials"), start)
    assert plain.startswith("4/10 trials · ") and plain.endswith("trials/s")


def test_a_message_names_flags_not_parameters():
    from rich.console import Console

    console = Console(record=True, width=200)
    with RichProgress(console, enabled=False) as progress:
        progress(Step(message="skipped m: already in the store (pass {replace=True} to score it again)",
                      params=("replace",)))
    assert "pass --replace to score it again" in console.export_text()
