"""``ketch compose``'s command line without an engine: flag checks in compose v2's words,
and the rendering of listings (ps, ls, images, top, events, version, config) from fake rows.

The expected texts follow docker/compose v2.40 (cmd/compose, cmd/formatter, pkg/compose):
its messages, column sets, JSON fields and separators.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from ketch.cli import compose_build as cb
from ketch.cli import compose_cmds as cc
from ketch.cli import compose_exec as ce
from ketch.cli import compose_lifecycle as cl
from ketch.cli import compose_views as cv
from ketch.cli.main import main
from ketch.compose import normalize as nz
from ketch.errors import KetchError, NotSupported

NO_DAEMON = "unix:///nonexistent/ketch-compose-cli.sock"


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path):  # type: ignore[no-untyped-def]
    """``ketch compose ARGS`` in an empty project directory, against no daemon:
    (exit code, stdout, stderr)."""
    monkeypatch.setenv("KETCH_HOST", NO_DAEMON)
    for k in ("COMPOSE_ANSI", "COMPOSE_PROGRESS", "COMPOSE_PROFILES", "COMPOSE_FILE",
              "COMPOSE_PROJECT_NAME", "NO_COLOR", "COMPOSE_PARALLEL_LIMIT",
              "COMPOSE_IGNORE_ORPHANS"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: busybox\n    environment: {P: 'pa$$word'}\n"
        "  db:\n    image: busybox\n    profiles: [debug]\n")

    def go(*args: str) -> tuple[int, str, str]:
        code = main(["compose", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return go


# --- flag validation, as compose v2 words it ----------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["up", "-d", "--abort-on-container-exit"],
     "--detach cannot be combined with --abort-on-container-exit, --abort-on-container-failure, "
     "--attach, --attach-dependencies or --watch"),
    (["up", "-d", "--exit-code-from", "web"],
     "--detach cannot be combined with --abort-on-container-exit"),
    (["up", "--wait", "--abort-on-container-exit"],
     "--wait cannot be combined with --abort-on-container-exit, --attach or "
     "--attach-dependencies"),
    (["up", "--wait", "--abort-on-container-failure"],
     "--wait cannot be combined with --abort-on-container-exit, --abort-on-container-failure"),
    (["up", "--abort-on-container-exit", "--abort-on-container-failure"],
     "--abort-on-container-failure cannot be combined with --abort-on-container-exit"),
    (["up", "--build", "--no-build"], "--build and --no-build are incompatible"),
    (["up", "--force-recreate", "--no-recreate"],
     "--force-recreate and --no-recreate are incompatible"),
    (["up", "-V", "--no-recreate"], "--no-recreate and --renew-anon-volumes are incompatible"),
    (["up", "--always-recreate-deps", "--no-recreate"],
     "--always-recreate-deps and --no-recreate are incompatible"),
    (["up", "--attach", "web", "--attach-dependencies"],
     "cannot combine --attach and --attach-dependencies"),
    (["up", "-d", "--attach-dependencies"],
     "--detach cannot be combined with --abort-on-container-exit"),
    (["up", "--pull", "sometimes"], 'invalid --pull option "sometimes"'),
    (["up", "--scale", "web"], 'invalid --scale option "web". Should be SERVICE=NUM'),
    (["up", "--scale", "web=x"], 'strconv.Atoi: parsing "x": invalid syntax'),
    (["create", "--build", "--no-build"], "--build and --no-build are incompatible"),
    (["create", "--force-recreate", "--no-recreate"],
     "--force-recreate and --no-recreate are incompatible"),
    (["create", "--pull", "x"], 'invalid --pull option "x"'),
    (["down", "--rmi", "some"], 'invalid value for --rmi: "some"'),
    (["ps", "--filter", "status"], "arguments to --filter should be in form KEY=VAL"),
    (["ps", "--filter", "name=x"], "unknown filter name"),
    (["ls", "--filter", "label=x"], "invalid filter 'label'"),
    (["logs", "--index", "2"], "--index requires one service to be selected"),
    (["logs", "--index", "2", "a", "b"], "--index requires one service to be selected"),
    (["run", "-p", "80", "-P", "web"], "--service-ports and --publish are incompatible"),
    (["run", "-t", "-T", "web"], "--tty and --no-TTY can't be used together"),
    (["run", "-l", "novalue", "web"], "label must be set as KEY=VALUE"),
    (["cp", "web:/a", "db:/b"], "copying between services is not supported"),
    (["scale", "web"], "invalid scale specifier: web"),
    (["scale", "web="], "invalid scale specifier: web="),
    (["scale", "web=x"], "invalid scale specifier: can't parse replica value as int: web=x"),
    (["cp", "/a", "./b"], "unknown copy direction"),
    (["cp", "", "web:/b"], "source can not be empty"),
    (["port", "web", "http"], 'strconv.ParseUint: parsing "http": invalid syntax'),
    (["port", "web", "70000"], 'strconv.ParseUint: parsing "70000": value out of range'),
    (["config", "--format", "toml"], 'unsupported format "toml"'),
    (["--progress", "fancy", "ps"], 'unsupported --progress value "fancy"'),
    (["--ansi", "sometimes", "ps"], 'unsupported --ansi value "sometimes"'),
    (["--ansi", "never", "--progress", "tty", "ps"],
     "can't use --progress tty while ANSI support is disabled"),
    (["--ansi", "always", "--progress", "plain", "ps"],
     "can't use --progress plain while ANSI support is forced"),
    (["--no-ansi", "--ansi", "always", "ps"],
     'cannot specify DEPRECATED "--no-ansi" and "--ansi". Please use only "--ansi"'),
    (["--workdir", "a", "--project-directory", "b", "ps"],
     'cannot specify DEPRECATED "--workdir" and "--project-directory"'),
])
def test_refusals_in_compose_words(run: Any, args: list[str], message: str) -> None:
    code, out, err = run(*args)
    assert code == 1, (out, err)
    assert message in err, err
    assert "Error response from daemon" not in err
    assert out == ""


@pytest.mark.parametrize("args, what", [
    (["--dry-run", "ps"], "--dry-run"),
    (["--compatibility", "ps"], "--compatibility"),
    (["up", "--watch"], "up --watch"),
    (["up", "--menu"], "up --menu"),
    (["config", "--variables"], "config --variables"),
    (["config", "--no-normalize"], "config --no-normalize"),
    (["config", "--resolve-image-digests"], "config --resolve-image-digests"),
    (["ps", "--filter", "source=x"], "--filter source"),
    (["build", "--ssh", "default"], "build --ssh"),
    (["build", "--print"], "build --print"),
    (["build", "--provenance", "mode=max"], "build --provenance"),
])
def test_what_ketch_cannot_do_is_refused(run: Any, args: list[str], what: str) -> None:
    code, _, err = run(*args)
    assert code == 1
    assert f"{what} is not supported by ketch compose" in err, err


def test_flag_errors_are_compose_s_own(run: Any) -> None:
    # compose's SetFlagErrorFunc: the message alone and exit 1, not docker's 125 and usage
    assert run("ps", "--bogus") == (1, "", "unknown flag: --bogus\n")
    assert run("--bogus", "ps") == (1, "", "unknown flag: --bogus\n")
    code, _, err = run("up", "-t", "x")
    assert code == 1 and err.startswith('invalid argument "x" for "-t, --timeout" flag')


def test_exit_code_from_implies_abort_and_wait_implies_detach() -> None:
    f: dict[str, Any] = {"exit_code_from": "web", "wait": False, "detach": False}
    cl.validate_up(f, {})
    assert f["abort_on_container_exit"] is True
    f = {"wait": True, "detach": False}
    cl.validate_up(f, {})
    assert f["detach"] is True
    # --abort-on-container-failure with --exit-code-from is no cascade stop
    f = {"exit_code_from": "web", "abort_on_container_failure": True}
    cl.validate_up(f, {})
    assert not f.get("abort_on_container_exit")
    with pytest.raises(KetchError, match="cannot combine COMPOSE_IGNORE_ORPHANS and "
                                         "--remove-orphans"):
        cl.validate_up({"remove_orphans": True}, {"COMPOSE_IGNORE_ORPHANS": "true"})


def test_attached_services_as_compose_picks_them() -> None:
    model = {"services": {"web": {"depends_on": {"db": {}}}, "db": {},
                          "quiet": {"attach": False}, "other": {}}}
    everything = ["db", "other", "quiet", "web"]
    assert cl.attach_set(model, [], everything, {}) == {"db", "other", "web"}
    assert cl.attach_set(model, ["web"], ["db", "web"], {}) == {"web"}
    assert cl.attach_set(model, ["web"], ["db", "web"],
                         {"attach_dependencies": True}) == {"db", "web"}
    assert cl.attach_set(model, [], everything, {"no_attach": ["db"]}) == {"other", "web"}
    assert cl.attach_set(model, ["web"], ["db", "web"], {"attach": ["db"]}) == {"db"}
    with pytest.raises(KetchError, match="cannot attach to services not included in up: "
                                         "other"):
        cl.attach_set(model, ["web"], ["db", "web"], {"attach": ["other"]})


def test_config_services_in_dependency_order() -> None:
    model = {"services": {"web": {"depends_on": {"api": {}}}, "api": {"depends_on": {"db": {}}},
                          "db": {}, "cache": {}}}
    assert cv.dependency_order(model) == ["db", "api", "cache", "web"]


def test_global_flags_resolution() -> None:
    base = {o.dest: o.default for o in cc.GLOBAL_OPTIONS}
    v = cc.check_global(base, {"COMPOSE_ANSI": "never", "COMPOSE_PROGRESS": "quiet"})
    assert (v["ansi"], v["progress"]) == ("never", "quiet")
    v = cc.check_global({**base, "ansi": "always"}, {"COMPOSE_ANSI": "never"})
    assert v["ansi"] == "always"          # the flag wins over the variable
    assert cc.check_global(base, {"NO_COLOR": "1"})["ansi"] == "never"
    assert cc.check_global({**base, "progress": "none"}, {})["progress"] == "quiet"
    v = cc.check_global({**base, "workdir": "/x"}, {})
    assert v["project_directory"] == "/x"
    assert cc.check_global(base, {"COMPOSE_PARALLEL_LIMIT": "3"})["parallel"] == "3"
    assert cc.check_global({**base, "parallel": "2"},
                           {"COMPOSE_PARALLEL_LIMIT": "3"})["parallel"] == "2"
    with pytest.raises(KetchError, match='COMPOSE_PARALLEL_LIMIT must be an integer '
                                         r'\(found: "many"\)'):
        cc.check_global(base, {"COMPOSE_PARALLEL_LIMIT": "many"})


def test_run_tty_choice() -> None:
    def tty(**f: Any) -> bool:
        flags = {"tty_": None, "no_tty": None, "interactive": None, **f}
        return ce.run_tty(flags, stdin_tty=f.pop("stdin", True), stdout_tty=f.pop("out", True))

    assert tty() is True
    assert tty(no_tty=True) is False
    assert tty(tty_=True, stdin=False, out=False) is True
    assert tty(stdin=False) is False           # piped stdin: no TTY by default
    assert tty(interactive=True, stdin=False) is True
    assert tty(out=False) is False
    assert ce.run_entrypoint("sh -c 'echo a b'") == ["sh", "-c", "echo a b"]
    assert ce.run_entrypoint("") == [] and ce.run_entrypoint(None) is None
    assert ce.run_labels(["a=1", "b="]) == {"a": "1", "b": ""}


def test_env_values_resolve_from_the_project_environment() -> None:
    env = {"HOME": "/root", "TOKEN": "t"}
    assert ce.resolve_env(["TOKEN", "A=1", "MISSING"], env) == ["TOKEN=t", "A=1", "MISSING"]


def test_pull_skips_as_compose_does() -> None:
    def skip(spec: dict[str, Any], policy: str = "", present: bool = False,
             ignore_buildable: bool = False, pulling: dict[str, str] | None = None) -> str:
        return cb.pull_skip(spec, policy, present=lambda _: present,
                            ignore_buildable=ignore_buildable, pulling=pulling or {})

    assert skip({"build": {"context": "."}}) == "Skipped - No image to be pulled"
    assert skip({"image": "x", "pull_policy": "never"}) == "Skipped"
    assert skip({"image": "x", "pull_policy": "build"}) == "Skipped"
    assert skip({"image": "x", "pull_policy": "missing"}, present=True) == \
        "Skipped - Image is already present locally"
    assert skip({"image": "x", "pull_policy": "missing"}) == ""
    assert skip({"image": "x"}, present=True) == ""            # no policy: pulled
    assert skip({"image": "x"}, "missing", present=True) == \
        "Skipped - Image is already present locally"
    assert skip({"image": "x", "pull_policy": "never"}, "always") == ""
    assert skip({"image": "x", "build": {}}, ignore_buildable=True) == \
        "Skipped - Image can be built"
    assert skip({"image": "x"}, pulling={"x": "web"}) == \
        "Skipped - Image is already being pulled by web"


def test_env_from_file_reads_with_dotenv_rules(tmp_path: Path) -> None:
    f = tmp_path / "run.env"
    f.write_text("# comment\nA=1\nB='two words'\nC=${HOME_DIR}/x\nexport D=4\n")
    assert ce._env_file_values(str(f), {"HOME_DIR": "/h"}) == \
        ["A=1", "B=two words", "C=/h/x", "D=4"]
    with pytest.raises(KetchError, match="failed to read"):
        ce._env_file_values(str(tmp_path / "missing.env"), {})


def test_cp_arguments() -> None:
    assert ce.split_cp_arg("web:/etc/hosts") == ("web", "/etc/hosts")
    assert ce.split_cp_arg("/abs/with:colon") == ("", "/abs/with:colon")
    assert ce.split_cp_arg("./rel:x") == ("", "./rel:x")
    assert ce.split_cp_arg("plain") == ("", "plain")


def test_json_progress_lines() -> None:
    out = io.StringIO()
    p = cc.json_progress(out)
    p("Container", "demo-web-1", "Started")
    p("Container", "demo-db-1", "port is already allocated", error=True)
    p.warn("Found orphan containers")
    lines = out.getvalue().splitlines()
    assert lines[0] == '{"id":"Container demo-web-1","text":"Started"}'
    assert json.loads(lines[1]) == {"id": "Container demo-db-1", "text": "Error",
                                    "status": "port is already allocated"}
    warn = json.loads(lines[2])
    assert list(warn) == ["level", "msg", "time"] and warn["level"] == "warning"


def test_prune_replaced_keeps_what_is_tagged_or_used() -> None:
    from ketch.errors import Conflict, NotFound

    class Client:
        def __init__(self) -> None:
            self.images = {"a": {"RepoTags": []}, "b": {"RepoTags": ["x:1"]},
                           "c": {"RepoTags": []}}
            self.removed: list[str] = []

        def image_inspect(self, iid: str) -> dict[str, Any]:
            if iid not in self.images:
                raise NotFound(iid)
            return self.images[iid]

        def image_remove(self, iid: str) -> None:
            if iid == "c":
                raise Conflict("image is being used by running container")
            self.removed.append(iid)

    client = Client()
    ids = ["a", "b", "c", "gone"]
    cb.prune_replaced(client, ids)
    assert client.removed == ["a"]
    assert ids == ["c"]            # still in use: tried again later


def test_confirm_on_a_pipe_and_a_terminal() -> None:
    out = io.StringIO()
    assert cl.confirm("Going to remove p-web-1", io.StringIO("y\n"), out) is True
    assert out.getvalue() == "Going to remove p-web-1\n"
    assert cl.confirm("Going to remove p-web-1", io.StringIO("\n"), io.StringIO()) is False
    assert cl.confirm("x", io.StringIO("no\n"), io.StringIO()) is False

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tout = Tty()
    assert cl.confirm("Going to remove a", Tty("yes\n"), tout) is True
    assert tout.getvalue() == "? Going to remove a (y/N) "


# --- ps ----------------------------------------------------------------------------------------

NOW = 1_764_000_000.0
SUMMARY = {
    "Id": "4f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0",
    "Names": ["/demo-web-1"], "Image": "busybox", "Command": "httpd -f -h /www -p 80 -v",
    "Created": int(NOW) - 125, "State": "running", "Status": "Up 2 minutes (healthy)",
    "Ports": [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": 8080, "Type": "tcp"},
              {"PrivatePort": 443, "Type": "tcp"}],
    "Labels": {"com.docker.compose.project": "demo", "com.docker.compose.service": "web",
               "com.docker.compose.container-number": "1"},
    "Mounts": [{"Name": "demo_data", "Source": "/var/lib/x", "Driver": "local"}],
    "NetworkSettings": {"Networks": {"demo_default": {}}},
}


def test_ps_table_columns_and_content() -> None:
    row = cv.ps_row(SUMMARY, {"Status": "running", "Health": {"Status": "healthy"}},
                    now=NOW)
    text = cv.ps_output([row], "")
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "IMAGE", "COMMAND", "SERVICE", "CREATED", "STATUS",
                                "PORTS"]
    assert lines[1].startswith("demo-web-1   busybox   \"httpd -f -h /www -p…\"   web       "
                               "2 minutes ago   Up 2 minutes (healthy)   ")
    assert lines[1].endswith("443/tcp, 127.0.0.1:8080->80/tcp")


def test_ps_json_fields_as_compose_prints_them() -> None:
    row = cv.ps_row(SUMMARY, {"Status": "running", "Health": {"Status": "healthy"}},
                    now=NOW)
    line = cv.ps_output([row, row], "json").splitlines()
    assert len(line) == 2
    doc = json.loads(line[0])
    assert sorted(doc) == ["Command", "CreatedAt", "ExitCode", "Health", "ID", "Image",
                           "Labels", "LocalVolumes", "Mounts", "Name", "Names", "Networks",
                           "Ports", "Project", "Publishers", "RunningFor", "Service", "Size",
                           "State", "Status"]
    assert list(doc) == sorted(doc)         # a Go map: keys sorted
    assert doc["ID"] == "4f1e2d3c4b5a"      # truncated, as the table is
    assert doc["Name"] == "demo-web-1" and doc["Project"] == "demo"
    assert doc["Health"] == "healthy" and doc["ExitCode"] == 0
    assert doc["Command"] == '"httpd -f -h /www -p…"'
    assert doc["LocalVolumes"] == "1" and doc["Networks"] == "demo_default"
    # publishers sorted by target port, fields in the struct's order
    assert doc["Publishers"] == [
        {"URL": "127.0.0.1", "TargetPort": 80, "PublishedPort": 8080, "Protocol": "tcp"},
        {"URL": "", "TargetPort": 443, "PublishedPort": 0, "Protocol": "tcp"}]
    assert '{"URL":"127.0.0.1","TargetPort":80,"PublishedPort":8080,"Protocol":"tcp"}' \
        in line[0]
    full = json.loads(cv.ps_output([cv.ps_row(SUMMARY, {}, trunc=False, now=NOW)], "json"))
    assert full["ID"] == SUMMARY["Id"]


def test_ps_health_and_exit_code_follow_the_state() -> None:
    exited = dict(SUMMARY, State="exited", Status="Exited (3) 1 second ago")
    row = cv.ps_row(exited, {"Status": "exited", "ExitCode": 3,
                             "Health": {"Status": "unhealthy"}}, now=NOW)
    assert (row["ExitCode"], row["Health"]) == (3, "")


def test_ps_templates() -> None:
    row = cv.ps_row(SUMMARY, {"Status": "running"}, now=NOW)
    assert cv.ps_output([row], "{{.Name}} {{.Service}} {{.State}}") == \
        "demo-web-1 web running\n"
    assert cv.ps_output([row], "table {{.Service}}\t{{.Label \"com.docker.compose."
                               "container-number\"}}") == \
        "SERVICE   container number\nweb       1\n"     # docker titles a label as written
    with pytest.raises(KetchError, match="template"):
        cv.ps_output([row], "{{.Nope")


# --- ls ----------------------------------------------------------------------------------------

def _ctr(project: str, state: str, files: str | None = "/p/compose.yaml") -> dict[str, Any]:
    labels = {"com.docker.compose.project": project}
    if files is not None:
        labels["com.docker.compose.project.config_files"] = files
    return {"State": state, "Labels": labels}


def test_ls_status_and_config_files() -> None:
    rows = cv.ls_stacks([_ctr("b", "running"), _ctr("a", "exited", "/a/x.yaml,/a/y.yaml"),
                         _ctr("a", "running", "/a/x.yaml"), _ctr("a", "running"),
                         _ctr("c", "running", None)])
    assert rows == [
        {"Name": "a", "Status": "exited(1), running(2)",
         "ConfigFiles": "/a/x.yaml,/a/y.yaml,/p/compose.yaml"},
        {"Name": "b", "Status": "running(1)", "ConfigFiles": "/p/compose.yaml"},
        {"Name": "c", "Status": "running(1)", "ConfigFiles": "N/A"}]
    table = cv.print_view(rows[:2], "table", ("NAME", "STATUS", "CONFIG FILES"))
    assert table.splitlines()[0] == "NAME                STATUS                  CONFIG FILES"
    assert table.splitlines()[2] == "b                   running(1)              /p/compose.yaml"
    assert cv.print_view(rows[1:2], "json", ()) == \
        '[{"Name":"b","Status":"running(1)","ConfigFiles":"/p/compose.yaml"}]\n'
    assert cv.print_view([], "json", ()) == "[]\n"
    with pytest.raises(KetchError, match='format value "yaml" could not be parsed: '
                                         "parsing failed"):
        cv.print_view(rows, "yaml", ())


# --- images, top, events, version ---------------------------------------------------------------

def test_image_reference_parts() -> None:
    assert cv.image_ref_parts("busybox") == ("busybox", "latest")
    assert cv.image_ref_parts("docker.io/library/redis:7") == ("redis", "7")
    assert cv.image_ref_parts("localhost:5000/team/app:v2") == ("localhost:5000/team/app", "v2")
    assert cv.image_ref_parts("localhost:5000/app") == ("localhost:5000/app", "latest")
    assert cv.image_ref_parts("sha256:" + "a" * 64) == ("", "")


def test_images_table_json_and_quiet() -> None:
    img = {"Id": "sha256:" + "ab" * 32, "Os": "linux", "Architecture": "amd64",
           "Size": 4_270_000, "Created": "2025-11-24T16:00:00Z",
           "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"}}
    rows = cv.images_rows([("demo-web-2", "busybox", img), ("demo-web-1", "busybox", img),
                           ("demo-app-1", "sha256:" + "ab" * 32, img)])
    assert [r["ContainerName"] for r in rows] == ["demo-app-1", "demo-web-1", "demo-web-2"]
    text = cv.images_output(rows, "table", now=1_764_000_000.0 + 3 * 86400)
    lines = text.splitlines()
    assert lines[0] == ("CONTAINER           REPOSITORY          TAG                 "
                        "PLATFORM            IMAGE ID            SIZE                CREATED")
    assert lines[1].split()[:6] == ["demo-app-1", "<none>", "<none>", "linux/amd64",
                                    "abababababab", "4.27MB"]
    assert lines[2].split()[:3] == ["demo-web-1", "busybox", "latest"]
    assert lines[1].endswith("ago")
    js = cv.images_output(rows[1:2], "json")
    assert js.endswith("]\n\n")
    assert json.loads(js) == [{"ID": "sha256:" + "ab" * 32, "ContainerName": "demo-web-1",
                               "Repository": "busybox", "Tag": "latest",
                               "Platform": "linux/amd64", "Size": 4_270_000,
                               "LastTagTime": "2025-11-24T16:00:00Z"}]
    assert cv.images_output([], "json") == "null\n\n"
    assert cv.images_output(rows, "table", quiet=True) == "ab" * 32 + "\n"


def test_top_is_one_table_with_service_and_replica() -> None:
    ps = {"Titles": ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"],
          "Processes": [["root", "101", "90", "0", "10:00", "?", "00:00:00", "sleep 1000"]]}
    other = {"Titles": ["PID", "CMD", "EXTRA"], "Processes": [["7", "sh", "x"]]}
    text = cv.top_output([("web", "1", ps), ("web", "2", ps), ("db", "1", other)])
    lines = text.splitlines()
    assert lines[0].split() == ["SERVICE", "#", "UID", "PID", "PPID", "C", "STIME", "TTY",
                                "TIME", "EXTRA", "CMD"]
    assert lines[0].startswith("SERVICE  #   UID   PID  ")     # at least 4 wide, 2 apart
    assert lines[1].split() == ["web", "1", "root", "101", "90", "0", "10:00", "?",
                                "00:00:00", "-", "sleep", "1000"]
    assert lines[3].split() == ["db", "1", "-", "7", "-", "-", "-", "-", "-", "x", "sh"]
    assert cv.top_output([]) == ""


@pytest.fixture
def utc() -> Any:
    """Local time is UTC for the test (and the zone restored after it)."""
    import os

    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_events_text_and_json(utc: Any) -> None:
    ev = {"Type": "container", "Action": "start", "timeNano": 1_764_000_000_123_456_789,
          "Actor": {"ID": "abc", "Attributes": {
              "image": "busybox", "name": "demo-web-1", "com.docker.compose.service": "web",
              "com.docker.compose.project": "demo"}}}
    assert cv.event_text(ev, as_json=False) == \
        "2025-11-24 16:00:00.123456 container start abc (image=busybox, name=demo-web-1)\n\n"
    line = cv.event_text(ev, as_json=True)
    assert line == ('{"action":"start","attributes":{"image":"busybox","name":"demo-web-1"},'
                    '"id":"abc","service":"web","time":"2025-11-24T16:00:00.123456789Z",'
                    '"type":"container"}\n')
    oneoff = json.loads(json.dumps(ev))
    oneoff["Actor"]["Attributes"]["com.docker.compose.oneoff"] = "True"
    assert cv.event_text(oneoff, as_json=False) is None
    assert cv.event_text(dict(ev, Type="network"), as_json=True) is None


def test_version_forms(run: Any) -> None:
    from ketch.compose.labels import COMPOSE_VERSION

    assert run("version", "--short") == (0, COMPOSE_VERSION + "\n", "")
    assert run("version", "--format", "json") == \
        (0, '{"version":"v' + COMPOSE_VERSION + '"}\n', "")
    code, out, _ = run("version")
    assert code == 0 and f"version v{COMPOSE_VERSION}" in out
    assert run("-v") == run("version")


# --- config ------------------------------------------------------------------------------------

def test_dump_escapes_literal_dollars_when_asked() -> None:
    model = {"name": "p", "services": {"s": {"command": ["echo", "$HOME ${X}"],
                                             "environment": {"P": "pa$word"}}}}
    text = nz.dump(model, "yaml", escape_dollars=True)
    assert "      - $$HOME $${X}\n" in text and "      P: pa$$word\n" in text
    assert "pa$word" in nz.dump(model, "yaml")
    js = nz.dump(model, "json", escape_dollars=True)
    assert json.loads(js)["services"]["s"]["environment"]["P"] == "pa$$word"


def test_dump_json_as_compose_go_marshals_it() -> None:
    model = {"name": "p", "services": {"s": {"command": ["a<b", "&"]}},
             "networks": {"default": {"name": "p_default"}}, "volumes": {},
             "x-extra": None, "models": {"m": {}}}
    text = nz.dump(model, "json")
    # a Go map at the top: keys sorted; empty sections and models left out; indent 2
    assert text.startswith('{\n  "name": "p",\n  "networks": {\n    "default": {\n')
    assert list(json.loads(text)) == ["name", "networks", "services", "x-extra"]
    assert "\\u003c" in text and "\\u0026" in text
    assert not text.endswith("\n")        # compose prints the document without a newline
    assert nz.dump({"name": "p"}, "json") == '{\n  "name": "p",\n  "services": {}\n}'


def test_config_output_and_listings(run: Any, tmp_path: Path) -> None:
    code, out, err = run("config")
    assert code == 0, err
    assert "P: pa$$word" in out            # the file's $$ is a literal $, printed escaped
    code, out, _ = run("config", "--no-interpolate")
    assert "P: pa$$word" in out
    assert run("config", "--services")[1] == "web\n"
    assert run("--profile", "debug", "config", "--services")[1] == "db\nweb\n"
    assert run("config", "--profiles")[1] == "debug\n"
    assert run("config", "--images")[1] == "busybox\n"
    assert run("config", "--networks")[1] == "default\n"
    assert run("config", "--volumes")[1] == ""
    assert run("config", "-q") == (0, "", "")
    hashes = run("--profile", "debug", "config", "--hash", "*")[1].splitlines()
    assert [h.split()[0] for h in hashes] == ["db", "web"]
    assert run("--profile", "debug", "config", "--hash", "web,db")[1].splitlines() == hashes
    code, _, err = run("config", "--hash", "nosuch")
    assert code == 1 and "no such service: nosuch" in err
    code, out, _ = run("config", "-o", str(tmp_path / "out.yaml"))
    assert (code, out) == (0, "")
    assert "pa$$word" in (tmp_path / "out.yaml").read_text()
    code, out, _ = run("config", "--format", "json")
    assert json.loads(out)["services"]["web"]["environment"]["P"] == "pa$$word"
    env = run("config", "--environment")[1]
    assert "PATH=" in env


def test_config_service_selection_keeps_dependencies(run: Any, tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text(
        "services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x}\n  c: {image: x}\n")
    code, out, err = run("config", "--format", "json", "a")
    assert code == 0, err
    assert sorted(json.loads(out)["services"]) == ["a", "b"]
    # --services: each after what it depends on, as compose's ForEachService
    assert run("config", "--services")[1] == "b\na\nc\n"


def test_not_supported_is_ketch_error() -> None:
    exc = cc._unsupported("x")
    assert isinstance(exc, NotSupported) and str(exc) == "x is not supported by ketch compose"


def test_build_secrets_come_from_the_top_level_secrets(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from ketch.cli import build_cmds
    from ketch.compose.model import Project

    (tmp_path / "token.txt").write_text("s3cret")
    raw = SimpleNamespace(name="proj", working_dir=str(tmp_path), environment={},
                          files=[str(tmp_path / "compose.yaml")], model={
                              "services": {"app": {"build": {"context": ".", "secrets": [
                                  "token", {"source": "key", "target": "api_key"}]}}},
                              "secrets": {"token": {"file": "./token.txt"},
                                          "key": {"environment": "API_KEY"}}})
    model = nz.normalize(raw)
    project = Project.of("proj", str(tmp_path), raw.files, model)
    seen: dict[str, Any] = {}

    def run_build(session: Any, context: str, flags: dict[str, Any]) -> int:
        seen.update(flags, context=context)
        return 0

    monkeypatch.setattr(build_cmds, "run_build", run_build)
    svc = project.services["app"]
    cb._build(None, project, svc, svc.image, quiet=True)  # type: ignore[arg-type]
    assert seen["secret"] == (f"id=token,src={tmp_path / 'token.txt'}", "id=api_key,env=API_KEY")
    assert seen["tag"][0] == "proj-app" and seen["context"] == str(tmp_path)
