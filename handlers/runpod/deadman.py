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

Firing means: the GraphQL ``podTerminate`` for ``$RUNPOD_POD_ID`` with curl, wget or python3,
whichever the image has, then ``runpodctl`` as a fallback, repeated until the pod is gone (its
termination kills the switch). Server-side ``terminateAfter`` is not relied on: it never worked.

The heartbeat holds the pod's own ``date +%s`` written by a command run on the pod, so the
clocks of ralph's machine and of the pod never meet. Its folder is ``<state_base>/<pod id>``,
outside ``/workspace``: a network volume outlives the pod and would hand an old heartbeat to
the next one.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ralph.handlers.machines import remote_shell
from ralph.handlers.runpod.api import script_start_command

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


def pod_dir(state_base: str, pod_id: str) -> str:
    return posixpath.join(state_base, pod_id)


def heartbeat_path(state_base: str, pod_id: str) -> str:
    return posixpath.join(pod_dir(state_base, pod_id), "heartbeat")


def log_path(state_base: str, pod_id: str) -> str:
    return posixpath.join(pod_dir(state_base, pod_id), "deadman.log")


def heartbeat_command(state_base: str, pod_id: str) -> str:
    """The command ralph runs on the pod for each beat: the pod's clock, replaced atomically."""
    path = heartbeat_path(state_base, pod_id)
    tmp = path + ".tmp"
    return (f"mkdir -p {remote_shell.quote(pod_dir(state_base, pod_id))} && "
            f"date +%s > {remote_shell.quote(tmp)} && mv -f {remote_shell.quote(tmp)} {remote_shell.quote(path)}")


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
DIR={remote_shell.quote(switch.state_base)}/"${{RUNPOD_POD_ID:-unknown}}"
mkdir -p "$DIR"
HB="$DIR/heartbeat"
LOG="$DIR/deadman.log"
rm -f "$HB"  # a restarted container starts a new grace period
log() {{ echo "$(date -u '+%Y-%m-%d %H:%M:%S') $*" >> "$LOG"; }}
terminate() {{
  url="${{RUNPOD_API_BASE_URL:-https://api.runpod.io}}/graphql"
  body='{{"query": "mutation {{ podTerminate(input: {{ podId: \\"'"$RUNPOD_POD_ID"'\\" }}) }}"}}'
  auth="Authorization: Bearer $RUNPOD_API_KEY"
  answer=
  if command -v curl >/dev/null 2>&1; then
    answer=$(curl -sS -m 30 -H "Content-Type: application/json" -H "$auth" -d "$body" "$url" 2>&1)
  elif command -v wget >/dev/null 2>&1; then
    answer=$(wget -q -T 30 -O - --header="Content-Type: application/json" --header="$auth" --post-data="$body" "$url" 2>&1)
  elif command -v python3 >/dev/null 2>&1; then
    answer=$(BODY="$body" URL="$url" python3 -c '
import os, urllib.request
r = urllib.request.Request(os.environ["URL"], data=os.environ["BODY"].encode(), headers={{
    "Content-Type": "application/json", "Authorization": "Bearer " + os.environ["RUNPOD_API_KEY"]}})
print(urllib.request.urlopen(r, timeout=30).read().decode())' 2>&1)
  fi
  case "$answer" in
    *'"podTerminate"'*) log "podTerminate acknowledged"; return 0 ;;
  esac
  log "podTerminate over HTTP failed: $(echo "$answer" | tail -c 200)"
  if command -v runpodctl >/dev/null 2>&1; then
    runpodctl remove pod "$RUNPOD_POD_ID" >> "$LOG" 2>&1 || runpodctl pod delete "$RUNPOD_POD_ID" >> "$LOG" 2>&1
  fi
}}
(
  trap '' HUP
  start=$(date +%s)
  log "armed: heartbeat timeout ${{HB_TIMEOUT}}s, grace ${{GRACE}}s, max lifetime ${{MAX_LIFETIME}}s"
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
"""


def start_command(switch: Switch, base_start_command: str) -> str:
    """The pod's start command (dockerArgs): the script base64-wrapped, so no quote of it reaches
    the GraphQL text or the container's argument splitting."""
    return script_start_command(script(switch, base_start_command), shell="sh")
