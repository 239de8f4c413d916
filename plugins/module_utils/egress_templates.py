# -*- coding: utf-8 -*-
# Copyright: (c) 2026, homelab.pixels contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Jinja2 templates of the files the egress policy installs inside a sandbox.

Strings rather than role files: modules run from AnsiballZ payloads, which carry module_utils
but not role directories.
"""

from __future__ import annotations

HEADER = "Rendered by homelab.pixels (pixels_egress); changes are overwritten."

# Root's own directory for the lock, the state of a failed load and temporary files. The lock
# used to be a world-readable file under /run, which pixel could open and hold with flock (a read
# handle is enough), freezing every change of the policy. /run is root's, but the directory is
# checked anyway: anything but a root-owned directory (a link, a file) is replaced.
STATE_DIR_SH = """\
state_dir={{ state_dir }}
if [ -L "$state_dir" ] || { [ -e "$state_dir" ] && [ "$(stat -c %F:%u "$state_dir")" != "directory:0" ]; }; then
    echo "pixels-egress: $state_dir was not root's directory ($(stat -c '%F, uid %u' "$state_dir")): replaced" >&2
    rm -rf "$state_dir"
fi
mkdir -p "$state_dir"
chmod 0700 "$state_dir"
"""

# take_lock SECONDS: fd 9 on the lock, waiting at most SECONDS; exit 5 naming the holder.
LOCK_SH = """\
lock_holders() {  # PIDs holding the lock (from /proc/locks, by inode), with their command
    ino=$(stat -c %i "$state_dir/lock")
    out=""
    for pid in $(awk -v ino="$ino" '$2 != "->" { n = split($6, f, ":"); if (f[n] == ino) print $5 }' /proc/locks | sort -u); do
        out="$out${out:+, }PID $pid ($(tr '\\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | sed 's/ *$//' | cut -c1-160))"
    done
    echo "${out:-an unknown process}"
}
take_lock() {
    exec 9>"$state_dir/lock"
    if ! flock -w "$1" 9; then
        echo "pixels-egress: the policy's lock $state_dir/lock stayed held for $1 s by $(lock_holders);" \\
            "nothing was changed: wait for it, or end that process" >&2
        exit 5
    fi
}
"""

# Loaded whole (one transaction) at boot and by the installer. Resolved addresses and the
# resolvers live in dynamic.nft, which the refresh script rewrites and swaps on its own.
RULES = """\
# """ + HEADER + """
table inet {{ table }}
delete table inet {{ table }}
table inet {{ table }} {
    set resolvers4 { type ipv4_addr; }
    set resolvers6 { type ipv6_addr; }
    set cidr4 {
        type ipv4_addr; flags interval; auto-merge;
{% if cidr4 %}
        elements = { {{ cidr4 | join(", ") }} }
{% endif %}
    }
    set cidr6 {
        type ipv6_addr; flags interval; auto-merge;
{% if cidr6 %}
        elements = { {{ cidr6 | join(", ") }} }
{% endif %}
    }
    set domain4 { type ipv4_addr; }
    set domain6 { type ipv6_addr; }

    chain allowed {
        ct state established,related accept
        ct state invalid drop
        ip daddr { {{ dhcp4 | join(", ") }} } udp sport 68 udp dport 67 accept comment "DHCPv4 to the network's server and broadcast only"
        ip6 daddr ff02::1:2 udp sport 546 udp dport 547 accept comment "DHCPv6"
        icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert, mld-listener-report, mld2-listener-report } accept
        ip daddr @resolvers4 meta l4proto { tcp, udp } th dport 53 accept comment "DNS to the sandbox's resolvers only"
        ip6 daddr @resolvers6 meta l4proto { tcp, udp } th dport 53 accept comment "DNS to the sandbox's resolvers only"
        ip daddr @cidr4 accept
        ip daddr @domain4 accept
        ip6 daddr @cidr6 accept
        ip6 daddr @domain6 accept
        counter comment "refused"
        limit rate 10/minute burst 5 packets log prefix "pixels-egress drop: " level warn
        # Refused at once rather than left to time out (the chains' policy is drop).
        meta l4proto tcp reject with tcp reset
        reject with icmpx admin-prohibited
    }

    chain output {
        type filter hook output priority filter; policy drop;
        oif "lo" accept
        jump allowed
    }

    # Nested containers or VMs of the agent get the same policy.
    chain forward {
        type filter hook forward priority filter; policy drop;
        jump allowed
    }
}
include "{{ egress_dir }}/dynamic.nft"
"""

# Resolves the domains with the sandbox's own resolvers, in parallel with a timeout each, and
# swaps the address sets in one nft transaction. Reloads the whole table when it is missing.
REFRESH = """\
#!/bin/sh
# """ + HEADER + """
# Resolve the allowed domains and swap the nftables address sets atomically.
# Usage: pixels-egress-refresh [--load] [--reuse] [--timeout SECONDS] [--lock-wait SECONDS] [--locked]
#   --load: reload the whole table; --reuse: look up only domains the last run did not see;
#   --lock-wait: how long to wait for another run's lock; --locked: the caller holds it (fd 9).
set -u
load=0
reuse=0
locked=0
lookup_timeout={{ refresh_timeout }}
lock_wait={{ lock_timeout }}
usage() { echo "usage: pixels-egress-refresh [--load] [--reuse] [--timeout SECONDS] [--lock-wait SECONDS] [--locked]" >&2; exit 2; }
while [ "$#" -gt 0 ]; do
    case "$1" in
        --load) load=1 ;;
        --reuse) reuse=1 ;;
        --locked) locked=1 ;;
        --timeout) [ "$#" -ge 2 ] || usage; lookup_timeout=$2; shift ;;
        --lock-wait) [ "$#" -ge 2 ] || usage; lock_wait=$2; shift ;;
        *) usage ;;
    esac
    shift
