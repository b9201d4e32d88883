#!/usr/bin/env python3
"""Validates the OpenAPI 3.1 document of each config with openapi-spec-validator (PyPI).

Runs `nestflux openapi --config FILE` for the reference contract and the root file (or the
files given as arguments), validates each document against the OpenAPI 3.1 specification,
and checks that no secret given through the environment ends up in it.

    pip install openapi-spec-validator
    python3 .ci/openapi_check.py [FILE ...]

The binary is $NESTFLUX_BIN, else target/debug/nestflux (built with `cargo build` if missing).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

try:
    from openapi_spec_validator import OpenAPIV31SpecValidator
except ImportError:
    sys.exit("openapi-spec-validator is missing: pip install openapi-spec-validator")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = ["examples/reference/nestflux.toml", "nestflux.toml"]

# Secrets a deployment passes through the environment, set when the file declares the
# table they belong to; none may appear in the document.
SECRETS = {
    "[auth.session]": ("NESTFLUX_AUTH__SESSION__CLIENT_SECRET", "ci-client-secret-4f1d2a"),
    "[encryption]": (
        "NESTFLUX_ENCRYPTION__KEYS",
        "k1:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY=",
    ),
}


def secrets_for(config: str) -> dict[str, str]:
    # Only tables that are declared, not ones mentioned in a comment.
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / config).read_text().splitlines()]
    return {name: value for table, (name, value) in SECRETS.items() if any(l.startswith(table) for l in lines)}


def binary() -> str:
    explicit = os.environ.get("NESTFLUX_BIN")
    if explicit:
        return explicit
    path = ROOT / "target" / "debug" / "nestflux"
    if not path.exists():
        subprocess.run(["cargo", "build", "--quiet"], cwd=ROOT, check=True)
    return str(path)


def document(bin_path: str, config: str, secrets: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NESTFLUX_")}
    env.update(secrets)
    out = subprocess.run(
        [bin_path, "openapi", "--config", config],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        sys.exit(f"{config}: nestflux openapi failed ({out.returncode}):\n{out.stderr}")
    return out.stdout


def check(bin_path: str, config: str) -> list[str]:
    secrets = secrets_for(config)
    text = document(bin_path, config, secrets)
    problems = []
    for name, value in secrets.items():
        for part in value.split(":"):
            if len(part) > 8 and part in text:
                problems.append(f"{config}: the document contains the value of {name}")
    spec = json.loads(text)
    try:
        errors = list(OpenAPIV31SpecValidator(spec).iter_errors())
    except Exception as e:  # a dangling $ref raises instead of reporting
        return problems + [f"{config}: the validator could not read the document: {e}"]
    for e in errors:
        where = "/".join(str(p) for p in e.path) or "(root)"
        problems.append(f"{config}: {where}: {e.message}")
    if spec.get("openapi") != "3.1.0":
        problems.append(f"{config}: openapi is {spec.get('openapi')!r}, not 3.1.0")
    if not errors:
        ops = sum(
            1
            for item in spec.get("paths", {}).values()
            for method in item
            if method in {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
        )
        print(f"ok: {config}: valid OpenAPI 3.1 ({len(spec.get('paths', {}))} paths, {ops} operations)", flush=True)
    return problems


def main() -> int:
    files = sys.argv[1:] or DEFAULT_FILES
    bin_path = binary()
    problems = []
    for config in files:
        problems += check(bin_path, config)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
