"""docker/: the image and the compose consortium, checked without a Docker engine.

The compose file is read as YAML; every service's command, behind the
Dockerfile's ENTRYPOINT, goes through fedops' own CLI parser and config
checks, with ``/kit`` and ``/run`` pointed at kits made from
``docker/consortium.yaml`` in a temporary folder. The Dockerfile is read
instruction by instruction (continuation lines joined, comments dropped).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from fedops.cli import build_parser
from fedops.cli.configs import config_of as _config
from fedops.config import ClientConfig, CoordinatorConfig
from fedops.consortium.kit import load_kit
from fedops.consortium.kits import init_consortium
from fedops.runtime.settings import is_loopback, parse_address

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
SPEC = DOCKER / "consortium.yaml"

SITES = ("site-a", "site-b", "site-c")
SERVICES = ("coordinator", *SITES)
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_PIN = re.compile(r"\btorch==([0-9][0-9A-Za-z.+]*)")


# -- reading the files --------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        keyword, _, rest = text.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _stages() -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (FROM first), global ARGs left out."""
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _arg_defaults() -> dict[str, str]:
    defaults = {}
    for keyword, rest in _instructions():
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            defaults[name.strip()] = value.strip()
    return defaults


def _exec_form(keyword: str) -> list[str]:
    """The last ``keyword`` instruction (ENTRYPOINT, CMD) in the final stage, in exec form."""
    found = [rest for k, rest in _stages()[-1] if k == keyword]
    assert found, f"the final stage has no {keyword}"
    value = json.loads(found[-1])  # exec form: a JSON list, so no shell wraps the process
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def kits(tmp_path_factory) -> dict[str, Path]:
    """The kits ``fedops consortium init docker/consortium.yaml`` makes, by party name."""
    out = tmp_path_factory.mktemp("docker-consortium")
    return {path.name: path for path in init_consortium(SPEC, out)}