done
PATH=/usr/sbin:/usr/bin:/sbin:/bin
dir={{ egress_dir }}
table={{ table }}
umask 022
""" + STATE_DIR_SH + LOCK_SH + """\
[ "$locked" = 1 ] || take_lock "$lock_wait"
[ -e "$dir/rules.nft" ] || exit 0  # the policy was removed (mode unrestricted)
for tool in nft getent timeout; do
    command -v "$tool" >/dev/null || { echo "$tool is missing in the sandbox: install it (nft: package nftables)" >&2; exit 1; }
done
tmp=$(mktemp -d "$state_dir/refresh.XXXXXX") || exit 1
# Temporary files go on every exit, a signal included.
trap 'rm -rf "$tmp" "$dir/dynamic.nft.new" "$dir/state.json.new"' EXIT
trap 'exit 129' HUP INT TERM

# The upstream resolvers the sandbox uses (systemd-resolved's list, else resolv.conf).
upstream_resolvers() {
    for conf in /run/systemd/resolve/resolv.conf /etc/resolv.conf; do
        [ -r "$conf" ] || continue
        found=$(awk '$1 == "nameserver" { sub(/%.*/, "", $2); print $2 }' "$conf" | grep -v -E '^(127\\.|::1$)' | sort -u)
        [ -n "$found" ] && { echo "$found"; return; }
    done
}
resolvers=$(upstream_resolvers)
# Just after boot resolved can be running before DHCP handed it servers: an empty set would
# block DNS until the next refresh, so wait for them a little.
waited=0
while [ -z "$resolvers" ] && [ "$waited" -lt 20 ] && systemctl is-active --quiet systemd-resolved 2>/dev/null; do
    sleep 0.5
    waited=$((waited + 1))
    resolvers=$(upstream_resolvers)
done
r4=$(printf '%s\\n' "$resolvers" | grep -v : | grep .)
r6=$(printf '%s\\n' "$resolvers" | grep : )

elements() {  # set name, addresses (one a line)
    [ -n "$2" ] && echo "add element inet $table $1 { $(printf '%s\\n' "$2" | paste -sd, -) }"
    return 0
}

loaded=0
nft list table inet "$table" >/dev/null 2>&1 && loaded=1
if [ "$loaded" = 1 ]; then
    # DNS to the current resolvers first, so the lookups below get through.
    { echo "flush set inet $table resolvers4"; echo "flush set inet $table resolvers6"
      elements resolvers4 "$r4"; elements resolvers6 "$r6"; } > "$tmp/resolvers.nft"
    nft -f "$tmp/resolvers.nft" || exit 1
fi

# The last run's answers ("domain address..." a line) for --reuse; the timer looks up all.
cache="$dir/resolved.cache"
: > "$tmp/cached"
if [ "$reuse" = 1 ] && [ -s "$cache" ]; then
    awk -v cached="$tmp/cached" 'NR == FNR { seen[$1] = $0; next }
        ($1 in seen) { print seen[$1] > cached; next } { print }' "$cache" "$dir/domains" > "$tmp/lookup"
else
    cp "$dir/domains" "$tmp/lookup"
