"""docker's config.json and credential helpers, as ``ketch.cli.credentials`` keeps them.

The helper is a real program on PATH (``docker-credential-ketchtest``, a small
Python script written here) speaking docker-credential-helpers' protocol, so the
subprocess calls, stdin/stdout and its error texts are exercised for real.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from ketch.cli import credentials as cr

HELPER = r'''#!{python}
import json, os, sys
db = os.environ["KETCHTEST_DB"]
action = sys.argv[1]
data = sys.stdin.read()
store = json.load(open(db)) if os.path.exists(db) else {{}}
if action == "store":
    rec = json.loads(data)
    if not rec.get("ServerURL"):
        print("credentials missing server URL"); sys.exit(1)
    store[rec["ServerURL"]] = [rec["Username"], rec["Secret"]]
elif action == "get":
    if data == "broken":
        print("the keychain is locked"); sys.exit(3)
    if data not in store:
        print("credentials not found in native keychain"); sys.exit(1)
    user, secret = store[data]
    print(json.dumps({{"ServerURL": data, "Username": user, "Secret": secret}}))
elif action == "erase":
    if data not in store:
        print("credentials not found in native keychain"); sys.exit(1)
    del store[data]
elif action == "list":
    print(json.dumps({{k: v[0] for k, v in store.items()}}))
json.dump(store, open(db, "w"))
'''


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """docker-credential-ketchtest on PATH; its store is the returned JSON file."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prog = bindir / "docker-credential-ketchtest"
    prog.write_text(HELPER.format(python=sys.executable))
    prog.chmod(0o755)
    db = tmp_path / "helper-db.json"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("KETCHTEST_DB", str(db))
    return db


def write_config(d: Path, data: dict[str, object]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(data))


def test_config_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KETCH_CONFIG", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cr.config_dir() == str(tmp_path / ".docker")
    monkeypatch.setenv("DOCKER_CONFIG", "/d")
    assert cr.config_dir() == "/d"
    monkeypatch.setenv("KETCH_CONFIG", "/k")
    assert cr.config_dir() == "/k"
    assert cr.config_dir("/flag") == "/flag"


def test_registry_keys() -> None:
    assert cr.registry_key("docker.io") == "https://index.docker.io/v1/"
    assert cr.registry_key("index.docker.io") == cr.INDEX_SERVER
    assert cr.registry_key("localhost:5000") == "localhost:5000"
    assert cr.convert_to_hostname("https://reg.example:5000/v2/") == "reg.example:5000"
    assert cr.convert_to_hostname("http://reg.example/") == "reg.example"
    assert cr.convert_to_hostname("reg.example:5000/v1/") == "reg.example:5000"
    assert cr.convert_to_hostname("localhost:5000") == "localhost:5000"


def test_file_store_round_trip_as_docker_writes(tmp_path: Path) -> None:
    cfg = cr.ConfigFile.load(str(tmp_path / "cfg"))
    assert cfg.get_auth("localhost:5000").empty()
    store = cfg.store_for("localhost:5000")
    assert isinstance(store, cr.FileStore)
    assert store.store(cr.AuthConfig("user", "secret", "localhost:5000"))
    assert not store.store(cr.AuthConfig("user", "secret", "localhost:5000"))  # unchanged
    cfg.store_for("r.example").store(cr.AuthConfig("tok", "", "r.example", identity_token="T"))
    path = tmp_path / "cfg" / "config.json"
    # the bytes docker 28 writes (json.MarshalIndent with a tab, no final newline)
    assert path.read_text() == (
        '{\n\t"auths": {\n\t\t"localhost:5000": {\n\t\t\t"auth": "dXNlcjpzZWNyZXQ="\n\t\t},\n'
        '\t\t"r.example": {\n\t\t\t"auth": "dG9rOg==",\n\t\t\t"identitytoken": "T"\n\t\t}\n'
        '\t}\n}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = cr.ConfigFile.load(str(tmp_path / "cfg"))
    assert again.get_auth("localhost:5000") == cr.AuthConfig("user", "secret", "localhost:5000")
    assert again.get_auth("r.example").identity_token == "T"
    again.store_for("localhost:5000").erase("localhost:5000")
    assert list(json.loads(path.read_text())["auths"]) == ["r.example"]
    assert [p.name for p in (tmp_path / "cfg").iterdir()] == ["config.json"]  # no temp left


def test_other_keys_kept_and_mode_preserved(tmp_path: Path) -> None:
    d = tmp_path / "cfg"
    write_config(d, {"psFormat": "{{.ID}}", "auths": {}, "proxies": {"default": {}}})
    (d / "config.json").chmod(0o640)
    cfg = cr.ConfigFile.load(str(d))
    cfg.store_for("h:1").store(cr.AuthConfig("u", "p", "h:1"))
    data = json.loads((d / "config.json").read_text())
    assert list(data) == ["psFormat", "auths", "proxies"]
    assert data["auths"]["h:1"] == {"auth": base64.b64encode(b"u:p").decode()}
    assert stat.S_IMODE((d / "config.json").stat().st_mode) == 0o640


def test_symlinked_config_written_through(tmp_path: Path) -> None:
    real = tmp_path / "real.json"
    real.write_text("{}")
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "config.json").symlink_to(real)
    cr.ConfigFile.load(str(d)).store_for("h").store(cr.AuthConfig("u", "p", "h"))
    assert (d / "config.json").is_symlink()
    assert "h" in json.loads(real.read_text())["auths"]


