"""The deployment files: docker-compose.yml, Dockerfile and .dockerignore.

Docker does not run in CI, so these tests check, without it, what a user of
`docker compose up` would otherwise find out the hard way:
- MongoDB runs as a replica set (the store needs transactions), its healthcheck
  initiates that same set with a member host the server's connection string names,
  and reports healthy only once the node is the set's writable primary (the script
  itself is run under node, against a stub of mongosh's `rs` and `db`, when node is
  installed);
- the server waits for MongoDB to be healthy, its FHIRSERVER_STORE names that set and
  host, and the data lives in volumes;
- the image installs the `mongo` extra, copies every folder the wheel force-includes
  (the build stage is replayed: a wheel is built from exactly what its COPY lines and
  .dockerignore let through), runs `fhirserver serve` as a non-root user, listening on
  every interface at the port the compose file publishes, and its HEALTHCHECK command
  succeeds against a running server and fails when none answers.
When a `docker compose` plugin exists, `docker compose config` validates the file too.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from pymongo.uri_parser import parse_uri

from fhirserver.config import Settings
from tests.test_packaging import build_wheel

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MONGOD_DEFAULT_PORT = 27017
SERVER_DEFAULT_PORT = 8080
STARTUP_TIMEOUT = 30.0


# --- reading the files ------------------------------------------------------------


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def service(name: str) -> dict[str, Any]:
    services = compose().get("services") or {}
    assert name in services, f"docker-compose.yml has no service {name!r}"
    found = services[name]
    assert isinstance(found, dict)
    return found


def words(value: str | list[str]) -> list[str]:
    """A compose `command` or healthcheck `test`, in either of its two spellings."""
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): str(value) for key, value in env.items()}


def option(args: list[str], name: str) -> str | None:
    """The value of `--name value` or `--name=value`."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def published(svc: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(host ip, host port, container port) of each published port ("" ip: every one)."""
    result = []
    for port in svc.get("ports") or []:
        if isinstance(port, dict):
            result.append(
                (
                    str(port.get("host_ip", "")),
                    str(port.get("published", "")),
                    int(str(port["target"]).split("/")[0]),
                )
            )
            continue
        parts = str(port).split("/")[0].rsplit(":", 2)
        if len(parts) == 3:
            result.append((parts[0].strip("[]"), parts[1], int(parts[2])))
        elif len(parts) == 2:
            result.append(("", parts[0], int(parts[1])))
        else:
            result.append(("", "", int(parts[0])))
    return result


def mounts(svc: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a volume name or a host path) of each mount."""
    result = {}
    for volume in svc.get("volumes") or []:
        if isinstance(volume, dict):
            result[str(volume["target"])] = str(volume.get("source", ""))
        else:
            source, _, rest = str(volume).partition(":")
            result[rest.split(":")[0]] = source
    return result


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (KEYWORD, arguments), continuation lines joined, comments out."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage, FROM first."""
    result: list[list[tuple[str, str]]] = []
    for keyword, args in instructions():
        if keyword == "FROM":
            result.append([])
        assert result, "the Dockerfile must start with FROM"
        result[-1].append((keyword, args))
    return result


