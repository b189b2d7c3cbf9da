"""Pushed archives cannot write outside their folder, and pushes are bounded.

Unit tests drive `trestle.deploy.build.package.unpack` with crafted archives (the CVE-2025-4517
pattern that gets through Python 3.11.7's `tarfile` `data` filter included); the rest POSTs
crafted bodies to a real `trestle serve` started with small limits.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tarfile
import threading
from pathlib import Path

import httpx
import pytest

from support import start_server
from trestle.deploy.build.package import MAX_HEADER_BYTES, unpack
from trestle.errors import BadRequest, PayloadTooLarge
from trestle.settings import Limits

from .archives import (
    MODEL, bomb, entry, folder, hardlink_escape, model_folder, pax_header_bomb,
    path_max_escape, symlink, symlinked_folder_chain, targz,
)

MiB = 1024 * 1024
SMALL = Limits(upload_bytes=8 * MiB, unpacked_bytes=16 * MiB, upload_files=100)


ESCAPES = ["cve_2025_4517_path_max", "symlinked_folder_chain", "absolute_path", "dotdot",
           "dotdot_after_folder", "hardlink", "symlink_to_file"]


def escapes(outside_from_dest: str, outside: Path) -> dict[str, list]:
    """Archives that try to write `pwned` into the folder `outside` (`outside_from_dest` is the
    same folder relative to the unpack folder)."""
    return {
        "cve_2025_4517_path_max": path_max_escape(outside_from_dest),
        "symlinked_folder_chain": symlinked_folder_chain(outside_from_dest),
        "absolute_path": [entry(f"{outside}/pwned", data=b"x")],
        "dotdot": [entry(f"{outside_from_dest}/pwned", data=b"x")],
        "dotdot_after_folder": [folder("model"), entry(f"model/../{outside_from_dest}/pwned", data=b"x")],
        "hardlink": hardlink_escape(f"{outside_from_dest}/pwned"),
        "symlink_to_file": [symlink("pwned", f"{outside_from_dest}/pwned")],
    }


def refused(tmp_path: Path, members: list, limits: Limits = SMALL) -> BadRequest:
    dest = tmp_path / "dest"
    dest.mkdir(exist_ok=True)
    archive = tmp_path / "push.tar.gz"
    archive.write_bytes(targz(members))
    with pytest.raises(BadRequest) as info:
        unpack(archive, dest, limits)
    assert str(dest) not in info.value.message  # names as the archive spells them, never ours
    return info.value


# -- unpack, unit ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ESCAPES)
def test_escapes_are_refused_and_write_nothing_outside(tmp_path, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    if name == "hardlink":
        (outside / "pwned").write_text("untouched")
    err = refused(tmp_path, escapes("../outside", outside)[name])
    assert err.status_code == 400
    assert not (outside / "pwned").exists() or (outside / "pwned").read_text() == "untouched"
    assert sorted(p.name for p in outside.iterdir()) == (["pwned"] if name == "hardlink" else [])


def test_the_cve_pattern_is_refused_at_its_first_link(tmp_path):
    (tmp_path / "outside").mkdir()
    err = refused(tmp_path, path_max_escape("../outside"))
    assert "link ('a')" in err.message


@pytest.mark.parametrize("type_, words", [
    (tarfile.FIFOTYPE, "device file or FIFO"),
    (tarfile.CHRTYPE, "device file or FIFO"),
    (tarfile.BLKTYPE, "device file or FIFO"),
    (b"V", "unsupported tar type"),  # a GNU volume header: neither file nor folder
])
def test_special_members_are_refused(tmp_path, type_, words):
    err = refused(tmp_path, [*model_folder(), entry("model/odd", type_)])
    assert words in err.message and "'model/odd'" in err.message


@pytest.mark.parametrize("members, words", [
    ([entry("ab/" * 400 + "f", data=b"x")], "longer than 1024 bytes"),
    ([entry("p" * 256, data=b"x")], "longer than 255 bytes"),
    ([entry("a//b", data=b"x")], "empty part"),
    ([entry("model", data=b"x"), entry("model/model.py", data=MODEL)], "as a folder"),
    ([folder("model"), entry("model", data=b"x")], "both as a file and as a folder"),
])
def test_bad_names_are_refused(tmp_path, members, words):
    assert words in refused(tmp_path, members).message


def test_names_around_path_max_with_real_folders_are_refused_not_truncated(tmp_path):
    # 17 folders of 247 characters: 4,216 bytes, past PATH_MAX (4,096), with no link at all
    deep = "/".join(["d" * 247] * 17)
    err = refused(tmp_path, [folder(deep), entry(f"{deep}/f", data=b"x")])
    assert "longer than 1024 bytes" in err.message


def test_modes_are_0644_or_0755_and_owners_and_set_id_bits_are_dropped(tmp_path):
    members = [
        entry("config.yaml", data=b"model_name: m\n", mode=0o666),
        folder("model", mode=0o777),
        entry("model/model.py", data=MODEL, mode=0o6777),
        entry("run.sh", data=b"#!/bin/sh\n", mode=0o4710),
        folder("secret", mode=0o000),
        entry("secret/f", data=b"x", mode=0o000),
    ]
    for info, _ in members:
        info.uid, info.gid, info.uname = 0, 0, "root"
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(targz(members))
    unpack(archive, dest, SMALL)
    modes = {p: stat.S_IMODE((dest / p).stat().st_mode)
             for p in ("config.yaml", "model", "model/model.py", "run.sh", "secret", "secret/f")}
    assert modes == {"config.yaml": 0o644, "model": 0o755, "model/model.py": 0o755,
                     "run.sh": 0o755, "secret": 0o755, "secret/f": 0o644}
    assert (dest / "model/model.py").read_bytes() == MODEL


def test_leading_dot_slash_names_unpack(tmp_path):
    members = [folder("."), entry("./config.yaml", data=b"model_name: m\n"), folder("./model"),
               entry("./model/model.py", data=MODEL)]
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(targz(members))
    unpack(archive, dest, SMALL)
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == [
        "config.yaml", "model", "model/model.py"]


def test_a_zip_bomb_stops_at_the_unpacked_limit(tmp_path):
    data = bomb(64 * MiB)
    assert len(data) < 200 * 1024
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(data)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PayloadTooLarge) as info:
        unpack(archive, dest, SMALL)
    assert "--max-unpacked-bytes" in info.value.message and "16M" in info.value.message
    assert sum(p.stat().st_size for p in dest.rglob("*") if p.is_file()) <= 16 * MiB


def test_the_member_count_is_bounded(tmp_path):
    members = [entry(f"f{i}", data=b"x") for i in range(101)]
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(targz(members))
    (tmp_path / "dest").mkdir()
    with pytest.raises(PayloadTooLarge) as info:
        unpack(archive, tmp_path / "dest", SMALL)
    assert "more than 100 files and folders" in info.value.message
    assert "--max-upload-files" in info.value.message


def test_a_huge_pax_header_is_refused_before_it_is_read(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(pax_header_bomb(MAX_HEADER_BYTES * 4))
    (tmp_path / "dest").mkdir()
    with pytest.raises(BadRequest) as info:
        unpack(archive, tmp_path / "dest", SMALL)
    assert "metadata header" in info.value.message


@pytest.mark.parametrize("body, words", [
    (b"not gzip at all", "not gzip data"),
    (targz(model_folder())[:-20], "truncated or corrupt"),
    (__import__("gzip").compress(b"x" * 700, mtime=0), "valid gzip tar"),
], ids=["not gzip", "truncated", "gzip of no tar"])
def test_broken_archives_are_400s(tmp_path, body, words):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(body)
    (tmp_path / "dest").mkdir()
    with pytest.raises(BadRequest) as info:
        unpack(archive, tmp_path / "dest", SMALL)
    assert words in info.value.message and str(tmp_path) not in info.value.message


def test_pack_refuses_a_folder_with_a_link(tmp_path):
    from trestle.deploy.build.package import pack

    (tmp_path / "config.yaml").write_text("model_name: m\n")
    (tmp_path / "weights").symlink_to("/etc/hostname")
    with pytest.raises(ValueError, match="is a link"):
        pack(tmp_path)


def test_unpacking_runs_off_the_event_loop(tmp_path, monkeypatch):
    """While a push unpacks, the gateway's event loop keeps running: the unpack waits (in its
    thread) until a coroutine on the loop has seen it in progress. On the loop it would wait in
    vain and the push would fail."""
    from trestle.deploy import folder as folder_module
    from trestle.deploy import manager as manager_module
    from trestle.deploy.inprocess import InProcessBackend
    from trestle.settings import Settings
    from trestle.store import Store

    started, seen = threading.Event(), threading.Event()
    real_unpack = folder_module.unpack

    def watched_unpack(*args):
        started.set()
        if not seen.wait(timeout=60):
            raise AssertionError("the event loop did not run while the upload was unpacked")
        return real_unpack(*args)

    monkeypatch.setattr(folder_module, "unpack", watched_unpack)
    archive = tmp_path / "push.tar.gz"
    archive.write_bytes(targz(model_folder()))

    async def scenario():
        settings = Settings(home=tmp_path / "home", builtin_models=False)
        settings.home.mkdir()
        store = await Store.open(settings.db_url)
        manager = manager_module.DeploymentManager(store, InProcessBackend(), settings)

        async def watch():
            while not started.is_set():
                await asyncio.sleep(0.01)
            seen.set()

        try:
            watcher = asyncio.create_task(watch())
            result = await manager.push(archive)
            await watcher
            return result
        finally:
            await manager.close()
            await store.close()

    result = asyncio.run(asyncio.wait_for(scenario(), timeout=120))
    assert result.deployment.id and seen.is_set()


# -- a real gateway ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """`trestle serve` with small limits: two as options, one from its environment variable."""
    home = tmp_path_factory.mktemp("uploads")
    os.environ["TRESTLE_MAX_UPLOAD_FILES"] = "100"
    try:
        srv = start_server(home, "--no-builtin", "--max-upload-bytes", "8M",
                           "--max-unpacked-bytes", "16M")
    finally:
        del os.environ["TRESTLE_MAX_UPLOAD_FILES"]
    yield srv
    srv.stop()


def post(srv, body, **kwargs) -> httpx.Response:
    with httpx.Client(base_url=srv.url, headers=srv.headers, timeout=300) as http:
        return http.post("/api/v1/push", content=body,
                         headers={"Content-Type": "application/gzip"}, **kwargs)


def leftovers(srv) -> list[str]:
    """Upload files or staging folders left behind in the deployments folder."""
    root = srv.home / "deployments"
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.exists() else []


def deployment_count(srv) -> int:
    with srv.client() as http:
        return len(http.get("/api/v1/deployments").json()["deployments"])


def vm_peak(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc")


@pytest.mark.parametrize("name", ESCAPES)
def test_the_gateway_refuses_escaping_archives(gateway, name):
    home = gateway.home
    outside = home / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "pwned").unlink(missing_ok=True)
    # the unpack folder is TRESTLE_HOME/deployments/.upload-XXXX
    members = [*model_folder(), *escapes("../../outside", outside)[name]]
    before = deployment_count(gateway)
    resp = post(gateway, targz(members))
    assert resp.status_code == 400, resp.text
    message = resp.json()["error"]["message"]
    assert str(home / "deployments") not in message and ".upload-" not in message
    assert not (outside / "pwned").exists()
    assert deployment_count(gateway) == before
    assert leftovers(gateway) == []


def test_the_gateway_unpacks_a_good_folder_with_modes_normalised(gateway):
    members = [entry("config.yaml", data=b"model_name: modes\n", mode=0o666),
               folder("model", mode=0o777), entry("model/model.py", data=MODEL, mode=0o4777)]
    resp = post(gateway, targz(members))
    assert resp.status_code == 201, resp.text
    src = next((gateway.home / "deployments").glob("modes-*/src"))
    assert stat.S_IMODE((src / "model/model.py").stat().st_mode) == 0o755
    assert stat.S_IMODE((src / "config.yaml").stat().st_mode) == 0o644
    assert stat.S_IMODE((src / "model").stat().st_mode) == 0o755
    assert leftovers(gateway) == []


def test_a_zip_bomb_push_is_a_413_naming_the_limit(gateway):
    before = deployment_count(gateway)
    resp = post(gateway, bomb(181 * MiB))
    assert resp.status_code == 413, resp.text
    error = resp.json()["error"]
    assert "--max-unpacked-bytes" in error["message"] and error["code"] == "max_unpacked_bytes"
    assert deployment_count(gateway) == before and leftovers(gateway) == []


def test_too_many_files_is_a_413_naming_the_limit_set_by_environment(gateway):
    members = [*model_folder(), *(entry(f"data/f{i}", data=b"x") for i in range(120))]
    resp = post(gateway, targz(members))
    assert resp.status_code == 413
    assert "TRESTLE_MAX_UPLOAD_FILES" in resp.json()["error"]["message"]
    assert "100 files and folders" in resp.json()["error"]["message"]


def test_a_declared_content_length_over_the_limit_is_refused_before_reading(gateway):
    resp = post(gateway, os.urandom(9 * MiB))  # httpx declares its length
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "max_upload_bytes"
    assert "8M" in resp.json()["error"]["message"]


def test_a_chunked_body_over_the_limit_is_cut_off_while_it_streams(gateway):
    """400 MB sent chunked (no Content-Length): refused once it passes 8M, and the gateway's
    peak memory does not grow with the body."""
    sent = 0

    def chunks():
        nonlocal sent
        block = b"\0" * MiB
        for _ in range(400):
            sent += len(block)
            yield block

    peak_before = vm_peak(gateway.proc.pid)
    resp = post(gateway, chunks())
    assert resp.status_code == 413, resp.text
    assert "--max-upload-bytes" in resp.json()["error"]["message"]
    assert sent < 400 * MiB  # the gateway did not read it all
    assert vm_peak(gateway.proc.pid) - peak_before < 64 * MiB
    assert leftovers(gateway) == []


def test_an_empty_body_is_a_400(gateway):
    resp = post(gateway, b"")
    assert resp.status_code == 400
    assert "gzip tar" in resp.json()["error"]["message"]


def test_a_large_chunked_push_within_the_limit_goes_to_disk_not_memory(tmp_path):
    """400 MB, chunked, under the default 2G limit: written to disk as it arrives (the gateway's
    peak memory stays flat), then refused as not being a gzip tar."""
    srv = start_server(tmp_path / "home", "--no-builtin")
    try:
        def chunks():
            block = b"\0" * MiB
            for _ in range(400):
                yield block

        peak_before = vm_peak(srv.proc.pid)
        resp = post(srv, chunks())
        assert resp.status_code == 400, resp.text
        assert "not gzip data" in resp.json()["error"]["message"]
        assert vm_peak(srv.proc.pid) - peak_before < 64 * MiB
        assert leftovers(srv) == []
    finally:
        srv.stop()


def test_every_limit_is_documented_and_is_a_serve_option():
    from click.testing import CliRunner

    from support import ROOT
    from trestle.cli.main import cli
    from trestle.settings import format_size

    doc = (ROOT / "docs" / "security.md").read_text()
    help_text = CliRunner().invoke(cli, ["serve", "-h"], terminal_width=200).output
    defaults = Limits()
    for name in Limits.names():
        value = getattr(defaults, name)
        shown = format_size(value) if name.endswith("_bytes") else str(value)
        row = f"| `{shown}` | `{Limits.option(name)}` | `{Limits.envvar(name)}` |"
        assert row in doc, f"docs/security.md has no row {row}"
        assert Limits.option(name) in help_text and Limits.envvar(name) in help_text
