"""Requests that pass a socket (attach) go over one side connection that the client
keeps: said hello once, asks for no exit events and no live set."""

from __future__ import annotations

import asyncio
import socket

import pytest
from tests.integration.test_supervisor import (  # noqa: F401 - the fixture is used by name
    frames,
    read_until_eof,
    run,
    sup,
)

from ketch.engine.supervisor_client import SupervisorClient

pytestmark = pytest.mark.root


def test_attaches_share_one_side_connection_without_events(sup, bundles):  # noqa: F811
    ids = [f"side{i}" for i in range(3)]
    made = {cid: bundles.make(["sh", "-c", f"echo {cid}"], container_id=cid) for cid in ids}

    async def body():
        c = await SupervisorClient.connect(str(sup.exec_root))
        outs = {}
        sides = set()
        for cid in ids:
            sup.pids.add(await c.create(cid, str(made[cid]), log=sup.log_config(cid)))
            ours, theirs = socket.socketpair()
            await c.attach(cid, theirs)
            theirs.close()
            sides.add(id(c._side))
            await c.start(cid)
            outs[cid] = await asyncio.to_thread(read_until_eof, ours)
            ours.close()
            assert (await c.wait(cid)).exit_code == 0
        exits = []
        while len(exits) < len(ids):
            kind, data = await asyncio.wait_for(c._events.get(), 10)
            if kind == "exit":
                exits.append(data["id"])
        side = c._side
        assert side is not None
        side_hello, side_events = side.hello, side._events.qsize()
        for cid in ids:
            await c.delete(cid)
        await c.close()
        return outs, sides, exits, side_hello, side_events

    outs, sides, exits, side_hello, side_events = run(body())
    assert {cid: frames(out) for cid, out in outs.items()} == \
        {cid: [(1, f"{cid}\n".encode())] for cid in ids}
    assert len(sides) == 1                      # one side connection for every attach
    assert sorted(exits) == sorted(ids)         # the main connection has the events
    assert side_events == 0 and side_hello.containers == []
