#!/usr/bin/env bash
# Renders packaging/convoy.svg into the hicolor PNG sizes the desktop entry uses.
# Needs ImageMagick (`apt-get install -y imagemagick`); run from the repository root.
set -euo pipefail
for s in 16 24 32 48 64 128 256 512; do
  mkdir -p "packaging/icons/hicolor/${s}x${s}/apps"
  /usr/bin/convert -background none -density 300 packaging/convoy.svg -resize "${s}x${s}" \
    "packaging/icons/hicolor/${s}x${s}/apps/convoy.png"
done
