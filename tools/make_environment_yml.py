"""Write environment.yml (conda) from requirements.lock so both pin the same versions.

Conda users get the interpreter from conda and every package, pinned exactly as in the lock file,
from pip. tests/test_environment.py checks the two files agree.
"""
from __future__ import annotations

import sys
from pathlib import Path


def locked_pins(lock_path: Path) -> list[str]:
    """Return the 'name==version' lines of a uv/pip lock file, comments stripped."""
    pins = []
    for line in lock_path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            pins.append(line)
    return pins


def main() -> None:
    pins = locked_pins(Path(sys.argv[1]))
    out = ["# Generated from requirements.lock by tools/make_environment_yml.py; do not edit.",
           "name: vitspeed", "channels:", "  - conda-forge", "dependencies:",
           "  - python=3.11", "  - pip", "  - pip:"]
    out += [f"      - {p}" for p in pins]
    out.append("      - -e .")
    print("\n".join(out))


if __name__ == "__main__":
    main()
