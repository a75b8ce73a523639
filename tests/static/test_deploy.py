"""Static checks of the deployment files: docker-compose.yml, deploy/Dockerfile and its helpers.

No Docker engine, broker or database is needed. What is checked:

* docker-compose.yml is valid against the Compose Specification's JSON Schema (and the schema check
  is shown to reject broken documents, so it is not vacuous);
* compose runs exactly one container per service folder, and sets every environment variable that
  the service's ``config.yaml`` reads (found by parsing ``${NAME:default}``, not from a list);
* URLs, key files and dependencies in compose point at things that exist (compose services, the
  databases created by the Postgres init script, the files ``swms.devkeys`` writes);
* every command names a file or module that exists and that the image copies;
* the Dockerfile installs the rendering libraries and fonts and does not run as root;
* deploy/entrypoint.sh and deploy/healthcheck.py behave as documented (run with stand-ins for
  ``python``/``nameko`` and for nameko's RPC proxy).
"""
from __future__ import annotations

import ast
import collections
import copy
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# CI clones the repository into some folder with a copy of shared/ beside it.
SCHEMA_PATH = Path(__file__).resolve().parents[2].parent / "shared" / "schemas" / "compose-spec.json"
COMPOSE_PATH = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
DOCKERIGNORE = REPO / "deploy" / "Dockerfile.dockerignore"
ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"
HEALTHCHECK = REPO / "deploy" / "healthcheck.py"
PG_INIT = REPO / "deploy" / "postgres" / "init-databases.sql"

# nameko's substitution syntax in config.yaml: ${NAME} or ${NAME:default}
ENV_REF = re.compile(r"\$\{([^}:\s]+)(?::([^}]*))?\}")

# Variables compose may leave unset because the config.yaml default is right inside the container
# too. Keep this short; everything that differs per deployment belongs in compose. "{SERVICE}"
# stands for the service's upper-case name.
DEFAULT_IS_FINE = {
    "LOG_LEVEL": "INFO",
    "{SERVICE}_MAX_WORKERS": "tuning knob, 10 workers",
    "{SERVICE}_DB_POOL_SIZE": "tuning knob, 0 = max workers + 4",
    "TOKEN_TTL_MINUTES": "token lifetime policy",
    "CERT_VALIDITY_YEARS": "certificate policy",
    "CERT_AUTHORITY_NAME": "certificate policy",
    "FIRST_REGISTRATION_WINDOW_YEARS": "registration policy",
    "REVIEW_CHAINS_FILE": "relative path to a file shipped in the image",
}

# Settings that must name a compose service (nothing may fall back to a 127.0.0.1 default).
URL_SETTINGS = re.compile(r"^(AMQP_URI|[A-Z0-9_]+_DB_URL|S3_ENDPOINT_URL)$")
HOST_SETTINGS = re.compile(r"^(SMTP_HOST)$")


# ---- helpers -------------------------------------------------------------------------------------

def service_dirs() -> list[str]:
    """Folders under services/ that hold a service (have service.py)."""
    return sorted(p.parent.name for p in REPO.glob("services/*/service.py"))


def config_files() -> list[Path]:
    return sorted(REPO.glob("services/*/config.yaml"))


def load_compose() -> dict:
    with open(COMPOSE_PATH, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        env = {key: value for key, value in pairs}
    return {key: ("" if value is None else str(value)) for key, value in env.items()}


def app_containers(compose: dict) -> dict[str, dict]:
    """Compose services that run one SWMS service (they set SWMS_SERVICE)."""
    return {name: svc for name, svc in compose["services"].items() if "SWMS_SERVICE" in env_of(svc)}


def container_for(compose: dict, service: str) -> tuple[str, dict]:
    matches = [(n, s) for n, s in app_containers(compose).items() if env_of(s)["SWMS_SERVICE"] == service]
    assert len(matches) == 1, f"expected one compose service with SWMS_SERVICE={service}, found {len(matches)}"
    return matches[0]


class RawLoader(yaml.BaseLoader):
    """Every scalar as its source text. Not SafeLoader: once anything in the process has called
    nameko's setup_yaml_parser() (``nameko test``, swms.config.load_config), SafeLoader substitutes
    ${...} from the environment, and the variable names would be gone."""


def _construct_any_tag(loader, _suffix, node):
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node)
    return loader.construct_scalar(node)


