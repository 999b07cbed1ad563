"""Engine API JSON -> the rows docker's formatters show, and the text they print.

Each listing has the docker CLI's field names (what ``--format '{{.Field}}'``
can use), its header titles, its default table, and one function that does
what the docker command prints:

    images_output(api_images, fmt=None, quiet=False, digests=False, no_trunc=False)
    history_output(api_history, fmt=None, human=True, quiet=False, no_trunc=False)
    system_df_output(api_df, fmt=None, verbose=False)
    containers_output(api_containers, fmt=None, quiet=False, size=False, no_trunc=False)
    volumes_output(api_volumes, fmt=None, quiet=False)

The ``*_row(s)`` functions give the rows alone (``Struct`` dicts of strings,
computed the way docker's ``imageContext``/``historyContext``/... methods
compute them) and the ``*_format`` functions the format docker picks from
--format/-q/--digests; ``*_HEADERS`` are the column titles. ``now`` (unix
seconds) fixes "... ago" for tests; it defaults to the current time.

Like the docker CLI, the rows of one image follow the order of its
``RepoTags``, and a template error raises TemplateError before anything is
printed.
"""

from __future__ import annotations

import time

from ketch.cli.formatting import (
    Struct,
    TemplateError,
    docker_size,
    ellipsis,
    go_quote,
    go_time,
    go_time_rfc3339,
    human_duration,
    human_size,
    render,
    truncate_id,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from typing import Any

# --------------------------------------------------------------------------- references


def _familiar_name(name: str) -> str:
    """reference.FamiliarName: no docker.io/, no library/ for official images."""
    for prefix in ("docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            if name.startswith("library/") and "/" not in name[len("library/"):]:
                name = name[len("library/"):]
            break
    return name


_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/:[]")
_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _split_ref(ref: str) -> tuple[str, str | None, str | None] | None:
    """(familiar name, tag, digest) of a RepoTags/RepoDigests entry; None if it is no reference.

    The daemon hands out valid references, so this only splits; it refuses
    what ParseNormalizedNamed refuses in practice ("<none>:<none>").
    """
    name, _, digest = ref.partition("@")
    tag = None
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not tag or len(tag) > 128 or not set(tag) <= _TAG_CHARS or tag[0] in ".-":
            return None
    if not name or not set(name.split("/", 1)[-1]) <= _NAME_CHARS or \
            not set(name) <= _NAME_CHARS | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ"):
        return None
    if digest and ":" not in digest:
        return None
    return _familiar_name(name), tag, (digest or None)


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def _go_div(a: int, b: int) -> int:
    """Go's integer division, which truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


# --------------------------------------------------------------------------- images

IMAGE_HEADERS = {
    "ID": "IMAGE ID",
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "Containers": "CONTAINERS",
    "VirtualSize": "SIZE",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
}
IMAGES_TABLE = ("table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t"
                "{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}")
IMAGES_TABLE_DIGESTS = ("table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t"
                        "{{if .CreatedSince }}{{.CreatedSince}}{{else}}N/A{{end}}\t{{.Size}}")
IMAGES_RAW = ("repository: {{ .Repository }}\ntag: {{.Tag}}\nimage_id: {{.ID}}\n"
              "created_at: {{.CreatedAt}}\nvirtual_size: {{.Size}}\n")
IMAGES_RAW_DIGESTS = ("repository: {{ .Repository }}\ntag: {{.Tag}}\ndigest: {{.Digest}}\n"
                      "image_id: {{.ID}}\ncreated_at: {{.CreatedAt}}\nvirtual_size: {{.Size}}\n")


def images_format(source: str | None, *, quiet: bool = False, digests: bool = False) -> str:
    """docker's NewImageFormat: the format ``docker images`` renders with."""
    if not source or source == "table":
        if quiet:
            return "{{.ID}}"
        return IMAGES_TABLE_DIGESTS if digests else IMAGES_TABLE
    if source == "raw":
        if quiet:
            return "image_id: {{.ID}}"
        return IMAGES_RAW_DIGESTS if digests else IMAGES_RAW
    if source.startswith("table") and digests and "{{.Digest}}" not in source:
        source += "\t{{.Digest}}"
    return source


def _is_dangling(img: Mapping[str, Any]) -> bool:
    tags = img.get("RepoTags") or []
    digests = img.get("RepoDigests") or []
    if not tags and not digests:
        return True
    return tags == ["<none>:<none>"] and digests == ["<none>@<none>"]


def image_row(img: Mapping[str, Any], repo: str, tag: str, digest: str, *, trunc: bool = True,
              now: float | None = None) -> Struct:
    """One row of ``docker images`` (docker's imageContext) for an /images/json entry."""
    image_id = img.get("Id", "")
    created = int(img.get("Created") or 0)
    size = int(img.get("Size") or 0)
    shared = int(img.get("SharedSize") or 0)
    containers = int(img.get("Containers") or 0)
    return Struct("*formatter.imageContext", {
        "ID": truncate_id(image_id) if trunc else image_id,
        "Repository": repo,
        "Tag": tag,
        "Digest": digest,
        "CreatedSince": human_duration(_now(now) - created) + " ago",
        "CreatedAt": go_time(created),
        "Size": docker_size(size),
        "Containers": "N/A" if containers == -1 else str(containers),
        "VirtualSize": human_size(size),
        "SharedSize": "N/A" if shared == -1 else human_size(shared),
        "UniqueSize": "N/A" if size == -1 or shared == -1 else human_size(size - shared),
    })


def image_rows(images: Iterable[Mapping[str, Any]], *, fmt: str = "", digests: bool = False,
               trunc: bool = True, now: float | None = None) -> list[Struct]:
    """The rows ``docker images`` shows: one per repository tag, digest rows with ``digests``.

    ``fmt`` is the resolved format: a template naming ``{{.Digest}}`` also
    pairs tags with their digests, as docker's needDigest.
    """
    need_digest = digests or "{{.Digest}}" in fmt
    rows: list[Struct] = []
    for img in images:
        if _is_dangling(img):
            rows.append(image_row(img, "<none>", "<none>", "<none>", trunc=trunc, now=now))
            continue
        repo_tags: dict[str, list[str]] = {}
        repo_digests: dict[str, list[str]] = {}
        for ref in img.get("RepoTags") or []:
            parts = _split_ref(ref)
            if parts is not None and parts[1] is not None:
                repo_tags.setdefault(parts[0], []).append(parts[1])
        for ref in img.get("RepoDigests") or []:
            parts = _split_ref(ref)
            if parts is not None and parts[2] is not None:
                repo_digests.setdefault(parts[0], []).append(parts[2])
        for repo, tags in repo_tags.items():
            dgsts = repo_digests.pop(repo, [])
            if not need_digest:
                dgsts = []
            for tag in tags:
                if not dgsts:
                    rows.append(image_row(img, repo, tag, "<none>", trunc=trunc, now=now))
                for d in dgsts:
                    rows.append(image_row(img, repo, tag, d, trunc=trunc, now=now))
        for repo, dgsts in repo_digests.items():
            if digests:
                for d in dgsts:
                    rows.append(image_row(img, repo, "<none>", d, trunc=trunc, now=now))
            else:
                rows.append(image_row(img, repo, "<none>", "", trunc=trunc, now=now))
    return rows


def images_output(images: Iterable[Mapping[str, Any]], fmt: str | None = None, *,
                  quiet: bool = False, digests: bool = False, no_trunc: bool = False,
                  now: float | None = None) -> str:
    """What ``docker images [-q] [--digests] [--no-trunc] [--format F]`` prints."""
    final = images_format(fmt, quiet=quiet, digests=digests)
    rows = image_rows(images, fmt=final, digests=digests, trunc=not no_trunc, now=now)
    return render(final, rows, IMAGE_HEADERS)


# --------------------------------------------------------------------------- history

HISTORY_HEADERS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}
HISTORY_TABLE = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
HISTORY_TABLE_NON_HUMAN = "table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"

# Layers dated before 2000 (reproducible builds use 0) show "N/A", not "56 years ago".
_HISTORY_EPOCH = 946684800


def history_format(source: str | None, *, quiet: bool = False, human: bool = True) -> str:
    """docker's NewHistoryFormat."""
    if not source or source == "table":
        if quiet:
            return "{{.ID}}"
        return HISTORY_TABLE if human else HISTORY_TABLE_NON_HUMAN
    return source


def history_row(item: Mapping[str, Any], *, human: bool = True, trunc: bool = True,
                now: float | None = None) -> Struct:
    """One row of ``docker history`` (docker's historyContext) for a /history entry."""
    hid = item.get("Id") or ""
    created = int(item.get("Created") or 0)
    created_at = go_time_rfc3339(created)
    if not human:
        created_since = created_at
    elif created <= _HISTORY_EPOCH:
        created_since = "N/A"
    else:
        created_since = human_duration(_now(now) - created) + " ago"
    created_by = (item.get("CreatedBy") or "").replace("\t", " ")
    size = int(item.get("Size") or 0)
    return Struct("*image.historyContext", {
        "ID": truncate_id(hid) if trunc else hid,
        "CreatedSince": created_since,
        "CreatedAt": created_at,
        "CreatedBy": ellipsis(created_by, 45) if trunc else created_by,
        "Size": docker_size(size) if human else str(size),
        "Comment": item.get("Comment") or "",
    })


def history_output(history: Iterable[Mapping[str, Any]], fmt: str | None = None, *,
                   human: bool = True, quiet: bool = False, no_trunc: bool = False,
                   now: float | None = None) -> str:
    """What ``docker history [-H=false] [-q] [--no-trunc] [--format F]`` prints."""
    final = history_format(fmt, quiet=quiet, human=human)
    rows = [history_row(h, human=human, trunc=not no_trunc, now=now) for h in history]
    return render(final, rows, HISTORY_HEADERS)


# --------------------------------------------------------------------------- containers

CONTAINER_HEADERS = {
    "ID": "CONTAINER ID",
    "Names": "NAMES",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Ports": "PORTS",
    "State": "STATE",
    "Status": "STATUS",
    "Size": "SIZE",
    "Labels": "LABELS",
    "Mounts": "MOUNTS",
    "LocalVolumes": "LOCAL VOLUMES",
    "Networks": "NETWORKS",
    "Platform": "PLATFORM",
}
CONTAINERS_TABLE = ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t"
                    "{{.Ports}}\t{{.Names}}")


