"""The node's control socket and structured logs, without root: JSON in, JSON out."""

from __future__ import annotations

import asyncio
import json
import logging
import threading

import pytest

from pfha.errors import PfhaError
from pfha.node import control, logs


@pytest.fixture
def server(tmp_path):
    path = tmp_path / "c.sock"
    loop = asyncio.new_event_loop()
    calls = []

    async def handler(command, request):
        calls.append((command, request))
        if command == "boom":
            raise PfhaError("no such thing")
        return {"echo": command, "n": request.get("n")}

    srv = control.ControlServer(path, handler)
    loop.run_until_complete(srv.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield path, calls, srv, loop
    asyncio.run_coroutine_threadsafe(srv.close(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_request_answer_and_errors(server):
    path, calls, _srv, _loop = server
    assert control.request(path, "status", n=3) == {"echo": "status", "n": 3}
    with pytest.raises(control.ControlError, match="boom: no such thing"):
        control.request(path, "boom")
    assert [c for c, _ in calls] == ["status", "boom"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_second_server_on_a_live_socket_is_refused(server):
    path, _calls, _srv, _loop = server

    async def start_again():
        await control.ControlServer(path, lambda c, r: None).start()

    with pytest.raises(control.ControlError, match="already listening"):
        asyncio.run(start_again())


def test_missing_socket_is_a_clear_error(tmp_path):
    with pytest.raises(control.ControlError, match="is 'pfha node run' running"):
        control.request(tmp_path / "none.sock", "status")


def test_json_log_lines_carry_fields():
    record = logging.LogRecord("pfha.node", logging.INFO, __file__, 1, "carp state", (), None)
    record.fields = {"vhid": 1, "new": "MASTER"}
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["msg"] == "carp state" and entry["vhid"] == 1 and entry["level"] == "info"
    assert "vhid=1" in logs.TextFormatter().format(record)


def test_a_component_that_dies_stops_the_node(tmp_path):
    """The supervision rule: a part's task ending on its own is a crash, never ignored."""
    from pfha.node.daemon import Node
    from pfha.node.parts import Part

    async def scenario():
        node = Node(tmp_path / "node.toml", tmp_path / "c.sock")

        async def crash():
            await asyncio.sleep(0.05)
            raise OSError("netlink socket closed")

        dying = Part()
        dying.name, dying.task = "carp", asyncio.create_task(crash())
        node.carp = dying
        node._watch_parts()
        node._watch_parts()  # watching twice reports once
        await asyncio.wait_for(node.stopping.wait(), 5)
        return node.died

    died = asyncio.run(scenario())
    assert died is not None and "carp stopped unexpectedly" in died and "netlink socket closed" in died


def test_a_refused_server_leaves_the_live_socket_alone(server):
    path, _calls, _srv, _loop = server

    async def start_and_close():
        second = control.ControlServer(path, lambda c, r: None)
        with pytest.raises(control.ControlError):
            await second.start()
        await second.close()

    asyncio.run(start_and_close())
    assert control.request(path, "status")["echo"] == "status"
