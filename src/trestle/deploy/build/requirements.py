"""What a deployment asks pip to install: config.yaml's `requirements` list and `requirements_file`.

Both may be given; pip gets both (`pip install LINE... -r FILE`), so the file keeps pip's own
semantics: comments, options, `-r` / `-c` includes relative to the file that names them.

`Requirements.digest` is what the virtualenv cache is keyed by: the list, and the text of the file
and of every file it includes (read here, in the order pip reads them), so an edit anywhere in
them makes a new environment, and the same requirements pushed again reuse the one built before.

Includes are read only inside the model folder: a `-r` or `-c` that names an absolute path, a URL
or a path that leaves the folder is refused (pip runs on the gateway, which must not be made to
read its own files into a build log). A requirement that is a local path (`./pkg`, `-e .`,
`file:...`) depends on files that the digest does not cover, so such a deployment gets an
environment of its own (`shareable` is False).
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from trestle.errors import BadRequest

MAX_INCLUDE_DEPTH = 16
MAX_FILE_BYTES = 1024 * 1024
_INCLUDE = re.compile(r"^(?:-[rc]\s*|--(?:requirement|constraint)(?:\s*=\s*|\s+))(\S.*)$")
_COMMENT = re.compile(r"(^|\s+)#.*$")
_LOCAL = re.compile(r"^(-e\s|--editable[\s=]|\.|/|file:)")


@dataclass(frozen=True)
class Requirements:
    lines: tuple[str, ...] = ()  # config.yaml `requirements`
    file: str | None = None  # config.yaml `requirements_file`, relative to the model folder
    digest: str = ""  # sha256 of the list and the text of every file read (see the docstring)
    shareable: bool = True  # False when a line is a local path: the digest does not cover it

    def __bool__(self) -> bool:
        return bool(self.lines or self.file)

    def flat(self, folder: Path) -> list[str]:
        """The requirements as lines that need no file of `folder` (for pip elsewhere, e.g. on a
        Ray node): the list, then the file's lines with its `-r` includes read in place, without
        comments. A `-c` constraints include cannot travel that way: `BadRequest` says so."""
        lines = list(self.lines)
        if self.file:
            _read(folder, _inside(folder, PurePosixPath(self.file), "requirements_file"),
                  hashlib.sha256(), [], 0, lines)
        return lines

    def pip_args(self, folder: Path) -> list[str]:
        """The arguments to `pip install` (run with `folder` as its working directory)."""
        args = list(self.lines)
        if self.file:
            args += ["-r", str(folder / self.file)]
        return args


def read_requirements(folder: Path, lines: list[str], file: str | None) -> Requirements:
    """The requirements of the model folder `folder`; a `BadRequest` names what is wrong with
    the file (missing, too large, an include outside the folder, an include loop)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for line in lines:
        h.update(b"L" + line.encode() + b"\0")
    shareable = not any(_LOCAL.match(line.strip()) for line in lines)
    if file:
        seen: list[str] = []
        shareable = _read(folder, _inside(folder, PurePosixPath(file), "requirements_file"),
                          h, seen, 0) and shareable
    return Requirements(tuple(lines), file or None, h.hexdigest(), shareable)


def _inside(folder: Path, rel: PurePosixPath, what: str) -> PurePosixPath:
    """`rel` normalised, refused when it is absolute or leaves `folder`."""
    if rel.is_absolute() or "://" in str(rel):
        raise BadRequest(f"{what} {str(rel)!r} must be a path inside the model folder",
                         param="requirements_file")
    parts: list[str] = []
    for part in rel.parts:
        if part == "..":
            if not parts:
                raise BadRequest(f"{what} {str(rel)!r} leaves the model folder",
                                 param="requirements_file")
            parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath(*parts)


def _read(folder: Path, rel: PurePosixPath, h, seen: list[str], depth: int,
          out: list[str] | None = None) -> bool:
    """Hash `rel` and what it includes; return whether it names no local path. With `out`, add
    its requirement lines there, includes read in place (`Requirements.flat`)."""
    if depth > MAX_INCLUDE_DEPTH:
        raise BadRequest(f"requirements files include each other more than {MAX_INCLUDE_DEPTH} "
                         "levels deep", param="requirements_file")
    if str(rel) in seen:
        return True  # pip reads it again; its text is in the digest already
    seen.append(str(rel))
    path = folder / rel
    if path.is_symlink() or not path.is_file():
        raise BadRequest(f"requirements file {str(rel)!r} is not a file in the model folder",
                         param="requirements_file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise BadRequest(f"requirements file {str(rel)!r} is larger than 1 MiB",
                         param="requirements_file")
    data = path.read_bytes()
    h.update(b"F" + str(rel).encode() + b"\0" + data + b"\0")
    shareable = True
    text = data.decode("utf-8", errors="replace").replace("\\\n", "")
    for raw in text.splitlines():
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        match = _INCLUDE.match(line)
        if match:
            target = shlex.split(match.group(1))[0]
            include = _inside(folder, rel.parent / target, "included file")
            if out is not None and not line.startswith(("-r", "--requirement")):
                raise BadRequest(f"requirements file {str(rel)!r} includes the constraints file "
                                 f"{str(include)!r} (-c), which cannot be sent where pip runs "
                                 "elsewhere: pin those versions in the requirements instead",
                                 param="requirements_file")
            shareable = _read(folder, include, h, seen, depth + 1, out) and shareable
        else:
            if _LOCAL.match(line):
                shareable = False
            if out is not None:
                out.append(line)
    return shareable
