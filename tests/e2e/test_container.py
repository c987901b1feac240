"""The container recipe, run without a container engine: build the wheel, then the Dockerfile's steps.

``Dockerfile`` is read with dockerfile-parse, its path build arguments pointed into a temporary
directory (as ``docker build --build-arg`` would). The build stage's COPY lines lay out the
source and the wheel is built from it; the final stage's COPY, install RUN, ENV, WORKDIR, USER,
CMD and HEALTHCHECK are then carried out as written: ``python -m venv`` makes a fresh virtual
environment, pip installs the wheel into it with ``--no-index``, and the CMD starts gunicorn
with ``config/gunicorn.conf.py`` on an instance that the installed ``idp init`` made, on Redis
and PostgreSQL. Two things differ from an image build, to stay quick and leave the machine as it
was: the dependencies' wheels are not built (the test's own installed packages are put on
``PYTHONPATH``, so pip finds them satisfied), and the RUN that creates the system user is
checked, not run.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from contextlib import suppress
from pathlib import Path

import pytest
import requests
from dockerfile_parse import DockerfileParser
from dockerfile_parse.util import WordSplitter
from world import ROOT, fresh_database, initialised_portal, simulated_jlis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

NOT_OVERLAID = {"pip", "setuptools", "pkg_resources", "_distutils_hack", "wheel", "__pycache__"}
"""What the fresh environment must bring itself: its installer, and (below) our own package."""


def _stages(parser: DockerfileParser) -> list[list[tuple[dict, object]]]:
    """The instructions of each stage, each with its dockerfile-parse context (ARG and ENV in force)."""
    stages: list[list[tuple[dict, object]]] = []
    for instruction, context in zip(parser.structure, parser.context_structure, strict=True):
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append((instruction, context))
    return stages


def _words(value: str, context) -> list[str]:
    """An instruction's words with ``$VAR`` replaced as the builder would (ARG and ENV in force)."""
    return list(WordSplitter(value, args=context.args, envs=context.envs).split())


def _dependency_overlay(directory: Path) -> Path:
    """Our installed dependencies, linked one by one: everything but pip, setuptools and our own package."""
    directory.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        project = entry.name.split("-")[0]
        if (project in NOT_OVERLAID or entry.suffix == ".pth" or entry.name.startswith("__editable__")
                or project in {"myna_gateway", "idp", "smartphone", "relying_party_demo"}):
            continue
        (directory / entry.name).symlink_to(entry)
    return directory


def _build_stage(stage, source: Path, wheels: Path) -> None:
    """Copy the source as the build stage does, and build the wheel it builds (only ours: the
    dependencies are the test's own, see ``_dependency_overlay``). pip fetches the build backend
    that pyproject.toml names, as ``docker build`` would."""
    for instruction, context in stage:
        kind = instruction["instruction"]
        if kind == "COPY":
            *sources, target = _words(instruction["value"], context)
            assert target.endswith("/"), "the build stage copies into directories"
            for name in sources:
                origin, into = ROOT / name, source / target
                if origin.is_dir():  # Docker copies a directory's contents
                    shutil.copytree(origin, into, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
                else:
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, into / origin.name)
        elif kind == "RUN":
            assert _words(instruction["value"], context)[:2] == ["pip", "wheel"], instruction["value"]
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(source)],
        check=False, timeout=600, capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stderr


def _base_environment(*, python_bin: Path) -> dict[str, str]:
    """A clean environment for the image's processes: no settings, no coverage hooks, PATH to a bare Python."""
    kept = {key: value for key, value in os.environ.items()
            if not key.startswith(("IDP_", "COV_", "PYTEST_", "GUNICORN_", "PROMETHEUS_"))
            and key not in {"DATABASE_URL", "REDIS_URL", "PYTHONPATH", "VIRTUAL_ENV", "PATH"}}
    return kept | {"PATH": f"{python_bin}:/usr/bin:/bin"}


