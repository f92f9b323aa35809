"""On-disk cache of compiled forwards, one folder per (backend, runtime, dtype, backbone, graph).

A folder is written under a temporary name and renamed into place, so a reader sees either no
entry or a whole one, and two processes building the same entry at once both succeed. Where the
cache root cannot be written (a read-only container), entries live in a temporary folder for
the life of the process and the next start builds them again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """$XDG_CACHE_HOME/bitpatch/forwards, else ~/.cache/bitpatch/forwards."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bitpatch" / "forwards"


class ForwardCache:
    """One cache entry: `lookup` a committed file, or build into `scratch` and `commit`."""

    def __init__(self, root: Path, key: str):
        self.root, self.key = root, key
        self.entry = root / key
        self._work: Path | None = None

    def _scratch_folder(self) -> Path:
        """The folder this process builds the entry in (made on first use)."""
        if self._work is None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                self._work = Path(tempfile.mkdtemp(prefix=f".{self.key}.", dir=self.root))
            except OSError as err:
                log.warning("event=forward_cache_unwritable root=%s error=%s", self.root, err)
                self._work = Path(tempfile.mkdtemp(prefix="bitpatch-forward-"))
                self.entry = self._work.with_name(self._work.name + "-entry")
        return self._work

    def lookup(self, name: str) -> Path | None:
        """The committed file `name` of this entry, or None."""
        path = self.entry / name
        return path if path.is_file() else None

    def scratch(self, name: str) -> Path:
        """Where to write `name` before it is committed."""
        return self._scratch_folder() / name

    def commit(self, name: str) -> Path:
        """Move the scratch folder into place as the entry (another process may have won the
        race: its entry is equal and kept); the committed path of `name`."""
        work = self._scratch_folder()
        try:
            work.rename(self.entry)
        except OSError:  # the entry exists: built by a concurrent start
            shutil.rmtree(work, ignore_errors=True)
        self._work = None
        return self.entry / name