def container_format(source: str | None, *, quiet: bool = False, size: bool = False) -> str:
    """docker's NewContainerFormat (``docker ps``)."""
    if not source or source == "table":
        if quiet:
            return "{{.ID}}"
        return CONTAINERS_TABLE + ("\t{{.Size}}" if size else "")
    if source == "raw":
        if quiet:
            return "container_id: {{.ID}}"
        raw = ("container_id: {{.ID}}\nimage: {{.Image}}\ncommand: {{.Command}}\n"
               "created_at: {{.CreatedAt}}\nstate: {{- pad .State 1 0}}\n"
               "status: {{- pad .Status 1 0}}\nnames: {{.Names}}\n"
               "labels: {{- pad .Labels 1 0}}\nports: {{- pad .Ports 1 0}}\n")
        return raw + ("size: {{.Size}}\\n" if size else "")
    return "{{.ID}}" if quiet else source


def containers_output(containers: Iterable[Mapping[str, Any]], fmt: str | None = None, *,
                      quiet: bool = False, size: bool = False, no_trunc: bool = False,
                      now: float | None = None) -> str:
    """What ``docker ps [-q] [-s] [--no-trunc] [--format F]`` prints for /containers/json.

    ``size`` adds the SIZE column (the API must have been asked for sizes;
    docker also asks when a custom format names ``.Size``).
    """
    final = container_format(fmt, quiet=quiet, size=size)
    rows = [container_row(c, trunc=not no_trunc, now=now) for c in containers]
    return render(final, rows, CONTAINER_HEADERS)


