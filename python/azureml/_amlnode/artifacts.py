"""Artifacts of amlnode's stand-in for the Azure ML SDK v1: Run.upload_file, upload_folder,
log_image and get_file_names.

An artifact name is a relative POSIX path. "outputs/<path>" lands at <outputs_dir>/<path> and
"logs/<path>" at <logs_dir>/<path> (<working_dir>/outputs and <working_dir>/logs, which the agent
collects and ships like Azure ML's ./outputs and ./logs); any other name lands under outputs too,
at <outputs_dir>/<name>, and is listed as "outputs/<name>". Refused: absolute names, "..", NUL,
and a name that leaves no file name under outputs/ or logs/.

Nothing is written through a symbolic link: the outputs and logs folders and every folder below
them are opened with O_NOFOLLOW (a link there is refused with the folder named), and a file is
written to a new temporary file in its folder, then renamed over the name, so a link (or hard
link) already at that name is replaced, never written through. Uploading a file onto itself
(upload_file("outputs/model.pt", "outputs/model.pt")) leaves it as it is.
"""

import errno
import os
import secrets
import stat

from azureml._amlnode import warn
from azureml.exceptions import UserErrorException

TOP_FOLDERS = ("outputs", "logs")
TEMP_PREFIX = ".amlnode-upload-"
CHUNK_BYTES = 1 << 20
MAX_LISTED_NAMES = 100000

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def parse_name(name):
    """(top folder, [components]) of an artifact name, or UserErrorException saying why not."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise TypeError(f"name: expected a str, got {type(name).__name__}")
    if "\0" in name:
        raise UserErrorException(f"artifact name {name!r}: NUL is not allowed in a name")
    if name.startswith("/"):
        raise UserErrorException(f"artifact name {name!r} is absolute; give a relative path "
                                 "such as outputs/model.pt")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UserErrorException(f"artifact name {name!r}: '..' is not allowed in a name")
    if parts and parts[0] in TOP_FOLDERS:
        top, parts = parts[0], parts[1:]
    else:
        top = "outputs"
    if not parts:
        raise UserErrorException(f"artifact name {name!r} names no file; give a path such as "
                                 "outputs/model.pt")
    return top, parts


def canonical_name(name):
    """The name as listed: "outputs/..." or "logs/..."."""
    top, parts = parse_name(name)
    return "/".join([top] + parts)


class ArtifactStore:
    """Writes artifacts under a run's outputs and logs folders."""

    def __init__(self, outputs_dir, logs_dir):
        self.roots = {"outputs": outputs_dir, "logs": logs_dir}

    def name_of_path(self, path):
        """The artifact name of a file already under the outputs or logs folder, or None."""
        real = os.path.realpath(path)
        for top, root in self.roots.items():
            root_real = os.path.realpath(root)
            if real.startswith(root_real + os.sep):
                return top + "/" + os.path.relpath(real, root_real).replace(os.sep, "/")
        return None

    # Writing.

    def write_file(self, name, path):
        """Copies the file at `path` to the artifact `name`; returns the name as listed."""
        path = os.fspath(path)
        try:
            source = open(path, "rb")
        except IsADirectoryError:
            raise UserErrorException(f"{path} is a folder; upload it with upload_folder") from None
        with source:
            source_stat = os.fstat(source.fileno())
            if not stat.S_ISREG(source_stat.st_mode):
                raise UserErrorException(f"{path} is not a regular file")
            return self._write(name, source, same_as=source_stat)

    def write_stream(self, name, stream):
        """Copies what `stream.read()` gives (bytes, or str written as UTF-8) to the artifact."""
        return self._write(name, stream)

    def write_bytes(self, name, data):
        class _Bytes:
            def __init__(self, data):
                self.data = data

            def read(self, size):
                chunk, self.data = self.data[:size], self.data[size:]
                return chunk
        return self._write(name, _Bytes(bytes(data)))

    def open_append(self, name):
        """An fd to append to the artifact `name` (created if missing), never through a link."""
        top, parts = parse_name(name)
        dir_fd = self._open_folder(top, parts[:-1])
        try:
            try:
                return os.open(parts[-1], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                               | os.O_CLOEXEC | os.O_NONBLOCK, 0o644, dir_fd=dir_fd)
            except OSError as error:
                if error.errno == errno.ELOOP:
                    raise UserErrorException(f"{self._shown(top, parts)} is a symbolic link; "
                                             "amlnode does not write through it") from None
                raise
        finally:
            os.close(dir_fd)

    def _shown(self, top, parts):
        return os.path.join(self.roots[top], *parts)

    def _open_folder(self, top, parts):
        """An fd of the folder top/parts, each created when missing and none a symbolic link."""
        root = self.roots[top]
        try:
            os.mkdir(root, 0o755)
        except FileExistsError:
            pass
        fd = self._open_dir(None, root, root)
        for depth, part in enumerate(parts):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            except OSError:
                os.close(fd)
                raise
            try:
                fd_below = self._open_dir(fd, part, self._shown(top, parts[:depth + 1]))
            finally:
                os.close(fd)
            fd = fd_below
        return fd

    @staticmethod
    def _open_dir(dir_fd, name, shown):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UserErrorException(f"{shown} is a symbolic link or a file, not a folder; "
                                         "amlnode does not write artifacts through it") from None
            raise

    def _write(self, name, source, same_as=None):
        top, parts = parse_name(name)
        listed = "/".join([top] + parts)
        dir_fd = self._open_folder(top, parts[:-1])
        try:
            try:
                existing = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                existing = None
            if existing is not None and stat.S_ISDIR(existing.st_mode):
                raise UserErrorException(f"artifact {listed}: {self._shown(top, parts)} is a "
                                         "folder")
            if (same_as is not None and existing is not None and stat.S_ISREG(existing.st_mode)
                    and (existing.st_dev, existing.st_ino) == (same_as.st_dev, same_as.st_ino)):
                return listed  # the file is already the artifact
            temp = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=dir_fd)
            try:
                with os.fdopen(fd, "wb") as out:
                    while True:
                        chunk = source.read(CHUNK_BYTES)
                        if not chunk:
                            break
                        out.write(chunk.encode("utf-8") if isinstance(chunk, str) else chunk)
                os.rename(temp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                try:
                    os.unlink(temp, dir_fd=dir_fd)
                except OSError:
                    pass
                raise
            return listed
        finally:
            os.close(dir_fd)

    # Listing.

    def list_names(self):
        """The artifact names of the files under the outputs and logs folders, sorted."""
        names = []
        for top, root in self.roots.items():
            if os.path.islink(root) or not os.path.isdir(root):
                continue
            for folder, subfolders, files in os.walk(root):  # links to folders are not followed
                subfolders.sort()
                for file in sorted(files):
                    if file.startswith(TEMP_PREFIX):
                        continue
                    relative = os.path.relpath(os.path.join(folder, file), root)
                    names.append(top + "/" + relative.replace(os.sep, "/"))
                    if len(names) >= MAX_LISTED_NAMES:
                        warn(f"get_file_names: more than {MAX_LISTED_NAMES} files; listing the "
                             "first ones")
                        return sorted(names)
        return sorted(names)
