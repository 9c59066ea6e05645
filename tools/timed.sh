#!/usr/bin/env bash
# tools/timed.sh NAME CMD...: run CMD, then print NAME's wall time and exit status (every CI step
# prints its time). With FASTCNN_STEP_TIMES=FILE the line is appended to FILE too (.ci/run's summary).
name=$1
shift
start=$SECONDS
"$@"
rc=$?
t=$((SECONDS - start))
line=$(printf '%-34s %2dm%02ds  %s' "$name" $((t / 60)) $((t % 60)) "$([ $rc = 0 ] && echo ok || echo "FAILED (rc $rc)")")
echo "[time] $line"
if [ -n "${FASTCNN_STEP_TIMES:-}" ]; then echo "$line" >>"$FASTCNN_STEP_TIMES"; fi
exit $rc
