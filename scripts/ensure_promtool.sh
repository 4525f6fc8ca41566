#!/usr/bin/env bash
# tests/unit/observability/test_alert_rules.py checks deploy/prometheus/ with `promtool` (check
# rules, check config, test rules). Install it if it is missing: Debian's `prometheus` package
# ships it. The package also holds the Prometheus server and its systemd unit; it must not be
# left running (it would listen on 9090), so services are kept from starting during the install
# (policy-rc.d) and the unit is stopped and disabled afterwards if it started anyway.
set -euo pipefail
if command -v promtool >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "error: promtool is missing and there is no apt-get to install it;" \
       "install Prometheus' promtool (2.42 or newer) on PATH" >&2
  exit 1
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  SUDO=(sudo)
fi

# Keep the package's postinst from starting the server, unless a policy is already in place
# (then leave that file alone).
policy=/usr/sbin/policy-rc.d
added_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
  "${SUDO[@]}" chmod 755 "$policy"
  added_policy=true
fi
cleanup() {
  if [ "$added_policy" = true ]; then
    "${SUDO[@]}" rm -f "$policy"
  fi
}
trap cleanup EXIT

echo "installing promtool (Debian package prometheus, without recommended packages)" >&2
install() {
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends prometheus
}
if ! install; then
  "${SUDO[@]}" apt-get update -q
  install
fi

# Whatever the policy did, no Prometheus server stays behind, nor starts at the next boot
# (without a running systemd, `disable` only removes the unit's links).
if command -v systemctl >/dev/null; then
  if [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    "${SUDO[@]}" systemctl disable prometheus.service >/dev/null 2>&1 || true
  fi
fi
if command -v pgrep >/dev/null && pgrep -x prometheus >/dev/null; then
  "${SUDO[@]}" service prometheus stop >/dev/null 2>&1 || true
fi

if ! command -v promtool >/dev/null; then
  echo "error: installed the prometheus package but promtool is not on PATH" >&2
  exit 1
fi
promtool --version 2>&1 | head -n 1 >&2
