"""The registry routes over a fake Distribution: streams, errors before and after, credentials."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from tests.unit.test_api_images import FakeImages
from tests.unit.test_api_versions import Backend as SystemBackend

from ketch.api import make_app
from ketch.errors import NotFound, Unauthorized


class FakeDistribution:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def pull(self, from_image: str, tag: str, *, platform: str = "", creds: Any = None,
             emit: Any) -> list[Any]:
        self.calls.append(("pull", from_image, tag, platform, creds))
        if from_image.endswith("/missing"):
            raise NotFound("manifest for x not found: manifest unknown: manifest unknown")
        emit({"status": "Pulling from me/app", "id": tag})
        if from_image.endswith("/broken"):
            raise NotFound("blob unknown: blob unknown to registry")
        emit({"status": "Status: Downloaded newer image for me/app:" + tag})
        return []

    def push(self, name: str, tag: str, *, creds: Any = None, emit: Any) -> list[str]:
        self.calls.append(("push", name, tag, creds))
        emit({"status": f"The push refers to repository [{name}]"})
        return []

    def login(self, creds: Any) -> dict[str, str]:
        self.calls.append(("login", creds))
        if creds.password != "good":
            raise Unauthorized("Get \"http://127.0.0.1:5000/v2/\": unauthorized: "
                               "authentication required")
        return {"Status": "Login Succeeded", "IdentityToken": ""}

    def inspect(self, name: str, creds: Any = None) -> dict[str, Any]:
        return {"Descriptor": {"mediaType": "m", "digest": "d", "size": 1}, "Platforms": []}


def call(dist: FakeDistribution, method: str, path: str, *, headers: dict[str, str] | None = None,
         body: Any = None) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        app = make_app(SystemBackend(), FakeImages(), distribution=dist)  # type: ignore[arg-type]
        async with TestClient(TestServer(app)) as client:
            resp = await client.request(method, path, headers=headers, json=body)
            text = (await resp.read()).decode()
            if text.endswith("\r\n"):
                return resp.status, [json.loads(line) for line in text.splitlines() if line]
            return resp.status, json.loads(text) if text else None

    return asyncio.run(go())


def _auth(doc: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(doc).encode()).decode()


def test_pull_streams_messages_and_passes_credentials() -> None:
    dist = FakeDistribution()
    status, body = call(dist, "POST", "/v1.45/images/create?fromImage=127.0.0.1:5000/me/app"
                        "&tag=v1", headers={"X-Registry-Auth": _auth({"username": "u",
                                                                      "password": "p"})})
    assert status == 200
    assert [m["status"] for m in body] == ["Pulling from me/app",
                                           "Status: Downloaded newer image for me/app:v1"]
    creds = dist.calls[-1][4]
    assert (creds.username, creds.password) == ("u", "p")


def test_pull_error_before_any_message_is_an_error_response() -> None:
    status, body = call(FakeDistribution(), "POST",
                        "/images/create?fromImage=127.0.0.1:5000/missing&tag=v1")
    assert status == 404
    assert body == {"message": "manifest for x not found: manifest unknown: manifest unknown"}


def test_pull_error_after_a_message_ends_the_stream_with_error_detail() -> None:
    status, body = call(FakeDistribution(), "POST",
                        "/images/create?fromImage=127.0.0.1:5000/broken&tag=v1")
    assert status == 200
    assert body[-1] == {"errorDetail": {"message": "blob unknown: blob unknown to registry"},
                        "error": "blob unknown: blob unknown to registry"}


def test_bad_names_and_headers_are_400() -> None:
    status, body = call(FakeDistribution(), "POST", "/images/create?fromImage=me/UPPER&tag=x")
    assert status == 400 and "must be lowercase" in body["message"]
    status, body = call(FakeDistribution(), "POST", "/images/create?fromImage=me/x&tag=x",
                        headers={"X-Registry-Auth": "%%%not base64"})
    assert status == 400 and body["message"].startswith("invalid X-Registry-Auth header")


def test_push_and_auth_and_distribution() -> None:
    dist = FakeDistribution()
    status, body = call(dist, "POST", "/images/127.0.0.1:5000/me/app/push?tag=v1")
    assert status == 200 and body[0]["status"].startswith("The push refers to repository")
    assert dist.calls[-1][:3] == ("push", "127.0.0.1:5000/me/app", "v1")
    status, body = call(dist, "POST", "/auth", body={"username": "u", "password": "good",
                                                     "serveraddress": "127.0.0.1:5000"})
    assert (status, body) == (200, {"Status": "Login Succeeded", "IdentityToken": ""})
    status, body = call(dist, "POST", "/auth", body={"username": "u", "password": "bad",
                                                     "serveraddress": "127.0.0.1:5000"})
    assert status == 401 and "unauthorized" in body["message"]
    status, body = call(dist, "GET", "/distribution/127.0.0.1:5000/me/app:v1/json")
    assert status == 200 and body["Descriptor"]["digest"] == "d"