def _command(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _argv(name: str, service: dict, kits: dict[str, Path], run_root: Path) -> list[str]:
    """The service's command behind the ENTRYPOINT, with /kit and /run as local paths."""
    full = [*_exec_form("ENTRYPOINT"), *_command(service)]
    assert full[0] == "fedops", full
    paths = {"/kit": str(kits[name]), "/run": str(run_root / name)}
    return [paths.get(arg, arg) for arg in full[1:]]


def _mounts(service: dict) -> list[dict]:
    """Volumes in long syntax (short ``SRC:DST[:MODE]`` strings converted)."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            is_path = source.startswith((".", "/", "~"))
            mounts.append(
                {
                    "type": "bind" if is_path else "volume",
                    "source": source,
                    "target": target,
                    "read_only": "ro" in (mode[0].split(",") if mode else []),
                }
            )
        else:
            mounts.append(volume)
    return mounts


def _mount(service: dict, target: str) -> dict:
    found = [m for m in _mounts(service) if m["target"] == target]
    assert len(found) == 1, f"expected one mount at {target}, got {found}"
    return found[0]


def _depends_on(service: dict) -> set[str]:
    """Service names, from the list form or the mapping form (name -> condition)."""
    return set(service.get("depends_on", []))


# -- compose.yaml ---------------------------------------------------------------------------------


def test_compose_has_the_coordinator_and_three_sites(compose):
    assert set(compose["services"]) == set(SERVICES)


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_is_built_from_the_dockerfile(compose, name):
    assert compose["services"][name].get("pull_policy") == "build", "never pulled instead"
    build = compose["services"][name]["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == ROOT
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


@pytest.mark.parametrize("name", SERVICES)
def test_each_kit_is_mounted_read_only_at_kit_and_each_run_dir_is_a_named_volume(compose, name):
    service = compose["services"][name]
    kit = _mount(service, "/kit")
    assert kit["type"] == "bind"
    assert kit["read_only"] is True
    assert (COMPOSE.parent / kit["source"]).resolve() == DOCKER / "consortium" / "kits" / name
    run = _mount(service, "/run")
    assert run["type"] == "volume"
    assert run["source"] in (compose.get("volumes") or {})
    others = [_mount(compose["services"][n], "/run")["source"] for n in SERVICES if n != name]
    assert run["source"] not in others, "every party keeps its own run directory"


@pytest.mark.parametrize("name", SITES)
def test_sites_depend_on_the_coordinator(compose, name):
    assert "coordinator" in _depends_on(compose["services"][name])


def test_nothing_is_served_in_plaintext(compose):
    """No --insecure anywhere; metrics stay on the container's loopback, unpublished."""
    for name in SERVICES:
        service = compose["services"][name]
        assert "--insecure" not in _command(service), name
        assert "--metrics-address" not in _command(service), name
        published = [str(p) for p in service.get("ports", [])]
        assert not any("9100" in p for p in published), (name, published)


# -- the commands, through fedops' own parser and config checks ----------------------------------


def test_the_coordinator_command_builds_a_valid_mtls_config(compose, kits, tmp_path):
    args = build_parser().parse_args(
        _argv("coordinator", compose["services"]["coordinator"], kits, tmp_path)
    )
    cfg = _config(args)
    assert isinstance(cfg, CoordinatorConfig)
    assert cfg.kit == kits["coordinator"]
    assert load_kit(cfg.kit).role == "coordinator"
    assert cfg.run_dir == tmp_path / "coordinator"
    assert not cfg.insecure
    # It binds every interface (the kit's coordinator:8443 is not an address of the
    # container), on the port the kit tells the sites to dial.
    host, port = parse_address("address", cfg.address)
    assert host == "0.0.0.0"
    assert port == parse_address("kit", load_kit(cfg.kit).coordinator_address)[1]
    assert is_loopback(cfg.metrics_address)
    assert cfg.metrics_port is not None
    assert cfg.min_clients == len(SITES)
    assert cfg.task == "digits"


def test_without_address_the_coordinator_would_bind_the_kits_host(compose, kits, tmp_path):
    """Why compose passes --address: the default is the kit's address, a name to dial."""
    argv = _argv("coordinator", compose["services"]["coordinator"], kits, tmp_path)
    i = argv.index("--address")
    cfg = _config(build_parser().parse_args(argv[:i] + argv[i + 2 :]))
    assert cfg.address == "coordinator:8443"


def test_the_site_commands_build_valid_configs_for_distinct_sites(compose, kits, tmp_path):
    coordinator_kit = load_kit(kits["coordinator"])
    indexes = []
    for name in SITES:
        args = build_parser().parse_args(_argv(name, compose["services"][name], kits, tmp_path))
        cfg = _config(args)
        assert isinstance(cfg, ClientConfig)
        kit = load_kit(cfg.kit)
        assert (kit.role, kit.name) == ("site", name)
        assert cfg.coordinator == coordinator_kit.coordinator_address == kit.coordinator_address
        assert not cfg.insecure
        assert cfg.num_sites == len(SITES)
        assert cfg.run_dir == tmp_path / name
        assert cfg.task == "digits"
        indexes.append(cfg.site)
    assert sorted(indexes) == list(range(len(SITES)))


def test_ports_agree_with_the_dockerfile(compose, kits, tmp_path):
    exposed = {
        int(port.split("/")[0])
        for keyword, rest in _stages()[-1]
        if keyword == "EXPOSE"
        for port in rest.split()
    }
    cfg = _config(
        build_parser().parse_args(
            _argv("coordinator", compose["services"]["coordinator"], kits, tmp_path)
        )
    )
    assert parse_address("address", cfg.address)[1] in exposed
    assert cfg.metrics_port in exposed


# -- consortium.yaml -------------------------------------------------------------------------------


def test_the_consortium_provisions_every_service_and_names_the_coordinator_host(kits):
    assert set(SERVICES) <= set(kits)
    assert {load_kit(kits[n]).role for n in SITES} == {"site"}
    cert = load_kit(kits["coordinator"]).cert
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # Sites dial coordinator:8443 on the compose network; TLS checks the name against these.
    assert "coordinator" in sans.get_values_for_type(x509.DNSName)


# -- Dockerfile ------------------------------------------------------------------------------------


def test_the_image_is_python_311_slim_and_runs_as_a_non_root_user():
    defaults = _arg_defaults()
    final = _stages()[-1]
    base = final[0][1].split()[0]
    base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], base)
    assert base == "python:3.11-slim"
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the final stage has no USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    run = " ".join(rest for keyword, rest in final if keyword == "RUN")
    assert re.search(rf"useradd\b[^&;]*--uid 10001\b[^&;]*\b{users[-1]}\b", run)
    assert ("WORKDIR", "/home/fedops") in final


