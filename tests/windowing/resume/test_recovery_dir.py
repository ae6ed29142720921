"""A recovery directory is checked before Bytewax opens it: whose state, stray files, --fresh."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pytest

from sensorflow.windowing.resume.identity import RecoveryIdentity, eventhub_identity
from sensorflow.windowing.resume.recovery_dir import IDENTITY_FILE, RecoveryDirError, own_recovery_dir

IDENTITY = RecoveryIdentity(eventhub_identity("ns", "hub", "g1"), "sqlite:///a.db", 5_000_000_000, 5_000_000_000, "ts")


def _commit(directory: Path) -> None:
    """What Bytewax records when an epoch is committed (only the table the check reads)."""
    for part in directory.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as con:
            con.execute("INSERT INTO commits (part_index, commit_epoch) SELECT part_index, 3 FROM parts")
        con.close()


def test_an_empty_directory_gets_partitions_and_the_identity_and_state_is_resumed_only_by_its_own_run(tmp_path: Path):
    directory = tmp_path / "recovery"
    assert own_recovery_dir(directory, IDENTITY, 2) is False
    assert sorted(p.name for p in directory.iterdir()) == ["part-0.sqlite3", "part-1.sqlite3", IDENTITY_FILE]
    other = dataclasses.replace(IDENTITY, input=eventhub_identity("ns", "hub", "g2"))
    assert own_recovery_dir(directory, other, 2) is False  # nothing committed: nothing to misapply, the identity follows
    _commit(directory)
    assert own_recovery_dir(directory, other, 2) is True
    with pytest.raises(RecoveryDirError) as refused:
        own_recovery_dir(directory, IDENTITY, 2)
    assert str(refused.value) == (
        f"recovery state in {directory} belongs to another run (input event hub 'hub' on ns, consumer group 'g2' -> "
        "event hub 'hub' on ns, consumer group 'g1'): resume it with the same input, store and window settings, "
        "rerun with --fresh to start over, or use another --recovery-dir"
    )
    assert own_recovery_dir(directory, IDENTITY, 1, fresh=True) is False  # --fresh: new partitions, new identity
    assert sorted(p.name for p in directory.iterdir()) == ["part-0.sqlite3", IDENTITY_FILE]


def test_committed_state_without_an_identity_is_refused_with_what_to_do(tmp_path: Path):
    directory = tmp_path / "recovery"
    own_recovery_dir(directory, IDENTITY, 1)
    _commit(directory)
    (directory / IDENTITY_FILE).unlink()  # what a release before identities left
    with pytest.raises(RecoveryDirError, match="does not record what input and store it was made from .*--fresh"):
        own_recovery_dir(directory, IDENTITY, 1)
    (directory / IDENTITY_FILE).write_text("{not json")
    with pytest.raises(RecoveryDirError, match=f"{IDENTITY_FILE} is unreadable .*--fresh"):
        own_recovery_dir(directory, IDENTITY, 1)


def test_lost_and_found_and_the_init_steps_scratch_are_left_alone(tmp_path: Path):
    directory = tmp_path / "recovery"
    (directory / "lost+found").mkdir(parents=True)
    (directory / ".init-42").mkdir()
    assert own_recovery_dir(directory, IDENTITY, 1, fresh=True) is False
    assert sorted(p.name for p in directory.iterdir()) == [".init-42", "lost+found", "part-0.sqlite3", IDENTITY_FILE]


@pytest.mark.parametrize(
    ("stray", "message"),
    [
        ("notes.txt", "holds notes.txt, which is not recovery state: give --recovery-dir a directory of its own"),
        ("backup/", "holds backup, which is not recovery state"),
        ("part-0.sqlite3", r"part-0.sqlite3 is not a usable Bytewax recovery partition \(0 bytes; left by an interrupted start\?\): rerun with --fresh"),
    ],
)
def test_a_stray_entry_is_refused_with_what_to_do_and_fresh_clears_only_what_is_ours(tmp_path: Path, stray, message):
    directory = tmp_path / "recovery"
    directory.mkdir()
    if stray.endswith("/"):
        (directory / stray).mkdir()
    else:
        (directory / stray).touch()
    with pytest.raises(RecoveryDirError, match=message):
        own_recovery_dir(directory, IDENTITY, 1)
    if stray.startswith("part-"):
        assert own_recovery_dir(directory, IDENTITY, 1, fresh=True) is False
        assert (directory / "part-0.sqlite3").stat().st_size > 0
    else:
        with pytest.raises(RecoveryDirError):  # --fresh never deletes what is not ours
            own_recovery_dir(directory, IDENTITY, 1, fresh=True)
        assert (directory / stray.rstrip("/")).exists()


def test_an_incomplete_or_mixed_set_of_partitions_is_refused_before_bytewax_stops_on_it(tmp_path: Path):
    directory = tmp_path / "recovery"
    own_recovery_dir(directory, IDENTITY, 3)
    (directory / "part-1.sqlite3").unlink()
    with pytest.raises(RecoveryDirError, match=r"lacks partition\(s\) \[1\] of 3: restore them .*--fresh"):
        own_recovery_dir(directory, IDENTITY, 3)
    # a pod of a cluster holds only its share: no set to check, and --fresh cannot remake it
    assert own_recovery_dir(directory, IDENTITY, 3, make_partitions=False) is False
    with pytest.raises(RecoveryDirError, match="--fresh cannot remake the recovery partitions of a cluster's pod"):
        own_recovery_dir(directory, IDENTITY, 3, make_partitions=False, fresh=True)


def test_a_file_where_the_directory_should_be_is_refused(tmp_path: Path):
    (tmp_path / "recovery").touch()
    with pytest.raises(RecoveryDirError, match="is not a directory"):
        own_recovery_dir(tmp_path / "recovery", IDENTITY, 1)
