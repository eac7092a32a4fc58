"""Embedded mode keeps nothing only in memory: jobs in flight at shutdown become dead letters."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu.transport import memory

from pipeline.retrieval.ingest import ingest_paths
from pipeline.settings import load_settings
from schemas import QUEUES, STAGES, JobRequest
from workers.cli import sample_contracts
from workers.deadletters import replay_dead_letter
from workers.embedded import EmbeddedRuntime

pytestmark = pytest.mark.e2e


def test_stopping_with_jobs_in_flight_dead_letters_them_and_replay_finishes_them(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", worker_concurrency=1)
    doc = sample_contracts()[0]
    with EmbeddedRuntime(settings) as rt:
        ingest_paths([doc], tenant="t", store=rt.components.vector_store, embedder=rt.components.embedder)
        job_ids = [rt.client.submit(JobRequest(text=f"Summarize this contract ({i}).", document_id=doc.stem,
                                               tenant="t")) for i in range(12)]
    # the runtime has stopped: nothing of it is left on the process-wide memory transport
    # (a later runtime in this process would otherwise run those messages against its own data)
    assert all(memory.Channel.queues[q].qsize() == 0 for q in QUEUES if q in memory.Channel.queues)
    # and every job either finished or is a replayable dead letter
    with EmbeddedRuntime(settings) as rt:
        state = rt.components.state
        letters = {dl.job_id: dl for dl in state.list_dead_letters()}
        finished = {j for j in job_ids if state.get_record(j) is not None}
        assert finished | set(letters) == set(job_ids) and not finished & set(letters)
        assert letters, "stopping right after submitting twelve jobs leaves some in flight"
        for letter in letters.values():
            # at the stage it was waiting for (its last checkpoint): the replay does not redo earlier stages
            assert (letter.failure_class, letter.retries_exhausted) == ("interrupted", False)
            assert letter.stage in STAGES and letter.stage != "ingest"
            assert letter.request["job_id"] == letter.job_id
            replay_dead_letter(rt.app, state, letter.dead_letter_id)
        for job_id in letters:
            assert rt.client.result(job_id, timeout=120).job_id == job_id
