#!/usr/bin/env python3
"""scripts/compose-validate.py — validate docker-compose.yml without a container engine.

Run by scripts/docker-validate.sh with the python of .tools/venv (compose-spec, PyYAML):

    compose-validate.py [docker-compose.yml]

1. Interpolates ${VAR}, ${VAR:-default} and ${VAR-default} the way `docker compose` does (from
   the environment, else the default), then parses and validates the file with compose-spec (Rust
   bindings of the Compose specification: unknown keys, wrong types, bad durations, port syntax,
   unknown depends_on conditions all fail), with YAML merge keys (<<:) applied.
2. Checks the stack the README documents: postgres, redis, mailpit, migrate, server and worker
   exist; migrate runs `migrate up`; server and worker wait for migrate to complete successfully
   and for a healthy Redis; every `service_healthy` dependency has a health check; the tally
   services share one image built from this repository's Dockerfile; the server publishes 8080
   and has a health check; server and worker get DATABASE_URL and REDIS_URL, the worker SMTP_URL
   pointing at the mail catcher; stop_grace_period covers the 20 s drain.
Prints one line per problem and exits 1 if there is any.
"""

import os
import re
import sys

import compose_spec
import yaml

problems = []


def problem(message):
    problems.append(message)


def interpolate(text):
    def value(match):
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        current = os.environ.get(name)
        if op == ":-":
            return current if current else default
        if op == "-":
            return current if current is not None else default
        return current or ""

    text = text.replace("$$", "\0")
    text = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}", value, text)
    return text.replace("\0", "$")


def seconds(duration):
    return compose_spec.parse_duration(duration) if duration else 10


def main(argv):
    path = argv[0] if argv else "docker-compose.yml"
    with open(path, encoding="utf-8") as f:
        text = interpolate(f.read())
    try:
        compose = compose_spec.PyOptions(apply_merge=True).from_yaml(text)
        compose.validate()
    except ValueError as err:
        print(f"compose-validate.py: FAIL {path}: {err}", file=sys.stderr)
        return 1

    # The checks below read the plain data (merge keys resolved by PyYAML's loader).
    data = yaml.safe_load(text)
    services = data.get("services") or {}
    for name in ("postgres", "redis", "mailpit", "migrate", "server", "worker"):
        if name not in services:
            problem(f"service {name!r} is missing")
    if problems:
        return report(path)

    tally = ("migrate", "server", "worker")
    images = {services[s].get("image") for s in tally}
    if len(images) != 1 or None in images:
        problem(f"migrate, server and worker must share one image, got {images}")
    for s in tally:
        build = services[s].get("build") or {}
        context = build.get("context") if isinstance(build, dict) else build
        if context not in (".", "./"):
            problem(f"{s}: must build from this repository (build.context .)")
    if services["migrate"].get("command") != ["migrate", "up"]:
        problem("migrate: command must be [migrate, up]")
    if services["migrate"].get("restart", "no") != "no":
        problem("migrate: a one-shot service must not restart")
    if services["server"].get("command") != ["serve"]:
        problem("server: command must be [serve]")
    if services["worker"].get("command") != ["worker"]:
        problem("worker: command must be [worker]")

    for s, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            if dep not in services:
                problem(f"{s}: depends on unknown service {dep!r}")
                continue
            if cond.get("condition") == "service_healthy" and not services[dep].get("healthcheck"):
                problem(f"{s}: waits for {dep} to be healthy, but {dep} has no healthcheck")
    for s in ("server", "worker"):
        deps = services[s].get("depends_on") or {}
        if (deps.get("migrate") or {}).get("condition") != "service_completed_successfully":
            problem(f"{s}: must wait for migrate with service_completed_successfully")
        if (deps.get("redis") or {}).get("condition") != "service_healthy":
            problem(f"{s}: must wait for a healthy redis")
        env = services[s].get("environment") or {}
        for var in ("DATABASE_URL", "REDIS_URL"):
            if not env.get(var):
                problem(f"{s}: {var} is not set")
        if seconds(services[s].get("stop_grace_period")) <= 20:
            problem(f"{s}: stop_grace_period must exceed the 20 s drain (TALLY_SHUTDOWN_DRAIN_SECS)")
    if "mailpit:1025" not in str((services["worker"].get("environment") or {}).get("SMTP_URL")):
        problem("worker: SMTP_URL must point at mailpit:1025")
    if not services["server"].get("healthcheck"):
        problem("server: needs a healthcheck")
    if not any(str(p).endswith(":8080") for p in services["server"].get("ports") or []):
        problem("server: must publish port 8080")
    if not any(str(p).endswith(":8025") for p in services["mailpit"].get("ports") or []):
        problem("mailpit: must publish its web UI (8025)")
    return report(path)


def report(path):
    for p in problems:
        print(f"compose-validate.py: FAIL {path}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"compose-validate.py: ok   {path} (compose-spec, stack checks)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