fi
i=0
while read -r domain; do
    [ -n "$domain" ] || continue
    i=$((i + 1))
    ( addrs=$(timeout "$lookup_timeout" getent ahosts "$domain" 2>/dev/null | awk '$2 == "STREAM" { print $1 }' | sort -u | tr '\\n' ' ')
      echo "$domain $addrs" > "$tmp/res.$i" ) &
done < "$tmp/lookup"
wait
cat "$tmp/cached" "$tmp"/res.* 2>/dev/null | sort > "$tmp/all"

# One line per domain: name, then its addresses.
: > "$tmp/d4"; : > "$tmp/d6"; : > "$tmp/json"
awk -v d4="$tmp/d4" -v d6="$tmp/d6" -v json="$tmp/json" '
    { printf "%s\\"%s\\": [", (NR > 1 ? ", " : ""), $1 > json
      for (i = 2; i <= NF; i++) {
          printf "%s\\"%s\\"", (i > 2 ? ", " : ""), $i > json
          if ($i ~ /:/) print $i > d6; else print $i > d4
      }
      printf "]" > json }' "$tmp/all"
resolved=$(cat "$tmp/json")
d4=$(sort -u "$tmp/d4")
d6=$(sort -u "$tmp/d6")

{
    for set in resolvers4 resolvers6 domain4 domain6; do echo "flush set inet $table $set"; done
    elements resolvers4 "$r4"; elements resolvers6 "$r6"
    elements domain4 "$d4"; elements domain6 "$d6"
} > "$dir/dynamic.nft.new"

# The file on disk changes only with the kernel's sets (a failed load leaves both as they were;
# a failed whole reload leaves the installer to take the links down).
if [ "$loaded" = 1 ] && [ "$load" = 0 ]; then
    nft -f "$dir/dynamic.nft.new" || exit 1
    mv -f "$dir/dynamic.nft.new" "$dir/dynamic.nft"
else
    mv -f "$dir/dynamic.nft.new" "$dir/dynamic.nft"
    nft -f "$dir/rules.nft" || exit 1
fi

rlist=$(printf '%s\\n' "$resolvers" | grep . | sed 's/.*/"&"/' | paste -sd, -)
mv -f "$tmp/all" "$cache"
state="{\\"resolvers\\": [$rlist], \\"resolved\\": {$resolved}, \\"resolved_at\\": \\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\\"}"
printf '%s\\n' "$state" > "$dir/state.json.new" && mv -f "$dir/state.json.new" "$dir/state.json"
printf '%s\\n' "$state"
"""

# Runs as root through sudo: it checks its own arguments, since sudoers passes them through.
SAFE_APT = """\
#!/bin/sh
# """ + HEADER + """
# safe-apt: apt-get for {{ user }} under the restricted sudo of the egress policy. Installs
# from the configured repositories only: no options, no local .deb files, no removals.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
usage() {
    echo "usage: sudo safe-apt update | upgrade | install PACKAGE[=VERSION]..." >&2
    echo "safe-apt: $*" >&2
    exit 2
}
[ "$#" -ge 1 ] || usage "no command"
command=$1
shift
case "$command" in
    update|upgrade)
        [ "$#" -eq 0 ] || usage "$command takes no arguments" ;;
    install)
        [ "$#" -ge 1 ] || usage "install needs package names"
        for package in "$@"; do
            case "$package" in
                [a-z0-9]*) ;;
                *) usage "refused '$package': package names start with a letter or digit (no options, no paths)" ;;
            esac
            # One line of known characters first (grep -x below judges line by line).
            case "$package" in
                *[!a-zA-Z0-9+.:=~-]*|*.deb|*-|*..*)
                    usage "refused '$package': only package names from the configured repositories, optionally =VERSION" ;;
            esac
            # Literal names only: apt-get reads an unknown name with . ? * + as a pattern (a.+).
            printf '%s\n' "$package" | grep -Eqx '[a-z0-9][a-z0-9+.-]*(:[a-z0-9][a-z0-9-]*)?(=[A-Za-z0-9][A-Za-z0-9.+~:-]*)?' \
                || usage "refused '$package': a literal package name [a-z0-9][a-z0-9+.-]* (optionally :ARCH), optionally =VERSION"
        done
        for package in "$@"; do
            name=${package%%=*}
            name=${name%%:*}
            apt-cache pkgnames "$name" 2>/dev/null | grep -qxF -- "$name" \
                || usage "refused '$package': no package named '$name' in the configured repositories" \\
                         "(literal names, no patterns; run sudo safe-apt update if the lists are empty)"
            case "$package" in
                *=*)
                    version=${package#*=}
                    installed=$(dpkg-query -W -f '${db:Status-Status} ${Version}' "${package%%=*}" 2>/dev/null || true)
                    case "$installed" in
                        "installed "*)
                            if dpkg --compare-versions "$version" lt "${installed#installed }"; then
                                usage "refused '$package': ${package%%=*} ${installed#installed } is installed; safe-apt does not downgrade"
                            fi ;;
                    esac ;;
            esac
        done ;;
    *)
        usage "unknown command '$command'" ;;
