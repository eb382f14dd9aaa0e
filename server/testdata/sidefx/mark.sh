#!/bin/sh
# Appends its JSON arguments (stdin), compacted to one line, to sidefx.log
# in one write, and prints them.
line=$(tr -d " \n")
# A worker killed before it wrote the arguments leaves this child without
# them: no call, no line.
[ -n "$line" ] || exit 1
printf "%s\n" "$line" >> sidefx.log
sleep 0.05 # widens the window a kill lands in
printf "%s" "$line"
