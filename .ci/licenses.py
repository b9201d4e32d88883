#!/usr/bin/env python3
"""Fails if any crate linked into nestflux has a licence that is not permissive.

NestFlux is MIT OR Apache-2.0; a GPL crate (actix-governor, for one) would put the whole
binary under GPL. Every dependency's SPDX expression must allow a permissive choice.
"""
import json, re, subprocess, sys

PERMISSIVE = {"MIT", "Apache-2.0", "Apache-2.0 WITH LLVM-exception", "BSD-2-Clause", "BSD-3-Clause",
              "ISC", "Zlib", "Unicode-3.0", "Unicode-DFS-2016", "CC0-1.0", "MPL-2.0", "0BSD",
              "BSL-1.0", "Unlicense", "OpenSSL", "CDLA-Permissive-2.0", "MIT-0", "PostgreSQL"}

def acceptable(expr: str) -> bool:
    # An OR-alternative is fine if one side is fully permissive; AND needs both.
    for alt in re.split(r"\s+OR\s+", expr.replace("/", " OR ").replace("(", "").replace(")", "")):
        parts = [p.strip() for p in re.split(r"\s+AND\s+", alt)]
        if all(p in PERMISSIVE for p in parts):
            return True
    return False

meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--all-features", "--locked"]))
bad = []
for pkg in meta["packages"]:
    lic = pkg.get("license") or ""
    if pkg["name"] == "nestflux":
        continue
    if not acceptable(lic):
        bad.append(f'{pkg["name"]} {pkg["version"]}: {lic or "no licence field"}')
if bad:
    print("non-permissive or unknown licences:\n  " + "\n  ".join(bad))
    sys.exit(1)
print(f"licences: {len(meta['packages']) - 1} crates, all permissive")