class _SizeProbe(Struct):
    """A ContainerContext that notes whether a template reads .Size (docker's FieldsUsed)."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        super().__init__("*formatter.ContainerContext",
                         {k: "" for k in CONTAINER_HEADERS} | {"Label": lambda _name: ""})
        self.used = False

    def __getitem__(self, key: str) -> Any:
        if key == "Size":
            self.used = True
        return super().__getitem__(key)

    def items(self) -> Any:  # {{json .}} reads every field, Size included
        self.used = True
        return super().items()


def ps_needs_size(fmt: str | None) -> bool:
    """Whether ``docker ps --format F`` asks the daemon for sizes: F reads ``.Size``.

    Docker runs the raw --format text (so "table {{.Size}}" counts and "json"
    does not) over an empty row and watches for the Size method; -q, an
    explicit --size, or no --format skip this.
    """
    if not fmt:
        return False
    from ketch.cli.formatting import parse

    probe = _SizeProbe()
    try:
        parse(fmt).execute_partial(probe)
    except TemplateError:
        return False
    return probe.used


def _port_group(key: str, first: int, last: int) -> str:
    ip, _, proto = key.rpartition("/")
    group = str(first) if first == last else f"{first}-{last}"
    if ip:
        host = f"[{ip}]" if ":" in ip else ip
        group = f"{host}:{group}->{group}"
    return f"{group}/{proto}"


def displayable_ports(ports: Sequence[Mapping[str, Any]]) -> str:
    """docker's DisplayablePorts: "0.0.0.0:8080->80/tcp, 9000-9001/tcp"."""
    def key(p: Mapping[str, Any]) -> tuple[int, str, int, str]:
        return (p.get("PrivatePort") or 0, p.get("IP") or "", p.get("PublicPort") or 0,
                p.get("Type") or "")

    groups: dict[str, list[int]] = {}
    result: list[str] = []
    mappings: list[str] = []
    for p in sorted(ports, key=key):
        private = p.get("PrivatePort") or 0
        public = p.get("PublicPort") or 0
        ip = p.get("IP") or ""
        proto = p.get("Type") or ""
        gkey = proto
        if ip:
            if public != private:
                host = f"[{ip}]" if ":" in ip else ip
                mappings.append(f"{host}:{public}->{private}/{proto}")
                continue
            gkey = ip + "/" + proto
        g = groups.get(gkey)
        if g is None:
            groups[gkey] = [private, private]
            continue
        if private == g[1] + 1:
            g[1] = private
            continue
        result.append(_port_group(gkey, g[0], g[1]))
        groups[gkey] = [private, private]
    for gkey, (first, last) in groups.items():
        result.append(_port_group(gkey, first, last))
    return ", ".join(result + mappings)


