#!/bin/sh
# Runs every test program, sums their "N passed, N failed" lines and ends with
# the total in the same form.  Exit status is non-zero if any test failed or
# a program crashed.
build=$1; shift
tp=0; tf=0; bad=0
for t in "$@"; do
    name=$(basename "$t")
    out=$("$t" 2>&1); rc=$?
    line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed' | tail -n 1)
    if [ -z "$line" ]; then
        printf '%s\n' "$out" | tail -n 20
        echo "$name: CRASHED or printed no summary (exit $rc)"; bad=$((bad + 1)); tf=$((tf + 1)); continue
    fi
    p=$(echo "$line" | sed 's/ passed.*//'); f=$(echo "$line" | sed 's/.*passed, \([0-9]*\) failed.*/\1/')
    tp=$((tp + p)); tf=$((tf + f))
    if [ "$f" != 0 ] || [ "$rc" != 0 ]; then printf '%s\n' "$out" | grep -E 'FAIL' | head -n 30; bad=$((bad + 1)); fi
    echo "$name: $line"
done
echo "$tp passed, $tf failed"
[ "$bad" = 0 ]
