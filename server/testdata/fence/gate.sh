#!/bin/sh
# Waits for the file "gate" (at most a minute), then prints its arguments
# (stdin) with the pid of the worker process that ran it. "waiting" tells
# the test a call is in flight.
args=$(tr -d " \n")
[ -n "$args" ] || exit 1
touch waiting
i=0
while [ ! -e gate ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
printf '{"args":%s,"worker":%d}' "$args" "$PPID"
