#!/bin/sh
# Init step of a sensorflow pod (POSIX sh; runs in the sensorflow image before the containers start).
#
#   init-pod.sh hostfile   one Bytewax address per process, in ordinal order, to $BYTEWAX_HOSTFILE_PATH:
#                          <statefulset>-<i>.<CLUSTER_DOMAIN>:<CLUSTER_PORT> for i in 0..BYTEWAX_REPLICAS-1
#   init-pod.sh recovery   this pod's share of the recovery partitions, in $SENSORFLOW_RECOVERY_DIR
#   init-pod.sh            both
#
# Recovery layout: RECOVERY_PARTITIONS partitions (at least the largest cluster's total worker
# count; fixed once made) spread over the pods with ordinals below RECOVERY_HOLDERS: pod k holds
# partitions k, k+H, k+2H, ... A pod makes its share only when its volume holds no partition yet,
# so a restart never resets state; a pod at or above RECOVERY_HOLDERS holds none (Bytewax only
# needs the cluster as a whole to reach every partition). Partitions are made in a scratch
# directory on the same volume and renamed into place.
set -eu

ordinal() {
    : "${BYTEWAX_POD_NAME:?}" "${BYTEWAX_STATEFULSET_NAME:?}"
    n=${BYTEWAX_POD_NAME#"$BYTEWAX_STATEFULSET_NAME"-}
    case "$n" in
        '' | *[!0-9]*) echo "init-pod: pod $BYTEWAX_POD_NAME is not $BYTEWAX_STATEFULSET_NAME-<ordinal>" >&2; exit 2 ;;
    esac
    echo "$n"
}

write_hostfile() {
    : "${BYTEWAX_HOSTFILE_PATH:?}" "${BYTEWAX_REPLICAS:?}" "${CLUSTER_DOMAIN:?}" "${CLUSTER_PORT:?}"
    tmp="$BYTEWAX_HOSTFILE_PATH.tmp"
    : > "$tmp"
    i=0
    while [ "$i" -lt "$BYTEWAX_REPLICAS" ]; do
        echo "$BYTEWAX_STATEFULSET_NAME-$i.$CLUSTER_DOMAIN:$CLUSTER_PORT" >> "$tmp"
        i=$((i + 1))
    done
    mv "$tmp" "$BYTEWAX_HOSTFILE_PATH"
    echo "init-pod: hostfile with $BYTEWAX_REPLICAS address(es)"
}

make_recovery_share() {
    : "${SENSORFLOW_RECOVERY_DIR:?}" "${RECOVERY_PARTITIONS:?}" "${RECOVERY_HOLDERS:?}"
    k=$(ordinal)
    dir=$SENSORFLOW_RECOVERY_DIR
    mkdir -p "$dir"
    rm -rf "$dir"/.init-*
    held=$(find "$dir" -maxdepth 1 -name 'part-*.sqlite3' | wc -l)
    if [ "$held" -gt 0 ]; then
        echo "init-pod: keeping the $held recovery partition(s) in $dir"
        return
    fi
    if [ "$k" -ge "$RECOVERY_HOLDERS" ]; then
        echo "init-pod: pod $k holds no recovery partition (holders: pods below $RECOVERY_HOLDERS)"
        return
    fi
    scratch="$dir/.init-$$"
    mkdir "$scratch"
    python -m bytewax.recovery "$scratch" "$RECOVERY_PARTITIONS"
    i=$k
    made=0
    while [ "$i" -lt "$RECOVERY_PARTITIONS" ]; do
        mv "$scratch/part-$i.sqlite3" "$dir/"
        i=$((i + RECOVERY_HOLDERS))
        made=$((made + 1))
    done
    rm -rf "$scratch"
    echo "init-pod: made $made of $RECOVERY_PARTITIONS recovery partition(s) in $dir"
}

case "${1:-all}" in
    hostfile) write_hostfile ;;
    recovery) make_recovery_share ;;
    all) write_hostfile; make_recovery_share ;;
    *) echo "usage: init-pod.sh [hostfile|recovery]" >&2; exit 2 ;;
esac
