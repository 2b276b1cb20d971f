"""Socket reads and writes of the lean listener, without a scheduler round trip each.

trio's ``SocketStream`` tries every read first (a request's or an agent's next message is
almost never there yet: a failed system call and an exception each time) and ends every
successful read or write with a checkpoint (a trip through the scheduler). On the command
path that is four socket operations a command. Here a read waits for the socket first,
then reads once; a write writes at once and waits only for what the socket did not take.
Reads stay checkpoints (each waits); a write that the socket takes whole is not one: every
caller reads in the same loop. A direct write skips the stream's guard against two writers
at once, so callers write one at a time (``LeanSocket`` passes a turn; an HTTP exchange
writes from its one task). TLS streams, and anything but a plain ``SocketStream``, go
through the stream's own methods.
"""

from __future__ import annotations

import errno
import os

import trio

__all__ = ["receive_some", "send_all", "write_now"]

# What trio's streams say of a socket closed under them (trio._highlevel_socket).
_CLOSED = frozenset({errno.EBADF, errno.ENOTSOCK})


def _translated(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
    if exc.errno in _CLOSED:
        return trio.ClosedResourceError("this socket was already closed")
    return trio.BrokenResourceError(f"socket connection broken: {exc}")


async def receive_some(stream: trio.abc.Stream, max_bytes: int) -> bytes | bytearray:
    """``stream.receive_some(max_bytes)``: wait until readable, then one read."""
    if type(stream) is not trio.SocketStream:
        return await stream.receive_some(max_bytes)
    while True:
        fd = stream.socket.fileno()  # again after each wait: it may have been closed
        if fd < 0:
            raise trio.ClosedResourceError("this socket was already closed")
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, max_bytes)
        except BlockingIOError:
            continue  # woken without data (rare): wait again
        except OSError as exc:
            raise _translated(exc) from exc


def write_now(stream: trio.SocketStream, data: bytes) -> int:
    """Write what the socket takes of ``data`` now, without waiting; how many bytes."""
    fd = stream.socket.fileno()
    if fd < 0:
        raise trio.ClosedResourceError("this socket was already closed")
    try:
        return os.write(fd, data)
    except BlockingIOError:
        return 0
    except OSError as exc:
        raise _translated(exc) from exc


async def send_all(stream: trio.abc.Stream, data: bytes) -> None:
    """``stream.send_all(data)``: written now; the rest, if any, as the socket takes it."""
    if type(stream) is not trio.SocketStream or not data:
        await stream.send_all(data)
        return
    socket = stream.socket
    if socket.did_shutdown_SHUT_WR:
        raise trio.ClosedResourceError("can't send data after sending EOF")
    sent = write_now(stream, data)
    if sent < len(data):
        await stream.send_all(memoryview(data)[sent:])
