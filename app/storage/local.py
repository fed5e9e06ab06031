"""Local-folder backend: the embedded default (`var/media`), nothing to install."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from app.storage.base import ObjectNotFoundError, Storage, StorageError, StoredObject, check_key


class LocalStorage(Storage):
    """Objects are files at `<root>/<key>`; the root and shard folders are created on first put."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        # Absolute now, so a later chdir (tests, daemons) cannot move the store.
        self.root = Path(root).expanduser().absolute()

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file for `key` (which may not exist yet), for FileResponse or sendfile."""
        return self.root / check_key(key)

    def _put(self, obj: StoredObject, data: bytes) -> None:
        final = self.path(obj.key)
        if _file_size(final) == obj.size:
            return  # same key means same bytes; a size mismatch (damaged file) is rewritten
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(final, data)
        except OSError as exc:
            raise StorageError(f"cannot store {obj.key} in {self.root}: {exc}") from exc

    def open(self, key: str) -> BinaryIO:
        path = self.path(key)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise ObjectNotFoundError(key, str(self.root)) from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        size = _file_size(self.path(key))
        if size is None:
            raise ObjectNotFoundError(key, str(self.root))
        return size

    def delete(self, key: str) -> None:
        # Shard folders stay: removing one could race a concurrent put creating its temp file there.
        self.path(key).unlink(missing_ok=True)

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass  # proves we can create files there, not just see the folder
        except OSError as exc:
            raise StorageError(
                f"local storage folder {self.root} is not a writable folder ({exc}); "
                "fix its permissions or point VIDARENA_STORAGE_URL elsewhere"
            ) from exc


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


def _write_atomically(final: Path, data: bytes) -> None:
    """Temp file in the same folder, fsync, then rename: readers never see a partial object."""
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(fd, 0o644)  # mkstemp makes 0600; a web server or sidecar may need to read it
            file.write(data)
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename, or a crash can leave an empty key
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(final.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable before the caller records the key in SQL.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
