"""The node's control socket: one JSON request per line in, one JSON response per line out.

A request is ``{"command": "status"}`` (or ``"reload"``); the response is
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``. The socket is a unix
stream socket, mode 0600 (root only): whoever can write to it can reload the firewall.

The server side runs inside the daemon's asyncio loop and calls back into the daemon; the client
side (:func:`request`) is plain blocking code for ``pfha status``. This module knows nothing of
CARP, sync or rulesets: it only moves JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from pfha.errors import PfhaError

#: ``$PFHA_RUN_DIR/control.sock`` (default /run/pfha), where pfha carp and sync keep their
#: status files too: a node run with its own run directory (as the lab's are) is found there
DEFAULT_SOCKET = Path(os.environ.get("PFHA_RUN_DIR", "/run/pfha")) / "control.sock"
MAX_REQUEST = 65536

Handler = Callable[[str, dict], Awaitable[dict]]


class ControlError(PfhaError):
    """The control socket could not be reached, or the node refused the request."""


class ControlServer:
    """Serves requests on ``path`` by calling ``handler(command, request)``."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() or self.path.is_symlink():
            if _socket_alive(self.path):
                raise ControlError(f"{self.path}: another pfha node is already listening here")
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)

    async def close(self) -> None:
        """Stop serving and remove the socket file, only if it is ours (never another node's)."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self._answer(line), default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            command = request["command"]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": 'bad request: expected {"command": ...}'}
        try:
            return {"ok": True, "result": await self.handler(str(command), request)}
        except PfhaError as error:
            return {"ok": False, "error": str(error)}


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
            return True
        except OSError:
            return False


def request(path: Path | str, command: str, timeout: float = 5.0, **fields) -> dict:
    """Send one request and return its ``result``; :class:`ControlError` if anything fails."""
    path = Path(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except FileNotFoundError:
            raise ControlError(f"{path}: no such socket (is 'pfha node run' running?)") from None
        except OSError as error:
            raise ControlError(f"{path}: {error.strerror or error}") from None
    try:
        response = json.loads(data)
    except ValueError:
        raise ControlError(f"{path}: the node sent no valid answer") from None
    if not response.get("ok"):
        raise ControlError(f"{command}: {response.get('error', 'failed')}")
    return response["result"]
