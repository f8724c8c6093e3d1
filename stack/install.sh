#!/usr/bin/env bash
# Installs what the local stack needs and is missing: Debian packages, the Java
# side from Maven Central, and the Python package into .venv. Safe to re-run:
# every step checks first, and downloads are cached under .cache/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=$root/.cache
mkdir -p "$cache"

say() { printf '[install] %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root for: $*  (run as root or install sudo)"; exit 1
  fi
}

# --- Debian packages -------------------------------------------------------
missing=()
need_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed' || missing+=("$1"); }
# prometheus*: the monitoring components; chromium: the console's headless page test.
for p in postgresql postgresql-contrib redis-server nginx libnginx-mod-stream kcat docker-compose curl python3-venv wrk \
    prometheus prometheus-postgres-exporter prometheus-redis-exporter chromium; do
  need_pkg "$p"
done
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
  say "apt-get install ${missing[*]}"
  as_root apt-get update -qq
  # policy-rc.d keeps Debian from starting its own postgres/redis/nginx/prometheus on the
  # ports the stack wants (it does where systemd or sysv-rc is active).
  as_root sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  as_root rm -f /usr/sbin/policy-rc.d
fi

# --- Java: Kafka broker, Kafka Connect, Debezium plugin, JMX exporter ------
java_stamp=$cache/java/.stamp-$(sha1sum stack/pom.xml | cut -c1-12)
if [ ! -f "$java_stamp" ]; then
  say "fetching Kafka, Kafka Connect and Debezium jars (Maven Central)"
  rm -rf "$cache/java"
  mvn_args=(-q -B -f stack/pom.xml "-Dmaven.repo.local=$cache/m2")
  mvn "${mvn_args[@]}" dependency:copy-dependencies "-DoutputDirectory=$cache/java/lib"
  # Markers beside the output: with them elsewhere a wiped plugins/ is never refilled.
  mvn "${mvn_args[@]}" dependency:unpack "-DoutputDirectory=$cache/java/plugins" \
    "-DmarkersDirectory=$cache/java/markers"
  # The Prometheus JMX exporter, loaded by Kafka and Connect as a javaagent.
  mvn "${mvn_args[@]}" dependency:copy@jmx-agent "-DoutputDirectory=$cache/java/agents"
  touch "$java_stamp"
fi

# --- Python ----------------------------------------------------------------
py_stamp=.venv/.stamp-$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$py_stamp" ]; then
  say "installing the Python package and its pinned dependencies into .venv"
  [ -x .venv/bin/python ] || python3 -m venv .venv
  export PIP_CACHE_DIR=$cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  .venv/bin/pip check >/dev/null
  rm -f .venv/.stamp-*
  touch "$py_stamp"
fi

# --- kaskade: the Kafka UI in the terminal (stack/kafka-ui) -----------------
# A virtualenv of its own: its textual, confluent-kafka and grpcio-tools must never
# meet Faust's dependencies in .venv. Under .cache/ (ignored), so `make clean` keeps it.
# textual draws the screens and confluent-kafka talks to the broker: pinned with kaskade
# (it asks only textual>=8.2,<9 and confluent-kafka>=2.15), as resolved together.
kaskade_pins=(kaskade==5.1.0 textual==8.2.8 confluent-kafka==2.16.2)
kaskade_venv=$cache/kaskade-venv
kaskade_stamp=$kaskade_venv/.stamp-$(echo "${kaskade_pins[*]}" | sha1sum | cut -c1-12)
if [ ! -f "$kaskade_stamp" ]; then
  say "installing ${kaskade_pins[0]} (Kafka UI in the terminal) into .cache/kaskade-venv"
  [ -x "$kaskade_venv/bin/python" ] || python3 -m venv "$kaskade_venv"
  export PIP_CACHE_DIR=$cache/pip PIP_DISABLE_PIP_VERSION_CHECK=1
  "$kaskade_venv/bin/pip" install -q "${kaskade_pins[@]}"
  "$kaskade_venv/bin/pip" check >/dev/null
  rm -f "$kaskade_venv"/.stamp-*
  touch "$kaskade_stamp"
fi
say "everything installed"