RawLoader.add_multi_constructor("!", _construct_any_tag)  # e.g. nameko's explicit !env_var


def config_refs(path: Path) -> dict[str, str | None]:
    """{VARIABLE: default or None} for every ${VARIABLE[:default]} in a config.yaml's values."""
    with open(path, encoding="utf-8") as handle:
        document = yaml.load(handle, Loader=RawLoader)  # values keep their ${...} text
    refs: dict[str, str | None] = {}

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str):
            for match in ENV_REF.finditer(node):
                refs.setdefault(match.group(1), match.group(2))

    walk(document)
    return refs


def dockerfile_instructions() -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    result = []
    for line in logical:
        instruction, _, args = line.partition(" ")
        result.append((instruction.upper(), args.strip()))
    return result


def copied_sources() -> list[str]:
    sources = []
    for instruction, args in dockerfile_instructions():
        if instruction in ("COPY", "ADD"):
            parts = [p for p in shlex.split(args) if not p.startswith("--")]
            sources += [p.rstrip("/") for p in parts[:-1]]
    return sources


def is_copied(path: str) -> bool:
    return any(path == src or path.startswith(src + "/") for src in copied_sources())


def ignore_patterns() -> list[str]:
    lines = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def is_ignored(path: str) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in ignore_patterns():
        if pattern.startswith("!"):
            continue
        pattern = pattern.lstrip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(prefix.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


def argv_lists(service: dict) -> list[list[str]]:
    """command, entrypoint and healthcheck test of a compose service, each as an argv list."""
    found = []
    for key in ("entrypoint", "command"):
        value = service.get(key)
        if value:
            found.append(shlex.split(value) if isinstance(value, str) else [str(v) for v in value])
    test = (service.get("healthcheck") or {}).get("test")
    if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
        found.append(shlex.split(" ".join(test[1:])) if test[0] == "CMD-SHELL" else [str(t) for t in test[1:]])
    elif isinstance(test, str):
        found.append(shlex.split(test))
    return found


def uses_app_image(service: dict) -> bool:
    build = service.get("build")
    if isinstance(build, dict):
        return Path(build.get("dockerfile", "Dockerfile")).as_posix() == "deploy/Dockerfile"
    return False


def module_exists(module: str) -> bool:
    base = REPO.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()


# ---- the compose document against the Compose Specification ------------------------------------

@pytest.fixture(scope="module")
def compose_validator():
    if not SCHEMA_PATH.is_file():
        pytest.fail(f"Compose schema not found at {SCHEMA_PATH} (shared/ must sit beside the repository)")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    # The schema declares draft 07 (under an https URL that jsonschema does not map by itself).
    assert "draft-07" in schema.get("$schema", ""), schema.get("$schema")
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def schema_errors(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator.iter_errors(document)]


def test_compose_file_matches_compose_spec(compose_validator):
    assert schema_errors(compose_validator, load_compose()) == []


def test_compose_file_has_no_version_key():
    assert "version" not in load_compose(), "the Compose Specification has no version: key"


def _set_ports_to_string(doc):
    doc["services"]["rabbitmq"]["ports"] = "not-a-list"


def _add_unknown_top_level_key(doc):
    doc["servics"] = {}


def _misspell_depends_on_condition(doc):
    doc["services"]["identity"]["depends_on"]["postgres"]["condition"] = "service_ready"


def _healthcheck_test_as_number(doc):
    doc["services"]["postgres"]["healthcheck"]["test"] = 42


@pytest.mark.parametrize("breakage", [
    _set_ports_to_string, _add_unknown_top_level_key, _misspell_depends_on_condition,
    _healthcheck_test_as_number,
], ids=lambda f: f.__name__.strip("_"))
def test_schema_check_rejects_broken_compose(compose_validator, breakage):
    document = copy.deepcopy(load_compose())
    assert schema_errors(compose_validator, document) == []  # so the breakage is what fails below
    breakage(document)
    assert schema_errors(compose_validator, document), f"{breakage.__name__} was not caught by the schema"


def test_compose_has_no_unescaped_dollar():
    # Compose interpolates $VAR / ${VAR}; a literal dollar sign must be written "$$".
    text = COMPOSE_PATH.read_text(encoding="utf-8").replace("$$", "")
    lines = [line for line in text.splitlines() if "$" in line and not line.lstrip().startswith("#")]
    assert lines == []


# ---- one container per service, every variable set ---------------------------------------------

def test_one_container_per_service_folder():
    compose = load_compose()
    running = collections.Counter(env_of(s)["SWMS_SERVICE"] for s in app_containers(compose).values())
    assert service_dirs(), "no services/*/service.py found"
    assert sorted(running) == service_dirs()
    assert all(count == 1 for count in running.values()), running
    for name, svc in app_containers(compose).items():
        assert env_of(svc)["SWMS_SERVICE"] == name, "name each compose service after its service folder"


def _allowed_default(variable: str, service: str) -> bool:
    return any(pattern.replace("{SERVICE}", service.upper()) == variable for pattern in DEFAULT_IS_FINE)


@pytest.mark.parametrize("config_path", config_files(), ids=lambda p: p.parent.name)
def test_compose_sets_every_variable_the_config_reads(config_path):
    service = config_path.parent.name
    refs = config_refs(config_path)
    assert "AMQP_URI" in refs, f"{config_path} reads no ${{AMQP_URI}}: is it parsed correctly?"
    _, container = container_for(load_compose(), service)
    env = env_of(container)
    missing = sorted(set(refs) - set(env))
    not_allowed = [v for v in missing if not _allowed_default(v, service)]
    assert not_allowed == [], f"{service}: compose does not set {not_allowed}"
    for variable in missing:  # left to config.yaml's default: there must be a usable one
        default = refs[variable]
        assert default, f"{service}: {variable} is not set in compose and has no default"
        if variable.endswith("_FILE"):
            assert (REPO / default).is_file() and is_copied(default), \
                f"{service}: default {variable}={default} is not a file in the image"


def test_no_container_gets_another_services_settings():
    compose = load_compose()
    prefixes = {s.upper() + "_": s for s in service_dirs()}
    for name, container in app_containers(compose).items():
        service = env_of(container)["SWMS_SERVICE"]
        reads = config_refs(REPO / "services" / service / "config.yaml")
        for variable in env_of(container):
            owner = next((s for p, s in prefixes.items() if variable.startswith(p)), service)
            assert owner == service or variable in reads, f"{name} sets {variable}, which belongs to {owner}"
        if "AUTH_PRIVATE_KEY_FILE" in env_of(container):
            assert "AUTH_PRIVATE_KEY_FILE" in reads, f"{name} gets the token-signing private key"


def test_urls_and_hosts_name_compose_services():
    compose = load_compose()
    databases = set(re.findall(r"(?im)^\s*CREATE\s+DATABASE\s+\"?(\w+)\"?", PG_INIT.read_text(encoding="utf-8")))
    for name, container in app_containers(compose).items():
        depends = container.get("depends_on") or {}
        for variable, value in env_of(container).items():
            if URL_SETTINGS.match(variable):
                # AMQP_URI may list a cluster's nodes: each is a compose service; the first one answers
                # without the "cluster" profile, so that is the one to wait for.
                hosts = [urlsplit(url).hostname for url in value.split(";") if url]
                for other in hosts[1:]:
                    assert other in compose["services"], f"{name}: {variable} names {other}, no compose service"
                host = hosts[0]
            elif HOST_SETTINGS.match(variable):
                host = value
            else:
                continue
            assert host in compose["services"], f"{name}: {variable}={value} names no compose service"
            assert host in depends, f"{name} uses {host} ({variable}) but does not depend on it"
            if variable.endswith("_DB_URL"):
                url = urlsplit(value)
                # psycopg 3 blocks the eventlet hub; psycopg2 is greened by monkey_patch().
                assert url.scheme == "postgresql+psycopg2", value
                assert url.path.lstrip("/") in databases, f"{value}: database not created by {PG_INIT.name}"


def test_every_service_has_a_database_created_at_init():
    created = set(re.findall(r"(?im)^\s*CREATE\s+DATABASE\s+\"?(\w+)\"?", PG_INIT.read_text(encoding="utf-8")))
    assert set(service_dirs()) <= created
    postgres = load_compose()["services"]["postgres"]
    mounts = [v for v in postgres.get("volumes", []) if isinstance(v, str)]
    assert any(m.split(":")[0] == "./deploy/postgres/init-databases.sql"
               and m.split(":")[1].startswith("/docker-entrypoint-initdb.d/") for m in mounts), mounts


def test_bind_mount_sources_exist():
    for name, svc in load_compose()["services"].items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0] if isinstance(volume, str) else volume.get("source", "")
            if source.startswith(("./", "../")):
                assert (REPO / source).exists(), f"{name}: bind mount source {source} does not exist"


