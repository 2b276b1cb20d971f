"""An interactive shell on a pseudo-terminal, for a ``shell`` channel (sessions.shell)."""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import signal
import struct
import subprocess
import termios

import trio

from ..protocol import ShellParams
from .channel_settings import SessionSettings

__all__ = ["Refused", "ShellProcess", "open_shell"]

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Refused(Exception):
    """The agent will not open the channel: ``reason`` (a close reason) and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class _PtyStream(trio.abc.Stream):
    """The terminal's master side: EIO (the shell and its children closed the terminal)
    reads as the end of the stream, as it means."""

    def __init__(self, fd: int) -> None:
        self._fd = trio.lowlevel.FdStream(fd)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self._fd.receive_some(max_bytes)
        except trio.BrokenResourceError as error:
            if isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.EIO:
                return b""
            raise

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._fd.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._fd.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._fd.aclose()

    def fileno(self) -> int:
        return self._fd.fileno()


class ShellProcess:
    """The shell's process and its terminal."""

    def __init__(self, process: trio.Process, stream: _PtyStream) -> None:
        self.process = process
        self.stream = stream

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size (the shell gets SIGWINCH from the kernel)."""
        _set_size(self.stream.fileno(), cols, rows)

    async def wait(self) -> int:
        """The exit status as a shell reports it (128 + N for signal N)."""
        code = await self.process.wait()
        return 128 - code if code < 0 else code

    async def terminate(self) -> None:
        """Hang up the shell's session, then kill what is left of it."""
        if self.process.returncode is not None:
            return
        for sig in (signal.SIGHUP, signal.SIGKILL):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            with trio.move_on_after(1):
                await self.process.wait()
                return


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _take_terminal() -> None:  # pragma: no cover - runs in the child, before exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def open_shell(settings: SessionSettings, params: ShellParams) -> ShellProcess:
    """Start ``settings.program`` as a login shell on a new terminal; ``Refused`` when
    shells are off or the settings cannot be honoured."""
    if not settings.shell:
        raise Refused(
            "refused",
            'shell sessions are off on this agent: set "sessions": {"shell": true} in its '
            "settings to allow them",
        )
    account = _account(settings.user)
    environment = {
        "TERM": params.term,
        "HOME": account.pw_dir,
        "USER": account.pw_name,
        "LOGNAME": account.pw_name,
        "SHELL": settings.program,
        "PATH": _DEFAULT_PATH,
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }
    switch = settings.user is not None and account.pw_uid != os.geteuid()
    master, terminal = os.openpty()
    try:
        _set_size(terminal, params.cols, params.rows)
        cwd = account.pw_dir if os.path.isdir(account.pw_dir) else "/"
        process = await trio.lowlevel.open_process(
            [settings.program, "-l"],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=environment,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_take_terminal,
            user=account.pw_uid if switch else None,
            group=account.pw_gid if switch else None,
            extra_groups=os.getgrouplist(account.pw_name, account.pw_gid) if switch else None,
            close_fds=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        os.close(master)
        raise Refused("error", f"cannot start {settings.program}: {error}") from None
    finally:
        os.close(terminal)
    return ShellProcess(process, _PtyStream(master))


def _account(user: str | None) -> pwd.struct_passwd:
    if user is None:
        return pwd.getpwuid(os.geteuid())
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise Refused("refused", f"sessions.user {user!r} is not a user on this host") from None
    if account.pw_uid != os.geteuid() and os.geteuid() != 0:
        raise Refused(
            "refused",
            f"sessions.user is {user!r}, but the agent does not run as root and cannot "
            "switch to it",
        )
    return account
