"""Prints the README's configuration reference: one row per key of the proxy's own key table
(`metrics-proxy --config-keys`: section, key, default, live or restart), with the meaning
taken from the comment above the key in proxy.conf. The README holds this output between
<!-- config-reference:start --> and <!-- config-reference:end -->; a test keeps them equal.
Fails, naming the key, when proxy.conf and the table disagree: a key in one and not the
other, or a default proxy.conf shows differently. A line of proxy.conf that reads the
environment (`${VAR:-value}`) may set another value than the default; the row shows both.
Usage: metrics-proxy --config-keys | python3 Tests/Fixtures/config_reference.py proxy.conf -"""
import re
import sys

conf_path, keys_path = sys.argv[1], sys.argv[2]
documented, section, comment = {}, "", []
for raw in open(conf_path).read().splitlines():
    line = raw.strip()
    if line.startswith("[") and line.endswith("]"):
        section, comment = line[1:-1], []
    elif line.startswith("#"):
        comment.append(line.lstrip("#").strip())
    elif "=" in line and section:
        key, _, value = line.partition("=")
        value = value.strip()
        env = None
        m = re.fullmatch(r"\$\{(\w+):-(.*)\}", value)
        if m:
            env, value = m.group(1), m.group(2)
        documented[(section, key.strip())] = (value, env, " ".join(comment).replace("|", "\\|"))
        comment = []
    elif not line:
        comment = []

table = [l.split("\t") for l in (sys.stdin if keys_path == "-" else open(keys_path)).read().splitlines() if l]
errors = []
for section, key, default, reload in table:
    if (section, key) not in documented:
        errors.append(f"[{section}] {key} is in the key table but not in {conf_path}")
    elif documented[(section, key)][0] != default and not documented[(section, key)][1]:
        errors.append(f"[{section}] {key}: {conf_path} shows {documented[(section, key)][0]!r}, the table's default is {default!r}")
for section, key in documented:
    if not any(t[0] == section and t[1] == key for t in table):
        errors.append(f"[{section}] {key} is in {conf_path} but not in the key table")
if errors:
    sys.exit("\n".join(errors))

print("| key | default | on SIGHUP | meaning |")
print("|---|---|---|---|")
for section, key, default, reload in table:
    value, env, text = documented[(section, key)]
    shown = f"`{default}`" if default else "(empty)"
    if env:
        shown += f" (env `{env}`)" if value == default else f"; proxy.conf: `{value}` unless env `{env}` is set"
    print(f"| `[{section}] {key}` | {shown} | {'applies' if reload == 'live' else 'restart'} | {text} |")
