"""pyproject.toml's package list covers every package folder (it is written by hand)."""
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"bytessm": "bytessm", "kernels": "bytessm.kernels", "tasks": "bytessm.tasks",
          "configs": "bytessm.configs"}


def test_every_package_folder_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert found <= listed, f"add to pyproject.toml packages: {sorted(found - listed)}"


def test_configs_ship_inside_the_package():
    from importlib import resources

    root = resources.files("bytessm.configs")
    assert (root / "train.yaml").is_file() and (root / "task" / "synthetic.yaml").is_file()
