"""`vastfleet sweep dashboard ID` serves optuna-dashboard on the sweep's study, read through the API; a real
browser (Debian's chromium, driven by selenium through Debian's chromium-driver, headless) finds the sweep's
trials on the page. Everything on loopback: the dashboard's scripts come with the package."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers import clean_env, free_port, wait_for, wait_port
from tests.spine.conftest import TOKEN
from tests.sweeps.test_driver import finish, run, seen, spec
from vastfleet.queue import JobStore
from vastfleet.sweeps import service
from vastfleet.sweeps.driver import SweepDriver
from vastfleet.sweeps.store import SweepStore

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if CHROMIUM is None or DRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("no chromium or chromium-driver: .ci/run installs them with apt-get")
        pytest.skip("no chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    # the driver's path given: selenium never looks for (or downloads) one
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_the_dashboard_shows_the_sweeps_trials_in_a_real_browser(api: str, store: JobStore, browser: object) -> None:
    from selenium.webdriver.common.by import By

    sweeps = SweepStore(store.redis)
    sweep = service.submit(sweeps, spec(max_trials=3, max_parallel=3))
    driver = SweepDriver(store, sweeps)
    driver.drive(sweep.id, seen())
    for i, trial in enumerate(sweeps.trials(sweep.id)):
        run(store, trial.job_id or "", step=5, val_loss=0.3 + i)
        finish(store, trial.job_id or "")
    driver.drive(sweep.id, seen())
    assert [t.state.value for t in sweeps.trials(sweep.id)] == ["COMPLETE"] * 3

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vastfleet.cli", "sweep", "dashboard", sweep.id, "--port", str(port)],
                            env=clean_env(VASTFLEET_URL=api, VASTFLEET_TOKEN=TOKEN), stderr=subprocess.PIPE)
    try:
        wait_port(port, 30)
        page = browser  # selenium's Chrome
        page.get(f"http://127.0.0.1:{port}/dashboard/")  # type: ignore[attr-defined]

        def body() -> str:
            return str(page.find_element(By.TAG_NAME, "body").text)  # type: ignore[attr-defined]

        wait_for(lambda: sweep.id in body(), 30, interval=0.3, what="the study listed")
        page.get(f"http://127.0.0.1:{port}/dashboard/studies/0/trials")  # type: ignore[attr-defined]
        text = wait_for(lambda: t if "Trial 2" in (t := body()) else "", 30, interval=0.3, what="the trials shown")
        assert all(f"Trial {n}" in text for n in range(3)) and "Complete" in text and "Best Trial" in text
        assert "lr" in text and "bs" in text  # the parameters, as the sweep's spec names them
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
