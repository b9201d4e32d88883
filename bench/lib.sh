# Shared by bench/run, bench/audit and bench/postgres (sourced; ROOT is the repository).

# reference_config URL: the reference file adapted for a benchmark, on stdout: the
# development issuer as the only token source (no external IdP), no browser login and no
# audit route (older builds compared against refuse it), generous rate limits, and the
# database at URL (`sqlite://PATH` or `postgres://…`).
reference_config() {
  python3 - "$ROOT/examples/reference/nestflux.toml" "$1" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r"\n\[auth\.session\][^\[]*", "\n", text)
text = re.sub(r"\nissuer = [^\n]*", "", text)
text = text.replace('[[routes]]\nmethod = "GET"\npath = "/api/audit"\naction = "audit"\npermission = "audit:read"\n', "")
for name, key in (("global", "ip"), ("writes", "user")):
    text = re.sub(r"\[rate_limits\.%s\][^\[]*" % name,
                  '[rate_limits.%s]\nkey = "%s"\nper_second = 1000000\nburst = 1000000\n\n' % (name, key), text)
text = text.replace('url = "sqlite://nestflux.db"', 'url = "%s"' % sys.argv[2])
print(text)
PY
}

# to_ms LATENCY: a wrk latency (812.00us, 1.23ms, 2.01s) in ms.
to_ms() {
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000; printf "%.2f", n }'
}
