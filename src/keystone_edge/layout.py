"""Where the agent keeps things on disk (design.md, "Disk layout").

```
<root>/bin/  <root>/etc/agent.toml  <root>/logs/  <root>/run/agent.sock
<root>/runtime/components/<name>/<version>/{recipe.json,artifacts/}
<root>/runtime/artifacts/<sha256>/  <root>/runtime/work/<component>/
<root>/releases/keystone-<semver>/  <root>/current -> releases/...
<root>/state/keystone.db
```

The root defaults to ``/opt/keystone`` for root and ``~/.local/share/keystone`` for
everyone else, so the agent runs without privileges out of the box.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Layout", "default_root"]


def default_root() -> Path:
    if os.geteuid() == 0:
        return Path("/opt/keystone")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "keystone"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def config_file(self) -> Path:
        return self.etc / "agent.toml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def socket(self) -> Path:
        return self.run / "agent.sock"

    @property
    def state_db(self) -> Path:
        return self.root / "state" / "keystone.db"

    @property
    def components(self) -> Path:
        return self.root / "runtime" / "components"

    @property
    def artifacts(self) -> Path:
        return self.root / "runtime" / "artifacts"

    @property
    def work(self) -> Path:
        return self.root / "runtime" / "work"

    def component_version(self, name: str, version: str) -> Path:
        return self.components / name / version

    def component_recipe(self, name: str, version: str) -> Path:
        return self.component_version(name, version) / "recipe.json"

    def component_artifacts(self, name: str, version: str) -> Path:
        return self.component_version(name, version) / "artifacts"

    def component_work(self, name: str) -> Path:
        return self.work / name

    def component_log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def create(self) -> None:
        for path in (self.etc, self.logs, self.run, self.state_db.parent):
            path.mkdir(parents=True, exist_ok=True)
        for path in (self.components, self.artifacts, self.work):
            path.mkdir(parents=True, exist_ok=True)
        # The socket directory is private to the agent (and its admin group). Components
        # may run as other users (run_as): the state database, the agent's configuration
        # and every component's logs are not theirs to read. runtime/ stays traversable:
        # their artifacts and work directories are in there.
        self.run.chmod(0o750)
        self.state_db.parent.chmod(0o700)
        self.etc.chmod(0o750)
        self.logs.chmod(0o750)