def _container_image(c: Mapping[str, Any], trunc: bool) -> str:
    image = c.get("Image") or ""
    if not image:
        return "<no image>"
    if trunc:
        short = truncate_id(c.get("ImageID") or "")
        if short == truncate_id(image):
            return short
        parts = _split_ref(image)
        if parts is not None:
            name, tag, _digest = parts
            return f"{name}:{tag}" if tag is not None else name
    return image


def container_row(c: Mapping[str, Any], *, trunc: bool = True, now: float | None = None) -> Struct:
    """One row of ``docker ps`` (docker's ContainerContext) for a /containers/json entry."""
    cid = c.get("Id") or ""
    names = [n[1:] for n in (c.get("Names") or [])]
    if trunc:
        for n in names:
            if "/" not in n:
                names = [n]
                break
    command = c.get("Command") or ""
    if trunc:
        command = ellipsis(command, 20)
    created = int(c.get("Created") or 0)
    size_rw = int(c.get("SizeRw") or 0)
    size_root = int(c.get("SizeRootFs") or 0)
    size = docker_size(size_rw)
    if size_root > 0:
        size = f"{size} (virtual {docker_size(size_root)})"
    labels: Mapping[str, str] = c.get("Labels") or {}
    mounts = []
    for m in c.get("Mounts") or []:
        name = m.get("Name") or m.get("Source") or ""
        mounts.append(ellipsis(name, 15) if trunc else name)
    networks = sorted(((c.get("NetworkSettings") or {}).get("Networks") or {}).keys())
    platform = ((c.get("ImageManifestDescriptor") or {}).get("platform") or None)
    platform_text = None
    if platform:
        platform_text = "/".join(x for x in (platform.get("os"), platform.get("architecture"),
                                             platform.get("variant")) if x)

    def label(name: str) -> str:
        return labels.get(name, "")

    return Struct("*formatter.ContainerContext", {
        "ID": truncate_id(cid) if trunc else cid,
        "Names": ",".join(names),
        "Image": _container_image(c, trunc),
        "Command": go_quote(command),
        "CreatedAt": go_time(created),
        "RunningFor": human_duration(_now(now) - created) + " ago",
        "Ports": displayable_ports(c.get("Ports") or []),
        "State": c.get("State") or "",
        "Status": c.get("Status") or "",
        "Size": size,
        "Labels": ",".join(sorted(f"{k}={v}" for k, v in labels.items())),
        "Label": label,
        "Mounts": ",".join(mounts),
        "LocalVolumes": str(sum(1 for m in c.get("Mounts") or [] if m.get("Driver") == "local")),
        "Networks": ",".join(networks),
        "Platform": platform_text,
    })


