# SPDX-License-Identifier: GPL-2.0-or-later
"""The engine's command runtime on its own (no hosts): what it does with rows it does not know."""

import os
import shutil
import subprocess
import time
import uuid

import pytest

from conftest import make_workdir
from enginetest import ENGINE_BIN, Engine
from ferrytest import wait_for


@pytest.fixture
def engine():
    d = make_workdir()
    e = Engine(d)
    yield e
    code = e.stop()
    if not os.environ.get("FERRY_KEEP_TMP"):
        shutil.rmtree(d, ignore_errors=True)
    assert code == 0


def insert_command(engine, type_, phase=""):
    cid = str(uuid.uuid4())
    now = int(time.time())
    engine.sql("INSERT INTO commands (id, type, state, phase, params, created, updated) "
               "VALUES (?, ?, 'active', ?, '{}', ?, ?)", (cid, type_, phase, now, now))
    return cid


def command_row(engine, cid):
    return engine.sql("SELECT state, error FROM commands WHERE id = ?", (cid,))[0]


def test_unknown_stored_kind_or_phase_fails_with_an_event(engine):
    """A row written by a newer engine (or damaged) fails; it never runs as a move or anything else."""
    engine.stop()
    unknown = insert_command(engine, "frobnicate_disk")
    bad_phase = insert_command(engine, "move_disk", "teleport")
    engine.start()
    for cid in (unknown, bad_phase):
        wait_for(lambda: command_row(engine, cid)[0] != "active", 10, "the command to end")
        state, error = command_row(engine, cid)
        assert state == "failed", (cid, state)
        assert "does not know how to run" in error
    events = engine.get("/api/events")["events"]
    assert any(ev["command_id"] == unknown and "frobnicate_disk" in ev["message"] for ev in events)
    assert any(ev["command_id"] == bad_phase and "teleport" in ev["message"] for ev in events)


def test_second_engine_on_one_sqlite_file_refuses_to_start():
    """Two engines on one SQLite file would both be active (double copies, double fences): the second exits
    with an error naming the lock file; the first keeps serving, reads and writes."""
    d = make_workdir()
    db = os.path.join(d, "engine.db")
    first = Engine(d, db=db)       # SQLite whatever FERRY_TEST_DB says: the lock is SQLite's
    try:
        r = subprocess.run([ENGINE_BIN, "--port=0", f"--db={db}", *first.pki.engine_args()],
                           capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert r.returncode != 0, r.stderr
        assert f"{db}.lock is locked" in r.stderr and "another ferry-engine uses" in r.stderr, r.stderr
        assert "use PostgreSQL for several engines" in r.stderr, r.stderr
        assert first.proc.poll() is None
        assert first.get("/api/hosts") is not None
        vm = first.post("/api/vms", {"name": "vm-after-refusal"})
        assert vm["name"] == "vm-after-refusal"
    finally:
        code = first.stop()
        if not os.environ.get("FERRY_KEEP_TMP"):
            shutil.rmtree(d, ignore_errors=True)
    assert code == 0
