"""A model folder on the wire: a gzip tar made by `trestle push`, received and unpacked by the gateway.

    pack(folder) -> bytes                              the client side (with the config's
                                                       `external_package_dirs` that lie outside
                                                       the folder, under `.external_packages/N/`)
    await receive(chunks, into_dir, limits) -> Path    the push body, written to disk as it arrives
    unpack(archive, dest, limits)                      the folder, written into an empty `dest`

The gateway does not rely on `tarfile`'s extraction filters (the `data` filter of Python 3.11.7 is
bypassable, CVE-2025-4517). `unpack` reads the archive as a stream and writes every member itself:

- only regular files and folders: links (symbolic or hard), devices and FIFOs are refused;
- names are relative, without `..` or empty parts, at most `MAX_NAME_BYTES` long (each part at
  most 255 bytes); a file and a folder of the same name are refused;
- each file is created below a folder descriptor, one name part at a time, never following a
  link (`O_NOFOLLOW`), so no name, however long, resolves outside `dest`;
- modes are 0644, or 0755 for files with an execute bit, and 0755 for folders; owners, times and
  set-id bits are dropped;
- `limits.upload_files` members and `limits.unpacked_bytes` bytes at most; tar metadata headers
  (long names, pax records) at most `MAX_HEADER_BYTES` each, refused before they are read.

Error messages name the member as the archive spells it, never a path on the server.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import io
import os
import tarfile
import tempfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

import yaml

from trestle.errors import BadRequest, PayloadTooLarge, TrestleError
from trestle.runtime.config import CONFIG_FILE, EXTERNAL_DIR
from trestle.settings import Limits

EXCLUDED = {"__pycache__", ".git", ".venv", ".mypy_cache", ".pytest_cache"}
MAX_NAME_BYTES = 1024  # a member's whole name
MAX_PART_BYTES = 255  # one part of a name (the file system's own limit)
MAX_HEADER_BYTES = 64 * 1024  # one GNU long-name or pax header
_CHUNK = 1024 * 1024
_META_TYPES = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
               tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


# -- the client side ------------------------------------------------------------------------------
def pack(folder: Path) -> bytes:
    """The folder as a gzip tar, without caches and VCS folders. A link in the folder is an error
    here already (the gateway refuses links): `ValueError` names it."""
    folder = Path(folder)
    buf = io.BytesIO()

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if EXCLUDED & set(Path(info.name).parts):
            return None
        if info.issym() or info.islnk():
            raise ValueError(f"{folder / info.name} is a link; a pushed folder cannot contain "
                             "links (copy the file into the folder instead)")
        return info

    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for child in sorted(folder.iterdir()):
            tar.add(child, arcname=child.name, filter=keep)
        for index, outside in _external_dirs(folder):
            for child in sorted(outside.iterdir()):
                tar.add(child, arcname=f"{EXTERNAL_DIR}/{index}/{child.name}", filter=keep)
    return buf.getvalue()


def _external_dirs(folder: Path) -> list[tuple[int, Path]]:
    """config.yaml's `external_package_dirs` that lie outside `folder`, with their index: they
    travel in the archive under `EXTERNAL_DIR/{index}/` (`trestle.runtime.config.external_dir`)."""
    try:
        data = yaml.safe_load((folder / CONFIG_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return []  # the config is checked, with a proper message, by ModelConfig
    names = data.get("external_package_dirs") if isinstance(data, dict) else None
    if not isinstance(names, list):
        return []
    root = folder.resolve()
    out = []
    for index, name in enumerate(names):
        path = (folder / str(name)).resolve()
        if path == root or root in path.parents:
            continue  # inside the folder: packed with it
        if not path.is_dir():
            raise ValueError(f"external_package_dirs: {name} is not a folder")
        out.append((index, path))
    return out


# -- receiving the push body ----------------------------------------------------------------------
async def receive(chunks: AsyncIterator[bytes], into_dir: Path, limits: Limits) -> Path:
    """Write the push body to a new file in `into_dir` as it arrives, refusing it (413) as soon as
    it passes `limits.upload_bytes`, whatever `Content-Length` said. Returns the file; the caller
    removes it. Writes happen off the event loop, 1 MiB at a time."""
    fd, name = tempfile.mkstemp(prefix=".push-", suffix=".tar.gz", dir=into_dir)
    path = Path(name)
    size = 0
    pending = bytearray()
    try:
        with open(fd, "wb") as f:
            async for chunk in chunks:
                size += len(chunk)
                if size > limits.upload_bytes:
                    raise PayloadTooLarge(
                        f"the push body is larger than {limits.describe('upload_bytes')}",
                        code="max_upload_bytes")
                pending += chunk
                if len(pending) >= _CHUNK:
                    await asyncio.to_thread(f.write, bytes(pending))
                    pending.clear()
            if pending:
                await asyncio.to_thread(f.write, bytes(pending))
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise BadRequest("the body must be a gzip tar of the model folder (see `trestle push`)")
    return path


# -- unpacking -------------------------------------------------------------------------------------
class _Refused(Exception):
    """Raised inside tarfile's header parsing; turned into a `TrestleError` by `unpack`."""

    def __init__(self, error: TrestleError):
        self.error = error


