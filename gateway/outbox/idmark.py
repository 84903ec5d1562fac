"""The smsId high-water mark, kept in a small file beside the store so ids survive losing it.

The upstream knows every smsId it was ever sent; an id must never be used twice, not even after
the store file is lost, emptied or replaced. The file `<store>.ids` holds the highest smsId
that may have been handed out and the `ids.node`/`ids.nodes` it was made with. It is written
(to a temporary file, fsynced, renamed, directory fsynced) before any id past it is handed
out, a block ahead, so it costs one small write per `BLOCK` ids, not one per message.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass

from gateway.errors import StoreError

BLOCK = 100_000  # sequence numbers reserved per write of the file


@dataclass
class IdMark:
    """The mark file of one store; `max_id` is 0 when no file exists yet."""

    path: str  # the mark file
    store_path: str
    max_id: int = 0
    node: int | None = None
    nodes: int | None = None
    exists: bool = False

    @classmethod
    def beside(cls, store_path: str, *, read: bool = True, suffix: str = ".ids") -> IdMark:
        """The mark of `store_path`; `read=False` only sees whether it exists (for readers, who
        need not be able to read it). Another `suffix` keeps another kind of id (activations)."""
        mark = cls(path=f"{store_path}{suffix}", store_path=store_path)
        if not read:
            mark.exists = os.path.lexists(mark.path)
            return mark
        try:
            with open(mark.path, encoding="utf-8") as f:
                data = json.load(f)
            mark.max_id, mark.node, mark.nodes = (
                int(data["max_id"]),
                int(data["node"]),
                int(data["nodes"]),
            )
        except FileNotFoundError:
            return mark
        except OSError as e:
            raise StoreError(f"{mark.path}: cannot read the smsId mark file: {e.strerror}") from e
        except (ValueError, KeyError, TypeError) as e:
            raise StoreError(
                f"{mark.path}: the smsId mark file is damaged ({e!r}); it must hold"
                ' {"max_id": N, "node": N, "nodes": N} with max_id at least the highest smsId'
                " ever handed out"
            ) from e
        mark.exists = True
        return mark

    def first_seq_above(self, node: int, nodes: int) -> int:
        """The lowest sequence number whose smsId (seq * nodes + node) is above the mark."""
        return max(0, (self.max_id - node) // nodes + 1) if self.exists else 1

    def cover(self, sms_id: int, node: int, nodes: int) -> None:
        """Make sure `sms_id` is at or below the mark, writing the file a block ahead if not.

        Runs on the store's thread inside the transaction that allocates the id, so the mark
        is on disk before the id can reach anyone. An OSError fails that transaction.
        """
        if self.exists and sms_id <= self.max_id and (self.node, self.nodes) == (node, nodes):
            return
        self.write(max(sms_id, self.max_id) + BLOCK * nodes, node, nodes)

    def write(self, max_id: int, node: int, nodes: int) -> None:
        tmp = f"{self.path}.tmp"
        data = json.dumps({"max_id": max_id, "node": node, "nodes": nodes}).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, self._mode())
            os.write(fd, data + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.max_id, self.node, self.nodes, self.exists = max_id, node, nodes, True

    def _mode(self) -> int:
        """0600, or 0640 when the store itself is group-readable (a group of readers)."""
        try:
            group_reads = os.stat(self.store_path).st_mode & stat.S_IRGRP
        except OSError:
            group_reads = 0
        return 0o640 if group_reads else 0o600
