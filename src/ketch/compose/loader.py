"""Compose files -> ``RawProject``: the first stage of ``ketch compose``.

What Docker Compose v2 does before validation: find the files (``-f``,
``COMPOSE_FILE``, or ``compose.yaml`` & co. in the working directory or a parent,
with the matching override file), read the project's ``.env`` (the OS environment
wins over it), choose the project name, parse the YAML (anchors and ``<<`` merge
keys; YAML 1.2 scalars, so ``on``/``yes`` stay strings and ``22:22`` is not a
number), interpolate each file, resolve its ``include:`` and ``extends:``, and
merge the files with Compose's rules. Paths of the project's own files stay
relative (the project directory is their base); services and resources pulled in
from another directory by ``include``/``extends.file`` get absolute paths.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import yaml

from ketch.compose.dotenv import project_env_files
from ketch.compose.errors import ComposeError
from ketch.compose.interpolation import Lookup, interpolate
from ketch.compose.merge import (
    RESET,
    OverrideDict,
    OverrideList,
    Reset,
    enforce_unicity,
    extend_service,
    merge_models,
)

DEFAULT_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
DEFAULT_OVERRIDE_NAMES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
RESOURCE_KINDS = ("services", "volumes", "networks", "secrets", "configs")


@dataclass
class LoadOptions:
    files: list[str] = field(default_factory=list)  # -f, in order; "-" = stdin; [] = discover
    project_directory: str | None = None  # --project-directory
    project_name: str | None = None  # -p
    env_files: list[str] = field(default_factory=list)  # --env-file (default: <project dir>/.env)
    environ: Mapping[str, str] | None = None  # None = os.environ
    interpolate: bool = True  # config --no-interpolate
    stdin: IO[str] | None = None  # for "-f -" (None = sys.stdin)
    on_warning: Callable[[str], None] | None = None  # each warning as it happens (also kept)


@dataclass
class RawProject:
    name: str
    working_dir: str
    files: list[str]
    environment: dict[str, str]
    model: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


# --- project names ---------------------------------------------------------------------

_NAME_CHARS = re.compile(r"[a-z0-9_-]")


def normalize_project_name(name: str) -> str:
    """Compose's normalisation: lower case, only ``[a-z0-9_-]``, no leading ``_``/``-``."""
    return "".join(_NAME_CHARS.findall(name.lower())).lstrip("_-")


def check_project_name(name: str) -> str:
    """A name given explicitly (``-p``, ``COMPOSE_PROJECT_NAME``) must already be normal."""
    if normalize_project_name(name) != name:
        raise ComposeError(
            f'invalid project name "{name}": must consist only of lowercase alphanumeric '
            "characters, hyphens, and underscores as well as start with a letter or number"
        )
    return name


# --- YAML ------------------------------------------------------------------------------