esac
# Mirrors behind a CDN change addresses often: let the allowed sets follow before apt connects.
# (It waits for a run in progress at most {{ lock_timeout }} s, then apt goes on with the sets as they are.)
/usr/local/sbin/pixels-egress-refresh >/dev/null || true
# No pager, editor, prompt or conffile shell: no terminal, non-interactive frontends.
exec env -i PATH="$PATH" LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive APT_LISTCHANGES_FRONTEND=none \\
    PAGER=cat EDITOR=false VISUAL=false \\
    apt-get -y --no-remove -o APT::Get::allow-downgrades=false -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \\
    "$command" "$@" </dev/null
"""

SUDOERS_RESTRICTED = """\
# """ + HEADER + """
# Restricted sudo (egress policy active): only safe-apt, which checks its own arguments.
# No shell, editor, pager, systemctl or nft: nothing that gives root or stops the firewall.
Defaults:{{ user }} env_reset
Defaults:{{ user }} secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
{{ user }} ALL=(root) NOPASSWD: /usr/local/sbin/safe-apt
"""

SUDOERS_FULL = """\
# """ + HEADER + """
# Full sudo: egress mode unrestricted.
{{ user }} ALL=(ALL) NOPASSWD:ALL
"""

UNIT_BOOT = """\
# """ + HEADER + """
[Unit]
Description=pixels egress policy (nftables)
DefaultDependencies=no
After=local-fs.target nftables.service
Before=network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f {{ egress_dir }}/rules.nft

[Install]
WantedBy=sysinit.target
"""

UNIT_REFRESH = """\
# """ + HEADER + """
[Unit]
Description=Re-resolve the domains of the pixels egress policy
After=pixels-egress.service network-online.target
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/pixels-egress-refresh

# Once at boot when the network is up, then from the timer.
[Install]
WantedBy=multi-user.target
"""

UNIT_TIMER = """\
# """ + HEADER + """
[Unit]
Description=Re-resolve the domains of the pixels egress policy every {{ refresh_interval }} s

[Timer]
OnActiveSec={{ refresh_interval }}s
OnUnitActiveSec={{ refresh_interval }}s
AccuracySec=5s

