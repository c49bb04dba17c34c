"""The pod's own dead-man's switch: a POSIX sh script in the start command, run before anything else.

Why on the pod: every local safeguard (try/finally, signal handlers, the reaper) dies with the
machine running ralph, and a pod bills until someone deletes it. The switch needs no SSH and no
secret of the user's account: RunPod gives every container its own ``RUNPOD_POD_ID`` and a
pod-scoped ``RUNPOD_API_KEY`` that may terminate only that pod (notes/runpod.md), and the switch
reads them from its own environment (or PID 1's, where a shell lost them).

It fires when
* the heartbeat file ralph rewrites over SSH every few seconds is older than ``heartbeat_timeout_s``,
* no heartbeat ever came within ``grace_s`` of the container's start (image pull, SSH never up,
  ralph killed before it connected), or
* ``max_lifetime_s`` has passed since the container started, whatever ralph says.

Firing means, with curl, wget or python3 (whichever the image has), each answer logged: REST v2
``DELETE /v2/pods/$RUNPOD_POD_ID``, then the v2 ``terminate`` action, then GraphQL's
``podTerminate`` while GraphQL lives (retired early 2027), then ``runpodctl`` — repeated until the
pod is gone (its termination kills the switch). RunPod has no server-side lifetime for pods.

Armed, the switch first checks that it can reach the API and that its pod-scoped key can read its
own pod, and writes the answer to ``<state_base>/<pod id>/arming``; ``runpod.create`` reads it and
reports a switch that cannot fire as a warning in the task's results. Whether the pod key may
DELETE is not documented and cannot be probed without deleting: the fallbacks are there for that.

The heartbeat holds the pod's own ``date +%s`` written by a command run on the pod, so the
clocks of ralph's machine and of the pod never meet. Its folder is ``<state_base>/<pod id>``,
outside ``/workspace``: a network volume outlives the pod and would hand an old heartbeat to
the next one.
"""

from __future__ import annotations

import base64
import posixpath
from dataclasses import dataclass

from ralph.handlers.machines import remote_shell
from ralph.handlers.machines.heartbeat import watch_dir

quote = remote_shell.quote

DEFAULT_STATE_BASE = "/tmp/ralph"
RETRY_S = 10  # between termination attempts once fired