class _Member(tarfile.TarInfo):
    """A tar member whose metadata headers are refused when too large, before tarfile reads one
    whole into memory (a pax header may claim gigabytes)."""

    def _proc_member(self, tarfile_):
        if self.type in _META_TYPES and self.size > MAX_HEADER_BYTES:
            raise _Refused(BadRequest(
                f"the upload has a tar metadata header of {self.size} bytes; at most "
                f"{MAX_HEADER_BYTES} are allowed"))
        return super()._proc_member(tarfile_)


class _Decompressed:
    """The gunzipped archive as a stream for `tarfile`, refusing to yield more than `limit` bytes."""

    def __init__(self, raw: BinaryIO, limit: int, limits: Limits):
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")
        self._left = limit
        self._limits = limits

    def read(self, size: int = -1) -> bytes:
        data = self._gz.read(_CHUNK if size is None or size < 0 else min(size, _CHUNK * 16))
        self._left -= len(data)
        if self._left < 0:
            raise _Refused(_too_much_data(self._limits))
        return data


def _too_much_data(limits: Limits) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the pushed folder unpacks to more than {limits.describe('unpacked_bytes')}",
        code="max_unpacked_bytes")


def unpack(archive: Path, dest: Path, limits: Limits) -> None:
    """Unpack the gzip tar at `archive` into `dest`, an empty folder (see the module docstring).
    Blocking: run it in a thread. On an error, `dest` holds a part of the folder; remove it."""
    # headers, padding and the end-of-archive blocks on top of the files' own bytes
    stream_limit = limits.unpacked_bytes + limits.upload_files * (MAX_HEADER_BYTES + 2048) + 2**20
    root = os.open(dest, _DIR_FLAGS)
    try:
        with open(archive, "rb") as raw:
            stream = _Decompressed(raw, stream_limit, limits)
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_Member) as tar:
                _unpack_members(tar, root, limits)
    except _Refused as exc:
        raise exc.error from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BadRequest(f"the upload is not a valid gzip tar of a model folder ({_reason(exc)})") from None
    finally:
        os.close(root)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, gzip.BadGzipFile):
        return "not gzip data"
    if isinstance(exc, (EOFError, zlib.error)):
        return "the gzip data is truncated or corrupt"
    return str(exc) or type(exc).__name__  # tarfile's own words: "bad checksum", "empty file"


