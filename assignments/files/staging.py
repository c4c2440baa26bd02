"""Generated files room: staging and atomic writes (temp file beside the target, fsync,
rename over, fsync the folder), so readers see the old file or the new one, never a torn one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class StagedFile:
    """A file's new text, written and fsynced to a temp file beside it, not yet in place.

    ``temp`` is None when the file already holds exactly this text (nothing to move).
    """

    path: Path
    temp: Path | None


@dataclass(frozen=True)
class StagedFiles:
    """Generated files staged together: ``commit()`` moves them all into place (each rename is
    atomic, so readers see the old or the new file, never a torn one) and removes the files
    the new configuration no longer has; ``discard()`` removes the temp files and leaves the
    old ones as they were."""

    files: tuple[StagedFile, ...]
    removals: tuple[Path, ...] = ()

    def commit(self) -> list[Path]:
        """Rename every temp file over its target and remove the files no longer generated;
        returns the paths that changed."""
        moved = []
        for staged in self.files:
            if staged.temp is None:
                continue
            os.replace(staged.temp, staged.path)
            moved.append(staged.path)
        for path in self.removals:
            if path.exists():
                path.unlink()
                moved.append(path)
        for folder in {p.parent for p in moved}:
            _fsync_dir(folder)
        return moved

    def discard(self) -> None:
        for staged in self.files:
            if staged.temp is not None:
                try:
                    os.unlink(staged.temp)
                except FileNotFoundError:
                    pass


def _fsync_dir(folder: Path) -> None:
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def stage_file(path: Path, text: str) -> StagedFile:
    """Write ``text`` to a temp file in ``path``'s folder and fsync it; ``path`` is untouched.
    Raises OSError when the folder cannot be written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text() == text:
            return StagedFile(path, None)
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent
    )
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return StagedFile(path, Path(tmp))


def stage_files(texts: dict[Path, str | None]) -> StagedFiles:
    """Stage several files (``None``: the file is to be removed on commit); if any cannot be
    written, none is left staged."""
    staged: list[StagedFile] = []
    try:
        for path, text in texts.items():
            if text is not None:
                staged.append(stage_file(path, text))
    except BaseException:
        StagedFiles(tuple(staged)).discard()
        raise
    removals = tuple(Path(path) for path, text in texts.items() if text is None)
    return StagedFiles(tuple(staged), removals)


def write_atomic(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` so readers see the old or the new file, never a torn one.

    Temp file in the same folder, fsync, rename over, fsync the folder. Returns False when the
    file already held exactly this text (nothing written).
    """
    return bool(StagedFiles((stage_file(path, text),)).commit())