def test_legacy_url_keys_are_found(tmp_path: Path) -> None:
    write_config(tmp_path, {"auths": {"https://reg.example:5000/v1/": {
        "auth": base64.b64encode(b"old:pw").decode()}}})
    got = cr.ConfigFile.load(str(tmp_path)).get_auth("reg.example:5000")
    assert (got.username, got.password) == ("old", "pw")


def test_broken_file_warns_and_reads_as_empty(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config.json").write_text("{not json")
    cfg = cr.ConfigFile.load(str(tmp_path))
    assert cfg.auths == {}
    assert capsys.readouterr().err.startswith(
        f"WARNING: Error loading config file: {tmp_path}/config.json: ")


def test_header_encoding_is_dockers() -> None:
    # what docker 28 sent for the same credentials, captured from its requests
    a = cr.AuthConfig("user", "pw", "localhost:5000")
    assert a.encode() == ("eyJ1c2VybmFtZSI6InVzZXIiLCJwYXNzd29yZCI6InB3Iiwic2VydmVyYWRkcmVzcyI6"
                          "ImxvY2FsaG9zdDo1MDAwIn0=")
    assert cr.AuthConfig().encode() == "e30="


def test_auth_for_domain_sends_nothing_when_nothing_stored(tmp_path: Path) -> None:
    cfg = cr.ConfigFile.load(str(tmp_path))
    assert cr.auth_for_domain(cfg, "docker.io").encode() == "e30="
    cfg.store_for(cr.INDEX_SERVER).store(cr.AuthConfig("hub", "pw", cr.INDEX_SERVER))
    assert cr.auth_for_domain(cfg, "docker.io").username == "hub"


def test_creds_store_helper(tmp_path: Path, helper: Path) -> None:
    d = tmp_path / "cfg"
    write_config(d, {"credsStore": "ketchtest"})
    cfg = cr.ConfigFile.load(str(d))
    store = cfg.store_for("localhost:5000")
    assert isinstance(store, cr.HelperStore)
    assert cfg.get_auth("localhost:5000").empty()        # "not found" is no error
    store.store(cr.AuthConfig("user", "secret", "localhost:5000"))
    store.store(cr.AuthConfig("u2", "", "tok.example", identity_token="IDT"))
    assert json.loads(helper.read_text()) == {"localhost:5000": ["user", "secret"],
                                               "tok.example": ["<token>", "IDT"]}
    # the file keeps an entry without secrets, as docker leaves it
    data = json.loads((d / "config.json").read_text())
    assert data == {"auths": {"localhost:5000": {}, "tok.example": {}}, "credsStore": "ketchtest"}
    again = cr.ConfigFile.load(str(d))
    assert again.get_auth("localhost:5000") == cr.AuthConfig("user", "secret", "localhost:5000")
    tok = again.get_auth("tok.example")
    assert (tok.username, tok.password, tok.identity_token) == ("", "", "IDT")
    assert again.store_for("x").list() == {"localhost:5000": "user", "tok.example": "<token>"}
    again.store_for("localhost:5000").erase("localhost:5000")
    assert "localhost:5000" not in json.loads(helper.read_text())
    assert list(json.loads((d / "config.json").read_text())["auths"]) == ["tok.example"]


def test_cred_helpers_per_registry(tmp_path: Path, helper: Path) -> None:
    write_config(tmp_path, {"credHelpers": {"secure.example": "ketchtest"},
                            "auths": {"plain.example": {"auth": "dTpw"}}})
    cfg = cr.ConfigFile.load(str(tmp_path))
    assert isinstance(cfg.store_for("plain.example"), cr.FileStore)
    assert isinstance(cfg.store_for("secure.example"), cr.HelperStore)
    cfg.store_for("secure.example").store(cr.AuthConfig("s", "pw", "secure.example"))
    assert json.loads(helper.read_text()) == {"secure.example": ["s", "pw"]}
    assert cfg.get_auth("plain.example").username == "u"


def test_helper_errors_worded_as_docker(tmp_path: Path, helper: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    write_config(tmp_path, {"credsStore": "ketchtest"})
    cfg = cr.ConfigFile.load(str(tmp_path))
    with pytest.raises(cr.CredentialsError) as e:
        cfg.get_auth("broken")
    assert str(e.value) == ("error getting credentials - err: exit status 3, "
                            "out: `the keychain is locked`")
    with pytest.raises(cr.CredentialsError) as e:
        cfg.store_for("").store(cr.AuthConfig("u", "p", ""))
    assert str(e.value) == ("error storing credentials - err: credentials missing server URL, "
                            "out: `credentials missing server URL`")
    with pytest.raises(cr.CredentialsError) as e:
        cfg.store_for("nothing").erase("nothing")
    assert "error erasing credentials - err: exit status 1" in str(e.value)
    # pull and push go on without credentials, and say why
    assert cr.auth_for_domain(cfg, "broken").encode() == "e30="
    assert "WARNING: error getting credentials" in capsys.readouterr().err


def test_missing_helper_program(tmp_path: Path) -> None:
    write_config(tmp_path, {"credsStore": "ketch-no-such-helper"})
    with pytest.raises(cr.CredentialsError) as e:
        cr.ConfigFile.load(str(tmp_path)).get_auth("h")
    assert str(e.value) == ('error getting credentials - err: exec: '
                            '"docker-credential-ketch-no-such-helper": executable file not found '
                            'in $PATH, out: ``')
