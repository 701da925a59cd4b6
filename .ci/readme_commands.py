"""Print the README's two Quick start commands, one per line: the main job, then the tests.

CI runs exactly these lines, so the README cannot drift from what CI proves. The commands are
the non-comment lines of the first ```bash block under "## Quick start".
"""

import re
import sys
from pathlib import Path

readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
section = readme.split("\n## Quick start", 1)[1].split("\n## ", 1)[0]
block = re.search(r"```bash\n(.*?)```", section, re.S)
commands = [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")] if block else []
if len(commands) != 2 or not commands[0].endswith("sa2crq demo"):
    sys.exit(f"README Quick start: expected two commands, the first ending in `sa2crq demo`; found {commands}")
print("\n".join(commands))
