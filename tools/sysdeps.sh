#!/usr/bin/env bash
# System packages the tests need beyond Python: Xvfb (a virtual display for napari/Qt), the
# xcb libraries Qt's platform plugin loads, and Debian's Chromium for the book's browser test.
#   tools/sysdeps.sh check     report what is missing; install it when run as root with apt-get
#                              (set MMLIB_NO_APT=1 to only report)
#   tools/sysdeps.sh install   install (root, Debian/Ubuntu)
set -u
PKGS="xvfb xauth chromium libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
 libxcb-render-util0 libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libegl1
 libgl1 libdbus-1-3 libfontconfig1"

missing() {
  local out=""
  command -v Xvfb >/dev/null || out="$out xvfb"
  command -v xauth >/dev/null || out="$out xauth"
  command -v chromium >/dev/null || out="$out chromium"
  for lib in libxkbcommon-x11.so.0 libxcb-cursor.so.0 libxcb-icccm.so.4 libEGL.so.1; do
    ldconfig -p 2>/dev/null | grep -q "$lib" || out="$out $lib"
  done
  echo "$out"
}

install() {
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq $PKGS >/dev/null
}

case "${1:-check}" in
  install) install ;;
  check)
    m=$(missing)
    if [ -z "$m" ]; then echo "system packages: ok (Xvfb, Qt xcb libraries, chromium)"; exit 0; fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && [ -z "${MMLIB_NO_APT:-}" ]; then
      echo "system packages missing:$m; installing with apt-get"
      install || { echo "apt-get failed; napari and browser tests will be skipped"; exit 0; }
    else
      echo "system packages missing:$m"
      echo "  install them with: sudo apt-get install $(echo $PKGS)"
      echo "  (until then the napari and browser tests are skipped, each saying why)"
    fi ;;
  *) echo "usage: $0 [check|install]" >&2; exit 2 ;;
esac
