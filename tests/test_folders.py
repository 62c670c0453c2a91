"""search.folders: a folder replaced whole, or not at all, whatever step is interrupted."""

from __future__ import annotations

import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from search import folders


def make(parent: Path, name: str, files: dict[str, str]) -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def staged(final: Path, files: dict[str, str]) -> Path:
    staging = folders.staging_folder(final)
    for rel, text in files.items():
        (staging / rel).write_text(text)
    return staging


OLD = {"a.txt": "old a", "b.txt": "old b"}
NEW = {"a.txt": "new a", "c.txt": "new c"}


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_replace_makes_a_real_folder_that_tar_and_copytree_copy(tmp_path):
    final = tmp_path / "reports" / "r"
    folders.replace_folder(staged(final, OLD), final)  # no parent, no old folder yet
    folders.replace_folder(staged(final, NEW), final)
    assert final.is_dir() and not final.is_symlink()
    assert snapshot(final) == NEW
    assert hidden(final.parent) == []  # the staging became ``final``; the old one is gone
    with tarfile.open(tmp_path / "r.tgz", "w:gz") as tar:
        tar.add(final, arcname="r")
    with tarfile.open(tmp_path / "r.tgz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["r/a.txt"].isfile() and not members["r"].issym()
        assert tar.extractfile("r/c.txt").read() == b"new c"
    copy = Path(shutil.copytree(final, tmp_path / "copy"))
    assert snapshot(copy) == NEW and not any(p.is_symlink() for p in copy.rglob("*"))


def test_staging_folders_are_hidden_siblings_readable_by_others(tmp_path):
    final = tmp_path / "r"
    staging = folders.staging_folder(final)
    assert staging.parent == tmp_path and folders.leftover_kind(staging.name, "r") == "staging"
    assert staging.stat().st_mode & 0o777 == 0o755
    folders.discard(staging)
    assert not staging.exists()


def failing_rename(monkeypatch, fail_at: set[int], exc: type[BaseException]) -> list[tuple]:
    """Make the ``fail_at`` calls (1-based) of os.rename raise ``exc``; returns every call."""
    real, calls = os.rename, []

    def rename(src, dst, *args, **kwargs):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) in fail_at:
            raise exc("interrupted")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(folders.os, "rename", rename)
    return calls


@pytest.mark.parametrize("exc", [OSError, KeyboardInterrupt])
@pytest.mark.parametrize(
    ("fail_at", "expected"),
    [
        ({1}, OLD),  # renaming the old folder aside fails: nothing moved
        ({2}, OLD),  # renaming the new one in fails: the old one is renamed back at once
        ({2, 3}, OLD),  # ... and renaming it back fails too (as if the process died there)
        ({3}, NEW),  # the swap is done; deleting the old folder is interrupted
    ],
)
def test_an_interrupted_replacement_leaves_one_whole_folder(
    tmp_path, monkeypatch, exc, fail_at, expected
):
    final = make(tmp_path, "r", OLD)
    staging = staged(final, NEW)
    calls = failing_rename(monkeypatch, fail_at, exc)
    try:
        folders.replace_folder(staging, final)
    except exc:
        folders.discard(staging)  # what a caller does on any error
    monkeypatch.undo()
    assert calls[0][1].startswith(".r.old-")  # the old folder goes aside first
    if fail_at == {2, 3}:
        assert not final.exists()  # the one instant without ``final``: the old one is aside
        assert [folders.leftover_kind(n, "r") for n in hidden(tmp_path)] == ["old"]
    folders.recover(final)
    assert final.is_dir() and not final.is_symlink()
    assert snapshot(final) == expected
    folders.remove_leftovers(final, max_age=0)  # leftovers are only ever whole copies
    assert hidden(tmp_path) == []


def test_recover_puts_back_the_newest_aside_folder(tmp_path):
    make(tmp_path, ".r.old-7-100", {"a.txt": "older"})
    make(tmp_path, ".r.old-7-200", OLD)
    final = tmp_path / "r"
    folders.recover(final)
    assert snapshot(final) == OLD and hidden(tmp_path) == [".r.old-7-100"]  # young: kept
    folders.recover(tmp_path / "absent" / "r")  # no parent folder: nothing to do


def test_leftovers_go_when_stale_and_never_those_of_another_name(tmp_path):
    final = make(tmp_path, "cnn", OLD)
    others = [
        make(tmp_path, "cnn.v2", {"x": "mine"}),
        make(tmp_path, ".cnn.v2.20250101-120000-abcd1234", {"x": "staging of cnn.v2"}),
        make(tmp_path, ".cnn.v2.old-1-2", {"x": "aside of cnn.v2"}),
        make(tmp_path, ".cnn-notes", {"x": "a hidden folder of the user's"}),
    ]
    stale = make(tmp_path, ".cnn.20250101-120000-abcd1234", {"x": "interrupted staging"})
    young = make(tmp_path, ".cnn.20250101-130000-efgh5678", {"x": "a staging being written"})
    deleting = make(tmp_path, ".cnn.del-1-2", {"x": "half deleted"})
    for p in [*others, stale, deleting]:
        age(p, 2 * folders.STALE_SECONDS)
    folders.replace_folder(staged(final, NEW), final)
    assert snapshot(final) == NEW
    assert all(p.exists() for p in [*others, young])
    assert not stale.exists() and not deleting.exists()


def test_leftover_patterns_never_match_another_folders_entries():
    assert folders.leftover_kind(".cnn.20250101-120000-ab_c9", "cnn") == "staging"
    assert folders.leftover_kind(".cnn.link-12-34", "cnn") == "link"
    assert folders.leftover_kind(".cnn.old-12-34", "cnn") == "old"
    assert folders.leftover_kind(".cnn.v2.20250101-120000-abc", "cnn") is None
    assert folders.leftover_kind(".cnn.v2.old-12-34", "cnn") is None
    assert folders.leftover_kind("cnn", "cnn") is None


def test_a_symlinked_folder_of_older_versions_becomes_a_real_one(tmp_path):
    target = make(tmp_path, ".r.20250101-120000-abcd1234", OLD)
    final = tmp_path / "r"
    final.symlink_to(target.name, target_is_directory=True)  # relative, as older versions made
    folders.replace_folder(staged(final, NEW), final)
    assert final.is_dir() and not final.is_symlink()
    assert snapshot(final) == NEW
    assert hidden(tmp_path) == []  # the link's hidden folder went with it


def test_a_hand_made_link_is_replaced_and_its_folder_kept(tmp_path):
    mine = make(tmp_path, "elsewhere", OLD)
    final = tmp_path / "reports" / "r"
    final.parent.mkdir()
    final.symlink_to(mine, target_is_directory=True)
    folders.replace_folder(staged(final, NEW), final)
    assert final.is_dir() and not final.is_symlink() and snapshot(final) == NEW
    assert snapshot(mine) == OLD
