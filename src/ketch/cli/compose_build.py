"""``ketch compose build/pull/push/watch``: a project's images; ``_build`` and ``_pull``
are what ``up`` (through ``_compose``) builds and pulls with."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from ketch.cli.command import command, option, pass_obj
from ketch.cli.compose_cmds import _compose, _fail, _unsupported, load_project
from ketch.cli.flags import LIST
from ketch.cli.session import Session
from ketch.errors import KetchError, NotFound

TYPE_CHECKING = False     # typing costs the CLI's start-up (ketch.record says why)
if TYPE_CHECKING:
    from typing import Any

    from ketch.compose.model import Project, Service


def _build(session: Session, project: Project, svc: Service, image: str, *,
           no_cache: bool = False, pull: bool = False, quiet: bool = False) -> None:
    """A service's ``build:`` through ``ketch build`` (the same context handling); its
    ``secrets`` name the project's top-level ``secrets:`` (a file or an environment
    variable), passed on as ``--secret``."""
    from ketch.cli import build_cmds

    spec = svc.build or {}
    # The flags as `ketch build` would see them unset (a list flag given no value is empty).
    flags: dict[str, Any] = {o.dest: () if o.kind == LIST and o.default is None else o.default
                             for o in build_cmds.build.options}
    context = str(spec.get("context") or ".")
    dockerfile = spec.get("dockerfile") or None
    if dockerfile and not os.path.isabs(dockerfile):
        dockerfile = os.path.join(context, dockerfile)
    args = []
    for k, v in (spec.get("args") or {}).items():
        args.append(k if v is None else f"{k}={v}")
    secrets = []
    top = project.model.get("secrets") or {}
    for s in spec.get("secrets") or []:
        source = s.get("source") if isinstance(s, dict) else s
        target = (s.get("target") if isinstance(s, dict) else None) or source
        defn = top.get(source) or {}
        if defn.get("file"):
            secrets.append(f"id={target},src={defn['file']}")
        elif defn.get("environment"):
            secrets.append(f"id={target},env={defn['environment']}")
    flags.update(
        file=dockerfile, tag=(image, *(spec.get("tags") or ())), build_arg=tuple(args),
        target=spec.get("target") or "", label=tuple(f"{k}={v}" for k, v in
                                                    (spec.get("labels") or {}).items()),
        cache_from=tuple(spec.get("cache_from") or ()), no_cache=no_cache or
        bool(spec.get("no_cache")), pull=pull or bool(spec.get("pull")),
        network=spec.get("network") or "default", secret=tuple(secrets),
        add_hosts=tuple(spec.get("extra_hosts") or ()), quiet=quiet,
        progress="quiet" if quiet else "auto")
    if spec.get("shm_size"):
        flags["shm_size"] = str(spec["shm_size"])
    sys.stderr.write(f" Service {svc.name}  Building\n")
    if build_cmds.run_build(session, context, flags) != 0:
        from ketch.compose.errors import ComposeError

        raise ComposeError(f"failed to build service {svc.name!r}")
    sys.stderr.write(f" Service {svc.name}  Built\n")


def _pull(session: Session, image: str, *, quiet: bool = False) -> None:
    from ketch.cli.registry_client_cmds import _reference, pull_image

    ref, _ = _reference(image)
    pull_image(session, ref, quiet=quiet, out=sys.stderr)


# --- images -----------------------------------------------------------------------------------


@command("build", "[OPTIONS] [SERVICE...]", "Build or rebuild services", nargs=(0, None))
@option("--build-arg", "build_arg", multiple=True, metavar="stringArray",
        help="Set build-time variables for services")
@option("--builder", default="", help="Set builder to use")
@option("--check", is_flag=True, help="Check build configuration")
@option("-m", "--memory", default="", metavar="bytes",
        help="Set memory limit for the build container. Not supported by BuildKit.")
@option("--no-cache", is_flag=True, help="Do not use cache when building the image")
@option("--print", "print_", is_flag=True, help="Print equivalent bake file")
@option("--provenance", default="", help="Add a provenance attestation")
@option("--pull", is_flag=True, help="Always attempt to pull a newer version of the image")
@option("--push", is_flag=True, help="Push service images")
@option("-q", "--quiet", is_flag=True, help="Suppress the build output")
@option("--sbom", default="", help="Add a SBOM attestation")
@option("--ssh", default=None, help="Set SSH authentications used when building service "
        "images. (use 'default' for using your default SSH Agent)")
@option("--with-dependencies", is_flag=True,
        help="Also build dependencies (transitively)")
@pass_obj
def build_cmd(session: Session, args: tuple[str, ...], build_arg: tuple[str, ...],
              builder: str, check: bool, memory: str, no_cache: bool, print_: bool,
              provenance: str, pull: bool, push: bool, quiet: bool, sbom: str,
              ssh: str | None, with_dependencies: bool) -> int:
    for flag, given in (("--builder", builder), ("--check", check), ("--memory", memory),
                        ("--print", print_), ("--provenance", provenance), ("--sbom", sbom),
                        ("--ssh", ssh is not None)):
        if given:
            raise _unsupported("build " + flag)
    project = load_project(session, args)
    c = _compose(session, project)
    services = c.selection(args, deps=with_dependencies)
    extra = {}
    for a in build_arg:
        k, sep, v = a.partition("=")
        extra[k] = v if sep else os.environ.get(k)
    for svc in services:
        if svc.build is None:
            continue
        if extra:
            b = dict(svc.spec["build"])
            b["args"] = {**(b.get("args") or {}), **extra}
            svc.spec["build"] = b
        _build(session, project, svc, svc.image, no_cache=no_cache, pull=pull, quiet=quiet)
        if push:
            from ketch.cli import registry_client_cmds as reg

            reg.push.callback(session, args=(svc.image,), all_tags=False,
                              disable_content_trust=True, platform="", quiet=quiet)
    return 0


@command("pull", "[OPTIONS] [SERVICE...]", "Pull service images", nargs=(0, None))
@option("--ignore-buildable", is_flag=True, help="Ignore images that can be built")
@option("--ignore-pull-failures", is_flag=True,
        help="Pull what it can and ignores images with pull failures")
@option("--include-deps", is_flag=True, help="Also pull services declared as dependencies")
@option("--no-parallel", is_flag=True, default=None, hidden=True,
        help="DEPRECATED disable parallel pulling")
@option("--parallel", is_flag=True, default=None, hidden=True,
        help="DEPRECATED pull multiple images in parallel")
@option("--policy", default="", help='Apply pull policy ("missing"|"always")')
@option("-q", "--quiet", is_flag=True, help="Pull without printing progress information")
@pass_obj
def pull_cmd(session: Session, args: tuple[str, ...], ignore_buildable: bool,
             ignore_pull_failures: bool, include_deps: bool, no_parallel: bool | None,
             parallel: bool | None, policy: str, quiet: bool) -> int:
    for flag, given in (("--no-parallel", no_parallel), ("--parallel", parallel)):
        if given is not None:
            sys.stderr.write(f"option '{flag}' is DEPRECATED and will be ignored.\n")
    project = load_project(session, args)
    c = _compose(session, project)
    pulling: dict[str, str] = {}
    for svc in c.selection(args, deps=include_deps):
        skip = pull_skip(svc.spec, policy, present=lambda image: c._image_id(image) is not None,  # noqa: SLF001
                         ignore_buildable=ignore_buildable, pulling=pulling)
        if skip:
            c.progress("Service", svc.name, skip)
            continue
        pulling[svc.image] = svc.name
        try:
            c.pull_image(svc, quiet)
        except KetchError as exc:
            if not ignore_pull_failures:
                raise
            sys.stderr.write(f"WARN[0000] {svc.name}: {exc}\n")
    return 0


def pull_skip(spec: Mapping[str, Any], policy: str, *, present: Any,
              ignore_buildable: bool, pulling: Mapping[str, str]) -> str:
    """Why ``pull`` leaves a service out, in compose's words ("" to pull it): no image,
    its pull policy (--policy replaces it), buildable with --ignore-buildable, or an
    image another service pulls already."""
    image = spec.get("image")
    if not image:
        return "Skipped - No image to be pulled"
    rule = policy or str(spec.get("pull_policy") or "")
    if rule in ("never", "build"):
        return "Skipped"
    if rule in ("missing", "if_not_present") and present(image):
        return "Skipped - Image is already present locally"
    if spec.get("build") is not None and ignore_buildable:
        return "Skipped - Image can be built"
    if image in pulling:
        return f"Skipped - Image is already being pulled by {pulling[image]}"
    return ""


@command("push", "[OPTIONS] [SERVICE...]", "Push service images", nargs=(0, None))
@option("--ignore-push-failures", is_flag=True,
        help="Push what it can and ignores images with push failures")
@option("--include-deps", is_flag=True, help="Also push images of services declared as "
        "dependencies")
@option("-q", "--quiet", is_flag=True, help="Push without printing progress information")
@pass_obj
def push_cmd(session: Session, args: tuple[str, ...], ignore_push_failures: bool,
             include_deps: bool, quiet: bool) -> int:
    from ketch.cli import registry_client_cmds as reg

    project = load_project(session, args)
    c = _compose(session, project)
    for svc in c.selection(args, deps=include_deps):
        if not svc.spec.get("image"):
            continue
        try:
            reg.push.callback(session, args=(svc.image,), all_tags=False,
                              disable_content_trust=True, platform="", quiet=quiet)
        except KetchError as exc:
            if not ignore_push_failures:
                raise
            sys.stderr.write(f"WARN[0000] {svc.name}: {exc}\n")
    return 0


@command("watch", "[SERVICE...]", "Watch build context for service and rebuild/refresh "
         "containers when files are updated", nargs=(0, None))
@option("--no-up", is_flag=True, help="Do not build & start services before watching")
@option("--prune", is_flag=True, default=True,
        help="Prune dangling images on rebuild (default true)")
@option("--quiet", is_flag=True, help="hide build output")
@pass_obj
def watch_cmd(session: Session, args: tuple[str, ...], no_up: bool, prune: bool,
              quiet: bool) -> int:
    from ketch.compose.project import UpOptions
    from ketch.compose.watch import Watcher

    project = load_project(session, args)
    c = _compose(session, project)
    services = c.selection(args, deps=False)
    if not any((s.spec.get("develop") or {}).get("watch") for s in services):
        raise _fail("none of the selected services is configured for watch, consider "
                    "setting a 'develop' section")
    if not no_up:
        c.up(UpOptions(services=list(args)))
    replaced: list[str] = []

    def image_id(name: str) -> str | None:
        try:
            return str(c.client.image_inspect(name).get("Id") or "") or None
        except NotFound:
            return None

    def rebuild(svc: Service) -> None:
        # images a rebuild replaced are removed once dangling and unused: the container
        # that ran one is recreated after the build, so it goes at the next rebuild or at exit
        if prune:
            prune_replaced(c.client, replaced)
        before = image_id(svc.image)
        _build(session, project, svc, svc.image, quiet=quiet)
        if before and before != image_id(svc.image):
            replaced.append(before)

    w = Watcher(c, services, rebuild=rebuild)
    try:
        w.run()
    except KeyboardInterrupt:
        return 130
    finally:
        if prune:
            prune_replaced(c.client, replaced)
    return 0


def prune_replaced(client: Any, ids: list[str]) -> None:
    """Remove the images in ``ids`` that have no tag left; those still used stay listed."""
    for iid in list(ids):
        try:
            if client.image_inspect(iid).get("RepoTags"):
                ids.remove(iid)
                continue
            client.image_remove(iid)
        except NotFound:
            pass
        except KetchError:
            continue        # still used by a container: later
        ids.remove(iid)
