"""The embedded broker's channel: messages appear whole, under the names kombu reads."""

from __future__ import annotations

from pathlib import Path

from kombu import Connection

from worker.app import celery_config
from worker.settings import Settings


def _connection(folder: Path) -> Connection:
    return Connection(
        "filesystem://",
        transport="worker.fsbroker:Transport",
        transport_options={
            "data_folder_in": str(folder),
            "data_folder_out": str(folder),
            "control_folder": str(folder / "control"),
        },
    )


def test_a_message_is_one_complete_file_and_is_consumed_whole(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    with _connection(tmp_path) as conn:
        queue = conn.SimpleQueue("jobs")
        queue.put({"feed_id": 7, "text": "x" * 10_000})
        files = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
        assert len(files) == 1 and files[0].endswith(".jobs.msg")  # no partial file left
        message = queue.get(timeout=5)
        assert message.payload == {"feed_id": 7, "text": "x" * 10_000}
        message.ack()
        assert not [p for p in tmp_path.iterdir() if p.is_file()]
        queue.close()


def test_a_partial_file_is_not_taken_for_a_message(tmp_path: Path) -> None:
    (tmp_path / "control").mkdir()
    # What a writer leaves while writing: kombu's consumer must not pick it up.
    (tmp_path / ".1_abc.partials.msg.partial").write_bytes(b"")
    with _connection(tmp_path) as conn:
        # A queue name of its own: kombu keeps declared exchanges per process.
        queue = conn.SimpleQueue("partials")
        queue.put({"n": 1})
        assert queue.get(timeout=5).payload == {"n": 1}
        queue.close()


def test_the_embedded_default_uses_the_atomic_transport(tmp_path: Path) -> None:
    config = celery_config(Settings(data_dir=tmp_path))
    assert config["broker_url"] == "filesystem://"
    assert config["broker_transport"] == "worker.fsbroker:Transport"
    redis = celery_config(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    assert redis["broker_transport"] is None
