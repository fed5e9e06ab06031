"""The embedded broker (kombu's filesystem transport through the Celery app the web app and the
workers share): a message file is seen whole or not at all, and an unreadable one (left empty by a
publisher killed mid-write before this was so) is skipped instead of stopping every worker."""

from __future__ import annotations

import queue
from pathlib import Path

import pytest

from app.broker import FilesystemTransport, make_celery
from app.config import Settings


@pytest.fixture
def broker(tmp_path: Path) -> tuple[Settings, Path]:
    settings = Settings(
        _env_file=None, var_dir=tmp_path, broker_url=f"filesystem://{tmp_path / 'broker'}"
    )
    folder = tmp_path / "broker" / "queue"
    folder.mkdir(parents=True)
    return settings, folder


@pytest.fixture
def queue_name(tmp_path: Path) -> str:
    # kombu keeps the filesystem transport's declared queues per process, but their bindings in
    # the broker folder: a queue declared by an earlier test would have none in this folder.
    return f"render-{tmp_path.name}"


def test_the_embedded_broker_uses_the_atomic_transport(broker):
    settings, _ = broker
    with make_celery(settings).connection_for_write() as connection:
        assert isinstance(connection.transport, FilesystemTransport)


def test_an_empty_message_file_is_skipped_and_the_next_message_delivered(
    broker, queue_name, caplog
):
    settings, folder = broker
    # What a publisher killed between creating its file and writing it leaves behind; its name
    # sorts before any message sent now, so a consumer takes it first.
    (folder / f"0_killed.{queue_name}.msg").write_bytes(b"")
    with make_celery(settings).connection_for_write() as connection:
        messages = connection.SimpleQueue(queue_name)
        messages.put({"clip_id": 7})
        message = messages.get(timeout=5)
        message.ack()
        assert message.payload == {"clip_id": 7}
        with pytest.raises(queue.Empty):
            messages.get(timeout=0.2)
        messages.close()
    assert "skipped an unreadable message file" in caplog.text
    assert list(folder.iterdir()) == []


def test_a_message_still_being_written_is_not_taken(broker, queue_name):
    settings, folder = broker
    partial = folder / f"0_writing.{queue_name}.msg.part"
    partial.write_bytes(b'{"body": "')  # half a message, as a consumer could see it mid-write
    with make_celery(settings).connection_for_write() as connection:
        messages = connection.SimpleQueue(queue_name)
        assert messages.qsize() == 0
        with pytest.raises(queue.Empty):
            messages.get(timeout=0.2)
        messages.put({"clip_id": 8})
        message = messages.get(timeout=5)
        message.ack()
        assert message.payload == {"clip_id": 8}
        messages.close()
    # The put left nothing partial behind; the file being written is untouched.
    assert [p.name for p in folder.iterdir()] == [partial.name]
    assert partial.read_bytes() == b'{"body": "'
