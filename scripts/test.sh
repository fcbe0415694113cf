#!/usr/bin/env bash
# Installs everything the test suite needs (system packages, a virtualenv with
# the test extras, the Node client's packages) and runs the whole suite:
# ruff, buf lint, then pytest (whose tests/unit/test_proto_compat.py runs
# buf breaking against the release in protos/RELEASE). Run as root on Debian
# with Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v node >/dev/null || missing+=(nodejs npm)
command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
# A real Prometheus scrapes Capstan, and a real headless Chromium opens the dashboard.
command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
# The Go client: its generator plugins (for the drift test) and, built in
# GOPATH mode from /usr/share/gocode, grpc and protobuf. protobuf-1-5 (a shim
# over google.golang.org/protobuf) replaces 1-3, which cannot marshal the
# generated messages (clients/go/README.md).
command -v go >/dev/null || missing+=(golang-go)
command -v protoc-gen-go >/dev/null || missing+=(protoc-gen-go)
command -v protoc-gen-go-grpc >/dev/null || missing+=(protoc-gen-go-grpc)
for package in golang-google-grpc-dev golang-google-protobuf-dev golang-google-genproto-dev \
    golang-github-golang-protobuf-1-5-dev; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# The Ruby client is generated (buf.gen.yaml) and tested with Debian's protoc and grpc.
dpkg -s protobuf-compiler >/dev/null 2>&1 || missing+=(protobuf-compiler)
dpkg -s ruby-grpc-tools >/dev/null 2>&1 || missing+=(ruby-grpc ruby-grpc-tools)
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]"
# The scripted executor, a test plugin found by entry point like any other.
.venv/bin/pip install -q --disable-pip-version-check -e tests/plugins/scripted
# The Node client's pinned tree: its gRPC libraries, protoc-gen-es and tsc.
(cd clients/node && npm ci --no-audit --no-fund --silent)

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/buf lint
.venv/bin/python -m pytest "$@"