def test_key_files_are_the_ones_devkeys_writes(tmp_path):
    compose = load_compose()
    keys = compose["services"]["keys"]
    assert any(" ".join(a[:3]) == "python -m swms.devkeys" and a[3:] == ["/keys"] for a in argv_lists(keys))
    assert "keys:/keys" in keys["volumes"]
    subprocess.run([sys.executable, "-m", "swms.devkeys", str(tmp_path)], cwd=REPO, check=True,
                   capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    for name, container in app_containers(compose).items():
        assert "keys:/keys:ro" in container.get("volumes", []), f"{name} does not mount the keys read-only"
        assert container.get("depends_on", {}).get("keys", {}).get("condition") == "service_completed_successfully"
        for variable, value in env_of(container).items():
            if variable.endswith("_FILE"):
                assert value.startswith("/keys/"), f"{name}: {variable}={value} is not in the keys volume"
                assert (tmp_path / value[len("/keys/"):]).is_file(), \
                    f"{name}: {variable}={value} is not a file that swms.devkeys creates"


def test_depends_on_conditions_can_be_met():
    services = load_compose()["services"]
    for name, svc in services.items():
        for target, spec in (svc.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec.get("condition") if isinstance(spec, dict) else "service_started"
            if condition == "service_healthy":
                health = services[target].get("healthcheck") or {}
                test = health.get("test")
                runs_a_check = isinstance(test, str) and test.strip() or (
                    isinstance(test, list) and len(test) > 1 and test[0] in ("CMD", "CMD-SHELL"))
                assert runs_a_check and not health.get("disable"), \
                    f"{name} waits for {target} to be healthy, but {target} has no healthcheck"
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", \
                    f"{target} is a one-shot job that {name} waits for: it must not restart"


def test_service_containers_are_restartable_scalable_and_checked():
    for name, svc in app_containers(load_compose()).items():
        assert uses_app_image(svc), f"{name} is not built from deploy/Dockerfile"
        assert svc.get("restart") in ("unless-stopped", "always", "on-failure"), name
        # --scale needs containers without fixed names or host ports.
        assert "container_name" not in svc and "ports" not in svc, name
        assert svc["healthcheck"]["test"] == ["CMD", "python", "deploy/healthcheck.py", name]
        assert env_of(svc).get("RUN_MIGRATIONS") == "true", f"{name} would start on an empty database"


# ---- commands name files and modules that exist and are in the image ---------------------------

def test_build_section_points_at_the_dockerfile():
    for name, svc in load_compose()["services"].items():
        build = svc.get("build")
        if build:
            context = REPO / build.get("context", ".")
            assert context.resolve() == REPO, f"{name}: build context must be the repository root"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_commands_reference_existing_files_and_modules():
    compose = load_compose()
    checked = 0
    for name, svc in compose["services"].items():
        if not uses_app_image(svc):
            continue
        argvs = argv_lists(svc)
        if not svc.get("command") and not svc.get("entrypoint"):
            cmd = [args for instruction, args in dockerfile_instructions() if instruction == "CMD"][-1]
            argvs.append(json.loads(cmd) if cmd.startswith("[") else shlex.split(cmd))
        for argv in argvs:
            for i, token in enumerate(argv):
                if token == "-m":
                    module = argv[i + 1]
                    assert module_exists(module), f"{name}: module {module} not found"
                    assert is_copied(module.split(".")[0]), f"{name}: {module} is not copied into the image"
                    checked += 1
                elif token.endswith((".py", ".sh")):
                    relative = token[len("/app/"):] if token.startswith("/app/") else token
                    assert not relative.startswith("/"), f"{name}: {token} is outside the application"
                    assert (REPO / relative).is_file(), f"{name}: {token} does not exist"
                    assert is_copied(relative), f"{name}: {token} is not copied into the image"
                    assert not is_ignored(relative), f"{name}: {token} is excluded from the build context"
                    checked += 1
    assert checked >= len(service_dirs()) + 1


@pytest.mark.parametrize("service", service_dirs())
def test_service_module_and_health_rpc_exist(service):
    module = REPO / "services" / service / "service.py"
    assert (REPO / "services" / service / "config.yaml").is_file()
    assert (REPO / "services" / service / "migrations").is_dir(), "RUN_MIGRATIONS needs migrations/"
    tree = ast.parse(module.read_text(encoding="utf-8"))
    named = [node for node in tree.body if isinstance(node, ast.ClassDef) and any(
        isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "name" for t in stmt.targets)
        and isinstance(stmt.value, ast.Constant) and stmt.value.value == service for stmt in node.body)]
    assert len(named) == 1, f"services.{service}.service has no class with name = {service!r}"
    methods = {n.name for n in named[0].body if isinstance(n, ast.FunctionDef)}
    assert "health" in methods, f"{named[0].name} has no health RPC for deploy/healthcheck.py"


def test_image_copies_what_the_services_need():
    for path in ("requirements.txt", "swms", "services", "tools", "deploy/entrypoint.sh", "deploy/healthcheck.py"):
        assert is_copied(path), f"the Dockerfile does not copy {path}"
        assert not is_ignored(path), f"{path} is excluded by {DOCKERIGNORE.name}"


def test_dockerignore_keeps_local_clutter_out_of_the_context():
    for path in (".venv/bin/python", "var/data/identity.db", ".git/HEAD", "swms/__pycache__/db.cpython-311.pyc"):
        assert is_ignored(path), f"{path} would be sent to the Docker build"


# ---- the Dockerfile ---------------------------------------------------------------------------

def test_dockerfile_base_image_and_packages():
    instructions = dockerfile_instructions()
    froms = [args for instruction, args in instructions if instruction == "FROM"]
    assert froms and froms[-1].split()[0] == "python:3.11-slim-bookworm", froms
    runs = " ".join(args for instruction, args in instructions if instruction == "RUN")
    installs = re.findall(r"apt-get install ([^&;|]+)", runs)
    packages = {word for chunk in installs for word in chunk.split() if not word.startswith("-")}
    # Without libharfbuzz-subset0 a CJK certificate takes ~11 s to render instead of ~0.1 s.
    for package in ("libharfbuzz-subset0", "fonts-noto-cjk", "libpango-1.0-0", "libpangoft2-1.0-0"):
        assert package in packages, f"{package} is not apt-installed"
    assert re.search(r"pip install\b[^&;]*-r requirements\.txt", runs), "requirements.txt is not installed"


def test_dockerfile_does_not_run_as_root():
    users = [args for instruction, args in dockerfile_instructions() if instruction == "USER"]
    assert users, "no USER instruction: the container would run as root"
    user = users[-1].split(":")[0].strip()
    assert user not in ("root", "0", ""), users[-1]
    # ...and the instruction comes after everything that needs root.
    order = [instruction for instruction, _ in dockerfile_instructions()]
    assert max(i for i, ins in enumerate(order) if ins == "USER") > max(
        i for i, ins in enumerate(order) if ins == "RUN")


def test_dockerfile_default_command_is_the_entrypoint_script():
    instructions = dockerfile_instructions()
    cmd = [args for instruction, args in instructions if instruction == "CMD"][-1]
    assert "deploy/entrypoint.sh" in cmd
    copy_line = next(args for instruction, args in instructions
                     if instruction == "COPY" and "deploy/entrypoint.sh" in args)
    mode = re.search(r"--chmod=(\d+)", copy_line)
    assert (mode and int(mode.group(1), 8) & 0o111) or os.access(ENTRYPOINT, os.X_OK), \
        "entrypoint.sh would not be executable in the image"


# ---- deploy/entrypoint.sh ----------------------------------------------------------------------

def test_entrypoint_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def stub_path(tmp_path):
    """A PATH whose `python` and `nameko` only record how they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("python", "nameko"):
        script = bin_dir / tool
        script.write_text(
            "#!/bin/sh\n"
            f'echo "{tool} $*" >> "{log}"\n'
            # python fails while FAIL_MIGRATIONS > number of earlier python calls
            f'if [ "{tool}" = python ] && [ "$(grep -c "^python" "{log}")" -le "${{FAIL_MIGRATIONS:-0}}" ]; '
            "then exit 3; fi\n"
        )
        script.chmod(0o755)
    return bin_dir, log


def run_entrypoint(stub_path, **env):
    bin_dir, log = stub_path
    environment = {"PATH": f"{bin_dir}:/usr/bin:/bin", **env}
    result = subprocess.run(["bash", str(ENTRYPOINT)], env=environment, capture_output=True, text=True,
                            cwd="/", timeout=60)
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


@pytest.mark.parametrize("service", service_dirs())
def test_entrypoint_migrates_then_runs_the_service(stub_path, service):
    result, calls = run_entrypoint(stub_path, SWMS_SERVICE=service, RUN_MIGRATIONS="true")
    assert result.returncode == 0, result.stderr
    assert calls == [
        f"python -m swms.migrations {service}",
        f"nameko run --config services/{service}/config.yaml services.{service}.service",
    ]
    assert module_exists("swms.migrations") and module_exists(f"services.{service}.service")


def test_entrypoint_skips_migrations_unless_asked(stub_path):
    service = service_dirs()[0]
    result, calls = run_entrypoint(stub_path, SWMS_SERVICE=service)
    assert result.returncode == 0, result.stderr
    assert calls == [f"nameko run --config services/{service}/config.yaml services.{service}.service"]


def test_entrypoint_retries_a_failed_migration(stub_path):
    service = service_dirs()[0]
    result, calls = run_entrypoint(stub_path, SWMS_SERVICE=service, RUN_MIGRATIONS="true",
                                   FAIL_MIGRATIONS="1", MIGRATION_ATTEMPTS="3")
    assert result.returncode == 0, result.stderr
    assert [c.split()[0] for c in calls] == ["python", "python", "nameko"]


def test_entrypoint_does_not_start_the_service_when_migrations_keep_failing(stub_path):
    service = service_dirs()[0]
    result, calls = run_entrypoint(stub_path, SWMS_SERVICE=service, RUN_MIGRATIONS="true",
                                   FAIL_MIGRATIONS="9", MIGRATION_ATTEMPTS="1")
    assert result.returncode != 0
    assert calls == [f"python -m swms.migrations {service}"]


@pytest.mark.parametrize("name", ["", "nosuchservice", "../swms", "identity;ls"])
def test_entrypoint_rejects_unknown_services(stub_path, name):
    result, calls = run_entrypoint(stub_path, SWMS_SERVICE=name, RUN_MIGRATIONS="true")
    assert result.returncode == 64, result.stderr
    assert calls == []


# ---- deploy/healthcheck.py ---------------------------------------------------------------------

def test_healthcheck_monkey_patches_before_anything_else():
    # Importing ssl/urllib3/boto3 before monkey_patch() breaks TLS (stack notes, trap 1).
    body = ast.parse(HEALTHCHECK.read_text(encoding="utf-8")).body
    first, second = body[0], body[1]
    assert isinstance(first, ast.Import) and [a.name for a in first.names] == ["eventlet"]
    assert isinstance(second, ast.Expr) and ast.unparse(second.value) == "eventlet.monkey_patch()"


# Runs deploy/healthcheck.py with nameko's ClusterRpcProxy replaced by a stand-in.
FAKE_PROXY_RUNNER = r"""
import json, runpy, sys
import nameko.standalone.rpc as standalone

script, mode, record, *args = sys.argv[1:]

class FakeProxy:
    def __init__(self, config, timeout=None, **kwargs):
        self.config, self.timeout = config, timeout
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        return False
    def __getitem__(self, service):
        proxy = self
        class Service:
            def health(self, *args, **kwargs):
                with open(record, "w") as handle:
                    json.dump({"service": service, "config": proxy.config, "timeout": proxy.timeout,
                               "args": list(args), "kwargs": kwargs}, handle)
                if mode == "raise":
                    raise RuntimeError("no broker")
                return {"service": service, "status": mode, "checks": {"database": mode}}
        return Service()
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

standalone.ClusterRpcProxy = FakeProxy
sys.argv = [script, *args]
runpy.run_path(script, run_name="__main__")
"""


def run_healthcheck(tmp_path, mode, *args, env=None):
    record = tmp_path / "call.json"
    environment = {**os.environ, "PYTHONPATH": str(REPO), "AMQP_URI": "pyamqp://u:p@broker:5672/"}
    environment.pop("SWMS_SERVICE", None)
    environment.update(env or {})
    result = subprocess.run([sys.executable, "-c", FAKE_PROXY_RUNNER, str(HEALTHCHECK), mode, str(record), *args],
                            env=environment, capture_output=True, text=True, timeout=60)
    call = json.loads(record.read_text()) if record.exists() else None
    return result, call


@pytest.mark.parametrize("mode, exit_code", [("ok", 0), ("degraded", 1), ("raise", 1)])
def test_healthcheck_exit_code_follows_the_health_reply(tmp_path, mode, exit_code):
    result, call = run_healthcheck(tmp_path, mode, "certificate")
    assert result.returncode == exit_code, result.stderr
    assert call == {"service": "certificate", "config": {"AMQP_URI": "pyamqp://u:p@broker:5672/"},
                    "timeout": 5, "args": [], "kwargs": {}}


def test_healthcheck_defaults_to_swms_service(tmp_path):
    result, call = run_healthcheck(tmp_path, "ok", env={"SWMS_SERVICE": "review"})
    assert result.returncode == 0, result.stderr
    assert call["service"] == "review"


def test_healthcheck_without_a_service_is_a_usage_error(tmp_path):
    result, call = run_healthcheck(tmp_path, "ok")
    assert result.returncode == 2
    assert call is None


# ---- the HTTP gateway: a seventh deployable, same image, its own command -------------------------

def test_gateway_container_runs_the_gateway_from_the_app_image():
    gateway = load_compose()["services"]["gateway"]
    assert uses_app_image(gateway) and "SWMS_SERVICE" not in env_of(gateway)
    assert gateway["command"] == ["python", "-m", "services.gateway"] and module_exists("services.gateway")
    assert gateway["restart"] == "unless-stopped"


def test_gateway_container_sets_every_variable_the_gateway_reads():
    from services.gateway.config import Settings, variables

    env = env_of(load_compose()["services"]["gateway"])
    assert sorted(set(variables()) - set(env)) == []
    assert sorted(set(env) - set(variables())) == [], "compose sets variables the gateway does not read"
    Settings.from_env(env)   # and every value is one the gateway accepts


def test_gateway_waits_for_the_broker_is_checked_on_readyz_and_publishes_its_port():
    compose = load_compose()
    gateway = compose["services"]["gateway"]
    env = env_of(gateway)
    assert urlsplit(env["AMQP_URI"]).hostname == "rabbitmq"
    assert gateway["depends_on"] == {"rabbitmq": {"condition": "service_healthy"}}
    assert gateway["healthcheck"]["test"] == ["CMD", "python", "-m", "services.gateway.healthcheck"]
    assert "/readyz" in (REPO / "services" / "gateway" / "healthcheck.py").read_text(encoding="utf-8")
    published = [port.rsplit(":", 2) for port in gateway["ports"]]
    assert [container for *_, container in published] == [env["GATEWAY_PORT"]]


def test_gateway_healthcheck_follows_readyz(tmp_path):
    import http.server
    import threading

    statuses = {"/readyz": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(statuses.get(self.path, 404))
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GATEWAY_PORT": str(server.server_address[1])}
    try:
        check = [sys.executable, "-m", "services.gateway.healthcheck"]
        assert subprocess.run(check, env=env, cwd=REPO, capture_output=True, timeout=30).returncode == 0
        statuses["/readyz"] = 503
        assert subprocess.run(check, env=env, cwd=REPO, capture_output=True, timeout=30).returncode == 1
    finally:
        server.shutdown()
    env["GATEWAY_PORT"] = str(server.server_address[1])   # nothing listens any more
    assert subprocess.run(check, env=env, cwd=REPO, capture_output=True, timeout=30).returncode == 1


# ---- RabbitMQ: quorum queues, and a three-node cluster with --profile cluster ---------------------

def test_services_use_quorum_queues_on_every_rabbitmq_node():
    compose = load_compose()
    nodes = [name for name, svc in compose["services"].items() if str(svc.get("image", "")).startswith("rabbitmq:")
             and svc.get("hostname")]
    assert nodes == ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
    for name, container in app_containers(compose).items():
        env = env_of(container)
        assert env["AMQP_QUEUE_TYPE"] == "quorum", name
        assert [urlsplit(url).hostname for url in env["AMQP_URI"].split(";")] == nodes, name


def test_the_cluster_profile_adds_two_nodes_that_join_the_first():
    services = load_compose()["services"]
    assert "profiles" not in services["rabbitmq"]   # the single node of a plain `docker compose up`
    cookies = {env_of(services[n])["RABBITMQ_ERLANG_COOKIE"] for n in ("rabbitmq", "rabbitmq-2", "rabbitmq-3")}
    assert len(cookies) == 1 and cookies != {""}, "the nodes of a cluster share one Erlang cookie"
    cluster_conf = REPO / "deploy" / "rabbitmq" / "cluster.conf"
    listed = re.findall(r"(?m)^cluster_formation\.classic_config\.nodes\.\d+ = rabbit@(\S+)$",
                        cluster_conf.read_text(encoding="utf-8"))
    assert listed == ["rabbitmq", "rabbitmq-2", "rabbitmq-3"]
    for name in ("rabbitmq-2", "rabbitmq-3"):
        node = services[name]
        assert node["profiles"] == ["cluster"] and node["hostname"] == name
        assert any(v.startswith("./deploy/rabbitmq/cluster.conf:/etc/rabbitmq/conf.d/") for v in node["volumes"])
        assert node["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    grow = services["rabbitmq-grow"]
    assert grow["profiles"] == ["cluster"] and grow["restart"] == "no"
    assert "grow rabbit@rabbitmq-2 all" in grow["command"][-1] and "grow rabbit@rabbitmq-3 all" in grow["command"][-1]
