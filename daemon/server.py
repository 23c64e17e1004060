"""The daemon's loop: ROUTER for requests, PUB for events, a timer heap, off-loop completions.

Why a `zmq.Poller` loop and not `zmq.asyncio`: every state change must happen on one
thread with one SQLite connection, and group commit wants "drain everything that is
waiting, run it in one transaction, commit, then reply" — a plain poll loop expresses
that directly and costs nothing per message, while asyncio adds a task and a future per
request (measurably slower round trips) without buying concurrency we need: slow work
(git, test gates, agents) already runs in a thread pool and reports back through a
self-pipe that the poller watches next to the sockets.
"""

from __future__ import annotations

import os
import signal
from typing import Any, cast

import msgspec
import zmq

from chkd.protocol import codec, limits
from chkd.protocol.errors import ChkdError, ErrorCode
from chkd.protocol.messages import COMMANDS, PROTOCOL_VERSION, Err, result_type
from chkd.protocol.text import one_line

from .context import Ctx, Deferred, publish_frames
from .handlers import HANDLERS, SETUPS
from .sdnotify import SdNotifier

#: Frames larger than this are refused (a spec import of a few MB is the largest real request).
MAX_FRAME = 4 * 1024 * 1024
#: At most this many queued requests share one transaction (group commit).
BATCH = 512
#: What decoding hostile bytes can raise: bad msgpack, the wrong shape, or nesting deeper than
#: the interpreter's recursion limit (msgspec raises RecursionError; the frame is just undecodable).
UNDECODABLE = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
#: The loop wakes at least this often even with no timers.
IDLE_MS = 1000


def _err(code: ErrorCode, message: str, hint: str = "") -> Err:
    """An error reply: its sentence and hint each kept to one visible line (they may quote input)."""
    return Err(code=code, message=one_line(message), hint=one_line(hint))


