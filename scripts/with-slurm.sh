#!/usr/bin/env bash
# Run a command with a one-node SLURM cluster up, then stop the daemons this started:
#
#   scripts/with-slurm.sh python -m pytest
#
# The cluster is the one of scripts/slurm_cluster.sh (reused if already up, and then left
# running). Where it cannot start (not root, no apt-get) the command still runs, without it,
# and the SLURM tests skip, unless JEPACTL_REQUIRE_SLURM=1 (set here when CI=true) makes
# them fail. The command's exit code is this script's.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cluster=$here/slurm_cluster.sh

if [[ ${CI:-} == true ]]; then
  export JEPACTL_REQUIRE_SLURM=${JEPACTL_REQUIRE_SLURM:-1}
fi

started=0
if "$cluster" status >/dev/null 2>&1; then
  eval "$("$cluster" env)"
elif line=$("$cluster" start); then
  eval "$line"
  started=1
else
  echo "with-slurm: no SLURM cluster (see above); running without one" >&2
fi

stop() { [[ $started == 1 ]] && "$cluster" stop >&2; }
trap stop EXIT
"$@"