[Install]
WantedBy=timers.target
"""

# Network configuration waits for the rules and does not start without them (fail closed).
NETWORK_UNITS = ("networking.service", "ifup@.service", "systemd-networkd.service")
NETWORK_DROPIN = """\
# """ + HEADER + """
# No network unless the egress rules loaded.
[Unit]
Requires=pixels-egress.service
After=pixels-egress.service
"""

# Runs inside the sandbox from the unpacked bundle (stage/<absolute path>, manifest).
INSTALL = """\
#!/bin/sh
# Installs the egress policy (mode {{ mode }}) from ./stage; prints the resolution state.
set -eu
PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022
""" + STATE_DIR_SH + LOCK_SH + """\
units_changed=0
pending=
trap 'rm -f ${pending:+"$pending"}' EXIT  # a half-written file, whatever ends the run
trap 'exit 129' HUP INT TERM
put() {  # atomic replace of a changed file, keeping the staged mode; owned by root
    if [ -f "$1" ] && cmp -s "stage$1" "$1" && [ "$(stat -c %a:%u "$1")" = "$(stat -c %a "stage$1"):0" ]; then
        return 0
    fi
    case "$1" in /etc/systemd/*) units_changed=1 ;; esac
    mkdir -p "$(dirname "$1")"
    pending="$1.pixels-new"
    cp -p "stage$1" "$pending"
    chown 0:0 "$pending"
    mv -f "$pending" "$1"
    pending=
}
if ! visudo -cq -f "stage{{ sudoers }}" >/dev/null 2>&1; then
    echo "the rendered sudoers file was rejected by visudo: $(visudo -c -f "stage{{ sudoers }}" 2>&1)" >&2
    exit 3
fi
# The refresh script's lock, before anything changes: a timer run cannot reload the table behind
# our back, and when the lock stays busy nothing was changed (files and kernel agree).
take_lock {{ lock_timeout }}
# (earlier versions kept the lock, the state of a failed load and temporary directories directly under /run)
rm -f /run/pixels-egress.lock
for old in /run/pixels-egress-refresh.?????? /run/pixels-egress.??????; do
    if [ -d "$old" ] && [ ! -L "$old" ]; then rm -rf "$old"; fi
done
if [ -f /run/pixels-egress.down ] && [ ! -L /run/pixels-egress.down ]; then
    cat /run/pixels-egress.down >> "$state_dir/down"
    rm -f /run/pixels-egress.down
fi
mkdir -p {{ egress_dir }}
{% if mode == "unrestricted" %}
{% for unit in network_units %}
rm -f /etc/systemd/system/{{ unit }}.d/pixels-egress.conf
rmdir /etc/systemd/system/{{ unit }}.d 2>/dev/null || true
{% endfor %}
if [ -e /etc/systemd/system/pixels-egress.service ]; then
    systemctl disable --no-reload --quiet pixels-egress-refresh.timer pixels-egress-refresh.service pixels-egress.service 2>/dev/null || true
    systemctl daemon-reload
    systemctl stop pixels-egress-refresh.timer pixels-egress.service 2>/dev/null || true
fi
rm -f /etc/systemd/system/pixels-egress.service /etc/systemd/system/pixels-egress-refresh.service \\
    /etc/systemd/system/pixels-egress-refresh.timer /usr/local/sbin/pixels-egress-refresh /usr/local/sbin/safe-apt \\
    {{ egress_dir }}/rules.nft {{ egress_dir }}/dynamic.nft {{ egress_dir }}/domains {{ egress_dir }}/state.json \\
    {{ egress_dir }}/resolved.cache
nft delete table inet {{ table }} 2>/dev/null || true
systemctl daemon-reload
{% for path in paths %}
put {{ path }}
{% endfor %}
cp manifest {{ manifest_file }}
echo '{"resolvers": [], "resolved": {}, "resolved_at": null}'
{% else %}
# Sudo and the mode first: a failure below leaves the sandbox locked down.
put {{ egress_dir }}/mode
put {{ sudoers }}
{% for path in paths %}
put {{ path }}
{% endfor %}
[ -e {{ egress_dir }}/dynamic.nft ] || : > {{ egress_dir }}/dynamic.nft
if ! /usr/local/sbin/pixels-egress-refresh --locked --load {{ "--reuse " if reuse else "" }}--timeout {{ resolve_timeout }} > refresh.out; then
    # Fail closed: no rules, no network (the next successful run brings it back).
    for path in /sys/class/net/*; do
        link=${path##*/}
        [ "$link" = lo ] && continue
        ip link set dev "$link" down 2>/dev/null && echo "$link" >> "$state_dir/down"
    done
    echo "the egress rules could not be loaded; the network interfaces are down until they are" >&2
    exit 4
fi
if [ -e "$state_dir/down" ]; then
    for link in $(sort -u "$state_dir/down"); do ip link set dev "$link" up || true; done
    rm -f "$state_dir/down"
    restart_network=1
fi
# The rules failed at boot, so the network units did not start.
systemctl is-failed --quiet pixels-egress.service && restart_network=1
if [ "$units_changed" = 1 ] || [ ! -e /etc/systemd/system/sysinit.target.wants/pixels-egress.service ] \\
        || [ ! -e /etc/systemd/system/timers.target.wants/pixels-egress-refresh.timer ] \\
        || [ ! -e /etc/systemd/system/multi-user.target.wants/pixels-egress-refresh.service ]; then
    systemctl enable --quiet --no-reload pixels-egress.service pixels-egress-refresh.service pixels-egress-refresh.timer
    systemctl daemon-reload
    systemctl restart pixels-egress-refresh.timer
fi
if [ "${restart_network:-0}" = 1 ]; then
    # Addresses and routes went with the links: configure the network again.
    systemctl restart pixels-egress.service || true
    for unit in networking.service systemd-networkd.service; do
        if systemctl is-enabled --quiet "$unit" 2>/dev/null; then systemctl restart "$unit" || true; fi
    done
    # The lookups above ran without a network; the resolver takes a moment to get its servers back.
    for attempt in $(seq 20); do
        /usr/local/sbin/pixels-egress-refresh --locked --timeout {{ resolve_timeout }} > refresh.out || true
        # every domain resolved, or some: the resolver is back
        grep -qF ': []' refresh.out || break
        sed 's/.*"resolved": {//' refresh.out | grep -qF '["' && break
        sleep 1
    done
fi
cp manifest {{ manifest_file }}
cat refresh.out
{% endif %}
"""