def test_the_entrypoint_is_fedops_with_help_by_default():
    assert _exec_form("ENTRYPOINT") == ["fedops"]
    assert _exec_form("CMD") == ["--help"]


def test_docker_stop_sends_the_signal_fedops_handles():
    """PID 1 ignores an unhandled SIGTERM; fedops handles SIGINT (state saved, exit 130)."""
    assert [rest for keyword, rest in _stages()[-1] if keyword == "STOPSIGNAL"] == ["SIGINT"]


def test_torch_comes_from_the_cpu_index_before_the_project():
    runs = [rest for stage in _stages() for keyword, rest in stage if keyword == "RUN"]
    torch_at = [i for i, r in enumerate(runs) if TORCH_PIN.search(r)]
    assert len(torch_at) == 1, runs
    assert f"--index-url {CPU_INDEX}" in runs[torch_at[0]]
    project_at = [i for i, r in enumerate(runs) if re.search(r"pip install\b.*\s\.(\s|$)", r)]
    assert project_at, "no `pip install .` of the project"
    assert torch_at[0] < project_at[0]
    assert all("--no-cache-dir" in runs[i] for i in (*torch_at, *project_at))


def test_the_torch_pin_is_the_one_ci_and_the_readme_install():
    pins = {
        name: set(TORCH_PIN.findall((ROOT / name).read_text()))
        for name in ("docker/Dockerfile", ".ci/run", "README.md")
    }
    assert all(len(found) == 1 for found in pins.values()), pins
    assert len(set.union(*pins.values())) == 1, pins


def test_only_the_package_sources_are_copied_dependencies_first():
    instructions = [(k, r) for stage in _stages() for k, r in stage]
    copies = [r.split() for k, r in instructions if k == "COPY" and "--from=" not in r]
    sources = {src.rstrip("/") for parts in copies for src in parts[:-1]}
    assert sources == {"pyproject.toml", "README.md", "fedops"}
    keywords = instructions
    copy_source = next(i for i, (k, r) in enumerate(keywords) if k == "COPY" and "fedops/" in r)
    install_deps = next(
        i for i, (k, r) in enumerate(keywords) if k == "RUN" and "requirements" in r
    )
    assert install_deps < copy_source, "a source edit would reinstall every dependency"


def test_runtime_settings_volumes_and_no_healthcheck():
    final = _stages()[-1]
    env = " ".join(rest for keyword, rest in final if keyword == "ENV")
    assert re.search(r"\bPYTHONUNBUFFERED=1\b", env)
    assert re.search(r"\bOMP_NUM_THREADS=1\b", env)
    volumes = [rest for keyword, rest in final if keyword == "VOLUME"]
    declared = {v for rest in volumes for v in json.loads(rest)}
    assert declared == {"/kit", "/run"}
    assert not [k for stage in _stages() for k, _ in stage if k == "HEALTHCHECK"]
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    assert "org.opencontainers.image.title" in labels
