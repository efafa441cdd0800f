"""A rental's folder on the provider machine, and safe file access inside the part a job controls.

Layout of `<state_dir>/rentals/<rental id>/` (the folder itself readable by the agent's user only):

- `work/`: the job's workspace, mounted at `/workspace` in its container and owned by the job's user;
- `container.log`: the engine's log of the job's stdout and stderr (`offchain.agent.logs`);
- `results.tar`: the job's output folder, packed when the job has ended (`pack_beneath`);
- `secrets.json`: the job's secret values, sealed to the agent's key, until the rental is done;
- `stdout.log`, `stderr.log`: the same for a bare host process (`--unsafe-bare-process` only);
- `job.env`: the job's environment while its container is being created (mode 0600, removed right after).

A job writes whatever it likes under `work/`, symbolic links included, so the agent never follows a link there:
it walks paths one component at a time from an open directory with `O_NOFOLLOW` (`open_beneath`,
`make_dirs_beneath`), and removes the folder with `shutil.rmtree`, which on Linux does not follow links either.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafePath(OSError):
    """A path under the workspace goes through a symbolic link or something that is not a directory."""


class _Member:
    """A path in the rental's folder, read as an attribute of `RentalFiles`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, files: RentalFiles, owner: type | None = None) -> Path:
        return files.root / self.name


@dataclass(frozen=True)
class RentalFiles:
    """Where one rental's files live."""

    root: Path

    work = _Member("work")
    container_log = _Member("container.log")
    stdout_log = _Member("stdout.log")
    stderr_log = _Member("stderr.log")
    env_file = _Member("job.env")
    results = _Member("results.tar")
    secrets = _Member("secrets.json")

    def prepare(self, working_dir: str, owner: tuple[int, int] | None) -> None:
        """Creates the rental folder (mode 0700) and the workspace with `working_dir` inside it, owned by
        `owner` (uid, gid), so that a job running as that user can write there. Without an owner (an agent that
        may not give files away) the workspace folders are writable by every user instead; the rental folder
        around them still keeps every other user out."""
        self.ensure_root()
        if not self.work.exists():
            self.work.mkdir()
            if owner is not None:
                os.chown(self.work, *owner)
            os.chmod(self.work, 0o700 if owner is not None else 0o777)
        make_dirs_beneath(self.work, working_dir, owner)

    def ensure_root(self) -> None:
        """Creates the rental's folder, readable by the agent's user only."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def remove(self) -> None:
        """Deletes the rental's folder and everything in it (links are removed, never followed)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _open_dir(name: str, dir_fd: int | None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafePath(exc.errno, f"{name!r} is a symbolic link or not a directory") from exc
        raise


def _components(relative: str) -> list[str]:
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts:
        raise UnsafePath(errno.EINVAL, f"not a relative path inside the workspace: {relative!r}")
    return [part for part in path.parts if part != "."]


def make_dirs_beneath(root: Path, relative: str, owner: tuple[int, int] | None) -> None:
    """Creates the folders of `relative` under `root` that do not exist yet, owned by `owner` when given (else
    writable by everyone); refuses to pass through a symbolic link."""
    fd = _open_dir(str(root), None)
    try:
        for part in _components(relative):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            child = _open_dir(part, fd)
            os.close(fd)
            fd = child
            if created and owner is not None:
                os.fchown(fd, *owner)
            elif created:
                os.fchmod(fd, 0o777)
    finally:
        os.close(fd)


def open_beneath(root: Path, relative: str) -> int | None:
    """A read-only file descriptor of the regular file `relative` under `root`, or None when there is no such
    regular file; raises `UnsafePath` when the path goes through a symbolic link. The caller closes it."""
    parts = _components(relative)
    if not parts:
        return None
    fd = _open_dir(str(root), None)
    try:
        for part in parts[:-1]:
            child = _open_dir(part, fd)
            os.close(fd)
            fd = child
        try:
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePath(exc.errno, f"{relative!r} is a symbolic link") from exc
            raise
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            os.close(file_fd)
            return None
        return file_fd
    except FileNotFoundError:
        return None
    finally:
        os.close(fd)


def _anonymous(entry: tarfile.TarInfo) -> tarfile.TarInfo:
    entry.uid = entry.gid = 0
    entry.uname = entry.gname = ""
    return entry


def pack_beneath(root: Path, relative: str, destination: Path) -> bool:
    """Packs the folder `relative` under `root` into the tar `destination` and tells whether there was such a
    folder. The folder is reached without following a link and pinned by an open descriptor; inside it, links are
    stored as links, never followed; owners are stored as 0 with no names. The tar is written beside
    `destination` and renamed into place whole."""
    try:
        fd = _open_dir(str(root), None)
        for part in _components(relative):
            child = _open_dir(part, fd)
            os.close(fd)
            fd = child
    except (UnsafePath, FileNotFoundError):
        return False
    partial = destination.with_name(destination.name + ".partial")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            tar.add(f"/proc/self/fd/{fd}/", arcname=".", filter=_anonymous)  # the slash follows the pin
    finally:
        os.close(fd)
    os.replace(partial, destination)
    return True


def write_private(path: Path, data: bytes) -> None:
    """Writes a file readable by the agent's user only (mode 0600), whole: a partial file never takes its place."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
    os.replace(partial, path)