# libyaml's parser when the yaml module has it: several times faster on big files
_BaseLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[valid-type,misc]
    """SafeLoader with YAML 1.2 core-schema scalars (as Compose's Go YAML reads them) and
    duplicate keys rejected."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'mapping key "{key}" already defined at line {seen[key]}',
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


_DROPPED_TAGS = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _DROPPED_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    # decimal, 0o/0x, and the YAML 1.1 leading-zero octal that Go's YAML still reads
    re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|[-+]?0[0-7]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    text = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    sign = -1 if text.startswith("-") else 1
    digits = text.lstrip("+-")
    if digits.startswith("0o"):
        return sign * int(digits[2:], 8)
    if digits.startswith("0x"):
        return sign * int(digits[2:], 16)
    if len(digits) > 1 and digits.startswith("0"):
        return sign * int(digits, 8)
    return sign * int(digits)


def _construct_bool(loader: yaml.SafeLoader, node: yaml.Node) -> bool:
    return str(loader.construct_scalar(node)).lower() == "true"  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)


def parse_yaml(text: str, filename: str) -> list[dict[str, Any]]:
    """The documents of one compose file, each a mapping with string keys."""
    try:
        docs = list(yaml.load_all(text, Loader=_Loader))  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f"line {mark.line + 1}: " if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ComposeError(f"failed to parse {filename}: yaml: {line}{problem}") from None
    except yaml.YAMLError as exc:
        raise ComposeError(f"failed to parse {filename}: yaml: {exc}") from None
    out: list[dict[str, Any]] = []
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ComposeError(f"{filename}: top-level object must be a mapping")
        out.append(_string_keys(doc, ""))
    return out


def _construct_reset(loader: yaml.SafeLoader, node: yaml.Node) -> Reset:
    return RESET


def _construct_override(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return OverrideDict(loader.construct_mapping(node, deep=True))
    if isinstance(node, yaml.SequenceNode):
        return OverrideList(loader.construct_sequence(node, deep=True))
    # a scalar replaces what it is merged onto anyway
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_Loader.add_constructor("!reset", _construct_reset)
_Loader.add_constructor("!override", _construct_override)


def _clone(value: Any) -> Any:
    """A deep copy that shares nothing: YAML aliases (``*anchor``) load as one object
    used in several places, and merging updates mappings in place."""
    if isinstance(value, dict):
        out = {k: _clone(v) for k, v in value.items()}
        return out if type(value) is dict else type(value)(out)
    if isinstance(value, list):
        items = [_clone(v) for v in value]
        return items if type(value) is list else type(value)(items)
    return value


def _string_keys(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, bool):
                key = "true" if key else "false"
            elif isinstance(key, (int, float)):
                key = str(key)
            elif key is None:
                key = "null"
            elif not isinstance(key, str):
                place = f"in {where}" if where else "at top level"
                raise ComposeError(f"non-string key {place}: {key}")
            out[key] = _string_keys(item, f"{where}.{key}" if where else key)
        return out if type(value) is dict else type(value)(out)
    if isinstance(value, list):
        items = [_string_keys(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if type(value) is list else type(value)(items)
    return value


# --- paths of services pulled in from another directory --------------------------------

_REMOTE_PREFIXES = ("https://", "http://", "git://", "ssh://", "github.com/", "git@")


def _abs(path: str, base: str) -> str:
    if not path:
        return path
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))


def _abs_context(path: str, base: str) -> str:
    if "://" in path or path.startswith("service:") or path.startswith(_REMOTE_PREFIXES):
        return path
    return _abs(path, base)


def _refuse_remote(path: str) -> None:
    """Compose can fetch included/extended files from git and OCI registries; ketch cannot."""
    if "://" in path or path.startswith("git@"):
        raise ComposeError(f"remote resource {path} is not supported by ketch compose")


def _is_path_source(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def _rebase_volume(volume: Any, base: str) -> Any:
    if isinstance(volume, str):
        parts = volume.split(":", 1)
        if len(parts) == 2 and _is_path_source(parts[0]):
            return f"{_abs(parts[0], base)}:{parts[1]}"
        return volume
    if isinstance(volume, dict) and volume.get("type") == "bind" and isinstance(volume.get("source"), str):
        volume = dict(volume)
        volume["source"] = _abs(volume["source"], base)
    return volume


def _rebase_service(service: Any, base: str) -> Any:
    """Relative paths of one service made absolute against ``base`` (its file's directory)."""
    if not isinstance(service, dict):
        return service
    svc = dict(service)
    build = svc.get("build")
    if isinstance(build, str):
        svc["build"] = _abs_context(build, base)
    elif isinstance(build, dict):
        build = dict(build)
        build["context"] = _abs_context(str(build.get("context") or "."), base)
        extra = build.get("additional_contexts")
        if isinstance(extra, dict):
            build["additional_contexts"] = {
                k: _abs_context(v, base) if isinstance(v, str) else v for k, v in extra.items()
            }
        svc["build"] = build
    env_file = svc.get("env_file")
    if isinstance(env_file, str):
        svc["env_file"] = _abs(env_file, base)
    elif isinstance(env_file, list):
        rebased: list[Any] = []
        for entry in env_file:
            if isinstance(entry, str):
                rebased.append(_abs(entry, base))
            elif isinstance(entry, dict) and isinstance(entry.get("path"), str):
                rebased.append({**entry, "path": _abs(entry["path"], base)})
            else:
                rebased.append(entry)
        svc["env_file"] = rebased
    label_file = svc.get("label_file")
    if isinstance(label_file, str):
        svc["label_file"] = _abs(label_file, base)
    elif isinstance(label_file, list):
        svc["label_file"] = [_abs(f, base) if isinstance(f, str) else f for f in label_file]
    extends = svc.get("extends")
    if isinstance(extends, dict) and isinstance(extends.get("file"), str):
        svc["extends"] = {**extends, "file": _abs(extends["file"], base)}
    if isinstance(svc.get("volumes"), list):
        svc["volumes"] = [_rebase_volume(v, base) for v in svc["volumes"]]
    develop = svc.get("develop")
    if isinstance(develop, dict) and isinstance(develop.get("watch"), list):
        watch = [
            {**w, "path": _abs(w["path"], base)}
            if isinstance(w, dict) and isinstance(w.get("path"), str) else w
            for w in develop["watch"]
        ]
        svc["develop"] = {**develop, "watch": watch}
    return svc


def _rebase_model(model: dict[str, Any], base: str) -> dict[str, Any]:
    """Every relative path of a whole (included) file made absolute against ``base``."""
    services = model.get("services")
    if isinstance(services, dict):
        model["services"] = {name: _rebase_service(svc, base) for name, svc in services.items()}
    for kind in ("secrets", "configs"):
        resources = model.get(kind)
        if isinstance(resources, dict):
            for name, res in resources.items():
                if isinstance(res, dict) and isinstance(res.get("file"), str):
                    resources[name] = {**res, "file": _abs(res["file"], base)}
    volumes = model.get("volumes")
    if isinstance(volumes, dict):
        for name, vol in volumes.items():
            if not isinstance(vol, dict) or vol.get("driver", "local") != "local":
                continue
            opts = vol.get("driver_opts")
            if isinstance(opts, dict) and opts.get("o") == "bind" and isinstance(opts.get("device"), str):
                volumes[name] = {**vol, "driver_opts": {**opts, "device": _abs(opts["device"], base)}}
    return model


# --- the load --------------------------------------------------------------------------

@dataclass
class _Context:
    """What one file is read with: its environment and where its relative paths point."""

    environment: dict[str, str]
    interpolate: bool
    warn: Callable[[str], None]
    # include chain, for cycle detection
    included: tuple[str, ...] = ()

    def lookup(self) -> Lookup:
        env = self.environment
        return env.get


class _Load:
    def __init__(self, opts: LoadOptions) -> None:
        self.opts = opts
        self.warnings: list[str] = []
        self.cwd = os.getcwd()
        self.file_cache: dict[str, list[dict[str, Any]]] = {}

    def warn(self, message: str) -> None:
        if message in self.warnings:
            return
        self.warnings.append(message)
        if self.opts.on_warning is not None:
            self.opts.on_warning(message)

    # files and environment

    def _dotenv(self, environment: dict[str, str], directory: str) -> None:
        """Add the ``.env`` of ``directory`` (or the ``--env-file`` list); set keys are kept."""
        if self.opts.env_files:
            paths = [os.path.join(self.cwd, p) for p in self.opts.env_files]
        else:
            if environment.get("COMPOSE_DISABLE_ENV_FILE", "").lower() in ("1", "true", "t"):
                return
            default = os.path.join(directory, ".env")
            if not os.path.isfile(default):
                return
            paths = [default]
        for key, value in project_env_files(paths, environment).items():
            environment.setdefault(key, value)

    def _discover(self, start: str) -> list[str]:
        directory = start
        while True:
            found = [os.path.join(directory, n) for n in DEFAULT_FILE_NAMES
                     if os.path.exists(os.path.join(directory, n))]
            if found:
                if len(found) > 1:
                    self.warn(f"Found multiple config files with supported names: {', '.join(found)}")
                    self.warn(f"Using {found[0]}")
                files = [found[0]]
                overrides = [os.path.join(directory, n) for n in DEFAULT_OVERRIDE_NAMES
                             if os.path.exists(os.path.join(directory, n))]
                if overrides:
                    if len(overrides) > 1:
                        self.warn("Found multiple override files with supported names: "
                                  + ", ".join(overrides))
                        self.warn(f"Using {overrides[0]}")
                    files.append(overrides[0])
                return files
            parent = os.path.dirname(directory)
            if parent == directory:
                raise ComposeError("no configuration file provided: not found")
            directory = parent

    def _read(self, path: str) -> str:
        if path == "-":
            stream = self.opts.stdin if self.opts.stdin is not None else sys.stdin
            return stream.read()
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except FileNotFoundError:
            raise ComposeError(f"open {path}: no such file or directory") from None
        except IsADirectoryError:
            raise ComposeError(f"read {path}: is a directory") from None
        except OSError as exc:
            raise ComposeError(f"open {path}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ComposeError(f"failed to parse {path}: {exc}") from None

    def documents(self, path: str) -> list[dict[str, Any]]:
        """The parsed documents of a file, a fresh copy for each use."""
        if path not in self.file_cache:
            self.file_cache[path] = parse_yaml(self._read(path), path)
        return [_clone(doc) for doc in self.file_cache[path]]

    def run(self) -> RawProject:
        opts = self.opts
        if opts.project_name:
            # Compose checks the flag before it looks for any file
            check_project_name(opts.project_name)
        environ = dict(os.environ if opts.environ is None else opts.environ)
        environment = dict(environ)
        project_dir = (os.path.abspath(os.path.join(self.cwd, opts.project_directory))
                       if opts.project_directory else None)

        if opts.files:
            files = [f if f == "-" else os.path.abspath(os.path.join(self.cwd, f)) for f in opts.files]
        else:
            # .env of the working directory may name the files (COMPOSE_FILE)
            self._dotenv(environment, project_dir or self.cwd)
            if "COMPOSE_FILE" in environment:
                sep = environment.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
                files = [f if f == "-" else os.path.abspath(os.path.join(self.cwd, f))
                         for f in environment["COMPOSE_FILE"].split(sep) if f]
            else:
                files = self._discover(project_dir or self.cwd)
        if not files:
            raise ComposeError("no configuration file provided: not found")
        if project_dir is None:
            first = next((f for f in files if f != "-"), None)
            project_dir = os.path.dirname(first) if first else self.cwd
        self._dotenv(environment, project_dir)
        environment.setdefault("PWD", self.cwd)

        docs_per_file = [(f, self.documents(f)) for f in files]
        name = self._project_name(environment, project_dir, docs_per_file)
        environment["COMPOSE_PROJECT_NAME"] = name

        ctx = _Context(environment, opts.interpolate, self.warn)
        model: dict[str, Any] = {}
        for path, docs in docs_per_file:
            for doc in docs:
                model = self._merge_file(model, doc, path, ctx)
        if not model:
            raise ComposeError("empty compose file")
        model.pop("name", None)
        model = {"name": name, **model}
        return RawProject(
            name=name,
            working_dir=project_dir,
            files=files,
            environment=environment,
            model=model,
            warnings=self.warnings,
        )

    def _project_name(
        self, environment: dict[str, str], project_dir: str,
        docs_per_file: list[tuple[str, list[dict[str, Any]]]],
    ) -> str:
        if self.opts.project_name:
            return check_project_name(self.opts.project_name)
        if environment.get("COMPOSE_PROJECT_NAME"):
            return check_project_name(environment["COMPOSE_PROJECT_NAME"])
        from_file = ""
        for _path, docs in docs_per_file:
            for doc in docs:
                value = doc.get("name")
                if isinstance(value, str) and value:
                    from_file = value
        if from_file and self.opts.interpolate:
            from_file = interpolate({"name": from_file}, environment.get, self.warn)["name"]
        name = normalize_project_name(from_file) or normalize_project_name(os.path.basename(project_dir))
        if not name:
            raise ComposeError("project name must not be empty")
        return name

    # one file

    def _prepare(self, doc: dict[str, Any], path: str, ctx: _Context) -> dict[str, Any]:
        """Interpolate one document and resolve its ``include`` and ``extends``."""
        if ctx.interpolate:
            doc = interpolate(doc, ctx.lookup(), ctx.warn)
        if "include" in doc:
            self._apply_include(doc, path, ctx)
        self._apply_extends(doc, path, ctx)
        return doc

    def _merge_file(
        self, model: dict[str, Any], doc: dict[str, Any], path: str, ctx: _Context
    ) -> dict[str, Any]:
        doc = self._prepare(doc, path, ctx)
        model = merge_models(model, doc)
        if "version" in model:
            self.warn(f"{path}: the attribute `version` is obsolete, it will be ignored, "
                      "please remove it to avoid potential confusion")
            del model["version"]
        enforced = enforce_unicity(model)
        assert isinstance(enforced, dict)
        return enforced

    # include

    def _apply_include(self, doc: dict[str, Any], path: str, ctx: _Context) -> None:
        entries = doc.pop("include")
        if entries is None:
            return
        if not isinstance(entries, list):
            raise ComposeError(f"`include` must be a list, got {entries}")
        base_dir = os.path.dirname(path) if path != "-" else self.cwd
        for i, entry in enumerate(entries):
            if isinstance(entry, str):
                entry = {"path": entry}
            if not isinstance(entry, dict) or "path" not in entry:
                raise ComposeError(f"include[{i}]: path is required")
            paths = entry["path"]
            paths = [paths] if isinstance(paths, str) else paths
            if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
                raise ComposeError(f"include[{i}].path must be a string or a list of strings")
            for p in paths:
                _refuse_remote(p)
            files = [_abs(p, base_dir) for p in paths]
            main = files[0]
            chain = ctx.included + (path,)
            if main in chain:
                raise ComposeError("include cycle detected:\n" + chain[0] + "\n include "
                                   + "\n include ".join((*chain[1:], main)))
            proj = entry.get("project_directory")
            sub_dir = _abs(proj, base_dir) if isinstance(proj, str) and proj else os.path.dirname(main)
            env_files = entry.get("env_file")
            if env_files is None:
                default = os.path.join(sub_dir, ".env")
                env_list = [default] if os.path.isfile(default) else []
            else:
                env_list = [env_files] if isinstance(env_files, str) else list(env_files)
                env_list = [_abs(str(f), base_dir) for f in env_list if f != "/dev/null"]
            sub_env = dict(ctx.environment)
            for key, value in project_env_files(env_list, ctx.environment).items():
                sub_env.setdefault(key, value)
            sub_ctx = _Context(sub_env, ctx.interpolate, ctx.warn, chain)
            imported: dict[str, Any] = {}
            for file in files:
                for sub_doc in self.documents(file):
                    sub_doc = self._prepare(sub_doc, file, sub_ctx)
                    imported = merge_models(imported, sub_doc)
            imported.pop("version", None)
            enforce_unicity(imported)
            _rebase_model(imported, sub_dir)
            self._import_resources(imported, doc)

    @staticmethod
    def _import_resources(source: dict[str, Any], target: dict[str, Any]) -> None:
        for kind in RESOURCE_KINDS:
            items = source.get(kind)
            if not isinstance(items, dict):
                continue
            into = target.get(kind)
            if not isinstance(into, dict):
                into = {}
            for name, value in items.items():
                if name in into and into[name] != value:
                    raise ComposeError(f"{kind}.{name} conflicts with imported resource")
                into[name] = value
            target[kind] = into

    # extends

    def _apply_extends(self, doc: dict[str, Any], path: str, ctx: _Context) -> None:
        services = doc.get("services")
        if services is None:
            return
        if not isinstance(services, dict):
            raise ComposeError("services must be a mapping")
        for name in list(services):
            services[name] = self._extend(name, services, path, ctx, ())

    def _extend(
        self, name: str, services: dict[str, Any], path: str, ctx: _Context,
        chain: tuple[tuple[str, str], ...],
    ) -> Any:
        service = services.get(name)
        if service is None:
            return None
        if not isinstance(service, dict):
            raise ComposeError(f"services.{name} must be a mapping")
        extends = service.get("extends")
        if extends is None:
            return service
        ref: Any
        ref_file: Any = None
        if isinstance(extends, str):
            ref = extends
        elif isinstance(extends, dict):
            ref = extends.get("service")
            if not isinstance(ref, str) or not ref:
                raise ComposeError(f"extends.{name}.service is required")
            ref_file = extends.get("file")
            if ref_file is not None and not isinstance(ref_file, str):
                raise ComposeError(f"services.{name}.extends.file must be a string")
        else:
            raise ComposeError(f"services.{name}.extends must be a string or a mapping")

        base_services = services
        base_path = path
        if ref_file is not None:
            _refuse_remote(ref_file)
            base_dir = os.path.dirname(path) if path != "-" else self.cwd
            base_path = _abs(ref_file, base_dir)
            base_services = self._services_of(name, ref, path, base_path, ref_file, ctx)
        elif ref not in services:
            raise ComposeError(
                f'cannot extend service "{name}" in {path}: service "{ref}" not found'
            )

        link = (base_path if ref_file is not None else path, name)
        if link in chain:
            lines = ["Circular reference:", f"  {chain[0][1]} in {chain[0][0]}"]
            lines += [f"  extends {svc} in {file}" for file, svc in (*chain[1:], link)]
            raise ComposeError("\n".join(lines))
        # the chain records (file of the referenced service, extending service), as Compose does
        chain = (*chain, link)
        base = self._extend(ref, base_services, base_path, ctx, chain)
        if base is None:
            # an empty base: nothing to inherit
            service = {k: v for k, v in service.items() if k != "extends"}
            services[name] = service
            return service
        own = {k: v for k, v in service.items() if k != "extends"}
        merged = extend_service(_clone(base), own)
        merged.pop("extends", None)
        services[name] = merged
        return merged

    def _services_of(
        self, name: str, ref: str, path: str, base_path: str, given: str, ctx: _Context
    ) -> dict[str, Any]:
        """The services of an ``extends.file``: interpolated, paths made absolute."""
        docs = self.documents(base_path) if os.path.exists(base_path) else None
        if docs is None:
            raise ComposeError(f"cannot read {given}")
        services: dict[str, Any] = {}
        for doc in docs:
            if ctx.interpolate:
                doc = interpolate(doc, ctx.lookup(), ctx.warn)
            more = doc.get("services")
            if isinstance(more, dict):
                services.update(more)
        if ref not in services:
            raise ComposeError(
                f'cannot extend service "{name}" in {path}: service "{ref}" not found in {given}'
            )
        base_dir = os.path.dirname(base_path)
        return {n: _rebase_service(s, base_dir) for n, s in services.items()}


def load(opts: LoadOptions) -> RawProject:
    """Read, interpolate and merge the compose files ``opts`` names (or discovers)."""
    return _Load(opts).run()