# --------------------------------------------------------------------------- volumes

VOLUME_HEADERS = {
    "ID": "ID",
    "Name": "VOLUME NAME",
    "Group": "GROUP",
    "Driver": "DRIVER",
    "Scope": "SCOPE",
    "Availability": "AVAILABILITY",
    "Mountpoint": "MOUNTPOINT",
    "Labels": "LABELS",
    "Links": "LINKS",
    "Size": "SIZE",
    "Status": "STATUS",
}


VOLUMES_TABLE = "table {{.Driver}}\t{{.Name}}"


def volume_format(source: str | None, *, quiet: bool = False) -> str:
    """docker's NewVolumeFormat (``docker volume ls``)."""
    if not source or source == "table":
        return "{{.Name}}" if quiet else VOLUMES_TABLE
    if source == "raw":
        return "name: {{.Name}}" if quiet else "name: {{.Name}}\\ndriver: {{.Driver}}\\n"
    return source


def natural_key(name: str) -> tuple[tuple[Any, ...], ...]:
    """Sort key of docker's sortorder.NaturalLess: digit runs compare as numbers, first."""
    b = name.encode()
    out: list[tuple[Any, ...]] = []
    i = 0
    while i < len(b):
        if 48 <= b[i] <= 57:
            j = i
            while j < len(b) and b[j] == 48:
                j += 1
            k = j
            while k < len(b) and 48 <= b[k] <= 57:
                k += 1
            out.append((0, k - j, b[j:k], j - i))
            i = k
        else:
            out.append((1, b[i]))
            i += 1
    return tuple(out)


def volumes_output(volumes: Iterable[Mapping[str, Any]], fmt: str | None = None, *,
                   quiet: bool = False) -> str:
    """What ``docker volume ls [-q] [--format F]`` prints, sorted by name as docker does."""
    final = volume_format(fmt, quiet=quiet)
    ordered = sorted(volumes, key=lambda v: natural_key(v.get("Name") or ""))
    return render(final, [volume_row(v) for v in ordered], VOLUME_HEADERS)


def volume_row(v: Mapping[str, Any]) -> Struct:
    """One row of a volume listing (docker's volumeContext) for an API volume."""
    labels: Mapping[str, str] = v.get("Labels") or {}
    usage = v.get("UsageData")
    cluster = v.get("ClusterVolume")

    def label(name: str) -> str:
        return labels.get(name, "")

    status = "N/A"
    if cluster:
        if not (cluster.get("Info") or {}).get("VolumeID"):
            status = "pending creation"
        else:
            n = len(cluster.get("PublishStatus") or [])
            status = "created" if n == 0 else ("in use (1 node)" if n == 1 else
                                               f"in use ({n} nodes)")
    spec = (cluster or {}).get("Spec") or {}
    return Struct("*formatter.volumeContext", {
        "Name": v.get("Name") or "",
        "Driver": v.get("Driver") or "",
        "Scope": v.get("Scope") or "",
        "Mountpoint": v.get("Mountpoint") or "",
        "Labels": "" if v.get("Labels") is None else
        ",".join(sorted(f"{k}={val}" for k, val in labels.items())),
        "Label": label,
        "Links": "N/A" if usage is None else str(usage.get("RefCount", 0)),
        "Size": "N/A" if usage is None else human_size(usage.get("Size", 0)),
        "Group": spec.get("Group", "") if cluster else "N/A",
        "Availability": spec.get("Availability", "") if cluster else "N/A",
        "Status": status,
    })


