"""Transactional ids that are unique among live processes and stable across restarts.

A Kafka transactional id must belong to one live producer at a time: a second producer with
the same id *fences* the first. It should also survive a restart of the same process, so
that the restarted one fences its dead predecessor and aborts its open transaction at once
(instead of leaving its offsets pending until the transaction times out).

The hostname alone gives neither on one machine: N plain ``streamskew run`` processes with
one config (systemd units, a VM, a laptop) would share it. So each process takes a *slot*:
the lowest number ``i`` whose lock file ``<dir>/<group>/slot-<i>.lock`` it can lock (an
``flock``: the OS releases it when the process dies, even by ``kill -9``). The id is
``streamskew-<group>-<hostname>-<slot>``. A restarted process finds its predecessor's slot
free, takes it, and fences the zombie, if any. The lock directory is
``$STREAMSKEW_RUNTIME_DIR``, else ``$XDG_RUNTIME_DIR/streamskew``, else
``~/.cache/streamskew/slots``; containers each have their own (and their own hostname).

>>> import tempfile
>>> root = tempfile.mkdtemp()
>>> first, second = Slot.take("fraud", root), Slot.take("fraud", root)
>>> first.number, second.number
(0, 1)
>>> first.release(); Slot.take("fraud", root).number  # the lowest free slot is taken again
0
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
from pathlib import Path
from typing import IO

__all__ = ["Slot", "runtime_dir"]

MAX_SLOTS = 1024


def runtime_dir() -> Path:
    explicit = os.environ.get("STREAMSKEW_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "streamskew"
    return Path.home() / ".cache" / "streamskew" / "slots"


class Slot:
    """A slot number held with an OS file lock for as long as this object lives."""

    def __init__(self, group: str, number: int, handle: IO[bytes]) -> None:
        self.group = group
        self.number = number
        self._handle: IO[bytes] | None = handle

    @classmethod
    def take(cls, group: str, root: str | os.PathLike[str] | None = None) -> Slot:
        """Lock the lowest free slot of ``group`` on this machine."""
        folder = Path(root) if root is not None else runtime_dir()
        folder = folder / re.sub(r"[^A-Za-z0-9._-]", "_", group)
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(MAX_SLOTS):
            handle = open(folder / f"slot-{number}.lock", "ab")  # noqa: SIM115 - held open
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            return cls(group, number, handle)
        raise RuntimeError(f"more than {MAX_SLOTS} streamskew processes of group {group!r} "
                           f"on this machine ({folder})")

    def transactional_id(self, configured: str | None = None) -> str:
        """``streamskew-<group>-<hostname>-<slot>``, or the configured id (plus ``-<slot>``
        beyond slot 0)."""
        if configured:
            return configured if self.number == 0 else f"{configured}-{self.number}"
        return f"streamskew-{self.group}-{socket.gethostname()}-{self.number}"

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file drops the lock
            self._handle = None

    def __del__(self) -> None:
        self.release()
