"""environment.yml (conda) pins exactly what requirements.lock pins."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def lock_pins():
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
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
