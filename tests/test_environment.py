"""environment.yml (conda) pins exactly what requirements.lock pins; requirements-oldest.txt pins the declared minimums."""
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def lock_pins(name="requirements.lock"):
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def env_pins():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    pins = {}
    for item in pip:
        if "==" in item:
            name, version = item.split("==")
            pins[name.lower()] = version
    return env, pins


def test_environment_yml_agrees_with_lock():
    env, pins = env_pins()
    assert pins == lock_pins()
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_lock_pins_the_core_stack_and_jupyter_book_1():
    pins = lock_pins()
    for name in ("torch", "torchvision", "timm", "fvcore", "papermill", "nbval", "jupyter-book"):
        assert name in pins, name
    assert re.match(r"1\.", pins["jupyter-book"])


def test_oldest_pins_every_direct_dependency_at_its_declared_minimum():
    """requirements-oldest.txt (make test-oldest) is what pyproject.toml promises: rerun
    tools/lock_oldest.sh whenever a minimum changes."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = lock_pins("requirements-oldest.txt")
    for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(spec)
        lowest = [s.version for s in req.specifier if s.operator == ">="]
        assert len(lowest) == 1, spec
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert Version(pins[name]) == Version(lowest[0]), (spec, pins[name])


@pytest.mark.parametrize("name", ["requirements.lock", "requirements-oldest.txt"])
def test_torch_and_torchvision_are_a_matching_pair(name):
    pins = lock_pins(name)
    torch_minor = int(pins["torch"].split(".")[1])
    assert pins["torchvision"].startswith(f"0.{torch_minor + 15}."), pins  # torch 2.4 <-> 0.19, 2.11 <-> 0.26