# --------------------------------------------------------------------------- build cache

BUILD_CACHE_HEADERS = {
    "ID": "CACHE ID",
    "Parent": "PARENT",
    "CacheType": "CACHE TYPE",
    "Size": "SIZE",
    "CreatedSince": "CREATED",
    "LastUsedSince": "LAST USED",
    "UsageCount": "USAGE",
    "InUse": "IN USE",
    "Shared": "SHARED",
    "Description": "DESCRIPTION",
}


def _parse_rfc3339(s: str) -> tuple[float, str]:
    """An API timestamp -> (unix seconds, Go's time.Time.String() of it)."""
    from datetime import datetime

    frac = ""
    main = s
    if "." in s:
        main, rest = s.split(".", 1)
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        frac, zone = rest[:i], rest[i:]
        main += zone
    dt = datetime.fromisoformat(main.replace("Z", "+00:00"))
    ts = dt.timestamp() + (float("0." + frac) if frac else 0.0)
    frac = frac.rstrip("0")
    local = time.localtime(int(dt.timestamp()))
    text = time.strftime("%Y-%m-%d %H:%M:%S", local) + ("." + frac if frac else "") + \
        time.strftime(" %z ", local) + (local.tm_zone or time.strftime("%z", local))
    return ts, text


def build_cache_row(bc: Mapping[str, Any], *, trunc: bool = True,
                    now: float | None = None) -> Struct:
    """One row of the build cache listing (docker's buildCacheContext)."""
    bid = bc.get("ID") or ""
    ident = truncate_id(bid) if trunc else bid
    if bc.get("InUse"):
        ident += "*"
    parents = bc.get("Parents") or []
    parent = ", ".join(parents) if parents else (bc.get("Parent") or "")
    if trunc:
        parent = truncate_id(parent)
    created_ts, created_text = _parse_rfc3339(bc.get("CreatedAt") or "0001-01-01T00:00:00Z")
    last = bc.get("LastUsedAt")
    last_ts, last_text = _parse_rfc3339(last) if last else (0.0, "")
    return Struct("*formatter.buildCacheContext", {
        "ID": ident,
        "Parent": parent,
        "CacheType": bc.get("Type") or "",
        "Description": bc.get("Description") or "",
        "Size": docker_size(int(bc.get("Size") or 0)),
        "CreatedAt": created_text,
        "CreatedSince": human_duration(_now(now) - created_ts) + " ago",
        "LastUsedAt": last_text,
        "LastUsedSince": (human_duration(_now(now) - last_ts) + " ago") if last else "",
        "UsageCount": str(int(bc.get("UsageCount") or 0)),
        "InUse": "true" if bc.get("InUse") else "false",
        "Shared": "true" if bc.get("Shared") else "false",
    })


def _sort_build_cache(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """docker's buildCacheSort: never-used first, then by last use, ties by ID."""
    def key(bc: Mapping[str, Any]) -> tuple[int, float, str]:
        last = bc.get("LastUsedAt")
        if not last:
            return (0, 0.0, bc.get("ID") or "")
        return (1, _parse_rfc3339(last)[0], bc.get("ID") or "")

    return sorted(records, key=key)


# --------------------------------------------------------------------------- system df

DF_HEADERS = {
    "Type": "TYPE",
    "TotalCount": "TOTAL",
    "Active": "ACTIVE",
    "Size": "SIZE",
    "Reclaimable": "RECLAIMABLE",
}
DF_TABLE = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}"
DF_RAW = ("type: {{.Type}}\ntotal: {{.TotalCount}}\nactive: {{.Active}}\nsize: {{.Size}}\n"
          "reclaimable: {{.Reclaimable}}\n")
