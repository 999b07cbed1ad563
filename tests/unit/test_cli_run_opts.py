"""run_opts: the create body built from docker flags, compared with the docker CLI's.

The expected bodies were captured from docker 28.2.2 (a logging unix-socket proxy
in front of dockerd, ``DOCKER_API_VERSION=1.45``) for the same command lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ketch.cli import run_opts
from ketch.cli.flags import FlagError, FlagSet
from ketch.cli.run_opts import ConfigError, FlagValueError
from ketch.errors import InvalidArgument

# docker create <FULL_FLAGS> busybox echo hi, as docker 28.2.2 sent it (API 1.45).
FULL_BODY: dict[str, Any] = {'Hostname': 'myhost',
     'Domainname': 'dom',
     'User': '1:2',
     'AttachStdin': True,
     'AttachStdout': True,
     'AttachStderr': False,
     'ExposedPorts': {'80/tcp': {}, '90/udp': {}},
     'Tty': True,
     'OpenStdin': True,
     'StdinOnce': True,
     'Env': ['A=1', 'B=fromenv', 'X=1', 'Y', 'B=fromenv'],
     'Cmd': ['echo', 'hi'],
     'Healthcheck': {'Test': ['CMD-SHELL', 'true'],
                     'Interval': 5000000000,
                     'Timeout': 2000000000,
                     'StartPeriod': 60000000000,
                     'StartInterval': 1000000000,
                     'Retries': 3},
     'Image': 'busybox',
     'Volumes': {'/data': {}},
     'WorkingDir': '/tmp',
     'Entrypoint': ['/bin/sh'],
     'OnBuild': None,
     'Labels': {'a': 'b', 'l1': 'x'},
     'StopSignal': 'SIGUSR1',
     'StopTimeout': 5,
     'HostConfig': {'Binds': ['/tmp:/mnt:ro'],
                    'ContainerIDFile': 'CIDFILE',
                    'LogConfig': {'Type': 'json-file', 'Config': {'max-size': '1m'}},
                    'NetworkMode': 'none',
                    'PortBindings': {'80/tcp': [{'HostIp': '', 'HostPort': '8080'}],
                                     '90/udp': [{'HostIp': '127.0.0.1', 'HostPort': ''}]},
                    'RestartPolicy': {'Name': 'on-failure', 'MaximumRetryCount': 3},
                    'AutoRemove': False,
                    'VolumeDriver': '',
                    'VolumesFrom': None,
                    'ConsoleSize': [0, 0],
                    'CapAdd': ['CAP_NET_ADMIN'],
                    'CapDrop': ['CAP_CHOWN'],
                    'CgroupnsMode': 'private',
                    'Dns': ['1.1.1.1'],
                    'DnsOptions': ['ndots:2'],
                    'DnsSearch': ['x.org'],
                    'ExtraHosts': ['h:1.2.3.4'],
                    'GroupAdd': ['10'],
                    'IpcMode': 'private',
                    'Cgroup': '',
                    'Links': None,
                    'OomScoreAdj': 0,
                    'PidMode': 'host',
                    'Privileged': True,
                    'PublishAllPorts': True,
                    'ReadonlyRootfs': True,
                    'SecurityOpt': ['no-new-privileges', 'seccomp=unconfined'],
                    'Tmpfs': {'/run': 'size=1m'},
                    'UTSMode': 'host',
                    'UsernsMode': 'host',
                    'ShmSize': 67108864,
                    'Sysctls': {'net.ipv4.ip_forward': '1'},
                    'Isolation': '',
                    'CpuShares': 512,
                    'Memory': 536870912,
                    'NanoCpus': 1500000000,
                    'CgroupParent': '/foo',
                    'BlkioWeight': 300,
                    'BlkioWeightDevice': [],
                    'BlkioDeviceReadBps': [{'Path': '/dev/sda', 'Rate': 1048576}],
                    'BlkioDeviceWriteBps': [],
                    'BlkioDeviceReadIOps': [],
                    'BlkioDeviceWriteIOps': [{'Path': '/dev/sda', 'Rate': 100}],
                    'CpuPeriod': 100000,
                    'CpuQuota': 50000,
                    'CpuRealtimePeriod': 0,
                    'CpuRealtimeRuntime': 0,
                    'CpusetCpus': '0',
                    'CpusetMems': '0',
                    'Devices': [{'PathOnHost': '/dev/null',
                                 'PathInContainer': '/dev/xnull',
                                 'CgroupPermissions': 'rw'}],
                    'DeviceCgroupRules': ['c 1:3 mr'],
                    'DeviceRequests': None,
                    'MemoryReservation': 104857600,
                    'MemorySwap': 1073741824,
                    'MemorySwappiness': -1,
                    'OomKillDisable': True,
                    'PidsLimit': 100,
                    'Ulimits': [{'Name': 'nofile', 'Hard': 200, 'Soft': 100}],
                    'CpuCount': 0,
                    'CpuPercent': 0,
                    'IOMaximumIOps': 0,
                    'IOMaximumBandwidth': 0,
                    'Mounts': [{'Type': 'tmpfs',
                                'Target': '/t2',
                                'TmpfsOptions': {'SizeBytes': 1048576}}],
                    'MaskedPaths': None,
                    'ReadonlyPaths': None,
                    'Init': True},
     'NetworkingConfig': {'EndpointsConfig': {'none': {'IPAMConfig': None,
                                                       'Links': None,
                                                       'Aliases': None,
                                                       'MacAddress': '02:42:ac:11:00:02',
                                                       'DriverOpts': None,
                                                       'GwPriority': 0,
                                                       'NetworkID': '',
                                                       'EndpointID': '',
                                                       'Gateway': '',
                                                       'IPAddress': '',
                                                       'IPPrefixLen': 0,
                                                       'IPv6Gateway': '',
                                                       'GlobalIPv6Address': '',
                                                       'GlobalIPv6PrefixLen': 0,
                                                       'DNSNames': None}}}}

# docker create busybox (no flags) at API 1.41, as docker 28.2.2 sent it.
MINIMAL_BODY: dict[str, Any] = {'Hostname': '',
     'Domainname': '',
     'User': '',
     'AttachStdin': False,
     'AttachStdout': True,
     'AttachStderr': True,
     'Tty': False,
     'OpenStdin': False,
     'StdinOnce': False,
     'Env': None,
     'Cmd': None,
     'Image': 'busybox',
     'Volumes': {},
     'WorkingDir': '',
     'Entrypoint': None,
     'OnBuild': None,
     'Labels': {},
     'HostConfig': {'Binds': None,
                    'ContainerIDFile': '',
                    'LogConfig': {'Type': '', 'Config': {}},
                    'NetworkMode': 'default',
                    'PortBindings': {},
                    'RestartPolicy': {'Name': 'no', 'MaximumRetryCount': 0},
                    'AutoRemove': False,
                    'VolumeDriver': '',
                    'VolumesFrom': None,
                    'ConsoleSize': [0, 0],
                    'CapAdd': None,
                    'CapDrop': None,
                    'CgroupnsMode': '',
                    'Dns': [],
                    'DnsOptions': [],
                    'DnsSearch': [],
                    'ExtraHosts': None,
                    'GroupAdd': None,
                    'IpcMode': '',
                    'Cgroup': '',
                    'Links': None,
                    'OomScoreAdj': 0,
                    'PidMode': '',
                    'Privileged': False,
                    'PublishAllPorts': False,
                    'ReadonlyRootfs': False,
                    'SecurityOpt': None,
                    'UTSMode': '',
                    'UsernsMode': '',
                    'ShmSize': 0,
                    'Isolation': '',
                    'CpuShares': 0,
                    'Memory': 0,
                    'NanoCpus': 0,
                    'CgroupParent': '',
                    'BlkioWeight': 0,
                    'BlkioWeightDevice': [],
                    'BlkioDeviceReadBps': [],
                    'BlkioDeviceWriteBps': [],
                    'BlkioDeviceReadIOps': [],
                    'BlkioDeviceWriteIOps': [],
                    'CpuPeriod': 0,
                    'CpuQuota': 0,
                    'CpuRealtimePeriod': 0,
                    'CpuRealtimeRuntime': 0,
                    'CpusetCpus': '',
                    'CpusetMems': '',
                    'Devices': [],
                    'DeviceCgroupRules': None,
                    'DeviceRequests': None,
                    'MemoryReservation': 0,
                    'MemorySwap': 0,
                    'MemorySwappiness': -1,
                    'OomKillDisable': False,
                    'PidsLimit': 0,
                    'Ulimits': [],
                    'CpuCount': 0,
                    'CpuPercent': 0,
                    'IOMaximumIOps': 0,
                    'IOMaximumBandwidth': 0,
                    'MaskedPaths': None,
                    'ReadonlyPaths': None},
     'NetworkingConfig': {'EndpointsConfig': {'default': {'IPAMConfig': None,
                                                          'Links': None,
                                                          'Aliases': None,
                                                          'MacAddress': '',
                                                          'DriverOpts': None,
                                                          'GwPriority': 0,
                                                          'NetworkID': '',
                                                          'EndpointID': '',
                                                          'Gateway': '',
                                                          'IPAddress': '',
                                                          'IPPrefixLen': 0,
                                                          'IPv6Gateway': '',
                                                          'GlobalIPv6Address': '',
                                                          'GlobalIPv6PrefixLen': 0,
                                                          'DNSNames': None}}}}

FULL_FLAGS = [
    "--name", "full1", "-i", "-t", "-e", "X=1", "-e", "Y", "-e", "B", "--env-file", "ENVF",
    "-w", "/tmp", "-u", "1:2", "--entrypoint", "/bin/sh", "-l", "a=b", "--label-file", "LABF",
    "--init", "--read-only", "--cap-add", "NET_ADMIN", "--cap-drop", "chown", "--privileged",
    "--security-opt", "no-new-privileges", "--security-opt", "seccomp=unconfined",
    "--device", "/dev/null:/dev/xnull:rw", "--device-cgroup-rule", "c 1:3 mr",
    "--sysctl", "net.ipv4.ip_forward=1", "-h", "myhost", "--domainname", "dom",
    "--pid", "host", "--ipc", "private", "--uts", "host", "--userns", "host",
    "--cgroupns", "private", "--cgroup-parent", "/foo", "--group-add", "10",
    "--cidfile", "CIDFILE", "--stop-signal", "SIGUSR1", "--stop-timeout", "5",
    "--restart", "on-failure:3", "--health-cmd", "true", "--health-interval", "5s",
    "--health-timeout", "2s", "--health-retries", "3", "--health-start-period", "1m",
    "--health-start-interval", "1s", "--log-driver", "json-file", "--log-opt", "max-size=1m",
    "-m", "512m", "--memory-swap", "1g", "--memory-reservation", "100m", "--oom-kill-disable",
    "--cpus", "1.5", "-c", "512", "--cpu-period", "100000", "--cpu-quota", "50000",
    "--cpuset-cpus", "0", "--cpuset-mems", "0", "--pids-limit", "100", "--blkio-weight", "300",
    "--device-read-bps", "/dev/sda:1mb", "--device-write-iops", "/dev/sda:100",
    "--ulimit", "nofile=100:200", "--shm-size", "64m", "-v", "/tmp:/mnt:ro", "-v", "/data",
    "--mount", "type=tmpfs,target=/t2,tmpfs-size=1m", "--tmpfs", "/run:size=1m",
    "--network", "none", "--expose", "80", "-p", "8080:80", "-p", "127.0.0.1::90/udp", "-P",
    "--dns", "1.1.1.1", "--dns-search", "x.org", "--dns-option", "ndots:2",
    "--add-host", "h:1.2.3.4", "--mac-address", "02:42:ac:11:00:02", "-a", "stdout",
    "busybox", "echo", "hi",
]


def _parse(argv: list[str]) -> tuple[dict[str, Any], str, list[str]]:
    """The words as `ketch run` reads them: flags until the image, the rest is the command."""
    flags = FlagSet(run_opts.options(run_opts.CONTAINER_FLAGS + run_opts.RUN_FLAGS),
                    interspersed=False, help_short=False)
    parsed = flags.parse(argv)
    return parsed.values, parsed.args[0], parsed.args[1:]


def build(argv: list[str], api: str = "1.45", environ: dict[str, str] | None = None
          ) -> run_opts.CreateRequest:
    params, image, cmd = _parse(argv)
    return run_opts.build(params, image, cmd, api_version=api, environ=environ or {})


def test_full_body_is_what_docker_sends(tmp_path: Path) -> None:
    envf = tmp_path / "envf"
    envf.write_text("A=1\n# c\nB\n")
    labf = tmp_path / "labf"
    labf.write_text("l1=x\n")
    argv = [{"ENVF": str(envf), "LABF": str(labf)}.get(w, w) for w in FULL_FLAGS]
    req = build(argv, environ={"B": "fromenv"})
    assert req.body == FULL_BODY
    # JSON key order too: the daemon does not care, but a reader diffing bodies does.
    assert list(req.body) == list(FULL_BODY)
    assert list(req.body["HostConfig"]) == list(FULL_BODY["HostConfig"])
    assert req.name == "full1" and req.cidfile == "CIDFILE"


def test_minimal_body() -> None:
    assert build(["busybox"], api="1.41").body == MINIMAL_BODY


@pytest.mark.parametrize("argv, message", [
    (["-m", "x"], 'invalid argument "x" for "-m, --memory" flag: invalid size: \'x\''),
    (["--cpus", "abc"], 'invalid argument "abc" for "--cpus" flag: failed to parse abc as a '
                        "rational number"),
    (["--cpus", "0.0000000001"], 'invalid argument "0.0000000001" for "--cpus" flag: '
                                 "value is too precise"),
    (["-c", "x"], 'invalid argument "x" for "-c, --cpu-shares" flag: strconv.ParseInt: '
                  'parsing "x": invalid syntax'),
    (["--health-interval", "5"], 'invalid argument "5" for "--health-interval" flag: '
                                 'time: missing unit in duration "5"'),
    (["--ulimit", "bogus=1"], 'invalid argument "bogus=1" for "--ulimit" flag: invalid '
                              "ulimit type: bogus"),
    (["--sysctl", "kernel.pid_max=1"], 'invalid argument "kernel.pid_max=1" for "--sysctl" '
                                       "flag: sysctl 'kernel.pid_max=1' is not allowed"),
    (["-a", "foo"], 'invalid argument "foo" for "-a, --attach" flag: valid streams are '
                    "STDIN, STDOUT and STDERR"),
    (["--device-cgroup-rule", "c_1"], 'invalid argument "c_1" for "--device-cgroup-rule" '
                                      "flag: invalid device cgroup format 'c_1'"),
])
def test_bad_flag_values(argv: list[str], message: str) -> None:
    with pytest.raises(FlagValueError) as err:
        build([*argv, "busybox"])
    assert str(err.value) == message


@pytest.mark.parametrize("argv, message", [
    (["--rm", "--restart", "always"], "conflicting options: cannot specify both --restart "
                                      "and --rm"),
    (["-d", "-a", "stdout"], "conflicting options: cannot specify both --attach and --detach"),
    (["--no-healthcheck", "--health-cmd", "x"], "--no-healthcheck conflicts with --health-* "
                                                "options"),
    (["--pid", "bogus"], "--pid: invalid PID mode"),
    (["--pull", "sometimes"], 'invalid pull option: \'sometimes\': must be one of "always", '
                              '"missing" or "never"'),
    (["--log-driver", "none", "--log-opt", "a=b"], "invalid logging opts for driver none"),
    (["--gpus", "all"], "--gpus is not supported: ketch has no GPU device drivers"),
    (["--mac-address", "zz"], "zz is not a valid mac address"),
    (["-v", ""], "invalid empty volume spec"),
    (["-p", "80/xyz"], "invalid proto: xyz"),
])
def test_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build([*argv, "busybox"])
    assert str(err.value) == message


def test_units_docker_and_kubernetes() -> None:
    hc = build(["-m", "1g", "--memory-reservation", "256Mi", "--shm-size", "1Ki",
                "--memory-swap", "-1", "--cpus", "250m", "busybox"]).host_config
    assert hc["Memory"] == 1 << 30
    assert hc["MemoryReservation"] == 256 << 20
    assert hc["ShmSize"] == 1024
    assert hc["MemorySwap"] == -1
    assert hc["NanoCpus"] == 250_000_000
    assert run_opts.parse_size("1G") == 1 << 30 == run_opts.parse_size("1Gi")


def test_durations_as_go() -> None:
    assert run_opts.parse_duration("1m30s") == 90 * 10**9
    assert run_opts.parse_duration("1.5h") == 5400 * 10**9
    assert run_opts.parse_duration("500ms") == 5 * 10**8
    assert run_opts.parse_duration("0") == 0
    with pytest.raises(ValueError, match='time: invalid duration "x"'):
        run_opts.parse_duration("x")


def test_interactive_and_detach() -> None:
    body = build(["-i", "busybox", "cat"]).body
    assert (body["AttachStdin"], body["OpenStdin"], body["StdinOnce"]) == (True, True, True)
    req = build(["-d", "-i", "busybox", "cat"])
    assert req.detach
    assert (req.body["AttachStdin"], req.body["AttachStdout"], req.body["StdinOnce"]) == \
        (False, False, False)
    assert req.body["OpenStdin"] is True


def test_command_words_after_image_are_not_flags() -> None:
    body = build(["busybox", "ls", "-l", "--rm"]).body
    assert body["Cmd"] == ["ls", "-l", "--rm"]
    assert body["HostConfig"]["AutoRemove"] is False


def test_ports_and_networks() -> None:
    body = build(["-p", "8000-8001:80-81/udp", "-p", "[::1]:9000:90", "--expose", "7000-7001",
                  "--network", "mynet", "--network-alias", "web", "busybox"]).body
    assert body["HostConfig"]["PortBindings"] == {
        "80/udp": [{"HostIp": "", "HostPort": "8000"}],
        "81/udp": [{"HostIp": "", "HostPort": "8001"}],
        "90/tcp": [{"HostIp": "::1", "HostPort": "9000"}]}
    assert set(body["ExposedPorts"]) == {"80/udp", "81/udp", "90/tcp", "7000/tcp", "7001/tcp"}
    assert body["HostConfig"]["NetworkMode"] == "mynet"
    assert body["NetworkingConfig"]["EndpointsConfig"]["mynet"]["Aliases"] == ["web"]


def test_entrypoint_reset_and_init_unset() -> None:
    body = build(["--entrypoint", "", "busybox"]).body
    assert body["Entrypoint"] == [""]
    assert "Init" not in body["HostConfig"]
    assert "StopTimeout" not in body


def test_bool_flags_take_values_as_pflag() -> None:
    body = build(["--init=false", "--rm=true", "-i=false", "--privileged", "busybox",
                  "sh", "--init=true"]).body
    assert body["HostConfig"]["Init"] is False          # explicit false is still sent
    assert body["HostConfig"]["AutoRemove"] is True
    assert body["OpenStdin"] is False and body["HostConfig"]["Privileged"] is True
    assert body["Cmd"] == ["sh", "--init=true"]         # the container's words are its own
    with pytest.raises(FlagError, match='^invalid argument "maybe" for "--privileged" flag: '
                                        'strconv.ParseBool: parsing "maybe": invalid syntax$'):
        build(["--privileged=maybe", "busybox"])
    req = build(["--sig-proxy=false", "busybox"])
    assert req.sig_proxy is False and build(["busybox"]).sig_proxy is True


def test_values_normalised_as_docker_sends_them() -> None:
    hc = build(["--add-host", "h=1.2.3.4", "--add-host", "v6:[::1]", "--security-opt",
                "systempaths=unconfined", "--cap-add", "sys_admin", "-v", "./rel:/rel",
                "-v", "/anon", "busybox"]).host_config
    assert hc["ExtraHosts"] == ["h:1.2.3.4", "v6:::1"]
    assert (hc["SecurityOpt"], hc["MaskedPaths"], hc["ReadonlyPaths"]) == ([], [], [])
    assert hc["CapAdd"] == ["CAP_SYS_ADMIN"]
    assert hc["Binds"][0].endswith("/rel:/rel") and hc["Binds"][0].startswith("/")
    with pytest.raises(ConfigError, match="empty section between colons"):
        build(["-v", ":/x", "busybox"])


def test_api_version_gates() -> None:
    with pytest.raises(run_opts.VersionError, match='"--health-start-interval" requires API '
                                                    "version 1.44"):
        build(["--health-start-interval", "1s", "busybox"], api="1.41")
    assert build(["--annotation", "a=b", "busybox"]).host_config["Annotations"] == {"a": "b"}


def test_log_times_as_docker_sends_them() -> None:
    from ketch.cli.container_cmds import go_timestamp

    now = 1_700_000_000.25
    assert go_timestamp("10m", now) == str(int(now - 600))      # whole seconds ago
    assert go_timestamp("1700000000.5", now) == "1700000000.5"
    assert go_timestamp("2023-11-14T22:13:20Z", now) == "1700000000.000000000"
    assert go_timestamp("", now) == ""
    with pytest.raises(InvalidArgument, match='failed to parse value as time or duration: '
                                              '"yesterday"'):
        go_timestamp("yesterday", now)


def test_cp_argument_split() -> None:
    from ketch.cli.container_cmds import split_cp_arg

    assert split_cp_arg("web:/etc/hosts") == ("web", "/etc/hosts")
    assert split_cp_arg("/abs:with:colons") == ("", "/abs:with:colons")
    assert split_cp_arg("./rel:x") == ("", "./rel:x")
    assert split_cp_arg("plain") == ("", "plain")
