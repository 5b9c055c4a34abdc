"""Prints the README's configuration reference, generated from proxy.conf: one row per key
with its default and the comment above it. The README holds this output between
<!-- config-reference:start --> and <!-- config-reference:end -->; a test keeps them equal.
Usage: python3 Tests/Fixtures/config_reference.py proxy.conf"""
import re
import sys

rows, section, comment = [], "", []
for raw in open(sys.argv[1]).read().splitlines():
    line = raw.strip()
    if line.startswith("[") and line.endswith("]"):
        section, comment = line[1:-1], []
    elif line.startswith("#"):
        comment.append(line.lstrip("#").strip())
    elif "=" in line and section:
        key, _, value = line.partition("=")
        value = value.strip()
        m = re.fullmatch(r"\$\{(\w+):-(.*)\}", value)
        if m:
            default = (f"`{m.group(2)}`" if m.group(2) else "(empty)") + f" (env `{m.group(1)}`)"
        else:
            default = f"`{value}`" if value else "(empty)"
        text = " ".join(comment).replace("|", "\\|")
        rows.append(f"| `[{section}] {key.strip()}` | {default} | {text} |")
        comment = []
    elif not line:
        comment = []
print("| key | default | meaning |")
print("|---|---|---|")
print("\n".join(rows))
