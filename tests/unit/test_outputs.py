"""Output files are safe by construction (aspects_client.outputs): planned and checked
before any work, written atomically through unique exclusive temporary files, never
through a link, all or nothing per source, no temporary file left behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from aspects_client import outputs
from aspects_client.errors import CancelledError, OutputConflictError, OutputError
from aspects_client.outputs import (
    check_plan,
    commit,
    plan_outputs,
    printable,
    source_stem,
    write_atomic,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".partial", ".backup")))


# --- planning: -o means the path given ------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "labels", "overlay", "want"),
    [
        ("out.json", True, True, ("out.json", "out_labels.nii.gz", "out_overlay.png")),
        ("out.txt", True, False, ("out.txt", "out_labels.nii.gz", None)),  # not out.json
        ("res", False, True, ("res", None, "res_overlay.png")),
        ("a.json", "lab.nii.gz", "ov.png", ("a.json", "lab.nii.gz", "ov.png")),
    ],
)
def test_one_source_writes_exactly_the_given_path(tmp_path, output, labels, overlay, want):
    (plan,) = plan_outputs(["dwi.nii.gz"], str(tmp_path / output), labels=labels, overlay=overlay)
    got = tuple(None if p is None else p.name for p in (plan.json, plan.labels, plan.overlay))
    assert got == want


def test_several_sources_need_a_directory(tmp_path):
    with pytest.raises(OutputConflictError, match="need an output directory"):
        plan_outputs(["a.nii.gz", "b.nii.gz"], str(tmp_path / "r.json"))
    assert not (tmp_path / "r.json").exists()  # no directory created by the refusal
    plans = plan_outputs(["x/a.nii.gz", "s3://b/k/b.nii"], f"{tmp_path}/out/", labels=True)
    assert [p.json.name for p in plans] == ["a.json", "b.json"]
    assert all(p.json.parent == tmp_path / "out" for p in plans)
    with pytest.raises(OutputConflictError, match="names one file"):
        plan_outputs(["a.nii.gz", "b.nii.gz"], f"{tmp_path}/", labels="l.nii.gz")


@pytest.mark.parametrize("source", [".nii.gz", "dir/.nii", "..nii.gz", "s3://b/k/../", ""])
def test_a_source_without_a_usable_name_is_refused(tmp_path, source):
    with pytest.raises(OutputConflictError, match="cannot name outputs"):
        plan_outputs([source, "b.nii.gz"], f"{tmp_path}/out/")


def test_stems_cannot_leave_the_directory_or_carry_control_characters():
    assert source_stem("a\nb\x1b[31m.nii.gz") == "a_b_[31m"
    assert source_stem("s3://bucket/p/q/case.nii") == "case"
    assert source_stem("dir\\evil.nii.gz") == "dir_evil"


# --- checking: never an input, never twice, never a link / device / directory -----------------


def test_an_output_that_is_an_input_is_refused(tmp_path):
    src = tmp_path / "X_labels.nii.gz"
    src.write_bytes(b"input")
    plans = plan_outputs([str(src)], str(tmp_path / "X.json"), labels=True)
    with pytest.raises(OutputConflictError, match="is the input"):
        check_plan(plans, [str(src)], overwrite=True)
    link = tmp_path / "hard.json"
    os.link(src, link)  # another name of the same file
    with pytest.raises(OutputConflictError, match="is the input"):
        check_plan(plan_outputs([str(src)], str(link)), [str(src)], overwrite=True)
    assert src.read_bytes() == b"input"


def test_two_outputs_on_one_file_are_refused(tmp_path):
    plans = plan_outputs(["v.nii.gz"], str(tmp_path / "X"), overlay=str(tmp_path / "X"))
    with pytest.raises(OutputConflictError, match="same file"):
        check_plan(plans, [])


def test_links_directories_devices_and_existing_files(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    link = tmp_path / "link.json"
    link.symlink_to(victim)
    with pytest.raises(OutputConflictError, match="symbolic link"):
        check_plan(plan_outputs(["v.nii"], str(link)), [], overwrite=True)
    with pytest.raises(OutputConflictError, match="not a regular file"):
        check_plan(plan_outputs(["v.nii"], "/dev/full"), [], overwrite=True)
    existing = tmp_path / "r.json"
    existing.write_text("old")
    with pytest.raises(OutputConflictError, match="--overwrite"):
        check_plan(plan_outputs(["v.nii"], str(existing)), [])
    check_plan(plan_outputs(["v.nii"], str(existing)), [], overwrite=True)
    assert victim.read_text() == "keep" and existing.read_text() == "old"
    assert not Path("/dev/full.json").exists()


# --- writing: atomic, exclusive, all or nothing ---------------------------------------------


def test_commit_writes_all_files_and_no_temporaries(tmp_path):
    files = {tmp_path / "a.json": b"{}", tmp_path / "sub" / "b.png": b"png"}
    assert commit(files) == list(files)
    assert (tmp_path / "a.json").read_bytes() == b"{}"
    assert (tmp_path / "sub" / "b.png").read_bytes() == b"png"
    assert leftovers(tmp_path) == [] and leftovers(tmp_path / "sub") == []


def test_commit_refuses_existing_files_without_overwrite(tmp_path):
    target = tmp_path / "a.json"
    target.write_bytes(b"old")
    with pytest.raises(OutputConflictError, match="exists"):
        commit({target: b"new"})
    assert target.read_bytes() == b"old" and leftovers(tmp_path) == []
    commit({target: b"new"}, overwrite=True)
    assert target.read_bytes() == b"new"


def test_a_link_planted_at_the_target_is_replaced_never_written_through(tmp_path):
    """The old code wrote '.NAME.partial' through a planted link: any file could be hit."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "out.json"
    (tmp_path / ".out.json.partial").symlink_to(victim)  # the old fixed temporary name
    write_atomic(target, b"result")
    assert victim.read_bytes() == b"precious" and target.read_bytes() == b"result"
    # a link planted at the target itself between the check and the rename
    target.unlink()
    staged = outputs._stage(target, b"data")
    target.symlink_to(victim)
    outputs._place(staged, target, overwrite=True)
    assert victim.read_bytes() == b"precious"
    assert not target.is_symlink() and target.read_bytes() == b"data"