DF_IMAGES_TABLE = ("table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}\t"
                   "{{.SharedSize}}\t{{.UniqueSize}}\t{{.Containers}}")
DF_CONTAINERS_TABLE = ("table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.LocalVolumes}}\t{{.Size}}\t"
                       "{{.RunningFor}}\t{{.Status}}\t{{.Names}}")
DF_VOLUMES_TABLE = "table {{.Name}}\t{{.Links}}\t{{.Size}}"
DF_BUILD_CACHE_TABLE = ("table {{.ID}}\t{{.CacheType}}\t{{.Size}}\t{{.CreatedSince}}\t"
                        "{{.LastUsedSince}}\t{{.UsageCount}}\t{{.Shared}}")


def _reclaim_text(reclaimable: int, total: int) -> str:
    if total > 0:
        return f"{human_size(reclaimable)} ({_go_div(reclaimable * 100, total)}%)"
    return human_size(reclaimable)


def _builder_size(df: Mapping[str, Any]) -> int:
    return sum(int(bc.get("Size") or 0) for bc in df.get("BuildCache") or []
               if not bc.get("Shared"))


def system_df_rows(df: Mapping[str, Any]) -> list[Struct]:
    """The four rows of ``docker system df`` for a GET /system/df body."""
    images = df.get("Images") or []
    containers = df.get("Containers") or []
    volumes = df.get("Volumes") or []
    cache = df.get("BuildCache") or []

    total = int(df.get("LayersSize") or 0)
    used = 0
    for i in images:
        if i.get("Containers", 0) != 0:
            size, shared = int(i.get("Size") or 0), int(i.get("SharedSize") or 0)
            if size == -1 or shared == -1:
                continue
            used += size - shared
    img_row = Struct("*formatter.diskUsageImagesContext", {
        "Type": "Images",
        "TotalCount": str(len(images)),
        "Active": str(sum(1 for i in images if (i.get("Containers") or 0) > 0)),
        "Size": human_size(total),
        "Reclaimable": _reclaim_text(total - used, total),
    })

    def active(c: Mapping[str, Any]) -> bool:
        return c.get("State") in ("running", "paused", "restarting")

    csize = sum(int(c.get("SizeRw") or 0) for c in containers)
    creclaim = sum(int(c.get("SizeRw") or 0) for c in containers if not active(c))
    ctr_row = Struct("*formatter.diskUsageContainersContext", {
        "Type": "Containers",
        "TotalCount": str(len(containers)),
        "Active": str(sum(1 for c in containers if active(c))),
        "Size": human_size(csize),
        "Reclaimable": _reclaim_text(creclaim, csize),
    })

    vsize = vreclaim = 0
    for v in volumes:
        u = v.get("UsageData") or {}
        s = int(u.get("Size", -1))
        if s != -1:
            if int(u.get("RefCount") or 0) == 0:
                vreclaim += s
            vsize += s
    vol_row = Struct("*formatter.diskUsageVolumesContext", {
        "Type": "Local Volumes",
        "TotalCount": str(len(volumes)),
        "Active": str(sum(1 for v in volumes
                          if int((v.get("UsageData") or {}).get("RefCount") or 0) > 0)),
        "Size": human_size(vsize),
        "Reclaimable": _reclaim_text(vreclaim, vsize),
    })

    bsize = _builder_size(df)
    in_use = sum(int(bc.get("Size") or 0) for bc in cache
                 if bc.get("InUse") and not bc.get("Shared"))
    bc_row = Struct("*formatter.diskUsageBuilderContext", {
        "Type": "Build Cache",
        "TotalCount": str(len(cache)),
        "Active": str(sum(1 for bc in cache if bc.get("InUse"))),
        "Size": human_size(bsize),
        "Reclaimable": human_size(bsize - in_use),
    })
    return [img_row, ctr_row, vol_row, bc_row]


