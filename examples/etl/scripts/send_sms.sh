#!/usr/bin/env bash
# The seed's send_sms, as a `command` channel: the alert arrives in FLOWSH_ALERT_*
# variables (and as JSON on stdin). A real one would call an SMS gateway; this one
# writes the message where you can read it.
set -euo pipefail
mkdir -p work
printf '%s [%s] %s\n' "$(date '+%F %T')" "$FLOWSH_ALERT_SEVERITY" "$FLOWSH_ALERT_SUBJECT" \
    >> work/sms.log
