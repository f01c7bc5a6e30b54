#!/bin/sh
# Makes assets/screenshots/crust-chat-gui.png: two real chat-core profiles
# (Alice and Bob) befriend each other over loopback and chat
# (chat-gui/examples/demo_profiles.rs), then the real crust-chat-gui opens
# Alice's profile, with the conversation with Bob, in Xvfb, and the screen
# is captured with xwd and netpbm.
#
#   assets/screenshots/make-gui.sh
#
# Needs Xvfb, xwd and netpbm (Debian: xvfb x11-apps netpbm). Builds with
# the dev profile (set CARGO_PROFILE=release for a release build).
set -eu
cd "$(dirname "$0")/../.."
profile=${CARGO_PROFILE:-dev}
target=${CARGO_TARGET_DIR:-target}
case $profile in dev) dir=debug ;; *) dir=$profile ;; esac
cargo build --profile "$profile" -p chat-gui --bin crust-chat-gui --example demo_profiles
tmp=$(mktemp -d)
xvfb=""
cleanup() {
    [ -n "$xvfb" ] && kill "$xvfb" 2>/dev/null
    [ -n "${gui:-}" ] && kill "$gui" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
"$target/$dir/examples/demo_profiles" "$tmp/profiles" >/dev/null
n=150
while [ -e "/tmp/.X11-unix/X$n" ] || [ -e "/tmp/.X$n-lock" ]; do n=$((n + 1)); done
Xvfb ":$n" -screen 0 900x620x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
i=0
while [ ! -e "/tmp/.X11-unix/X$n" ]; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "Xvfb did not start" >&2; exit 1; }
    sleep 0.1
done
DISPLAY=":$n" HOME="$tmp/home" XDG_DATA_HOME="$tmp/home/data" \
    XDG_CONFIG_HOME="$tmp/home/config" LIBGL_ALWAYS_SOFTWARE=1 \
    "$target/$dir/crust-chat-gui" --profile "$tmp/profiles/alice" \
    --listen 127.0.0.1:0 --no-upnp --open Bob 2>/dev/null &
gui=$!
sleep "${WAIT:-5}"
out=assets/screenshots/crust-chat-gui.png
xwd -root -silent -display ":$n" | xwdtopnm 2>/dev/null | pnmtopng -compression 9 >"$out"
echo "$out: $(wc -c <"$out") bytes"
