"""Media: the opaque per-trial token of a clip, the lookup behind it, and a per-process cache so
that a clip's views touch neither the database nor storage."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from app.clips.models import Clip, ClipStatus
from app.rating import gold, tokens
from app.rating.models import GoldPair, Trial
from app.studies.models import Prompt, Study, StudyStatus

MEDIA_CACHE_CLIPS = 100_000  # storage keys kept per web process (about 20 MB at most)


def media_token(
    *, secret: str, study_id: int, trial: Trial, side: Literal["l", "r"], clip_id: int
) -> str:
    return tokens.media_token(secret, tokens.MediaRef(study_id, trial.id, clip_id, side))


@dataclass(frozen=True, slots=True)
class MediaFound:
    status: StudyStatus
    storage_key: str | None  # None: no done clip of this study behind the token


# Built once: constructing a statement and its cache key costs more than running it on SQLite.
_MEDIA = (
    select(Study.status, Prompt.id, Clip.status, Clip.storage_key)
    .select_from(Study)
    .outerjoin(Clip, Clip.id == bindparam("clip_id"))
    .outerjoin(Prompt, (Prompt.id == Clip.prompt_id) & (Prompt.study_id == Study.id))
    .where(Study.id == bindparam("study_id"))
)


def media_lookup(*, session: Session, study_id: int, clip_id: int) -> MediaFound | None:
    """The study's status and the storage key of one of its done clips, or of one of its gold
    twins (`gold.is_twin`); None when there is no such study. One statement, two for a twin."""
    twin = gold.is_twin(clip_id)
    params: dict[str, object] = {"clip_id": 0 if twin else clip_id, "study_id": study_id}
    row = session.connection().execute(_MEDIA, params).first()
    if row is None:
        return None
    status: StudyStatus = row[0]
    if twin:  # a gold trial's twin (app/rating/twins.py): served like any clip
        params = {"ids": [gold.pair_of(clip_id)], "study_id": study_id}
        found = session.connection().execute(_TWINS, params).first()
        return MediaFound(status, found[1] if found is not None else None)
    # The outer joins: all None when the clip is not one of this study's.
    prompt_id: int | None = row[1]
    clip_status: ClipStatus | None = row[2]
    key: str | None = row[3]
    done = prompt_id is not None and clip_status == ClipStatus.done and bool(key)
    return MediaFound(status, key if done else None)


_TWINS = select(GoldPair.id, GoldPair.storage_key, GoldPair.size_bytes).where(
    GoldPair.id.in_(bindparam("ids", expanding=True)),
    GoldPair.study_id == bindparam("study_id"),
    GoldPair.storage_key.is_not(None),
)


class MediaCache:
    """What the media route needs, kept per web process so that a clip's views touch neither
    the database nor storage: a study's status for `status_seconds` (closing a study stops its
    media within that), a done clip's storage key for `clip_seconds` (a key only changes by hand
    in the database: `vidarena clips import --replace` refuses clips that were in a trial), and
    clip bytes, which never change under their content-hash key, in an LRU of at most
    `max_bytes`. Thread-safe."""

    def __init__(
        self, *, max_bytes: int, status_seconds: float = 2.0, clip_seconds: float = 60.0
    ) -> None:
        self.max_bytes = max_bytes
        self.status_seconds = status_seconds
        self.clip_seconds = clip_seconds
        self._status: dict[int, tuple[StudyStatus, float]] = {}
        self._clips: OrderedDict[tuple[int, int], tuple[str, float]] = OrderedDict()
        self._blobs: OrderedDict[str, bytes] = OrderedDict()
        self._blob_bytes = 0
        self._lock = threading.Lock()

    def found(self, *, study_id: int, clip_id: int) -> MediaFound | None:
        now = time.monotonic()
        with self._lock:
            status = self._status.get(study_id)
            clip = self._clips.get((study_id, clip_id))
        if status is None or clip is None:
            return None
        if now - status[1] > self.status_seconds or now - clip[1] > self.clip_seconds:
            return None
        return MediaFound(status[0], clip[0])

    def keep(self, *, study_id: int, clip_id: int, found: MediaFound) -> None:
        now = time.monotonic()  # when it was read: the ages above are checked on use
        with self._lock:
            self._status[study_id] = (found.status, now)
            if found.storage_key is not None:  # not-yet-done clips are looked up again
                self._clips[(study_id, clip_id)] = (found.storage_key, now)
                self._clips.move_to_end((study_id, clip_id))
                while len(self._clips) > MEDIA_CACHE_CLIPS:
                    self._clips.popitem(last=False)

    def blob(self, key: str) -> bytes | None:
        with self._lock:
            data = self._blobs.get(key)
            if data is not None:
                self._blobs.move_to_end(key)
            return data

    def keep_blob(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 8:  # one big clip must not flush the rest
            return
        with self._lock:
            if key in self._blobs:
                return
            self._blobs[key] = data
            self._blob_bytes += len(data)
            while self._blob_bytes > self.max_bytes:
                _, old = self._blobs.popitem(last=False)
                self._blob_bytes -= len(old)
