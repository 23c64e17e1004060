"""db backup, db check: the database file, copied and examined off-loop (see daemon/dbfile.py)."""

from __future__ import annotations

import os

from chkd.protocol.errors import ChkdError
from chkd.protocol.messages import DbBackup, DbBackupResult, DbCheck, DbCheckResult

from .. import dbfile
from ..context import Ctx, Deferred


def backup(ctx: Ctx, req: DbBackup) -> Deferred:
    if "\0" in req.path or not os.path.isabs(req.path):
        raise ChkdError("bad_request", "The backup file must be an absolute path (chkdctl makes it one).")
    deferred = ctx.defer()

    def _copied(result: DbBackupResult | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc  # answers the request: a ChkdError as itself, anything else as internal
        assert result is not None
        ctx.log.info("db_backup", path=result.path, pages=result.pages, seconds=result.seconds)
        ctx.finish(deferred, result)

    ctx.submit(dbfile.backup_database, str(ctx.store.path), req.path, force=req.force, then=_copied, reply_to=deferred)
    return deferred


def check(ctx: Ctx, _req: DbCheck) -> Deferred:
    deferred = ctx.defer()

    def _checked(result: DbCheckResult | None, exc: BaseException | None) -> None:
        if exc is not None:
            raise exc
        assert result is not None
        if not result.ok:
            ctx.log.warning(
                "db_check_failed", problems=result.problems[:20], foreign_key_problems=result.foreign_key_problems[:20]
            )
        ctx.finish(deferred, result)

    ctx.submit(dbfile.check_database, str(ctx.store.path), then=_checked, reply_to=deferred)
    return deferred


HANDLERS = {DbBackup: backup, DbCheck: check}