class Recipe:
    """The final stage of the Dockerfile, carried out under ``root`` instead of an image."""

    def __init__(self, root: Path, deps: Path, python_bin: Path) -> None:
        self.root = root
        self.build_args = {"APP_HOME": str(root / "venv"), "WHEELS": str(root / "wheels"),
                           "CONFIG_DIR": str(root / "etc"), "DATA_DIR": str(root / "data")}
        parser = DockerfileParser(str(ROOT / "Dockerfile"), build_args=self.build_args,
                                  parent_env={"PATH": f"{python_bin}:/usr/bin:/bin"})
        self.stages = _stages(parser)
        self.envs: dict[str, str] = {}
        self.user = "root"
        self.workdir = root
        self.cmd: list[str] = []
        self.healthcheck: list[str] = []
        self.deps = deps
        self.base = _base_environment(python_bin=python_bin)

    def environment(self, **extra: str) -> dict[str, str]:
        """The final stage's environment, ``docker run -e`` values, and the dependency overlay."""
        return self.base | self.envs | extra | {"PYTHONPATH": str(self.deps)}

    def build(self) -> None:
        """Lay out the build stage, build the wheel, then run the final stage's steps."""
        build, final = self.stages[0], self.stages[-1]
        assert build[0][0]["value"].endswith(" AS build")
        assert len(self.stages) == 2
        wheels_built = self.root / "wheels"
        _build_stage(build[1:], self.root / "src", wheels_built)
        for instruction, context in final[1:]:
            self._step(instruction, context, wheels_built)

    def _step(self, instruction: dict, context, wheels_built: Path) -> None:
        kind, value = instruction["instruction"], instruction["value"]
        self.envs = dict(context.envs)
        if kind == "COPY":
            words = _words(value, context)
            if words[0] == "--from=build":
                assert words[1].rstrip("/") == "/wheels"
                assert words[2].rstrip("/") == str(wheels_built)
                return
            origin, target = ROOT / words[0], Path(words[1])
            assert target.is_relative_to(self.root), f"COPY outside the build arguments' paths: {value}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, target)
        elif kind == "RUN" and value.startswith("useradd"):
            words = _words(value, context)
            self.created_user = words[-1]
            assert "--system" in words
        elif kind == "RUN":
            done = subprocess.run(["sh", "-c", value], env=self.environment() | context.args, cwd=self.root,
                                  capture_output=True, text=True, timeout=600, check=False)
            assert done.returncode == 0, f"RUN {value}\n{done.stdout}\n{done.stderr}"
        elif kind == "USER":
            self.user = value
        elif kind == "WORKDIR":
            self.workdir = Path(_words(value, context)[0])
            self.workdir.mkdir(parents=True, exist_ok=True)
        elif kind == "CMD":
            self.cmd = json.loads(value)
        elif kind == "HEALTHCHECK":
            self.healthcheck = json.loads(value[value.index("CMD") + len("CMD"):])


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the container's CMD exited {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        with suppress(requests.RequestException):
            if requests.get(url + "/healthz", timeout=5).status_code == 200:
                return
        time.sleep(0.2)
    pytest.fail(f"/healthz did not answer within {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Recipe:
    root = tmp_path_factory.mktemp("container")
    python_bin = root / "base-python"
    python_bin.mkdir()
    (python_bin / "python").symlink_to(sys._base_executable)
    made = Recipe(root, _dependency_overlay(root / "deps"), python_bin)
    made.build()
    return made


def test_the_image_runs_as_a_non_root_user_without_secrets(recipe):
    assert recipe.user not in {"root", "0", "0:0"}
    assert recipe.user == recipe.created_user
    assert not (recipe.root / "wheels").exists(), "the install step removes the wheels it installed"
    baked = {key: value for key, value in recipe.envs.items() if any(
        word in key for word in ("SECRET", "TOKEN", "PASSWORD", "KEY", "DATABASE_URL", "REDIS_URL"))}
    assert baked == {}
    patterns = [line for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line and not line.startswith("#")]
    assert patterns[0] == "*"  # the build context is an allow-list: no instance, key or local settings file
    copied = {word for stage in recipe.stages for instruction, context in stage
              if instruction["instruction"] == "COPY" and not instruction["value"].startswith("--from")
              for word in _words(instruction["value"], context)[:-1]}
    assert {f"!{source}" for source in copied} <= set(patterns), "the build context must hold what COPY copies"


def test_the_wheel_is_installed_into_the_fresh_virtual_environment(recipe):
    where = subprocess.run(
        ["python", "-c", "import idp, gunicorn; print(idp.__file__)"], env=recipe.environment(), cwd=recipe.workdir,
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    assert Path(where).is_relative_to(recipe.root / "venv" / "lib")
    assert (recipe.root / "venv" / "bin" / "idp").is_file()


def test_the_started_container_answers_health_readiness_and_metrics(recipe, tmp_path, postgres_url, redis_url):
    data = Path(recipe.build_args["DATA_DIR"])
    with simulated_jlis(tmp_path / "sim") as sim, fresh_database(postgres_url, prefix="container") as database_url:
        # The operator's `idp init` (made here with the test's idp), then the image's own, which changes nothing.
        portal = initialised_portal(sim, data, database_url=database_url, redis_url=redis_url)
        assert Path(recipe.envs["IDP_INSTANCE"]) == data / "instance"
        run_env = {key: value for key, value in portal.env.items()
                   if key.startswith("IDP_PKI__") or key in {"IDP_ISSUER", "DATABASE_URL", "REDIS_URL"}}
        run_env |= {"GUNICORN_BIND": f"127.0.0.1:{portal.port}", "GUNICORN_WORKERS": "2"}
        init = subprocess.run(["idp", "init"], env=recipe.environment(**run_env), cwd=recipe.workdir,
                              capture_output=True, text=True, timeout=120, check=False)
        assert init.returncode == 0, init.stderr
        assert "CAs already present" in init.stdout

        log = tmp_path / "container.log"
        with log.open("wb") as output:
            process = subprocess.Popen(recipe.cmd, env=recipe.environment(**run_env), cwd=recipe.workdir,
                                       stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_healthy(portal.url, process, log)
            not_ready = requests.get(portal.url + "/readyz", timeout=10)
            assert not_ready.status_code == 503
            assert {name: check["ok"] for name, check in not_ready.json()["checks"].items()} == {
                "database": True, "ephemeral_store": True, "signing_keys": True, "ca_keys": True, "jlis_crls": False,
            }

            portal.sync_revocations()
            ready = requests.get(portal.url + "/readyz", timeout=10, headers={"X-Request-Id": "container-ready-1"})
            assert ready.status_code == 200, ready.text
            assert ready.headers["X-Request-Id"] == "container-ready-1"

            # The wheel carries its package data: the device API's OpenAPI document, the migrations (idp init ran).
            assert requests.get(portal.url + "/device/v1/openapi.json", timeout=10).json()["openapi"].startswith("3.")
            metadata = requests.get(portal.url + "/.well-known/openid-configuration", timeout=10).json()
            assert metadata["issuer"] == portal.url

            healthcheck = subprocess.run(recipe.healthcheck, env=recipe.environment(**run_env), timeout=30,
                                         capture_output=True, check=False)
            assert healthcheck.returncode == 0, healthcheck.stderr

            for _ in range(6):
                requests.get(portal.url + "/healthz", timeout=10)
            scraped = requests.get(portal.url + "/metrics", timeout=10).text
            assert _count(scraped, 'myna_http_request_duration_seconds_count{endpoint="ops.readyz"}') == 2
            assert _count(scraped, 'myna_http_request_duration_seconds_count{endpoint="ops.healthz"}') >= 7
        finally:
            _stop(process)
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.startswith("{")]
    access = [line for line in lines if line.get("event") == "http.request"]
    assert {"path": "/readyz", "status": 200, "request_id": "container-ready-1"}.items() <= next(
        line for line in access if line["request_id"] == "container-ready-1").items()
    assert any("Booting worker" in line.get("message", "") for line in lines)


def _count(exposition: str, series: str) -> float:
    """The value of one series line of a Prometheus text exposition (summed over the workers by the portal)."""
    for line in exposition.splitlines():
        if line.startswith(series + " "):
            return float(shlex.split(line)[-1])
    pytest.fail(f"no {series} in the metrics")
