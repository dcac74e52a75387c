"""What snapshot backups need to know about a migration moving their volume's chain (kept apart
from secstor.services.migration_kinds, which builds on the snapshot service)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from secstor.db.models import SnapshotChainMove, Volume
from secstor.jobs.handlers import RetryableJobError

if TYPE_CHECKING:
    from secstor.runtime import Runtime

COPYING, SWITCHED = "Copying", "Switched"
# How long a backup waits before trying again while its volume's chain is being moved.
RETRY_SECONDS = 2.0


def wait_for_chain_move(session: Session, volume_id: int) -> None:
    """Called by a backup before it picks its store: while the volume's chain is being copied,
    the backup waits (RetryableJobError) so that it lands where the chain ends up. The volume
    row is locked first; a chain claim locks it too, so the two never both go ahead."""
    volume_uuid = session.scalars(select(Volume.uuid).where(Volume.id == volume_id).with_for_update()).first()
    move = session.get(SnapshotChainMove, volume_id)
    if move is not None and move.state == COPYING:
        raise RetryableJobError(f"the snapshots of volume {volume_uuid} are being moved to another image store; "
                                f"the backup waits for the move to end", delay=RETRY_SECONDS)


def wait_while_chain_moves(runtime: "Runtime", volume_id: int, job_log, *, poll_seconds: float = 0.25,
                           limit_seconds: float = 3600.0) -> None:
    """Before a backup of the volume: wait (no transaction open) while its chain is being
    copied. A move of a large chain takes longer than the job's retries would last, so the
    backup waits here; ``wait_for_chain_move`` then closes the race under the volume's lock."""
    deadline = time.monotonic() + limit_seconds
    logged = False
    while True:
        with runtime.session() as s:
            move = s.get(SnapshotChainMove, volume_id)
            moving = move is not None and move.state == COPYING
            volume_uuid = s.scalar(select(Volume.uuid).where(Volume.id == volume_id)) if moving else None
        if not moving:
            return
        if time.monotonic() > deadline:
            raise RetryableJobError(f"the snapshots of volume {volume_uuid} are still being moved to another image "
                                    f"store", delay=RETRY_SECONDS)
        if not logged:
            job_log.info("volume %s: its snapshots are being moved to another image store; the backup waits",
                         volume_uuid)
            logged = True
        time.sleep(poll_seconds)
