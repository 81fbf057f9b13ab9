"""Print one of the README's two set-up commands: `tests` (the bash block that runs pytest) or
`main` (the one that runs `fimaudit demo`). Exits non-zero unless exactly one block matches."""

import pathlib
import re
import sys

text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
blocks = [b.strip() for b in re.findall(r"```bash\n(.*?)\n```", text, flags=re.S)]
marker = {"tests": "pytest", "main": "fimaudit demo"}[sys.argv[1]]
found = [b for b in blocks if marker in b]
if len(found) != 1:
    sys.exit(f"README.md: expected one bash block containing {marker!r}, found {len(found)}")
print(found[0])
