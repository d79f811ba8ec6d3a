#!/bin/sh
# Event script shared by dhclient (-sf), udhcpc (-s) and dhcpcd (-c) in the e2e tests.
# It logs one line per event to $TDM_HOOK_LOG ("<epoch> <EVENT> <address or ->") and, for
# dhclient and udhcpc (which leave it to their script), applies the address with `ip addr`.
# dhcpcd configures the interface itself; for it this script only logs.
# The per-client wrapper written by the test sets TDM_HOOK_LOG and TDM_HOOK_CLIENT.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH
now=$(date +%s.%N)
case "$TDM_HOOK_CLIENT" in
  dhclient)
    event=$reason
    addr=${new_ip_address:-${old_ip_address:--}}
    case "$reason" in
      PREINIT) ip link set dev "$interface" up ;;
      BOUND|RENEW|REBIND|REBOOT)
        if [ -n "$old_ip_address" ] && [ "$old_ip_address" != "$new_ip_address" ]; then
          ip -4 addr flush dev "$interface"
        fi
        ip addr replace "$new_ip_address/$new_subnet_mask" dev "$interface" ;;
      EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$interface" ;;
    esac ;;
  udhcpc)
    event=$(echo "$1" | tr a-z A-Z)
    addr=${ip:--}
    case "$1" in
      deconfig) ip -4 addr flush dev "$interface"; ip link set dev "$interface" up ;;
      bound|renew) ip addr replace "$ip/${mask:-24}" dev "$interface" ;;
    esac ;;
  dhcpcd)
    event=$reason
    addr=${new_ip_address:-${old_ip_address:--}} ;;
  *)
    event=UNKNOWN-$1
    addr=- ;;
esac
echo "$now $event $addr" >> "$TDM_HOOK_LOG"
exit 0
