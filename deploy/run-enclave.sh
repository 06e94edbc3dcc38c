#!/usr/bin/env bash
# Starts, stops and watches the Enclave KMS Nitro enclave with nitro-cli.
# Runs on the parent instance, as a user in the `ne` group (or root).
#
#   run-enclave.sh start    run the enclave (replacing one of the same name), print its JSON
#   run-enclave.sh stop     terminate it (no error if it is not running)
#   run-enclave.sh status   describe it; exit 1 if it is not running
#   run-enclave.sh run      start, then stay in the foreground while it runs (for systemd);
#                           exits 1 when the enclave is gone, so systemd can restart it
#
# Options (or the environment variables in brackets, e.g. from /etc/ekms/enclave.env):
#   --eif PATH       EIF to run              [EKMS_EIF, default /opt/ekms/ekms-enclave.eif]
#   --cid N          enclave vsock CID (>=4) [EKMS_ENCLAVE_CID, default 16]
#   --memory MIB     enclave memory in MiB   [EKMS_ENCLAVE_MEMORY_MIB, default 1024]
#   --cpus N         enclave vCPU count      [EKMS_ENCLAVE_CPUS, default 2]
#   --name NAME      enclave name            [EKMS_ENCLAVE_NAME, default ekms-enclave]
#   --debug          debug mode + console. PCRs read as all zeros in debug mode, so attestation
#                    fails by design: for troubleshooting only, never in production.
#   --poll SECONDS   how often `run` checks   [EKMS_ENCLAVE_POLL, default 10]
set -euo pipefail

EIF="${EKMS_EIF:-/opt/ekms/ekms-enclave.eif}"
CID="${EKMS_ENCLAVE_CID:-16}"
MEMORY="${EKMS_ENCLAVE_MEMORY_MIB:-1024}"
CPUS="${EKMS_ENCLAVE_CPUS:-2}"
NAME="${EKMS_ENCLAVE_NAME:-ekms-enclave}"
POLL="${EKMS_ENCLAVE_POLL:-10}"
DEBUG=0

die() { echo "run-enclave.sh: $*" >&2; exit 2; }

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

[ $# -ge 1 ] || { usage >&2; exit 2; }
ACTION="$1"; shift
case "$ACTION" in -h|--help|help) usage; exit 0 ;; esac
while [ $# -gt 0 ]; do
    case "$1" in
        --eif) EIF="${2:?--eif needs a path}"; shift 2 ;;
        --cid) CID="${2:?--cid needs a number}"; shift 2 ;;
        --memory) MEMORY="${2:?--memory needs MiB}"; shift 2 ;;
        --cpus) CPUS="${2:?--cpus needs a number}"; shift 2 ;;
        --name) NAME="${2:?--name needs a name}"; shift 2 ;;
        --poll) POLL="${2:?--poll needs seconds}"; shift 2 ;;
        --debug) DEBUG=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option: $1" ;;
    esac
done

is_number() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_number "$CID" && [ "$CID" -ge 4 ] || die "--cid must be a number >= 4 (0-2 are reserved, 3 is the parent): $CID"
is_number "$MEMORY" && [ "$MEMORY" -ge 64 ] || die "--memory must be a number of MiB: $MEMORY"
is_number "$CPUS" && [ "$CPUS" -ge 1 ] || die "--cpus must be a positive number: $CPUS"
is_number "$POLL" && [ "$POLL" -ge 1 ] || die "--poll must be a positive number of seconds: $POLL"
[[ "$NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "--name may hold only letters, digits, '.', '_' and '-': $NAME"
command -v nitro-cli >/dev/null || die "nitro-cli not found (install aws-nitro-enclaves-cli)"

# nitro-cli prints pretty JSON with one `"Key": value` per line.
is_running() {
    nitro-cli describe-enclaves 2>/dev/null | tr -d ' \n' | grep -q "\"EnclaveName\":\"${NAME}\""
}

stop() {
    if is_running; then
        nitro-cli terminate-enclave --enclave-name "$NAME"
    fi
}

start() {
    [ -r "$EIF" ] || die "EIF not readable: $EIF"
    stop
    local args=(run-enclave --eif-path "$EIF" --enclave-cid "$CID" --memory "$MEMORY"
                --cpu-count "$CPUS" --enclave-name "$NAME")
    if [ "$DEBUG" = 1 ]; then
        echo "run-enclave.sh: WARNING: debug mode: PCRs are all zeros, attestation will fail" >&2
        args+=(--debug-mode)
    fi
    nitro-cli "${args[@]}"
}

case "$ACTION" in
    start) start ;;
    stop) stop ;;
    status)
        nitro-cli describe-enclaves
        is_running || { echo "run-enclave.sh: enclave $NAME is not running" >&2; exit 1; }
        ;;
    run)
        start
        trap 'stop; exit 0' TERM INT
        while is_running; do
            sleep "$POLL" &
            wait $! || true
        done
        echo "run-enclave.sh: enclave $NAME is no longer running" >&2
        exit 1
        ;;
    *) usage >&2; exit 2 ;;
esac
