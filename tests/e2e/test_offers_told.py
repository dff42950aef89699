"""`vastfleet offers` as a user reads it (issue 16), through the real `vastai` client against the simulator:
GPU, count and location columns, a header that says what the expected $ is for, one price format, the
spec's checkpoint interval, `--explain` as readable blocks, and a job no offer fits told which filter
removed how many offers. The placement reason respects the spec's interval too (the allocator itself)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.policy.factories import make_offer
from tests.sim_fixtures import SimHandle, running_sim
from vastfleet.cli import app
from vastfleet.scheduler.policy import FleetStats, JobView, PolicyParams, decide_placements


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimHandle]:
    with running_sim(tmp_path_factory.mktemp("offers"), seed=3, hosts=24) as handle:
        yield handle


@pytest.fixture
def offers(sim: SimHandle, tmp_path: Path) -> Iterator[object]:
    runner = CliRunner(env={"VAST_API_KEY": sim.api_key, "VASTFLEET_MARKET_URL": sim.url, "HOME": str(tmp_path),
                            "XDG_CONFIG_HOME": str(tmp_path), "COLUMNS": "80"})

    def run(*args: str) -> str:
        done = runner.invoke(app, ["offers", *args])
        assert done.exit_code == 0, done.output
        return done.stdout

    yield run


def spec_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text("name: job\nimage: img\nrun: python x.py\nresources: {gpu: [RTX_4090, RTX_3090]}\n" + extra)
    return path


def test_the_table_has_gpu_count_and_location_and_says_what_the_dollars_are_for(offers: object) -> None:
    text = offers()  # type: ignore[operator]
    header = " ".join(text.split("\n   offer")[0].split())
    assert "expected $ for 1 h of work on 1x RTX 4090" in header
    columns = next(line for line in text.splitlines() if line.split()[:1] == ["offer"]).split()
    assert columns[:5] == ["offer", "GPU", "n", "where", "kind"] and "hours" in columns
    rows = [line for line in text.splitlines() if re.match(r"\s+\d{5,}\s", line)]
    assert rows and all(re.search(r"\$\d+\.\d+/h", r) for r in rows)
    assert "$/h" not in text.replace("expected $", "")  # one price format: $0.064/h


def test_expected_hours_are_the_stated_work_on_each_offer(offers: object, tmp_path: Path) -> None:
    # 6 h of work on the spec's first GPU: an offer of that GPU runs it in about 6 h or more, never in 1
    data = json.loads(offers("--job", str(spec_file(tmp_path, "work_hours: 6\n")), "--json"))  # type: ignore[operator]
    first_gpu = [o for o in data["offers"] if abs(o["terms"]["speed"] - 1.0) < 0.25]
    assert first_gpu and all(o["terms"]["expected_hours"] > 4.5 for o in first_gpu)
    text = offers("--job", str(spec_file(tmp_path, "work_hours: 6\n")))  # type: ignore[operator]
    assert "expected $ for 6 h of work on 1x RTX 4090" in " ".join(text.split())


def test_the_specs_checkpoint_interval_is_the_one_shown(offers: object, tmp_path: Path) -> None:
    job = spec_file(tmp_path, "checkpoint: {interval: 10m}\n")
    data = json.loads(offers("--job", str(job), "--json"))  # type: ignore[operator]
    assert {o["terms"]["checkpoint_interval_s"] for o in data["offers"]} == {600.0}
    explained = offers("--job", str(job), "--explain")  # type: ignore[operator]
    assert "every 10m (the spec's interval)" in explained


def test_explain_is_an_indented_block_per_offer_not_key_value(offers: object, tmp_path: Path) -> None:
    text = offers("--job", str(spec_file(tmp_path)), "--explain")  # type: ignore[operator]
    assert "offers considered" in text
    assert re.search(r"^offer \d+: 1x RTX \d{4} \(.+\), (bid|on demand) \$", text, re.MULTILINE)
    for term in ("expected cost", "expected time", "interruptions", "checkpoints", "deadline slack", "why"):
        assert re.search(rf"^  {term}\s+\S", text, re.MULTILINE), term
    assert not re.search(r"\w=\S", text), "no key=value wall"


def test_a_job_no_offer_fits_is_told_which_filter_removed_how_many(offers: object, tmp_path: Path) -> None:
    job = tmp_path / "big.yaml"
    job.write_text("name: big\nimage: img\nrun: x\nresources: {gpu: [H100_SXM], gpus: 8, max_price_per_hour: 0.1}\n")
    text = " ".join(offers("--job", str(job)).split())  # type: ignore[operator]
    assert text.startswith("big: no offer fits: of ") and "filters removed: none" not in text
    assert re.search(r"(gpu_model|gpu_count|price_cap) removed \d+ \(", text), text
    data = json.loads(offers("--job", str(job), "--json"))  # type: ignore[operator]
    assert data["offers"] == [] and data["no_fit"].startswith("no offer fits") and sum(data["rejected"].values())


def test_the_placement_reason_says_the_specs_checkpoint_interval() -> None:
    fixed = JobView(job_id="j", gpu_names=("RTX 4090",), remaining_work_hours=2.0, checkpoint_interval_s=600.0)
    auto = JobView(job_id="k", gpu_names=("RTX 4090",), remaining_work_hours=2.0)
    offers = [make_offer(id=1, min_bid=0.15), make_offer(id=2, min_bid=0.16)]
    placed = {p.job_id: p for p in decide_placements([fixed, auto], offers, FleetStats(), 0.0, PolicyParams())}
    assert "checkpoint every 600 s" in placed["j"].reason and placed["j"].terms["checkpoint_interval_s"] == 600.0
    assert "checkpoint every 600 s" not in placed["k"].reason
    assert re.search(r"bid \$0\.\d+/h", placed["j"].reason) and "$/h" not in placed["j"].reason
