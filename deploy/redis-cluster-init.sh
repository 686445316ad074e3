#!/bin/sh
# docker-compose.cluster.yml's one-shot `redis-cluster-init`: makes the nodes in REDIS_CLUSTER_NODES
# (host:port, space-separated, primaries first) one Redis Cluster with a replica per primary, and exits 0
# once every node says cluster_state:ok. Safe to run on every start:
# - all nodes new (no slots, no peers): `redis-cli --cluster create ... --cluster-replicas 1`;
# - already a cluster: nothing is created. Each node is told (CLUSTER MEET) where the others are now,
#   because the cluster bus keeps peers' addresses in nodes.conf and a recreated container (`down`, then
#   `up`) comes back with another one; a node meeting a peer it knows only updates its address;
# - a mix (a node lost its volume, so it is new under an old name): exits 1, saying how to replace it.
#   Which data to give up is an operator's decision, not a start-up script's.
# POSIX sh: it runs under the redis image's busybox sh.
set -eu

nodes=${REDIS_CLUSTER_NODES:?REDIS_CLUSTER_NODES must list the nodes as host:port, space-separated}
timeout_s=${REDIS_CLUSTER_TIMEOUT_S:-60}
deadline=$(($(date +%s) + timeout_s))

say() { echo "redis-cluster-init: $*" >&2; }
cli() { # cli host:port command...
    node=$1
    shift
    redis-cli -h "${node%:*}" -p "${node##*:}" "$@" | tr -d '\r'
}
info() { # info host:port field -> the field of CLUSTER INFO
    cli "$1" CLUSTER INFO | sed -n "s/^$2://p"
}
address() { # address host -> an IP address (CLUSTER MEET takes no names)
    case $1 in
        *[!0-9.]*) getent hosts "$1" | awk '{ print $1; exit }' ;;
        *) echo "$1" ;;
    esac
}
wait_until() { # wait_until what command...: until the command succeeds, or exit 1 at the deadline
    what=$1
    shift
    until "$@"; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "gave up after ${timeout_s} s waiting for $what"
            exit 1
        fi
        sleep 1
    done
}

answers() { [ "$(cli "$1" PING 2>/dev/null)" = PONG ]; }
for node in $nodes; do
    wait_until "$node to answer" answers "$node"
done

new="" old=""
for node in $nodes; do
    if [ "$(info "$node" cluster_known_nodes)" = 1 ] && [ "$(info "$node" cluster_slots_assigned)" = 0 ]; then
        new="$new $node"
    else
        old="$old $node"
    fi
done

if [ -z "$old" ]; then
    say "creating the cluster:$new"
    # shellcheck disable=SC2086 # one argument per node
    redis-cli --cluster create $nodes --cluster-replicas 1 --cluster-yes >&2
elif [ -n "$new" ]; then
    say "these nodes are new but the others are a cluster (did they lose their volume?):$new." \
        "For each: forget its old id (redis-cli --cluster del-node <a member> <old id>, the id that" \
        "CLUSTER NODES on a member shows failing), then add it (redis-cli --cluster add-node <it>" \
        "<a member>, with --cluster-slave to make it a replica)."
    exit 1
else
    say "already a cluster: telling each node where the others are now"
    for node in $nodes; do
        for peer in $nodes; do
            [ "$peer" = "$node" ] && continue
            ip=$(address "${peer%:*}")
            if [ -z "$ip" ]; then
                say "warning: cannot resolve ${peer%:*}"
                continue
            fi
            cli "$node" CLUSTER MEET "$ip" "${peer##*:}" >/dev/null || say "warning: $node could not meet $peer"
        done
    done
fi

roles() { # roles host:port -> "<node id> master|slave" for every node it knows, sorted
    cli "$1" CLUSTER NODES | awk '{ print $1, ($3 ~ /master/ ? "master" : "slave") }' | sort
}
healthy() { # every node: cluster_state:ok, no peer failing, in handshake or unconnected, and the same
    # roles for everyone (a replica is announced as one by gossip, a moment after it became one)
    agreed=""
    for node in $nodes; do
        [ "$(info "$node" cluster_state)" = ok ] || return 1
        if cli "$node" CLUSTER NODES | grep -Eq 'fail|handshake|noaddr|disconnected'; then
            return 1
        fi
        seen=$(roles "$node")
        [ -z "$agreed" ] || [ "$seen" = "$agreed" ] || return 1
        agreed=$seen
    done
}
wait_until "cluster_state:ok and one view of the cluster on every node" healthy
say "cluster_state:ok on every node, and they agree on who is a primary"
