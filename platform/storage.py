"""Run directories on remote storage (s3://, gs://, hdfs://, file://... any URI pyarrow.fs reads).

The loop always writes a local directory, where atomic renames and fsync make
a crash safe. For a URI it writes a local staging copy and mirrors it to the
URI after every committed experience, so the remote copy is never ahead of a
commit and at most one experience behind. `somna resume URI` pulls the remote
copy into staging first and then resumes as usual.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


class RemoteRunDirectory:
    """A local staging directory kept in sync with a run directory at `uri`."""

    def __init__(self, uri: str, staging_root: Path | None = None):
        import pyarrow.fs

        self.uri = uri.rstrip("/")
        try:
            self.filesystem, self.remote_path = pyarrow.fs.FileSystem.from_uri(self.uri)
        except (ValueError, OSError) as error:
            from somna.platform.config import ConfigError

            raise ConfigError(f"cannot open storage {uri}: {error}") from None
        root = staging_root or Path(tempfile.gettempdir()) / "somna-staging"
        self.local = root / hashlib.sha256(self.uri.encode()).hexdigest()[:16]

    def exists(self) -> bool:
        import pyarrow.fs

        info = self.filesystem.get_file_info(self.remote_path)
        if info.type != pyarrow.fs.FileType.Directory:
            return False
        return bool(self.filesystem.get_file_info(pyarrow.fs.FileSelector(self.remote_path)))

    def pull(self) -> Path:
        """Replace the staging copy with the remote run directory."""
        import pyarrow.fs

        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True)
        pyarrow.fs.copy_files(self.remote_path, str(self.local), source_filesystem=self.filesystem,
                              destination_filesystem=pyarrow.fs.LocalFileSystem())
        return self.local

    def fresh(self) -> Path:
        """An empty staging directory for a new run."""
        shutil.rmtree(self.local, ignore_errors=True)
        self.local.mkdir(parents=True)
        return self.local

    def push(self) -> None:
        """Mirror the staging copy to the remote run directory (files are only added or replaced)."""
        import pyarrow.fs

        self.filesystem.create_dir(self.remote_path, recursive=True)
        pyarrow.fs.copy_files(str(self.local), self.remote_path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                              destination_filesystem=self.filesystem)
