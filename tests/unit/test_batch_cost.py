"""A batch's cost: the known costs summed, and how many jobs are not in the sum (never counted as $0)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from pipeline.state import SqliteStateStore
from schemas.batch import BatchInfo, BatchStatus
from workers.batch import batch_status, csv_row
from workers.batch_cli import _print_status, describe


def _status(tmp_path: Path, **counters: int) -> BatchStatus:
    state = SqliteStateStore(tmp_path / "state.sqlite3")
    state.put_batch(BatchInfo(batch_id="b1", source="docs"))
    for field, amount in counters.items():
        state.batch_incr("b1", field, amount)
    try:
        return batch_status(state, "b1")
    finally:
        state.close()


def _table(status: BatchStatus) -> str:
    console = Console(record=True, width=200)
    _print_status(status, console)
    return console.export_text()


def test_unpriced_jobs_are_counted_beside_the_cost(tmp_path: Path) -> None:
    status = _status(tmp_path, cost_micro_usd=12_300, unpriced_jobs=2, llm_calls=5)
    assert status.cost_usd == 0.0123 and status.unpriced_jobs == 2
    assert status.cost_label == "$0.0123 (+2 unpriced)"
    assert "$0.0123 (+2 unpriced)" in describe(status, None)
    table = _table(status)
    assert "unpriced" in table and "0.0123" in table


def test_a_fully_priced_batch_says_nothing_about_unpriced_jobs(tmp_path: Path) -> None:
    status = _status(tmp_path, cost_micro_usd=12_300)
    assert status.unpriced_jobs == 0 and status.cost_label == "$0.0123"
    assert "unpriced" not in _table(status)


def test_a_null_cost_is_an_empty_csv_cell_not_zero() -> None:
    result = {"custom_id": "a", "status": "succeeded", "job_id": "j", "document_id": "d",
              "record": {"output": {}, "cost_usd": None, "unpriced_models": ["acme-x"]}}
    assert csv_row(result)["cost_usd"] == ""
