"""Replace a folder by a new one so that an interruption never leaves a half-written one.

A caller writes every file into ``staging_folder(final)`` (a hidden sibling,
``.NAME.<date>-<time>-<random>``), then calls ``replace_folder(staging, final)``; on any error
before that returns it calls ``discard(staging)``. ``recover(final)`` repairs what an earlier,
interrupted replacement left behind; callers run it before they start.

``replace_folder`` syncs the new files to disk, renames the old folder aside
(``.NAME.old-<pid>-<ns>``), renames the new one in, and deletes the old one. A reader of
``final`` sees, at every instant:

1. while the new files are written and synced: the old folder, untouched;
2. between the two renames (two system calls apart): no ``final``, and the old folder whole
   under its aside name. If the second rename fails (or Ctrl-C arrives), the old folder is
   renamed back before the error propagates; if the process dies right there, the next
   ``recover`` renames it back;
3. after the second rename: the new folder, whole (its files and the directory entry synced).
   The old one is renamed to ``.NAME.del-<pid>-<ns>`` and deleted; an interruption there leaves
   only a leftover, never a half-deleted folder under a name ``recover`` would restore.

Hidden leftovers of interrupted replacements are removed by later calls once they are an hour
old (a younger one may belong to a replacement running right now). Only the names above, for
exactly this NAME, are ever touched: ``cnn``'s leftovers never include ``cnn.v2``'s folders.

``final`` is always a real folder, so ``tar`` and ``cp -r`` copy its files. A ``final`` that is a
symbolic link to a hidden sibling folder (as older versions made it) is migrated on its next
replacement: the link gives way to a real folder and the folder it pointed to is deleted; a link
made by hand to a folder elsewhere is replaced, and that folder is left alone.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path

STALE_SECONDS = 3600  # leftovers older than this belong to no replacement still running
STAGING, OLD, DELETING, LINK = "staging", "old", "del", "link"  # kinds of hidden siblings


def leftover_kind(entry: str, name: str) -> str | None:
    """Which hidden sibling of folder ``name`` the directory entry ``entry`` is, None if none.

    ``link`` is a temporary symbolic link made by older versions, which swapped links.
    """
    staging = r"(\d{8}-\d{6}-[A-Za-z0-9_]+)"  # date-time-random, as staging_folder names it
    other = rf"({OLD}|{DELETING}|{LINK})-\d+-\d+"  # kind-pid-nanoseconds
    found = re.fullmatch(rf"\.{re.escape(name)}\.(?:{staging}|{other})", entry)
    if found is None:
        return None
    return STAGING if found[1] else found[2]


def staging_folder(final: Path) -> Path:
    """A new, empty hidden folder beside ``final`` (making its parent) to write into."""
    final.parent.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.{stamp}-", dir=final.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the folder is meant to be shared
    except BaseException:
        discard(staging)
        raise
    return staging


def discard(staging: Path) -> None:
    """Remove a staging folder that will not be swapped in (nothing if it is gone)."""
    shutil.rmtree(staging, ignore_errors=True)


def replace_folder(staging: Path, final: Path) -> None:
    """Make the finished ``staging`` folder ``final``, deleting the old one (see the module)."""
    _fsync_tree(staging)  # the files reach the disk before the rename makes them ``final``
    aside = _sibling(final, OLD) if _exists(final) else None
    try:
        if aside is not None:
            os.rename(final, aside)
        os.rename(staging, final)
    except BaseException:
        if aside is not None and _exists(aside) and not _exists(final):
            try:
                os.rename(aside, final)
            except OSError:
                pass  # the old folder stays whole aside; ``recover`` renames it back
        raise
    _fsync_dir(final.parent)
    # The new folder is in place; what follows only tidies up.
    if aside is not None:
        _delete_old(aside, final)
    remove_leftovers(final)


def recover(final: Path) -> None:
    """After an interrupted ``replace_folder``: put the old folder back if ``final`` is missing,
    and remove stale leftovers."""
    parent = final.parent
    if not parent.is_dir():
        return
    if not _exists(final):
        asides = [p for p in parent.iterdir() if leftover_kind(p.name, final.name) == OLD]
        if asides:
            newest = max(asides, key=lambda p: int(p.name.rsplit("-", 1)[1]))
            os.rename(newest, final)
            _fsync_dir(parent)
    remove_leftovers(final)


def remove_leftovers(final: Path, max_age: float = STALE_SECONDS) -> None:
    """Remove the hidden siblings of ``final`` left by interrupted replacements: those being
    deleted at once, the others once older than ``max_age`` seconds."""
    now = time.time()
    for p in final.parent.iterdir():
        kind = leftover_kind(p.name, final.name)
        try:
            if kind is None or (kind != DELETING and now - p.lstat().st_mtime < max_age):
                continue
            if p.is_symlink() or p.is_file():
                p.unlink()
            else:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            continue  # gone already, or not ours to remove: a later call tries again


def _sibling(final: Path, kind: str) -> Path:
    # Wall-clock nanoseconds: comparable between processes, so ``recover`` finds the newest.
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{time.time_ns()}"


def _exists(path: Path) -> bool:
    return os.path.lexists(path)  # a symbolic link counts, even a dangling one


def _delete_old(old: Path, final: Path) -> None:
    """Delete the replaced folder; a link of older versions goes with the folder it named."""
    try:
        if old.is_symlink():
            target = old.parent / os.readlink(old)
            old.unlink()
            ours = leftover_kind(target.name, final.name) == STAGING
            if not ours or target.parent.resolve() != old.parent.resolve():
                return  # a link made by hand: its folder is not ours to delete
            old = target
        trash = _sibling(final, DELETING)
        os.rename(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    except OSError:
        pass  # a leftover, removed by a later call


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are journaled anyway
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(root))