def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def exec_form(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    """The last `keyword` instruction's exec-form (JSON) command."""
    args = [args for kw, args in stage if kw == keyword]
    assert args, f"the image has no {keyword}"
    text = args[-1]
    if keyword == "HEALTHCHECK":
        assert " CMD " in f" {text} ", "HEALTHCHECK must run a command"
        text = f" {text} ".split(" CMD ", 1)[1]
    command = json.loads(text)
    assert isinstance(command, list), f"{keyword} must use the exec (JSON) form"
    return [str(word) for word in command]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def force_included() -> list[str]:
    wheel = pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]
    return list(wheel.get("force-include", {}))


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay within a folder, `**` spans
    folders."""
    parts = re.split(r"(\*\*/?|\*|\?)", pattern)
    table = {"**": ".*", "**/": "(?:.*/)?", "*": "[^/]*", "?": "[^/]"}
    return re.compile("".join(table.get(part, re.escape(part)) for part in parts))


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` (relative, '/'-separated) out of the build
    context: the last pattern matching the path or one of its parent folders decides,
    a `!` pattern letting it back in (docker's rules)."""
    if not DOCKERIGNORE.exists():
        return False
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in DOCKERIGNORE.read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        keep = pattern.startswith("!")
        regex = _pattern(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not keep
    return ignored


# --- docker-compose.yml -------------------------------------------------------------


def replica_set() -> tuple[str, str, int]:
    """(set name, member host, member port) as mongod is started and initiated."""
    mongo = service("mongo")
    command = words(mongo.get("command") or [])
    name = option(command, "--replSet")
    assert name, "mongod must run with --replSet: the store needs transactions"
    script = " ".join(words(mongo.get("healthcheck", {}).get("test") or []))
    initiate = script.partition("rs.initiate(")[2]
    assert initiate, "the mongo healthcheck must initiate the replica set (rs.initiate)"
    set_id = re.search(r"""_id\s*:\s*['"]([^'"]+)['"]""", initiate)
    host = re.search(r"""host\s*:\s*['"]([^'":]+)(?::(\d+))?['"]""", initiate)
    assert set_id and host, f"cannot read the set name and member host from {script!r}"
    assert set_id[1] == name, f"the healthcheck initiates {set_id[1]!r}, mongod runs {name!r}"
    return name, host[1], int(host[2] or MONGOD_DEFAULT_PORT)


def test_mongo_runs_the_replica_set_its_healthcheck_initiates() -> None:
    _name, host, member_port = replica_set()
    mongo = service("mongo")
    command = words(mongo["command"])
    assert str(mongo.get("image", "")).startswith("mongo:"), "the official mongo image"
    # mongod listens on localhost only by default: the server container could not connect.
    assert "--bind_ip_all" in command or option(command, "--bind_ip") == "0.0.0.0"
    # The member host is what every client is redirected to: it must be a name the
    # server's container resolves on the compose network, at the port mongod listens on.
    names = {"mongo", str(mongo.get("hostname", "mongo")), str(mongo.get("container_name", ""))}
    assert host in names, f"member host {host!r} is not the mongo service's name"
    assert member_port == int(option(command, "--port") or MONGOD_DEFAULT_PORT)


def test_mongo_is_published_to_this_machine_only() -> None:
    ports = published(service("mongo"))
    assert ports, "publish 27017 on 127.0.0.1 so that the test suite can reach it"
    for host_ip, _host_port, _target in ports:
        assert host_ip in ("127.0.0.1", "::1"), "MongoDB has no authentication here"


def test_server_store_names_the_set_and_its_host() -> None:
    name, host, port = replica_set()
    store = environment(service("fhirserver")).get("FHIRSERVER_STORE", "")
    assert store.startswith("mongodb://"), f"FHIRSERVER_STORE is not MongoDB: {store!r}"
    parsed = parse_uri(store)
    assert parsed["options"].get("replicaSet") == name
    assert (host, port) in parsed["nodelist"]
    assert parsed["database"], "name the database in the connection string"


def test_the_server_runs_with_smart_authorization() -> None:
    """Issue 16: `docker compose up` serves with the built-in authorization server; the
    image listens on every interface, where an unset mode refuses to start."""
    env = environment(service("fhirserver"))
    assert env.get("FHIRSERVER_AUTH") == "smart"
    settings = Settings.from_env({k: str(v) for k, v in env.items()})
    assert settings.with_overrides(host="0.0.0.0").unsafe_to_serve() is None
    assert Settings(host="0.0.0.0").unsafe_to_serve() is not None


def test_server_waits_for_mongo_to_be_healthy() -> None:
    depends = service("fhirserver").get("depends_on")
    assert isinstance(depends, dict), "depends_on must use the long form, with a condition"
    assert depends.get("mongo", {}).get("condition") == "service_healthy"
    assert service("mongo").get("healthcheck", {}).get("test"), "mongo needs a healthcheck"


def test_restarts_unless_stopped() -> None:
    for name in ("fhirserver", "mongo"):
        assert service(name).get("restart") in ("always", "unless-stopped", "on-failure")


def test_mongo_data_is_in_a_named_volume() -> None:
    source = mounts(service("mongo")).get("/data/db")
    assert source, "mount a volume at /data/db, or data goes with the container"
    assert source in (compose().get("volumes") or {}), f"declare volume {source!r}"


def _healthcheck_behaviour(state: dict[str, Any]) -> dict[str, Any]:
    """Run the mongo healthcheck's script under node with stubs of `rs`, `db` and
    `quit`; what it initiated and the exit status it chose (null: it never quit,
    which mongosh turns into 0)."""
    test = words(service("mongo")["healthcheck"]["test"])
    assert "--eval" in test, "the healthcheck passes its script with mongosh --eval"
    script = test[test.index("--eval") + 1]
    harness = """
const state = JSON.parse(process.env.STATE), QUIT = {}, calls = [];
let code = null;
const rs = {
  status() {
    if (!state.initiated) { const e = new Error("no replset config"); e.code = 94; throw e; }
    return {ok: 1};
  },
  initiate(config) { calls.push(config); return {ok: 1}; },
};
const db = {hello() { return state.hello; }};
const quit = (c) => { code = c === undefined ? 0 : c; throw QUIT; };
try { new Function("rs", "db", "quit", process.env.SCRIPT)(rs, db, quit); }
catch (e) { if (e !== QUIT) throw e; }
console.log(JSON.stringify({calls, code}));
"""
    result = subprocess.run(
        ["node", "-e", harness],
        env={**os.environ, "STATE": json.dumps(state), "SCRIPT": script},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    behaviour = json.loads(result.stdout)
    assert isinstance(behaviour, dict)
    return behaviour


@pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node is not installed here (it runs mongosh's healthcheck script)",
)
def test_mongo_healthcheck_initiates_once_and_waits_for_the_primary() -> None:
    name, host, port = replica_set()
    primary = {"isWritablePrimary": True, "setName": name}
    # First start: initiates the set, but is not healthy until the node is primary.
    fresh = _healthcheck_behaviour({"initiated": False, "hello": {"isWritablePrimary": False}})
    assert fresh["calls"] == [{"_id": name, "members": [{"_id": 0, "host": f"{host}:{port}"}]}]
    assert fresh["code"] not in (None, 0)
    # Initiated, primary of the set: healthy, and initiates nothing again.
    assert _healthcheck_behaviour({"initiated": True, "hello": primary}) == {
        "calls": [],
        "code": 0,
    }
    # Writable but not a member of the set (a standalone mongod): not healthy.
    standalone = {"isWritablePrimary": True}
    assert _healthcheck_behaviour({"initiated": True, "hello": standalone})["code"] not in (
        None,
        0,
    )


def _has_docker_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    version = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=60, check=False
    )
    return version.returncode == 0


@pytest.mark.skipif(not _has_docker_compose(), reason="no docker compose plugin on this machine")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "--file", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- Dockerfile ---------------------------------------------------------------------


def test_image_installs_the_mongo_extra() -> None:
    pip_commands = [
        args
        for stage in stages()
        for keyword, args in stage
        if keyword == "RUN" and re.search(r"\bpip (install|wheel)\b", args)
    ]
    final_installs = [
        args for keyword, args in final_stage() if keyword == "RUN" and "pip install" in args
    ]
    assert final_installs, "the image must pip install the project"
    for command in pip_commands:
        assert "[mongo]" in command, f"without the mongo extra: {command!r}"


def build_stage_copies() -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context, with the WORKDIR
    in force, in the stage that builds the wheel (the first one that copies)."""
    for stage in stages():
        copies, workdir = [], "/"
        for keyword, args in stage:
            if keyword == "WORKDIR":
                workdir = str(PurePosixPath(workdir, args))
            elif keyword == "COPY" and "--from" not in args:
                *sources, dest = [w for w in shlex.split(args) if not w.startswith("--")]
                relative = str(PurePosixPath(workdir, dest).relative_to(workdir))
                copies.append((sources, relative + ("/" if dest.endswith("/") else "")))
        if copies:
            return copies
    pytest.fail("no stage copies the project into the image")


def test_image_copies_everything_the_wheel_is_made_of() -> None:
    copied = {src.rstrip("/") for sources, _dest in build_stage_copies() for src in sources}
    needed = {"pyproject.toml", str(pyproject()["project"]["readme"]), "fhirserver"}
    needed |= set(force_included())
    assert needed <= copied, f"not copied into the image: {sorted(needed - copied)}"
    kept_out = sorted(path for path in needed if dockerignored(path))
    assert not kept_out, f".dockerignore keeps these out of the build: {kept_out}"
    assert dockerignored(".venv") and dockerignored(".git"), "keep .venv and .git out"


def test_image_build_stage_makes_a_complete_wheel(tmp_path: Path) -> None:
    """What `docker build` would do first, without docker: the context as .dockerignore
    leaves it, copied as the COPY lines say, then a wheel built from that alone."""
    workdir = tmp_path / "src"
    for sources, dest in build_stage_copies():
        for source in sources:
            origin = ROOT / source
            assert origin.exists(), f"COPY {source}: no such file in the repository"
            if origin.is_dir():
                # COPY of a folder copies what is in it into the destination.
                target = workdir / dest
                for file in origin.rglob("*"):
                    relative = file.relative_to(ROOT).as_posix()
                    if file.is_file() and not dockerignored(relative):
                        copy_to = target / file.relative_to(origin)
                        copy_to.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(file, copy_to)
            else:
                target = workdir / dest / origin.name if dest.endswith("/") else workdir / dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target)
    wheel = build_wheel(workdir, tmp_path / "wheels")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    # The package as it is in the repository, and the conformance folders where the
    # package finds them.
    targets = {"fhirserver": "fhirserver"}
    targets |= pyproject()["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    for source, target in targets.items():
        for file in (ROOT / source).rglob("*"):
            if file.is_file() and "__pycache__" not in file.parts and file.suffix != ".pyc":
                inside = f"{target}/{file.relative_to(ROOT / source).as_posix()}"
                assert inside in names, f"{inside} missing from the image's wheel"


def test_image_serves_on_the_port_compose_publishes() -> None:
    stage = final_stage()
    assert exec_form(stage, "CMD") == ["fhirserver", "serve"]
    env = env_of(stage)
    # Inside a container, 127.0.0.1 (the default) would be unreachable from outside.
    assert env.get("FHIRSERVER_HOST") == "0.0.0.0"
    server = service("fhirserver")
    build = server.get("build")
    context = build.get("context", ".") if isinstance(build, dict) else build
    assert context and (ROOT / context).resolve() == ROOT, "build the image from this folder"
    port = int(
        environment(server).get("FHIRSERVER_PORT")
        or env.get("FHIRSERVER_PORT")
        or SERVER_DEFAULT_PORT
    )
    exposed = {
        int(word.split("/")[0]) for kw, args in stage if kw == "EXPOSE" for word in args.split()
    }
    assert port in exposed, f"the server listens on {port}, the image exposes {exposed}"
    targets = {target for _ip, _host, target in published(server)}
    assert targets == {port}, f"compose publishes {targets}, the server listens on {port}"


def test_image_runs_as_a_regular_user() -> None:
    users = [args for kw, args in final_stage() if kw == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_image_keeps_sqlite_data_in_a_volume() -> None:
    stage = final_stage()
    volumes = {
        word.strip('"[],')
        for kw, args in stage
        if kw == "VOLUME"
        for word in args.split()
        if word.strip('"[],')
    }
    store = env_of(stage).get("FHIRSERVER_STORE", "")
    assert "/data" in volumes
    assert PurePosixPath(store).is_relative_to("/data"), f"SQLite default {store!r} not in /data"


def _healthcheck(env: dict[str, str]) -> int:
    command = exec_form(final_stage(), "HEALTHCHECK")
    assert command[0] in ("python", "python3"), "the slim image has python, not curl"
    return subprocess.run(
        [sys.executable, *command[1:]],
        env={**os.environ, **env},
        capture_output=True,
        timeout=30,
        check=False,
    ).returncode


@pytest.mark.e2e
def test_image_healthcheck_probes_the_running_server(tmp_path: Path) -> None:
    # An unusual base path, spelt as users do, so that the probe has to follow it.
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FHIRSERVER_")},
        "FHIRSERVER_HOST": "127.0.0.1",
        "FHIRSERVER_PORT": "0",
        "FHIRSERVER_BASE_PATH": "api/r4/",
        "FHIRSERVER_STORE": str(tmp_path / "fhir.sqlite"),
    }
    port = ""
    process = subprocess.Popen(
        [sys.executable, "-m", "fhirserver", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            line = pool.submit(process.stdout.readline).result(timeout=STARTUP_TIMEOUT)
        started = re.search(r"http://127\.0\.0\.1:(\d+)/api/r4 ", line)
        assert started, f"unexpected start-up line {line!r}"
        port = started[1]
        assert _healthcheck({"FHIRSERVER_PORT": port, "FHIRSERVER_BASE_PATH": "api/r4/"}) == 0
        # The default base path is not where this server answers: unhealthy.
        assert _healthcheck({"FHIRSERVER_PORT": port, "FHIRSERVER_BASE_PATH": "/fhir"}) != 0
    finally:
        process.kill()
        process.wait(timeout=STARTUP_TIMEOUT)
    # Nobody listening any more: unhealthy.
    assert _healthcheck({"FHIRSERVER_PORT": port, "FHIRSERVER_BASE_PATH": "api/r4/"}) != 0
