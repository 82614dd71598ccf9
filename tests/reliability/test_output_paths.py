"""Output paths: uniret never destroys a user's files. Only a directory uniret wrote is replaced, inputs are
protected, replacement is atomic, one writer at a time (a lock file), no leftovers, the user's umask applies."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import HashEncoder
from uniret.atomic import (
    MARKER,
    OutputLockedError,
    OutputPathError,
    atomic_directory,
    check_output,
    is_uniret_directory,
    output_lock,
)
from uniret.cli import main
from uniret.data import Corpus, Document, save_beir
from uniret.index.faiss_index import FaissIndex


def tiny_index(path, n=5):
    idx = FaissIndex(HashEncoder(dim=8))
    idx.index(Corpus.from_documents(Document(id=f"d{i}", text=f"text {i}") for i in range(n)))
    return idx.save(path)


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name or p.name.endswith(".lock"))


@pytest.fixture()
def user_dir(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("years of work")
    return d


def test_a_users_directory_file_or_cwd_is_never_replaced(tmp_path, user_dir, monkeypatch):
    for target in (user_dir, user_dir / "thesis.tex"):
        with pytest.raises(OutputPathError, match=str(target.name)):
            with atomic_directory(target):
                pass
    assert (user_dir / "thesis.tex").read_text() == "years of work"
    monkeypatch.chdir(user_dir)
    with pytest.raises(OutputPathError, match="current, root or home directory"):
        check_output(".")
    assert leftovers(tmp_path) == []


def test_cli_index_refuses_users_files_and_its_own_data(tmp_path, user_dir, scifact, capsys):
    data = save_beir(scifact.sample(num_queries=3, num_docs=20, split="test"), tmp_path / "data")
    for output in (user_dir, data, data / "qrels", tmp_path):
        rc = main(["index", "--data", str(data), "--retriever", "dense", "--output", str(output)])
        assert rc == 2
        err = capsys.readouterr().err
        assert "uniret index: error: --output" in err and str(output) in err
    assert (user_dir / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in data.iterdir()) == ["corpus.jsonl", "qrels", "queries.jsonl"]
    rc = main(["eval", "--data", str(data), "--retriever", "dense", "--output-dir", str(user_dir)])
    assert rc == 2 and "holds files uniret did not write" in capsys.readouterr().err


def test_replacing_an_index_is_atomic_and_leaves_nothing(tmp_path):
    path = tiny_index(tmp_path / "idx", n=5)
    assert is_uniret_directory(path) and (path / MARKER).is_file()
    inode = path.stat().st_ino
    tiny_index(path, n=7)
    assert FaissIndex.load(path, encoder=HashEncoder(dim=8))._index.ntotal == 7
    assert path.stat().st_ino != inode
    assert leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_directory(tmp_path):
    path = tiny_index(tmp_path / "idx", n=5)
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_directory(path) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("boom")
    assert FaissIndex.load(path, encoder=HashEncoder(dim=8))._index.ntotal == 5
    assert leftovers(tmp_path) == []


HOLD = """
import sys, time
from uniret.atomic import atomic_directory
with atomic_directory(sys.argv[1]) as tmp:
    (tmp / "partial").write_text("x")
    print("inside", flush=True)
    time.sleep(60)
"""


def start_holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "inside"
    return proc


def test_a_second_writer_gets_a_locked_error(tmp_path):
    path = tiny_index(tmp_path / "idx")
    holder = start_holder(path)
    try:
        with pytest.raises(OutputLockedError, match=r"idx is locked: another process \(pid \d+\)"):
            with atomic_directory(path):
                pass
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_writer_leaves_the_old_index_and_the_next_one_cleans_up(tmp_path):
    path = tiny_index(tmp_path / "idx", n=5)
    holder = start_holder(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert FaissIndex.load(path, encoder=HashEncoder(dim=8))._index.ntotal == 5  # readers still see the old one
    assert any(".tmp-" in name for name in leftovers(tmp_path))
    tiny_index(path, n=6)  # the lock of a dead process is free; its temporary directory is removed
    assert FaissIndex.load(path, encoder=HashEncoder(dim=8))._index.ntotal == 6
    assert leftovers(tmp_path) == []


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    with output_lock(tmp_path / "idx"):
        tiny_index(tmp_path / "idx")  # a command locks early; the backend's save takes the lock again
    assert leftovers(tmp_path) == []


def test_saved_directories_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = tiny_index(tmp_path / "idx")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert stat.S_IMODE((path / "manifest.json").stat().st_mode) == 0o644
    old = os.umask(0o077)
    try:
        path = tiny_index(tmp_path / "private")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_lock_wait_is_not_a_race(tmp_path):
    """Many writers in turn: each gets the lock or a clear error, and the result is always a whole index."""
    path = tiny_index(tmp_path / "idx")
    procs = [subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from uniret.atomic import atomic_directory, OutputLockedError\n"
                               "try:\n"
                               "    with atomic_directory(sys.argv[1]) as t:\n"
                               "        (t / 'manifest.json').write_text('{\"kind\": \"x\", \"uniret_version\": 1, "
                               "\"num_docs\": 0}')\n"
                               "        time.sleep(0.2)\n"
                               "    print('wrote')\n"
                               "except OutputLockedError:\n"
                               "    print('locked')\n", str(path)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outcomes = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert set(outcomes) <= {"wrote", "locked"} and "wrote" in outcomes
    assert (path / "manifest.json").is_file()
    time.sleep(0.1)
    assert leftovers(tmp_path) == []


def test_mine_never_overwrites_a_users_file(tmp_path, capsys):
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    assert main(["mine", "--data", "scifact", "--output", str(notes)]) == 2
    assert "exists and is not a file uniret wrote" in capsys.readouterr().err
    assert notes.read_text() == "my notes\n"
    assert main(["mine", "--data", "scifact", "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
