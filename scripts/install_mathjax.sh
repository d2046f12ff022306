#!/usr/bin/env bash
# Put MathJax 3 into .mathjax/mathjax/ (gitignored) so the HTML book renders its maths
# with no network: _config.yml copies that folder into the build (html_extra_path) and
# points sphinx's mathjax_path at it. The tarball comes from the npm registry through
# `npm pack`, pinned by version and checked against the registry's sha512 integrity.
# Idempotent: does nothing when the pinned version is already there.
set -euo pipefail

VERSION=3.2.2
SHA512=06df9249553c7811b6ef30a155ec0e89c62ced7b1db78d2a9b8f94a47c97ee4d3f3bd36588f73ec7bee4d7f144b0fb2328f64626fb5164cd6f3be81e5b43a11b
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/.mathjax/mathjax"
STAMP="$DEST/.version"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$VERSION" ]; then
    echo "MathJax $VERSION already in $DEST"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm not found; install Node.js and npm (Debian: apt-get install npm)" >&2
    exit 1
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "mathjax@$VERSION" >/dev/null)
TARBALL="$WORK/mathjax-$VERSION.tgz"
if ! echo "$SHA512  $TARBALL" | sha512sum --check --status; then
    echo "error: $TARBALL does not match the pinned sha512 of mathjax@$VERSION" >&2
    exit 1
fi
tar -xzf "$TARBALL" -C "$WORK"
rm -rf "$DEST"
mkdir -p "$DEST"
# es5/ holds the browser bundles (tex-mml-chtml.js), their components and the fonts.
cp -r "$WORK/package/es5/." "$DEST/"
cp "$WORK/package/LICENSE" "$DEST/LICENSE"
echo "$VERSION" >"$STAMP"
echo "MathJax $VERSION installed in $DEST"