class Server:
    def __init__(self, ctx: Ctx, notifier: SdNotifier | None = None) -> None:
        self.ctx = ctx
        self.notifier = notifier or SdNotifier(None)
        self.zctx = zmq.Context()
        self.router = self.zctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.setsockopt(zmq.MAXMSGSIZE, 64 * 1024 * 1024)  # hard transport cap; 4 MiB is checked below
        self.router.setsockopt(zmq.RCVHWM, 100_000)
        self.router.setsockopt(zmq.SNDHWM, 100_000)
        self.pub = self.zctx.socket(zmq.PUB)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.setsockopt(zmq.SNDHWM, 100_000)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        ctx.wake_fd = self.wake_w
        self._stop_signal = False

    # -- lifecycle ---------------------------------------------------------------------------
    def bind(self) -> None:
        paths = self.ctx.paths
        for sock in (paths.ctl_sock, paths.events_sock):
            try:
                sock.unlink()  # stale, from a daemon that was killed: we hold the lock now
            except FileNotFoundError:
                pass
        self.pub.bind(paths.events_endpoint)
        self.router.bind(paths.ctl_endpoint)
        for sock in (paths.ctl_sock, paths.events_sock):
            os.chmod(sock, 0o600)

    def install_signals(self) -> None:
        def _stop(signum: int, _frame: Any) -> None:
            self._stop_signal = True

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)

    def close(self) -> None:
        paths = self.ctx.paths
        self.ctx.executor.shutdown(wait=False, cancel_futures=True)
        self.router.close(0)
        self.pub.close(0)
        self.zctx.term()
        for sock in (paths.ctl_sock, paths.events_sock):
            try:
                sock.unlink()
            except FileNotFoundError:
                pass
        if paths.sock_dir != paths.run:  # a deep home's short socket directory: ours, now empty
            try:
                os.rmdir(paths.sock_dir)
            except OSError:
                pass
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:
            pass
        os.close(self.wake_r)
        os.close(self.wake_w)

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        ctx = self.ctx
        for setup in SETUPS:
            self._in_tx(setup, ctx, what=f"setup {setup.__module__}")
        self._flush()
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(self.wake_r, zmq.POLLIN)
        ctx.log.info("serving", endpoint=ctx.paths.ctl_endpoint, pid=os.getpid())
        self._tell_service_manager()
        while ctx.running and not self._stop_signal:
            ready = dict(poller.poll(ctx.timers.timeout_ms(IDLE_MS)))
            if self.router in ready:
                self._serve_requests()
            if self.wake_r in ready:
                self._drain_wake()
            self._run_timers()
            self._flush()
        reason = "signal" if self._stop_signal else "shutdown"
        ctx.log.info("stopping", reason=reason)
        self.notifier.stopping(f"stopping ({reason})")

    def _tell_service_manager(self) -> None:
        """READY=1 now that requests are served; WATCHDOG=1 from the timer heap, so a loop that
        stops turning stops the pings and systemd restarts it (see sdnotify.py)."""
        notifier = self.notifier
        if not notifier.enabled:
            return
        if not notifier.ready():
            self.ctx.log.warning("sd_notify_failed", socket=notifier.address)
        interval = notifier.watchdog_interval_s
        if interval is not None:
            self.ctx.timers.every(interval, notifier.watchdog, "watchdog")
            self.ctx.log.info("watchdog", interval_s=interval)

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        ctx = self.ctx
        while not ctx.completions.empty():
            then, result, exc, reply_to = ctx.completions.get_nowait()
            self._in_tx(then, result, exc, what=f"completion {getattr(then, '__qualname__', then)}", reply_to=reply_to)

    def _run_timers(self) -> None:
        for timer in self.ctx.timers.pop_due():
            self._in_tx(timer.fn, what=f"timer {timer.name}")

    def _in_tx(self, fn: Any, *args: Any, what: str, reply_to: Deferred | None = None) -> None:
        """Run loop work in its own transaction; an exception rolls it back and is logged, never fatal."""
        ctx = self.ctx
        mark = ctx.mark()
        try:
            with ctx.store.tx():
                fn(*args)
            ctx.committed()
        except ChkdError as exc:
            ctx.rollback_to(mark)
            if reply_to is not None:
                ctx.finish(reply_to, exc)
            else:
                ctx.log.warning("loop_work_refused", what=what, error=exc.message)
        except Exception as exc:
            ctx.rollback_to(mark)
            ctx.log.error("loop_work_failed", what=what, exc_info=True)
            if reply_to is not None:
                ctx.finish(
                    reply_to,
                    ChkdError(
                        "internal",
                        f"The daemon failed while finishing the request "
                        f"({type(exc).__name__}); the details are in {ctx.paths.log_file}.",
                    ),
                )

    # -- requests -------------------------------------------------------------------------------
    def _serve_requests(self) -> None:
        ctx = self.ctx
        frames_batch: list[list[bytes]] = []
        router = self.router
        # Checking EVENTS instead of catching zmq.Again saves an exception per turn (~10 us).
        while len(frames_batch) < BATCH and cast(int, router.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            frames_batch.append(router.recv_multipart(zmq.NOBLOCK))
        if not frames_batch:
            return
        mark = ctx.mark()
        try:
            with ctx.store.tx():
                for frames in frames_batch:
                    self._serve_one(frames)
            ctx.committed()
        except Exception:
            # Only a failing COMMIT lands here: every handler runs in its own savepoint.
            ctx.log.error("batch_commit_failed", exc_info=True)
            ctx.rollback_to(mark)
            ctx.outbox[:] = [
                [
                    *f[:-1],
                    codec.encode_reply(
                        0, _err("internal", "The database could not save the change; see the daemon log.")
                    ),
                ]
                for f in frames_batch
                if len(f) >= 2
            ]

    def _serve_one(self, frames: list[bytes]) -> None:
        ctx = self.ctx
        if len(frames) < 2:
            ctx.log.warning("rejected_frame", reason="no routing envelope", frames=len(frames))
            return
        envelope, payload = frames[:-1], frames[-1]
        req_id = 0

        def reply(body: Any) -> None:
            ctx.outbox.append([*envelope, codec.encode_reply(req_id, body)])

        if len(payload) > MAX_FRAME:
            ctx.log.warning("rejected_frame", reason="too large", size=len(payload))
            reply(
                _err(
                    "bad_request",
                    f"The request is {len(payload) / 2**20:.1f} MiB; the limit is {MAX_FRAME // 2**20} MiB.",
                )
            )
            return
        try:
            env = codec.decode_envelope(payload)
        except UNDECODABLE as exc:
            ctx.log.warning("rejected_frame", reason="undecodable envelope", size=len(payload), error=str(exc))
            reply(
                _err("bad_request", "The request is not a chkd protocol message (expected a msgpack Request envelope).")
            )
            return
        req_id = env.id
        if env.v != PROTOCOL_VERSION:
            ctx.log.warning("rejected_frame", reason="unsupported version", v=env.v)
            reply(
                _err(
                    "unsupported_version",
                    f"This daemon speaks protocol version {PROTOCOL_VERSION}, the request used version {env.v}.",
                    "Upgrade chkd so the client and the daemon match, then restart the daemon.",
                )
            )
            return
        try:
            cmd = codec.decode_command(env.body)
        except UNDECODABLE as exc:
            message = _describe_decode_error(env.body, exc)
            ctx.log.warning("rejected_frame", reason="bad command", error=str(exc))
            reply(_err("bad_request", message))
            return
        handler = HANDLERS.get(type(cmd))
        if handler is None:  # every command has a handler (tested); this guards a half-built tree
            ctx.log.warning("rejected_frame", reason="no handler", cmd=type(cmd).__name__)
            reply(_err("bad_request", f"This daemon cannot handle '{type(cmd).__name__}' yet."))
            return
        expects = result_type(cmd)
        ctx.current = Deferred(envelope=envelope, request_id=req_id, expects=expects)
        try:
            with ctx.savepoint():
                result = handler(ctx, cmd)
        except ChkdError as exc:
            reply(_err(exc.code, exc.message, exc.hint))
            return
        except Exception as exc:
            ctx.log.error("handler_failed", cmd=type(cmd).__name__, exc_info=True)
            reply(
                _err(
                    "internal",
                    f"The daemon failed while handling '{type(cmd).__name__}' ({type(exc).__name__}); "
                    f"the details are in {ctx.paths.log_file}.",
                )
            )
            return
        finally:
            ctx.current = None
        if isinstance(result, Deferred):
            return
        reply(ctx.checked_result(result, expects))

    def _flush(self) -> None:
        """After commit: run the effects (signals), start the off-loop jobs, send replies, then publish
        events (nothing outside the database ever sees or acts on an uncommitted change)."""
        ctx = self.ctx
        ctx.run_effects()
        ctx.start_jobs()
        for frames in ctx.outbox:
            try:
                self.router.send_multipart(frames, zmq.NOBLOCK)
            except zmq.ZMQError as exc:  # the client went away: its reply has nowhere to go
                ctx.log.info("reply_dropped", error=str(exc))
        ctx.outbox.clear()
        for event in ctx.pubbox:
            try:
                self.pub.send_multipart(publish_frames(event), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # the table has it; `watch --since` replays
        ctx.pubbox.clear()


_COMMAND_BY_OP: dict[str, type] = {str(c.__struct_config__.tag): c for c in COMMANDS}


def _op_of(raw: bytes) -> Any:
    """The body's `op` (the command name), or None when the body is not a map."""
    try:
        body = msgspec.msgpack.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None
    return body.get("op") if isinstance(body, dict) else None


def _describe_decode_error(raw: bytes, exc: Exception) -> str:
    """msgspec's validation error as a sentence about the request's fields."""
    import re

    text = str(exc)
    at = re.search(r"at `\$\.?([^`]*)`", text)
    where = at.group(1) if at else ""
    text = re.sub(r"\s*-\s*at `[^`]*`", "", text)
    op = _op_of(raw)
    if where == "op" and "Invalid value" in text:
        return f"Unknown command {op!r}; run `chkdctl --help` to see what the daemon can do."
    missing = re.match(r"Object missing required field `([^`]+)`", text)
    if missing:
        if missing.group(1) == "op":
            return "The request body has no 'op' field naming the command."
        field = ".".join(p for p in (where, missing.group(1)) if p)
        return f"The request is missing the required field '{field}'."
    command = _COMMAND_BY_OP.get(op) if isinstance(op, str) else None
    rule = limits.describe(command, where, text) if command is not None else None
    if rule is not None:
        return f"The field '{where}' {rule}."
    typed = re.match(r"Expected `([^`]+)`, got `([^`]+)`", text)
    if typed:
        want, got = typed.groups()
        if not where:
            return f"The request body must be a command object, not {got}."
        return f"The field '{where}' must be {want}, not {got}."
    cleaned = text.replace("`", "'").rstrip(".")
    return f"The request is malformed: {cleaned[:1].lower() + cleaned[1:]}" + (f" (at '{where}')." if where else ".")