def system_df_format(source: str | None, *, verbose: bool = False) -> str:
    """docker's NewDiskUsageFormat."""
    source = source or "table"
    if verbose and source == "raw":
        return ("{{range .Images}}type: Image\n" + images_format("raw", digests=True) +
                "\n{{end -}}\n{{range .Containers}}type: Container\n" +
                container_format("raw", size=True) +
                "\n{{end -}}\n{{range .Volumes}}type: Volume\n" +
                "name: {{.Name}}\\ndriver: {{.Driver}}\\n" +
                "\n{{end -}}\n{{range .BuildCache}}type: Build Cache\n" +
                "build_cache_id: {{.ID}}\nparent_id: {{.Parent}}\n"
                "build_cache_type: {{.CacheType}}\ndescription: {{.Description}}\n"
                "created_at: {{.CreatedAt}}\ncreated_since: {{.CreatedSince}}\n"
                "last_used_at: {{.LastUsedAt}}\nlast_used_since: {{.LastUsedSince}}\n"
                "usage_count: {{.UsageCount}}\nin_use: {{.InUse}}\nshared: {{.Shared}}\n"
                "\n{{end -}}")
    if not verbose and source == "table":
        return DF_TABLE
    if not verbose and source == "raw":
        return DF_RAW
    return source


def system_df_output(df: Mapping[str, Any], fmt: str | None = None, *, verbose: bool = False,
                     now: float | None = None) -> str:
    """What ``docker system df [-v] [--format F]`` prints for a GET /system/df body."""
    final = system_df_format(fmt, verbose=verbose)
    if not verbose:
        return render(final, system_df_rows(df), DF_HEADERS)
    return _df_verbose(df, final, now)


def _df_verbose(df: Mapping[str, Any], final: str, now: float | None) -> str:
    trunc = final.startswith("table")
    images: list[Struct] = []
    for i in df.get("Images") or []:
        repo = tag = "<none>"
        tags = i.get("RepoTags") or []
        if tags and not _is_dangling(i):
            parts = _split_ref(tags[0])  # docker shows only the first tag here
            if parts is None:
                continue
            if parts[1] is not None:
                repo, tag = parts[0], parts[1]
        images.append(image_row(i, repo, tag, "", trunc=trunc, now=now))
    containers = [container_row({**c, "SizeRootFs": 0}, trunc=trunc, now=now)
                  for c in df.get("Containers") or []]
    volumes = [volume_row(v) for v in df.get("Volumes") or []]
    cache = [build_cache_row(bc, trunc=trunc, now=now)
             for bc in _sort_build_cache(df.get("BuildCache") or [])]
    if final != "table":
        from ketch.cli.formatting import compile_format

        tmpl = compile_format(final)
        whole = Struct("formatter.diskUsageContext", {
            "Images": images, "Containers": containers, "Volumes": volumes,
            "BuildCache": cache}, marshal=False)
        try:
            return tmpl.execute(whole)
        except TemplateError as e:
            raise TemplateError(e.go_message, parse_error=False) from None
    sections = [
        ("Images space usage:\n\n", DF_IMAGES_TABLE, images, IMAGE_HEADERS),
        ("\nContainers space usage:\n\n", DF_CONTAINERS_TABLE, containers, CONTAINER_HEADERS),
        ("\nLocal Volumes space usage:\n\n", DF_VOLUMES_TABLE, volumes, VOLUME_HEADERS),
        (f"\nBuild cache usage: {human_size(_builder_size(df))}\n\n", DF_BUILD_CACHE_TABLE,
         cache, BUILD_CACHE_HEADERS),
    ]
    return "".join(title + render(fmt, rows, headers)
                   for title, fmt, rows, headers in sections)


__all__ = [
    "BUILD_CACHE_HEADERS",
    "CONTAINER_HEADERS",
    "DF_HEADERS",
    "HISTORY_HEADERS",
    "IMAGE_HEADERS",
    "VOLUME_HEADERS",
    "build_cache_row",
    "container_format",
    "container_row",
    "containers_output",
    "displayable_ports",
    "history_format",
    "history_output",
    "history_row",
    "image_row",
    "image_rows",
    "images_format",
    "images_output",
    "system_df_format",
    "system_df_output",
    "system_df_rows",
    "natural_key",
    "ps_needs_size",
    "volume_format",
    "volume_row",
    "volumes_output",
]
