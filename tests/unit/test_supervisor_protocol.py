"""The supervisor's wire protocol: framing, request validation, typed errors."""

from __future__ import annotations

import json

import pytest

from ketch.engine.supervisor import protocol as proto
from ketch.engine.supervisor.protocol import (
    ContainerInfo,
    CreateArgs,
    ExitRecord,
    LineBuffer,
    LogConfig,
)
from ketch.errors import AlreadyExists, InvalidArgument, KetchError, NotFound, System
from ketch.jsonmodel import from_json


def test_one_json_object_per_line():
    msg = proto.request(7, "kill", {"id": "web", "signal": 15})
    line = proto.encode(msg)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {"id": 7, "op": "kill", "args": {"id": "web", "signal": 15}}
    assert json.loads(proto.encode(proto.request(1, "attach", {}, fds=1)))["fds"] == 1


def test_line_buffer_joins_pieces_and_bounds_lines():
    buf = LineBuffer(limit=16)
    assert buf.feed(b'{"a"') == []
    assert buf.feed(b':1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert buf.pending() == 4
    with pytest.raises(InvalidArgument, match="longer than 16"):
        buf.feed(b"x" * 20)


@pytest.mark.parametrize("line, message", [
    (b"not json", "not JSON"),
    (b"[1]", "JSON object"),
    (b'{"op": "list"}', "id must be an integer"),
    (b'{"id": true, "op": "list"}', "id must be an integer"),
    (b'{"id": 1}', "op must be a string"),
    (b'{"id": 1, "op": "list", "args": []}', "args must be an object"),
    (b'{"id": 1, "op": "attach", "fds": 9}', "fds must be"),
])
def test_bad_requests_are_refused_with_a_reason(line, message):
    with pytest.raises(InvalidArgument, match=message):
        proto.parse_request(line)


def test_request_arguments_are_typed():
    req = proto.parse_request(proto.encode(proto.request(3, "create", {
        "id": "web", "bundle": "/b", "tty": True, "stdinOpen": True, "consoleSize": [24, 80],
        "log": {"path": "/l/web-json.log", "opts": {"max-size": "1m"}}})))
    args = proto.args_of(CreateArgs, req)
    assert args == CreateArgs(id="web", bundle="/b", tty=True, stdin_open=True,
                              console_size=[24, 80],
                              log=LogConfig(path="/l/web-json.log", opts={"max-size": "1m"}))
    bad = proto.parse_request(b'{"id": 4, "op": "create", "args": {"tty": "yes"}}')
    with pytest.raises(InvalidArgument, match="create.tty: expected boolean"):
        proto.args_of(CreateArgs, bad)


def test_errors_keep_their_kind_across_the_wire():
    for exc in (NotFound("no such container: x"), AlreadyExists("taken"),
                InvalidArgument("bad")):
        reply = json.loads(proto.encode(proto.error_reply(5, exc)))
        assert reply["ok"] is False and reply["id"] == 5
        back = proto.error_from_reply(reply["error"])
        assert type(back) is type(exc) and back.message == exc.message
    # A kind the client does not know, or not an error at all, is a System error.
    assert type(proto.error_from_reply({"kind": "Nope", "message": "m"})) is System
    assert type(proto.error_from_reply({"kind": "ValueError", "message": "m"})) is System
    assert isinstance(proto.error_from_reply({}), KetchError)


def test_exit_records_and_infos_round_trip():
    rec = ExitRecord(id="web", pid=42, exit_code=0, signal=0, started_at="s", finished_at="f")
    data = proto.dump(rec)
    # A zero exit code and false OOMKilled are facts, never left out.
    assert data["exitCode"] == 0 and data["oomKilled"] is False and data["signal"] == 0
    assert "lost" not in data and "execId" not in data
    assert from_json(ExitRecord, data) == rec
    info = ContainerInfo(id="web", pid=42, status="stopped", exit=rec)
    assert from_json(ContainerInfo, json.loads(json.dumps(proto.dump(info)))) == info
    assert proto.event("exit", data) == {"event": "exit", "data": data}
