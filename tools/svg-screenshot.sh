#!/usr/bin/env bash
# svg-screenshot.sh FILE.svg [OUT.png] - renders an SVG in headless Chromium, takes a screenshot
# and checks that it is not blank (more than a handful of distinct colours, and a fair share of
# non-background pixels). Exit 0 = rendered and not blank; 1 = blank or failed; 77 = no Chromium.
set -euo pipefail
svg=$(realpath "$1")
out=${2:-${svg%.svg}.png}
chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[[ -n "$chrome" ]] || { echo "svg-screenshot: no chromium installed (apt-get install chromium)" >&2; exit 77; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
timeout 60 "$chrome" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --window-size=1000,640 --screenshot="$out" "file://$svg" >/dev/null 2>&1 || true
[[ -s "$out" ]] || { echo "svg-screenshot: chromium wrote no screenshot" >&2; exit 1; }
python3 - "$out" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w = 8, b"", 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
        assert depth == 8 and interlace == 0 and ctype in (2, 6), "unsupported PNG layout"
        bpp = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw, stride = zlib.decompress(idat), w * bpp
prev, rows = bytearray(stride), []
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], (prev[i - bpp] if i >= bpp else 0)
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    rows.append(bytes(line)); prev = line
colours, bg, other = set(), rows[0][:3], 0
for r in rows[::4]:
    for x in range(0, stride, bpp * 4):
        px = r[x:x + 3]; colours.add(px)
        other += px != bg
total = len(rows[::4]) * len(range(0, stride, bpp * 4))
print(f"svg-screenshot: {w}x{h}, {len(colours)} colours, {100 * other / total:.1f}% non-background")
sys.exit(0 if len(colours) > 8 and other / total > 0.01 else 1)
PY
