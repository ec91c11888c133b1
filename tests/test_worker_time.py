"""Where a search's worker time goes, as status, the live view and the report say it."""

import time

from evonorm_search.worker_time import fate_of, shares, trial_seconds, yield_line


def test_fates_and_trial_seconds():
    assert fate_of("trained", "proxy", None) == "trained"
    assert fate_of("rejected", "signal", "loss not falling") == "rejected at signal"
    assert fate_of("failed", "quality", "diverged on resnet at step 3") == "diverged"
    assert fate_of("failed", "trial", "the trial failed (3 attempts)") == "failed"
    # Screening is the driver's time, not a worker's; "proxy" is an older record's training.
    assert (
        trial_seconds(
            {"static": 0.5, "compile": 2, "signal": 1, "quality": 3, "training": 4, "proxy": 10}
        )
        == 20.0
    )


def test_summaries_name_every_share_and_the_rate():
    line = shares({"trained": 1800.0, "rejected at signal": 900.0}, 3600.0)
    assert line == "trained 50%, rejected at signal 25%, orchestration 25%"
    assert shares({}, 0.0) == "-"
    assert yield_line(6, 1800.0, 2.0) == (
        "0.50 h of worker time (budget 2 h), 12.0 trained per worker-hour"
    )
    assert yield_line(0, 0.0, None) == "0.00 h of worker time"


def test_the_live_view_shows_the_worker_time_and_whether_evolution_began():
    from rich.console import Console

    from evonorm_search.search.display import LiveView
    from evonorm_search.search.driver import Progress

    progress = Progress(
        budget=10,
        trained=3,
        workers=2,
        worker_seconds_before=3600.0,
        worker_hours=4.0,
        evolving=True,
        started=time.monotonic(),
        by_fate={"trained": 2000.0, "rejected at signal": 700.0},
    )
    console = Console(width=200, record=True)
    console.print(LiveView("live").render(progress))
    text = console.export_text()
    assert "search live: 3/10 trained" in text and "evolving" in text
    assert "1.00 h of worker time (budget 4 h), 3.0 trained per worker-hour" in text
    assert "trained 56%, rejected at signal 19%, orchestration 25%" in text
