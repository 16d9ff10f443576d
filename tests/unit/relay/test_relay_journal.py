"""The relay's journal: each ingested event and what the relay did, as the page lists them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from astro_xdeps.outbox import Outbox
from astro_xdeps.relay import journal as journal_mod
from astro_xdeps.relay.config import parse_config
from astro_xdeps.relay.engine import RelayEngine
from astro_xdeps.relay.journal import RelayJournal
from astro_xdeps.state_events import StateEvent

CONFIG = parse_config(
    {
        "rules": [
            {
                "name": "recover",
                "when": {"type": "dag_run.failed", "dag_id": "load"},
                "then": [{"trigger_dag": {"target": "down", "dag_id": "recovery"}}],
            },
            {
                "name": "both",
                "when_all": [
                    {"type": "dag_run.success", "dag_id": "a"},
                    {"type": "dag_run.success", "dag_id": "b", "deployment": "prod"},
                ],
                "within": "1h",
                "then": [{"trigger_dag": {"target": "down", "dag_id": "report"}}],
            },
        ]
    }
)


def _event(eid: str, type_: str, dag: str, deployment: str | None = None) -> StateEvent:
    return StateEvent(
        id=eid,
        type=type_,
        dag_id=dag,
        run_id=f"run-{eid}",
        deployment=deployment,
        occurred_at=datetime.now(timezone.utc),
        attributes={"source": "listener"},
    )


@pytest.fixture
def engine(tmp_path) -> Iterator[RelayEngine]:
    outbox = Outbox.sqlite(tmp_path / "outbox.db")
    yield RelayEngine(CONFIG, outbox)
    outbox.close()


def test_each_event_is_recorded_with_what_the_relay_did(engine: RelayEngine) -> None:
    engine.ingest(_event("e1", "dag_run.success", "unrelated"))
    engine.ingest(_event("e2", "dag_run.failed", "load"))
    engine.ingest(_event("e2", "dag_run.failed", "load"))  # delivered twice
    engine.ingest(_event("e3", "dag_run.success", "a"))
    engine.ingest(_event("e4", "dag_run.success", "b", deployment="prod"))
    events, next_before = engine.journal.recent(limit=10)
    assert next_before is None
    assert [e["event_id"] for e in events] == ["e4", "e3", "e2", "e2", "e1"]
    summaries = [e["summary"] for e in events]
    assert summaries[4] == "no rule matched"
    assert summaries[3].startswith("fired recover: trigger recovery as run xdeps__recover__")
    assert summaries[3].endswith(" on down")
    assert summaries[2].startswith("deduplicated (already in the outbox): trigger recovery")
    assert events[2]["decision"]["deduplicated"] is True
    assert summaries[1] == "both waits for dag_run.success of b in prod"
    assert summaries[0].startswith("fired both: trigger report")
    assert (
        events[0]["decision"]["actions"][0]["outbox_id"] == engine.outbox.list_items(state="pending")[-1].id
    )
    assert events[0]["door"] == "listener" and events[0]["run_id"] == "run-e4"


def test_pages_newest_first(engine: RelayEngine) -> None:
    for i in range(5):
        engine.ingest(_event(f"e{i}", "dag_run.success", "x"))
    first, before = engine.journal.recent(limit=2)
    second, before2 = engine.journal.recent(limit=2, before=before)
    last, end = engine.journal.recent(limit=2, before=before2)
    assert [e["event_id"] for e in first + second + last] == ["e4", "e3", "e2", "e1", "e0"]
    assert end is None
    with pytest.raises(ValueError, match="between 1 and 200"):
        engine.journal.recent(limit=500)


def test_the_journal_keeps_only_the_newest_rows(engine: RelayEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_mod, "KEEP", 150)
    for i in range(205):
        engine.journal.record(_event(f"e{i}", "dag_run.success", "x"), {"matched": []})
    rows, _ = engine.journal.recent(limit=200)
    # Trimmed at every 100th id: after id 200 only ids 51..205 remain.
    assert len(rows) == 155 and rows[-1]["event_id"] == "e50"


def test_a_failing_journal_never_fails_the_ingest(
    engine: RelayEngine, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(RelayJournal):
        def record(self, *args, **kwargs):
            raise RuntimeError("disk on fire")

    engine.journal = Broken(engine.outbox.db)
    result = engine.ingest(_event("e9", "dag_run.failed", "load"))
    assert result.new_actions == 1
    assert "could not record relay event e9" in caplog.text