@dataclass(frozen=True)
class Switch:
    heartbeat_timeout_s: int
    grace_s: int  # from the container's start until the first heartbeat
    max_lifetime_s: int
    state_base: str = DEFAULT_STATE_BASE

    @property
    def poll_s(self) -> int:
        """How often the switch looks: a quarter of its shortest limit, between 1 and 30 s."""
        return max(1, min(30, self.heartbeat_timeout_s // 4, self.grace_s // 4, self.max_lifetime_s // 4))


def log_path(state_base: str, pod_id: str) -> str:
    return posixpath.join(watch_dir(state_base, pod_id), "deadman.log")


def arming_path(state_base: str, pod_id: str) -> str:
    """One line the switch writes when armed: ``ok: …`` or why it could not fire."""
    return posixpath.join(watch_dir(state_base, pod_id), "arming")


def script(switch: Switch, base_start_command: str) -> str:
    """The whole start script: arm the switch in the background, then exec what the image runs."""
    base = base_start_command.strip() or "sleep infinity"
    return f"""#!/bin/sh
# ralph's dead-man's switch (see ralph/handlers/runpod/deadman.py): armed before anything else.
HB_TIMEOUT={int(switch.heartbeat_timeout_s)}
GRACE={int(switch.grace_s)}
MAX_LIFETIME={int(switch.max_lifetime_s)}
POLL={switch.poll_s}
from_pid1() {{ tr '\\000' '\\n' < /proc/1/environ 2>/dev/null | sed -n "s/^$1=//p" | head -n 1; }}
[ -n "$RUNPOD_POD_ID" ] || RUNPOD_POD_ID=$(from_pid1 RUNPOD_POD_ID)
[ -n "$RUNPOD_API_KEY" ] || RUNPOD_API_KEY=$(from_pid1 RUNPOD_API_KEY)
export RUNPOD_POD_ID RUNPOD_API_KEY
DIR={quote(switch.state_base)}/"${{RUNPOD_POD_ID:-unknown}}"
mkdir -p "$DIR"
HB="$DIR/heartbeat"
LOG="$DIR/deadman.log"
rm -f "$HB"  # a restarted container starts a new grace period
log() {{ echo "$(date -u '+%Y-%m-%d %H:%M:%S') $*" >> "$LOG"; }}
http() {{  # METHOD URL [BODY]: prints the HTTP status, then the body
  rm -f "$DIR/answer"  # no stale body under a failed request's status
  if command -v curl >/dev/null 2>&1; then
    curl -sS -m 30 -X "$1" -H "Authorization: Bearer $RUNPOD_API_KEY" -H "Content-Type: application/json" \
      ${{3:+-d "$3"}} -o "$DIR/answer" -w '%{{http_code}}' "$2" 2>>"$LOG"; echo; head -c 300 "$DIR/answer" 2>/dev/null
  elif command -v python3 >/dev/null 2>&1; then
    M="$1" U="$2" B="${{3:-}}" python3 -c '
import os, urllib.request, urllib.error
body = os.environ["B"].encode() or None
r = urllib.request.Request(os.environ["U"], data=body, method=os.environ["M"], headers={{
    "Content-Type": "application/json", "Authorization": "Bearer " + os.environ["RUNPOD_API_KEY"]}})
try:
    a = urllib.request.urlopen(r, timeout=30); print(a.status); print(a.read(300).decode(errors="replace"))
except urllib.error.HTTPError as e:
    print(e.code); print(e.read(300).decode(errors="replace"))
except Exception as e:
    print(0); print(type(e).__name__, e)'
  elif command -v wget >/dev/null 2>&1; then  # its exit code hides the status: read it from -S
    wget -q -S -T 30 -O "$DIR/answer" --content-on-error --method="$1" ${{3:+--body-data="$3"}} \
      --header="Content-Type: application/json" --header="Authorization: Bearer $RUNPOD_API_KEY" "$2" 2>"$DIR/headers"
    code=$(sed -n 's|^ *HTTP/[0-9.]* \\([0-9][0-9][0-9]\\).*|\\1|p' "$DIR/headers" | tail -n 1)
    echo "${{code:-0}}"; head -c 300 "$DIR/answer" 2>/dev/null
  else
    echo 0; echo "no curl, python3 or wget"
  fi
}}
status_of() {{  # the HTTP status, 0 when no answer came (curl says 000)
  code=$(echo "$1" | head -n 1)
  case "$code" in ''|000) echo 0 ;; *) echo "$code" ;; esac
}}
API="${{RUNPOD_API_BASE_URL:-https://api.runpod.io}}"
terminate() {{
  answer=$(http DELETE "$API/v2/pods/$RUNPOD_POD_ID")
  log "v2 DELETE: $(echo $answer | head -c 300)"
  case "$(status_of "$answer")" in 2??|404) return 0 ;; esac
  answer=$(http POST "$API/v2/pods/$RUNPOD_POD_ID/action" '{{"action": "terminate"}}')
  log "v2 terminate action: $(echo $answer | head -c 300)"
  case "$(status_of "$answer")" in 2??|404) return 0 ;; esac
  answer=$(http POST "$API/graphql" '{{"query": "mutation {{ podTerminate(input: {{ podId: \\"'"$RUNPOD_POD_ID"'\\" }}) }}"}}')
  log "GraphQL podTerminate: $(echo $answer | head -c 300)"
  case "$answer" in 2??*'"podTerminate"'*) return 0 ;; esac
  if command -v runpodctl >/dev/null 2>&1; then
    log "runpodctl: $(runpodctl remove pod "$RUNPOD_POD_ID" 2>&1 | tail -c 300)"
  fi
  return 1
}}
arm_check() {{
  answer=$(http GET "$API/v2/pods/$RUNPOD_POD_ID")
  code=$(status_of "$answer")
  case "$code" in
    200) echo "ok: the pod key reads its own pod (HTTP 200)" ;;
    0) echo "cannot reach the API at $API" ;;
    *) echo "the pod key cannot read its own pod: HTTP $code" ;;
  esac
}}
(
  trap '' HUP
  start=$(date +%s)
  log "armed: heartbeat timeout ${{HB_TIMEOUT}}s, grace ${{GRACE}}s, max lifetime ${{MAX_LIFETIME}}s"
  report=$(arm_check)
  log "arming check: $report"
  echo "$report" > "$DIR/arming.tmp" && mv -f "$DIR/arming.tmp" "$DIR/arming"
  while :; do
    now=$(date +%s)
    reason=
    if [ $((now - start)) -ge "$MAX_LIFETIME" ]; then
      reason="max lifetime of ${{MAX_LIFETIME}}s reached"
    elif [ -f "$HB" ]; then
      beat=$(cat "$HB" 2>/dev/null)
      case "$beat" in ''|*[!0-9]*) beat=$now ;; esac
      if [ $((now - beat)) -ge "$HB_TIMEOUT" ]; then reason="heartbeat stale for $((now - beat))s"; fi
    elif [ $((now - start)) -ge "$GRACE" ]; then
      reason="no heartbeat within ${{GRACE}}s of start"
    fi
    if [ -n "$reason" ]; then
      log "firing: $reason"
      while :; do terminate; sleep {RETRY_S}; done
    fi
    sleep "$POLL"
  done
) </dev/null >/dev/null 2>&1 &
exec {base}
"""  # noqa: E501 (a shell script's lines)


def start_command(switch: Switch, base_start_command: str) -> str:
    """The pod's start command (``args``): the script base64-wrapped, so none of its quotes,
    newlines or ``$`` meet the container's argument splitting."""
    encoded = base64.b64encode(script(switch, base_start_command).encode()).decode()
    return f"sh -c 'echo {encoded} | base64 -d | sh'"
