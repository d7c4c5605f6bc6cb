"""THE writer (lrp_llm.results.base.write_atomic) and the up-front output checks: an output
never replaces what is not a regular file, never an input or another output, keeps the
mode of the file it replaces, and cleans up after a writer killed before its rename."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lrp_llm.errors import InputError
from lrp_llm.results.base import STALE_TEMP_SECONDS, TEMP_SUFFIX, check_output, check_outputs, write_atomic

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(path: Path) -> tuple:
    """What is at ``path``: its kind, its link target, its content (regular files), its mode."""
    try:
        st_ = os.lstat(path)
    except FileNotFoundError:
        return ("missing",)
    target = os.readlink(path) if stat.S_ISLNK(st_.st_mode) else None
    content = path.read_bytes() if stat.S_ISREG(st_.st_mode) else None
    return (stat.S_IFMT(st_.st_mode), target, content, stat.S_IMODE(st_.st_mode), st_.st_ino)


def _socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


# ------------------------------------------------------------ what is refused
def test_special_files_and_links_are_refused_and_left_as_they_are(tmp_path):
    regular = tmp_path / "real.json"
    regular.write_text("keep me")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "link.json"
    link.symlink_to(regular)
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere.json")
    sock = _socket(tmp_path / "sock")
    try:
        cases = {
            Path("/dev/null"): "is a device",
            Path("/dev/stdout"): "is a symbolic link",
            fifo: "is a named pipe",
            link: "is a symbolic link",
            dangling: "is a symbolic link",
            tmp_path / "sock": "is a socket",
        }
        for path, message in cases.items():
            before = _snapshot(path)
            with pytest.raises(InputError, match=message) as info:
                write_atomic(path, "new text")
            assert "\n" not in str(info.value) and "not a regular file" in str(info.value)
            assert _snapshot(path) == before, path
        assert regular.read_text() == "keep me" and (tmp_path / "nowhere.json").exists() is False
    finally:
        sock.close()
    # no temporary file is left by any refusal
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX)]


def test_empty_paths_folders_and_missing_folders_are_refused(tmp_path):
    for path in ("", "  "):
        with pytest.raises(InputError, match="empty"):
            write_atomic(path, "x")
    with pytest.raises(InputError, match="--json is empty; pass a file name"):
        check_outputs({"--json": ""})
    with pytest.raises(InputError, match="is a folder"):
        check_output(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        check_output(tmp_path / "missing" / "r.json")
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="cannot write"):
        check_output(tmp_path / "file" / "r.json")  # a parent that is a file


def test_an_existing_files_mode_is_kept_and_a_new_file_gets_the_umask(tmp_path):
    private = tmp_path / "private.json"
    private.write_text("old")
    private.chmod(0o600)
    write_atomic(private, "new")
    assert private.read_text() == "new" and stat.S_IMODE(private.stat().st_mode) == 0o600
    executable = tmp_path / "run.sh"
    executable.write_text("old")
    executable.chmod(0o750)
    write_atomic(executable, "new")
    assert stat.S_IMODE(executable.stat().st_mode) == 0o750
    umask = os.umask(0o027)
    try:
        write_atomic(tmp_path / "fresh.json", "x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "fresh.json").stat().st_mode) == 0o640


def test_an_output_is_never_an_input_or_another_output(tmp_path, monkeypatch):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "x"}\n')
    (tmp_path / "sub").mkdir()
    linked = tmp_path / "linked"
    linked.symlink_to(tmp_path / "sub")
    hard = tmp_path / "hard.jsonl"
    os.link(data, hard)
    monkeypatch.chdir(tmp_path)
    # the same file under other spellings: ./x, a hard link, a symlinked folder
    for spelling in ("data.jsonl", "./data.jsonl", str(data), "sub/../data.jsonl", str(hard)):
        with pytest.raises(InputError, match=r"is also the input --data; writing it would destroy that file"):
            check_outputs({"--json": spelling, "--html": None}, {"the input --data": str(data)})
    for a, b in (("r.json", "./r.json"), ("sub/r.json", "linked/r.json"), (str(tmp_path / "r.json"), "r.json")):
        with pytest.raises(InputError, match="--json and --html name the same file"):
            check_outputs({"--json": a, "--html": b})
    (tmp_path / "sub" / "r.json").write_text("{}")  # existing: told apart by inode
    with pytest.raises(InputError, match="name the same file"):
        check_outputs({"--json": "sub/r.json", "--html": "linked/r.json"})
    check_outputs({"--json": "r.json", "--html": "r.html"}, {"the input --data": "data.jsonl", "--model": None})
    assert data.read_text() == '{"prompt": "x"}\n'


# -------------------------------------------------------------- stale temp files
def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def test_a_writer_killed_before_its_rename_leaves_a_temp_file_the_next_write_removes(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("previous")
    script = (
        "import os, signal, sys\n"
        "from lrp_llm.results import base\n"
        "base.os.replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)\n"
        "base.write_atomic(sys.argv[1], 'new')\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(target)], cwd=ROOT, capture_output=True)
    assert proc.returncode == -9
    (left,) = _temps(tmp_path)
    assert left.startswith(".r.json.") and target.read_text() == "previous"
    # someone else's files of a similar name, and a fresh temp file (a writer at work), stay
    others = [".r.json.abcdefgh.tmp", ".other.json.abcdefgh" + TEMP_SUFFIX, "r.json" + TEMP_SUFFIX]
    for name in others:
        (tmp_path / name).write_text("not ours")
    old = time.time() - STALE_TEMP_SECONDS - 5
    for name in [left, *others]:
        os.utime(tmp_path / name, (old, old))
    (tmp_path / (".r.json.zzzzzzzz" + TEMP_SUFFIX)).write_text("in progress")
    write_atomic(target, "new")
    assert target.read_text() == "new"
    assert not (tmp_path / left).exists()
    assert all((tmp_path / name).read_text() == "not ours" for name in others)
    assert (tmp_path / (".r.json.zzzzzzzz" + TEMP_SUFFIX)).exists()


# ------------------------------------------------- property: nothing is destroyed
KINDS = ("missing", "regular", "fifo", "link-to-regular", "link-to-fifo", "dangling-link", "folder", "input")


def _make(path: Path, kind: str, regular: Path, fifo: Path, data: Path) -> None:
    if kind == "regular":
        path.write_text("old output")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-to-regular":
        path.symlink_to(regular)
    elif kind == "link-to-fifo":
        path.symlink_to(fifo)
    elif kind == "dangling-link":
        path.symlink_to(path.parent / "absent")
    elif kind == "folder":
        path.mkdir()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    json_kind=st.sampled_from(KINDS),
    html_kind=st.sampled_from((*KINDS, "same-as-json", None)),
    spelling=st.sampled_from(("plain", "dot", "absolute", "updown")),
)
def test_outputs_never_replace_a_non_regular_file_or_an_input(tmp_path_factory, json_kind, html_kind, spelling):
    """Every combination of what is at --json and --html (and how the path is spelled): the run
    either writes both files, replacing only regular files that are not inputs, or fails with
    one InputError and changes nothing."""
    import argparse

    from tui.commands.common import OutputFiles

    folder = tmp_path_factory.mktemp("out")
    (folder / "sub").mkdir()
    data = folder / "data.jsonl"
    data.write_text("the input\n")
    regular, fifo = folder / "elsewhere.json", folder / "elsewhere.fifo"
    regular.write_text("elsewhere")
    os.mkfifo(fifo)

    def place(name: str, kind: str | None) -> str | None:
        if kind is None:
            return None
        path = data if kind == "input" else folder / name
        if kind not in ("input", "missing"):
            _make(path, kind, regular, fifo, data)
        spelled = {
            "plain": str(path),
            "dot": str(path.parent / "." / path.name),
            "absolute": os.path.abspath(path),
            "updown": str(path.parent / "sub" / ".." / path.name),
        }
        return spelled[spelling]

    json_path = place("r.json", json_kind)
    html_path = json_path if html_kind == "same-as-json" else place("r.html", html_kind)
    before = {p: _snapshot(p) for p in folder.iterdir()}
    args = argparse.Namespace(json=json_path, html=html_path, data=str(data))
    try:
        outputs = OutputFiles.from_args(args)
    except InputError as exc:
        assert "\n" not in str(exc)
        assert {p: _snapshot(p) for p in folder.iterdir()} == before
        return

    class Result:
        def save(self, path: str) -> None:
            write_atomic(path, '{"r": 1}')

    outputs.write(Result(), lambda result: "<p>page</p>")
    # what was written: only where a regular file or nothing was, and never the input
    assert json_kind in ("missing", "regular") and html_kind in ("missing", "regular", None)
    after = {p: _snapshot(p) for p in folder.iterdir()}
    assert data.read_text() == "the input\n" and regular.read_text() == "elsewhere"
    for p, snap in before.items():
        if p.name not in ("r.json", "r.html"):
            assert after[p] == snap, p
    assert Path(json_path).read_text() == '{"r": 1}'
    if html_path is not None:
        assert Path(html_path).read_text() == "<p>page</p>"