def _unpack_members(tar: tarfile.TarFile, root: int, limits: Limits) -> None:
    count = 0
    total = 0
    for member in tar:
        count += 1
        if count > limits.upload_files:
            raise PayloadTooLarge(
                "the pushed folder has more than "
                f"{limits.describe('upload_files', ' files and folders')}", code="max_upload_files")
        parts = _parts(member.name)
        shown = _show(member.name)
        if member.issym() or member.islnk():
            raise BadRequest(f"the upload contains a link ({shown}); links are not allowed in a "
                             "pushed folder")
        if member.ischr() or member.isblk() or member.isfifo():
            raise BadRequest(f"the upload contains a device file or FIFO ({shown}); only regular "
                             "files and folders are allowed")
        if member.issparse() or not (member.isreg() or member.isdir()):
            raise BadRequest(f"the upload contains {shown} of an unsupported tar type; only regular "
                             "files and folders are allowed")
        if not parts:  # the archive's root folder itself ("." or "./")
            continue
        if member.isdir():
            os.close(_open_folder(root, parts, shown))
            continue
        total += member.size
        if total > limits.unpacked_bytes:
            raise _too_much_data(limits)
        mode = 0o755 if member.mode & 0o111 else 0o644
        source = tar.extractfile(member)
        assert source is not None  # a regular file
        _write_file(root, parts, shown, source, mode)


def _parts(name: str) -> list[str]:
    """The parts of a member name, or `BadRequest` when it is absolute, climbs, or is too long."""
    shown = _show(name)
    if "\x00" in name:
        raise BadRequest(f"the upload has a member name with a NUL byte ({shown})")
    if name.startswith("/"):
        raise BadRequest(f"the upload has an absolute path ({shown}); names must be relative")
    if len(os.fsencode(name)) > MAX_NAME_BYTES:
        raise BadRequest(f"the upload has a name longer than {MAX_NAME_BYTES} bytes ({shown})")
    parts = []
    raw = name.split("/")
    for i, part in enumerate(raw):
        if part == "..":
            raise BadRequest(f"the upload has a path with `..` ({shown}); names must stay inside "
                             "the folder")
        if part in ("", "."):
            if part == "" and 0 < i < len(raw) - 1:
                raise BadRequest(f"the upload has a name with an empty part ({shown})")
            continue
        if len(os.fsencode(part)) > MAX_PART_BYTES:
            raise BadRequest(f"the upload has a name part longer than {MAX_PART_BYTES} bytes ({shown})")
        parts.append(part)
    return parts


def _show(name: str) -> str:
    """A member name for a message: quoted, shortened, control characters escaped."""
    text = name if len(name) <= 80 else f"{name[:40]}...{name[-30:]}"
    return repr(text)


def _open_folder(root: int, parts: list[str], shown: str) -> int:
    """A descriptor of folder `root/parts...`, creating each missing part (0755) and following
    no link. The caller closes it."""
    fd = os.dup(root)
    try:
        for part in parts:
            created = True
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                created = False
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise BadRequest(f"the upload uses {shown} as a folder where it also has a file "
                                     "of that name") from None
                raise _server_error(exc) from None
            os.close(fd)
            fd = child
            if created:
                os.fchmod(fd, 0o755)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_file(root: int, parts: list[str], shown: str, source: BinaryIO, mode: int) -> None:
    parent = _open_folder(root, parts[:-1], shown)
    try:
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, mode, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.EISDIR, errno.ELOOP):
                raise BadRequest(f"the upload has {shown} both as a file and as a folder") from None
            raise _server_error(exc) from None
    finally:
        os.close(parent)
    with open(fd, "wb") as out:
        # reading may raise the archive's own errors; only the writes are the server's
        while chunk := source.read(_CHUNK):
            try:
                out.write(chunk)
            except OSError as exc:
                raise _server_error(exc) from None
        try:
            out.flush()
            os.fchmod(fd, mode)  # exact, whatever the umask
        except OSError as exc:
            raise _server_error(exc) from None


def _server_error(exc: OSError) -> TrestleError:
    """A failure of the server's own disk, said without the server's paths."""
    if exc.errno == errno.ENOSPC:
        return TrestleError("the server has no disk space left for the upload")
    return TrestleError(f"the server could not write the upload ({os.strerror(exc.errno or 0)})")
