"""Where advx's configs (`conf/`) and paper claims (`experiments/`) are, in a checkout and in an installed wheel.

Both dirs live once, at the repository's top level. A wheel carries a copy under `advx/_resources/` (setup.py
copies every YAML file of conf/, and experiments' README.md and <paper>/paper.yaml files, at build time). Lookup:
1. `ADVX_CONF_DIR` (conf only), used as given;
2. in a checkout (`src/advx` next to pyproject.toml: editable installs, PYTHONPATH=src), the top-level dirs, so
   edits to conf/ are seen at once;
3. the copy shipped inside the installed package;
4. neither: one-line `ConfigError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from advx.errors import ConfigError

PACKAGE = Path(__file__).resolve().parent
SHIPPED = PACKAGE / "_resources"  # filled by setup.py's build_py in wheels; absent in a checkout
CHECKOUT = PACKAGE.parents[1]  # <repo>/src/advx -> <repo>


def _in_checkout() -> bool:
    return PACKAGE.parent.name == "src" and (CHECKOUT / "pyproject.toml").is_file()


def _locate(name: str) -> Path:
    source, shipped = CHECKOUT / name, SHIPPED / name
    for candidate in (source, shipped) if _in_checkout() else (shipped, source):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"advx's {name}/ dir not found: neither {source} (checkout) nor {shipped} (installed); "
                      "reinstall advx")


def conf_dir() -> Path:
    """The Hydra config dir: $ADVX_CONF_DIR, else the checkout's conf/, else the installed copy."""
    override = os.environ.get("ADVX_CONF_DIR")
    return Path(override) if override else _locate("conf")


def experiments_dir() -> Path:
    """The dir of `<paper>/paper.yaml` claim files: the checkout's experiments/, else the installed copy."""
    return _locate("experiments")