def test_all_or_nothing_when_a_later_file_fails(tmp_path):
    """The label map failing after the JSON was written must not leave the JSON."""
    (tmp_path / "c_dir").mkdir()
    files = {tmp_path / "a.json": b"{}", tmp_path / "c_dir": b"x"}  # a directory: refused
    with pytest.raises(OutputConflictError, match="directory"):
        commit(files, overwrite=True)
    assert not (tmp_path / "a.json").exists() and leftovers(tmp_path) == []


def test_all_or_nothing_restores_replaced_files_on_an_injected_disk_error(tmp_path, monkeypatch):
    a, b = tmp_path / "a.json", tmp_path / "b.png"
    a.write_bytes(b"old a")
    real_replace = os.replace
    calls = []

    def failing_replace(src, dst):  # simulated ENOSPC on the second rename (no full disk here)
        calls.append(dst)
        if Path(dst) == b:
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(OutputError, match="No space left"):
        commit({a: b"new a", b: b"new b"}, overwrite=True)
    monkeypatch.setattr(outputs.os, "replace", real_replace)
    assert a.read_bytes() == b"old a" and not b.exists()
    assert leftovers(tmp_path) == []


def test_cancel_before_the_renames_writes_nothing(tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(CancelledError):
        commit({tmp_path / "a.json": b"{}"}, cancel=stop)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_writers_never_show_a_partial_file(tmp_path):
    """Two writers of one target and a reader: the reader sees one whole version or the
    other, never an empty or mixed file (the old fixed temporary name raced)."""
    target = tmp_path / "t.json"
    payloads = [bytes([65 + i]) * 200_000 for i in range(2)]
    write_atomic(target, payloads[0])
    stop = threading.Event()
    seen_bad: list[int] = []

    def writer(data: bytes) -> None:
        for _ in range(40):
            write_atomic(target, data)

    def reader() -> None:
        while not stop.is_set():
            data = target.read_bytes()
            if data not in payloads:
                seen_bad.append(len(data))

    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    watcher.join()
    assert seen_bad == []
    assert leftovers(tmp_path) == []


def test_staged_files_are_private_until_renamed(tmp_path):
    staged = outputs._stage(tmp_path / "x.json", b"1")
    try:
        assert staged.name.startswith(".x.json.") and staged.name.endswith(".partial")
        other = outputs._stage(tmp_path / "x.json", b"2")
        assert other != staged  # unique names: concurrent writers never share one
        outputs._discard(other)
    finally:
        outputs._discard(staged)
    outputs.discard_all_temps()
    assert leftovers(tmp_path) == []


def test_printable_escapes_terminal_control():
    assert printable("a\nok 1.0 s\x1b[2K\r") == "a\\nok 1.0 s\\x1b[2K\\r"
    assert printable("x\u202eevil") == "x\\u202eevil"
    assert printable("plain é ü 名前") == "plain é ü 名前"


def test_a_write_failure_names_the_output_not_its_hidden_temporary(tmp_path) -> None:
    """The message named ``.out.json.<random>.tmp`` (issue 24); it names the output."""
    from aspects_client.errors import OutputError
    from aspects_client.outputs import commit

    (tmp_path / "not-a-dir").write_text("a file where a directory should be")
    target = tmp_path / "not-a-dir" / "out.json"
    with pytest.raises(OutputError) as info:
        commit({target: b"{}"})
    message = str(info.value)
    assert str(target) in message and ".tmp" not in message, message
